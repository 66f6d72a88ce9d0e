//! What `docs/protocol.md` says the daemon does where a client written from
//! it alone could not tell (issue 22, item 8), pinned against the real
//! daemon: a `Hello` without `versions.max` or with `min > max`, what
//! `Info.connections` counts, and root when every slot is held.

use std::os::fd::OwnedFd;

use vm_catalog_tests::peers::{Creds, connect_as, hello as hello_fd, recv as recv_fd};

use super::*;

/// Sends a `Hello` frame with `body` as the first frame of a connection,
/// and reads the answer: the error body, and whether the daemon then closed
/// the connection.
async fn answer_to_hello(socket: &std::path::Path, body: &[u8]) -> (ErrorBody, bool) {
    let s = UnixSeqpacket::connect(socket).await.unwrap();
    let frame = frame_with_body(FrameKind::Hello, 0, 0, body, HANDSHAKE_MAX_FRAME).unwrap();
    s.send(&frame).await.unwrap();
    let e = read_error(&s).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), s.recv(&mut buf))
        .await
        .expect("the daemon closes after a connection-level error")
        .map(|r| r.bytes_read())
        .unwrap_or(0);
    (e, n == 0)
}

#[tokio::test]
async fn a_hello_without_versions_max_or_with_min_over_max_is_unsupported_version() {
    let mut d = daemon();
    d.start().unwrap();
    let whole = codec::encode(&Hello {
        client: "spec".into(),
        versions: VersionRange { min: 2, max: 1 },
        max_frame: MIN_MAX_FRAME,
        features: Features::default(),
    })
    .unwrap();
    // client "spec" is 5 bytes, then min (1 byte), max (1 byte), …
    let after_min = &whole[..6];
    let after_client = &whole[..5];
    for (what, body) in [
        ("min > max", &whole[..]),
        ("no versions.max", after_min),
        ("no versions at all", after_client),
    ] {
        let (e, closed) = answer_to_hello(&d.socket(), body).await;
        assert_eq!(e.code, ErrorCode::UnsupportedVersion, "{what}: {e:?}");
        assert_eq!(e.supported, Some(SUPPORTED_VERSIONS), "{what}");
        assert!(closed, "{what}: the connection closes");
    }
    // Cut inside a varint (min's continuation bit set): not a version
    // question but a body that does not decode.
    let mut cut = whole[..5].to_vec();
    cut.push(0x81);
    let (e, closed) = answer_to_hello(&d.socket(), &cut).await;
    assert_eq!(e.code, ErrorCode::InvalidRequest, "{e:?}");
    assert!(closed);
    // The daemon still serves well-formed clients.
    Client::connect(d.socket()).await.unwrap();
}

#[tokio::test]
async fn info_connections_counts_the_host_connections_holding_a_slot() {
    let mut d = daemon();
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    eventually("only the asking connection counted", async || {
        c.call(&GetInfo::default()).await.unwrap().connections == 1
    })
    .await;
    let mut raws = Vec::new();
    for _ in 0..3 {
        raws.push(raw(&d.socket()).await);
    }
    // A connection in its handshake holds a slot too.
    let silent = UnixSeqpacket::connect(d.socket()).await.unwrap();
    eventually("five connections counted", async || {
        c.call(&GetInfo::default()).await.unwrap().connections == 5
    })
    .await;
    drop(raws.pop());
    drop(silent);
    eventually("three connections counted", async || {
        c.call(&GetInfo::default()).await.unwrap().connections == 3
    })
    .await;
}

/// A blocking connection as `uid`, through its handshake.
fn admitted_as(socket: &std::path::Path, uid: u32) -> OwnedFd {
    let fd = connect_as(socket, &Creds::user(uid)).unwrap();
    hello_fd(&fd).unwrap_or_else(|e| panic!("uid {uid}: {e}"));
    fd
}

/// Whether a connection through its handshake still answers a `Ping`.
fn answers(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let frame = message::request(1, &Ping { payload: vec![] }, MIN_MAX_FRAME).unwrap();
    // SAFETY: send on a socket we own, with a valid buffer.
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    sent > 0 && matches!(recv_fd(fd), Ok((FrameKind::Reply, _)))
}

#[test]
fn root_is_refused_busy_only_when_every_slot_is_held_and_evicts_no_one() {
    if vm_catalog_tests::require_root("connecting as other uids").is_none() {
        return;
    }
    let mut d = daemon();
    // 4 slots: 2 kept for root and the admin group, 2 for users.
    d.arg("--max-connections").arg("4");
    d.start().unwrap();
    let socket = d.socket();
    let users = [admitted_as(&socket, 1000), admitted_as(&socket, 1001)];
    let root: Vec<OwnedFd> = (0..2).map(|_| admitted_as(&socket, 0)).collect();
    // Every slot is held: root is refused like anyone.
    let refused = connect_as(&socket, &Creds::user(0)).unwrap();
    let e = hello_fd(&refused).unwrap_err();
    assert!(e.to_string().contains("busy"), "{e}");
    // No user gave way for it.
    for (i, u) in users.iter().enumerate() {
        assert!(answers(u), "user connection {i} still served");
    }
    // A slot given back is root's again, once the daemon has seen the
    // connection close.
    drop(root);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fd = connect_as(&socket, &Creds::user(0)).unwrap();
        match hello_fd(&fd) {
            Ok(_) => break,
            Err(e) => {
                assert!(e.to_string().contains("busy"), "{e}");
                assert!(Instant::now() < deadline, "root never got a slot back");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
