//! A newer server, as `docs/protocol.md` §4 ("Reading the server's answer")
//! and §8.3 say a client reads it: its `Welcome`, or an `Error` in its
//! place, by the record rules (fields this client does not know are
//! ignored); after the `Welcome`, its bodies with trailing fields this
//! client does not know, because `Welcome.supported.max` is newer.

use vm_catalog::{Client, Error};
use vm_catalog_protocol::{
    DEFAULT_MAX_FRAME, Epoch, ErrorBody, ErrorCode, Features, FrameKind, HANDSHAKE_MAX_FRAME,
    Method, PROTOCOL_VERSION, Ping, Pong, VersionRange, Welcome, codec, frame_with_body,
};

use super::fake::{Fake, Peer};
use super::in_time;

/// Fields a later version might append: a `u64` varint and a `String`.
const UNKNOWN_TAIL: &[u8] = &[0xac, 0x02, 0x03, b'n', b'e', b'w'];

fn with_tail<T: serde::Serialize>(body: &T) -> Vec<u8> {
    let mut b = codec::encode(body).unwrap();
    b.extend_from_slice(UNKNOWN_TAIL);
    b
}

fn newer() -> VersionRange {
    VersionRange {
        min: PROTOCOL_VERSION,
        max: PROTOCOL_VERSION + 1,
    }
}

/// Reads the `Hello` and answers a newer server's `Welcome`, with fields
/// this client does not know.
fn welcome_from_newer(peer: &mut Peer) {
    let (h, _) = peer.recv().expect("a Hello");
    assert_eq!(h.kind, FrameKind::Hello);
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        server: "newer".into(),
        epoch: Epoch(9),
        max_frame: DEFAULT_MAX_FRAME,
        features: Features::default(),
        supported: newer(),
    };
    let frame = frame_with_body(
        FrameKind::Welcome,
        0,
        0,
        &with_tail(&welcome),
        HANDSHAKE_MAX_FRAME,
    )
    .unwrap();
    peer.send(&frame);
}

#[tokio::test]
async fn a_newer_servers_welcome_reply_and_error_with_unknown_fields_are_read() {
    let fake = Fake::serve(|mut peer| {
        welcome_from_newer(&mut peer);
        // Answers the first Ping with a Pong with a tail, the second with
        // an Error with a tail.
        let (h, body) = peer.recv().expect("a Ping");
        let ping: Ping = codec::decode(&body, codec::Compat::Exact).unwrap();
        let pong = Pong {
            payload: ping.payload,
        };
        let reply = frame_with_body(
            FrameKind::Reply,
            Method::Ping.id(),
            h.call_id,
            &with_tail(&pong),
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        peer.send(&reply);
        let (h, _) = peer.recv().expect("a second Ping");
        let error = ErrorBody {
            code: ErrorCode::Internal,
            message: "from a newer server".into(),
            supported: None,
            max_frame: None,
        };
        let frame = frame_with_body(
            FrameKind::Error,
            Method::Ping.id(),
            h.call_id,
            &with_tail(&error),
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        peer.send(&frame);
        while peer.recv().is_some() {}
    });
    let client = in_time("connect", Client::connect_stream(&fake.path))
        .await
        .unwrap();
    assert_eq!(client.welcome().server, "newer");
    assert_eq!(client.welcome().supported, newer());
    assert_eq!(client.ping(vec![1, 2]).await.unwrap(), [1, 2]);
    match client.ping(vec![3]).await.unwrap_err() {
        Error::Daemon(b) => {
            assert_eq!(b.code, ErrorCode::Internal);
            assert_eq!(b.message, "from a newer server");
        }
        e => panic!("{e}"),
    }
    drop(client);
    fake.join();
}

#[tokio::test]
async fn a_newer_servers_unsupported_version_error_in_place_of_welcome_is_read() {
    let future = VersionRange {
        min: PROTOCOL_VERSION + 1,
        max: PROTOCOL_VERSION + 2,
    };
    let fake = Fake::serve(move |mut peer| {
        peer.recv().expect("a Hello");
        let error = ErrorBody {
            code: ErrorCode::UnsupportedVersion,
            message: "only newer versions".into(),
            supported: Some(future),
            max_frame: None,
        };
        let frame = frame_with_body(
            FrameKind::Error,
            0,
            0,
            &with_tail(&error),
            HANDSHAKE_MAX_FRAME,
        )
        .unwrap();
        peer.send(&frame);
    });
    let e = in_time("the refusal", Client::connect_stream(&fake.path))
        .await
        .unwrap_err();
    match e {
        Error::Incompatible { server, .. } => assert_eq!(server.0, Some(future)),
        e => panic!("{e}"),
    }
    fake.join();
}
