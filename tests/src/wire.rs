//! Raw protocol connections, for tests that send what no well-behaved
//! client would (garbage, empty or oversized datagrams, stalled readers).

use std::path::Path;
use std::time::Duration;

use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::{
    ErrorBody, Features, FrameKind, HANDSHAKE_MAX_FRAME, Header, Hello, LIMIT_MAX_FRAME,
    MIN_MAX_FRAME, SUPPORTED_VERSIONS, Welcome, decode_frame, message,
};

/// Connects and completes the handshake (asking for the smallest frame size).
pub async fn connect(path: &Path) -> (UnixSeqpacket, Welcome) {
    let s = UnixSeqpacket::connect(path).await.expect("connect");
    let hello = Hello {
        client: "raw".into(),
        versions: SUPPORTED_VERSIONS,
        max_frame: MIN_MAX_FRAME,
        features: Features::default(),
    };
    s.send(&message::hello(&hello).expect("encode Hello"))
        .await
        .expect("send Hello");
    let mut buf = vec![0; HANDSHAKE_MAX_FRAME as usize + 1];
    let n = s.recv(&mut buf).await.expect("receive").bytes_read();
    let f = decode_frame(&buf[..n], HANDSHAKE_MAX_FRAME).expect("a frame");
    assert_eq!(f.header.kind, FrameKind::Welcome);
    (s, codec::decode(f.body, Compat::Exact).expect("a Welcome"))
}

/// How long a frame the test expects may take: a guard against a hang, not
/// a measurement, so long enough for a machine under heavy load.
const FRAME_WAIT: Duration = Duration::from_secs(60);

/// Receives one frame (at most [`FRAME_WAIT`]); panics on close.
pub async fn recv_frame(s: &UnixSeqpacket) -> (Header, Vec<u8>) {
    let mut buf = vec![0; LIMIT_MAX_FRAME as usize + 1];
    let n = tokio::time::timeout(FRAME_WAIT, s.recv(&mut buf))
        .await
        .expect("a frame in time")
        .expect("receive")
        .bytes_read();
    assert!(n > 0, "connection closed");
    let f = decode_frame(&buf[..n], LIMIT_MAX_FRAME).expect("a frame");
    (f.header, f.body.to_vec())
}

/// Receives one frame that must be an `Error`, and decodes it.
pub async fn recv_error(s: &UnixSeqpacket) -> ErrorBody {
    let (h, body) = recv_frame(s).await;
    assert_eq!(h.kind, FrameKind::Error, "expected an Error frame");
    codec::decode(&body, Compat::Exact).expect("an ErrorBody")
}
