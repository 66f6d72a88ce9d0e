//! Connections: the handshake, bad datagrams, limits, peers that stop
//! reading.

use std::time::Duration;

use tokio_seqpacket::UnixSeqpacket;
use vm_catalog::Client;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;
use vm_catalogd::rpc::Limits;

use crate::server::{Server, hello_as, many, raw, recv_frame};

#[tokio::test]
async fn garbage_empty_and_oversized_datagrams_close_only_that_connection() {
    let srv = Server::start(Limits::default(), None).await;
    srv.publish(many(2));
    let good = Client::connect(&srv.path).await.unwrap();
    // Garbage after the handshake: a protocol error, then close.
    let (s, _) = raw(&srv.path).await;
    s.send(b"this is not a frame").await.unwrap();
    let (h, body) = recv_frame(&s).await;
    assert_eq!(h.kind, FrameKind::Error);
    let e: ErrorBody = codec::decode(&body, Compat::Exact).unwrap();
    assert_eq!(e.code, ErrorCode::ProtocolViolation);
    let mut buf = [0u8; 64];
    assert_eq!(s.recv(&mut buf).await.unwrap().bytes_read(), 0, "closed");
    // An empty datagram reads as EOF: the server closes.
    let (s, _) = raw(&srv.path).await;
    s.send(&[]).await.unwrap();
    assert_eq!(s.recv(&mut buf).await.unwrap().bytes_read(), 0);
    // Larger than the negotiated maximum: FrameTooLarge, then close.
    let (s, w) = raw(&srv.path).await;
    s.send(&vec![0u8; w.max_frame as usize + 100])
        .await
        .unwrap();
    let (_, body) = recv_frame(&s).await;
    let e: ErrorBody = codec::decode(&body, Compat::Exact).unwrap();
    assert_eq!(e.code, ErrorCode::FrameTooLarge);
    assert_eq!(e.max_frame, Some(w.max_frame));
    // Garbage instead of Hello.
    let s = UnixSeqpacket::connect(&srv.path).await.unwrap();
    s.send(&[0xff; 40]).await.unwrap();
    let (_, body) = recv_frame(&s).await;
    assert_eq!(
        codec::decode::<ErrorBody>(&body, Compat::Exact)
            .unwrap()
            .code,
        ErrorCode::ProtocolViolation
    );
    // The well-behaved client never noticed.
    assert_eq!(good.list_vms(false, None).await.unwrap().vms.len(), 2);
    srv.stop().await;
}

/// On tokio's paused clock (the timeout is tokio's): the other client's
/// handshake and call take no time however loaded the machine is, and the
/// silent one is refused exactly at the timeout.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_says_hello_times_out_and_others_are_served() {
    const HANDSHAKE: Duration = Duration::from_millis(300);
    let limits = Limits {
        handshake_timeout: HANDSHAKE,
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    let silent = UnixSeqpacket::connect(&srv.path).await.unwrap();
    let connected = tokio::time::Instant::now();
    let c = Client::connect(&srv.path).await.unwrap();
    c.ping(vec![]).await.unwrap();
    let (h, body) = recv_frame(&silent).await;
    assert_eq!(
        connected.elapsed(),
        HANDSHAKE,
        "refused exactly at the timeout"
    );
    assert_eq!(h.kind, FrameKind::Error);
    assert_eq!(
        codec::decode::<ErrorBody>(&body, Compat::Exact)
            .unwrap()
            .code,
        ErrorCode::Timeout
    );
    srv.stop().await;
}

#[tokio::test]
async fn unsupported_versions_are_refused_with_the_server_range() {
    let srv = Server::start(Limits::default(), None).await;
    let s = UnixSeqpacket::connect(&srv.path).await.unwrap();
    let hello = Hello {
        client: "future".into(),
        versions: VersionRange { min: 7, max: 9 },
        max_frame: DEFAULT_MAX_FRAME,
        features: Features::default(),
    };
    s.send(&message::hello(&hello).unwrap()).await.unwrap();
    let (_, body) = recv_frame(&s).await;
    let e: ErrorBody = codec::decode(&body, Compat::Exact).unwrap();
    assert_eq!(e.code, ErrorCode::UnsupportedVersion);
    assert_eq!(e.supported, Some(SUPPORTED_VERSIONS));
    srv.stop().await;
}

#[tokio::test]
async fn connection_limits_refuse_with_busy() {
    let Some(()) = vm_catalog_tests::require_root("connecting as another uid") else {
        return;
    };
    let limits = Limits {
        max_connections_per_uid: 2,
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    let (a, w) = hello_as(&srv.path, 1000).await;
    w.unwrap();
    let (_b, w) = hello_as(&srv.path, 1000).await;
    w.unwrap();
    let (_, refused) = hello_as(&srv.path, 1000).await;
    let e = refused.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::Busy, "too many connections")
    );
    // Root is not bound by the per-uid limit.
    let _root: Vec<Client> = clients(&srv.path, 3).await;
    drop(a);
    let c = Client::connect(&srv.path).await.unwrap();
    for _ in 0..3000 {
        if c.info().await.unwrap().connections == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, w) = hello_as(&srv.path, 1000).await;
    w.expect("a slot given back is free again");
    srv.stop().await;
}

async fn clients(path: &std::path::Path, n: usize) -> Vec<Client> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Client::connect(path).await.unwrap());
    }
    v
}

/// Regression (review): a client that stopped reading held the read loop
/// of its connection (and with it the daemon's shutdown) forever.
///
/// On tokio's paused clock: the send deadline is tokio's, and a send that
/// waits 200 ms then means a full socket, not a slow machine.
#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_cut_off_and_shutdown_is_not_held_up() {
    let limits = Limits {
        send_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    let (s, w) = raw(&srv.path).await;
    // Pings with large payloads, never read: the socket's queue fills.
    let payload = vec![0u8; w.max_frame as usize - 200];
    let mut sent = 0;
    for id in 1..=64u32 {
        let f = message::request(
            id,
            &Ping {
                payload: payload.clone(),
            },
            w.max_frame,
        )
        .unwrap();
        if tokio::time::timeout(Duration::from_millis(200), s.send(&f))
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    // Others are still served meanwhile, and see the stalled peer go: the
    // daemon disconnects it, and then counts only the new connection.
    let c = Client::connect(&srv.path).await.unwrap();
    c.ping(vec![1]).await.unwrap();
    let mut connections = 0;
    for _ in 0..3000 {
        connections = c.info().await.unwrap().connections;
        if connections == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(connections, 1, "the stalled peer is disconnected");
    // The stalled peer finds the replies sent before the cut, then the end
    // of the connection: not a reply to every ping it sent.
    let mut buf = vec![0u8; w.max_frame as usize + 1];
    let mut replies = 0;
    loop {
        let received = tokio::time::timeout(Duration::from_secs(10), s.recv(&mut buf))
            .await
            .expect("the connection ends instead of hanging");
        let n = match received {
            Ok(r) => r.bytes_read(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("{e}"),
        };
        if n == 0 {
            break;
        }
        let f = decode_frame(&buf[..n], w.max_frame).unwrap();
        assert_eq!(f.header.kind, FrameKind::Reply);
        replies += 1;
    }
    assert!(replies < sent, "{replies} replies to {sent} pings");
    // The daemon stops promptly.
    tokio::time::timeout(Duration::from_secs(5), srv.stop())
        .await
        .expect("stopped in time");
}
