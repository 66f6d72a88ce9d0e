//! The daemon's life and its neighbours: hostile clients, SIGTERM, a second daemon on the socket.

use super::*;

#[tokio::test]
async fn hostile_clients_do_not_disturb_others() {
    let mut d = daemon();
    d.user_vm("a");
    d.start().unwrap();
    let good = Client::connect(d.socket()).await.unwrap();
    // A client that connects and never says Hello (the handshake times out
    // after 5 s); meanwhile others are served.
    let silent = UnixSeqpacket::connect(d.socket()).await.unwrap();
    // Garbage, an empty datagram, an oversized datagram.
    let g = raw(&d.socket()).await;
    g.send(b"\x00\x01garbage that is not a frame")
        .await
        .unwrap();
    assert_eq!(read_error(&g).await.code, ErrorCode::ProtocolViolation);
    let e = raw(&d.socket()).await;
    e.send(&[]).await.unwrap();
    let o = raw(&d.socket()).await;
    o.send(&vec![7u8; 100_000]).await.unwrap();
    let err = read_error(&o).await;
    assert_eq!(err.code, ErrorCode::FrameTooLarge);
    for _ in 0..10 {
        assert_eq!(good.list_vms(false, None).await.unwrap().vms.len(), 1);
    }
    assert_eq!(read_error(&silent).await.code, ErrorCode::Timeout);
    let mut buf = [0u8; 16];
    assert_eq!(
        e.recv(&mut buf).await.unwrap().bytes_read(),
        0,
        "empty datagram = EOF: closed"
    );
    assert_eq!(good.ping(vec![1, 2, 3]).await.unwrap(), [1, 2, 3]);
}

#[tokio::test]
async fn sigterm_says_goodbye_removes_the_socket_and_exits_0() {
    let mut d = daemon();
    d.user_vm("a");
    d.start().unwrap();
    let mut w = Watch::new(d.socket());
    assert!(matches!(next(&mut w).await, WatchEvent::Reset { .. }));
    let status = d.stop();
    assert!(status.success(), "{status}\n{}", d.log());
    assert!(!d.socket().exists(), "the socket is removed");
    match next(&mut w).await {
        WatchEvent::Disconnected {
            error: Error::Daemon(b),
            ..
        } => assert_eq!(b.code, ErrorCode::ShuttingDown),
        WatchEvent::Disconnected {
            error: Error::Goodbye(_),
            ..
        } => {}
        e => panic!("{e:?}"),
    }
    let log = d.log();
    assert!(log.contains("stopping") && log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_is_refused() {
    let mut d = daemon();
    d.start().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vm-catalogd"))
        .args(["--socket"])
        .arg(d.socket())
        .args([
            "--no-partitions",
            "--apply",
            "none",
            "--builtin",
            "/nonexistent",
        ])
        .arg("--state-dir")
        .arg(d.tree().join("state2"))
        .arg("--vm-dir")
        .arg(d.tree().join("vm2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another vm-catalogd holds"),
        "{out:?}"
    );
    // The first one is untouched.
    Client::connect(d.socket())
        .await
        .unwrap()
        .ping(vec![])
        .await
        .unwrap();
}
