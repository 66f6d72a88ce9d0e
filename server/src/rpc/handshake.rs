//! The handshake: read the `Hello`, negotiate, answer `Welcome`; or answer
//! a connection-level error and close. Also the refusal of a connection
//! over the limits, which answers the same way before any handshake.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::{
    ErrorBody, ErrorCode, FrameKind, HANDSHAKE_MAX_FRAME, Hello, MAX_CLIENT_NAME, PROTOCOL_VERSION,
    SUPPORTED_VERSIONS, Welcome, decode_frame, message, negotiate_max_frame,
};

use super::ctx::Ctx;
use super::error::ConnError;
use super::peer::Peer;
use super::send::{Conn, Negotiated};

/// How long a refused connection may take to send its `Hello`.
const REFUSAL_WAIT: Duration = Duration::from_millis(200);

/// How long a connection-level error may wait for a peer that does not read.
const CONN_ERROR_WAIT: Duration = Duration::from_secs(1);

/// Reads `Hello` and answers `Welcome`: the connection, or `None` once a
/// failure was answered (or the peer left).
pub async fn handshake(socket: UnixSeqpacket, peer: Arc<Peer>, ctx: &Ctx) -> Option<Conn> {
    let hello = match read_hello(&socket, ctx).await {
        Ok(Some(hello)) => hello,
        Ok(None) => return None,
        Err(e) => {
            send_conn_error(&socket, &report(ctx, &e)).await;
            return None;
        }
    };
    let Some(version) = SUPPORTED_VERSIONS.negotiate(hello.versions) else {
        let e = ConnError::UnsupportedVersion {
            client: hello.versions,
        };
        send_conn_error(&socket, &report(ctx, &e)).await;
        return None;
    };
    let welcome = Welcome {
        version,
        server: ctx.server.version.clone(),
        epoch: ctx.hub.epoch(),
        max_frame: negotiate_max_frame(hello.max_frame, ctx.limits.max_frame),
        features: ctx.server.features.intersect(hello.features),
        supported: SUPPORTED_VERSIONS,
    };
    let frame = message::welcome(&welcome).ok()?;
    tokio::time::timeout(ctx.limits.send_timeout, socket.send(&frame))
        .await
        .ok()?
        .ok()?;
    tracing::debug!(client = %hello.client.escape_debug(), version, max_frame = welcome.max_frame, "welcome");
    let tenant = ctx.tenant(&peer);
    let negotiated = Negotiated {
        version,
        max_frame: welcome.max_frame,
        compat: Compat::between(PROTOCOL_VERSION, hello.versions.max),
    };
    Some(Conn::new(
        socket,
        peer,
        tenant,
        negotiated,
        ctx.replies.clone(),
        ctx.limits.send_timeout,
    ))
}

/// The client's `Hello`; `None` if the peer left or the socket failed.
async fn read_hello(socket: &UnixSeqpacket, ctx: &Ctx) -> Result<Option<Hello>, ConnError> {
    let mut buf = vec![0u8; HANDSHAKE_MAX_FRAME as usize + 1];
    let received = tokio::time::timeout(ctx.limits.handshake_timeout, socket.recv(&mut buf)).await;
    let info = match received {
        Err(_) => return Err(ConnError::NoHello),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "receive failed");
            return Ok(None);
        }
        Ok(Ok(info)) => info,
    };
    let n = info.bytes_read();
    if n == 0 {
        return Ok(None);
    }
    if info.truncated() || n > HANDSHAKE_MAX_FRAME as usize {
        return Err(ConnError::HelloTooLarge);
    }
    let frame = decode_frame(&buf[..n], HANDSHAKE_MAX_FRAME).map_err(ConnError::BadFrame)?;
    let h = frame.header;
    if h.kind != FrameKind::Hello {
        return Err(ConnError::ExpectedHello(h.kind));
    }
    if h.call_id != 0 || h.method != 0 {
        return Err(ConnError::HelloNotConnectionLevel {
            method: h.method,
            call_id: h.call_id,
        });
    }
    Ok(Some(decode_hello(frame.body)?))
}

/// Decodes a `Hello` body as strictly as the peer's newest version allows
/// (`docs/protocol.md` §8): exactly between equal versions; a newer peer's
/// trailing fields ignored; an older peer's missing ones read as zeros.
/// The version is in the body, so it is read leniently first, then the body
/// again in the mode that version implies.
fn decode_hello(body: &[u8]) -> Result<Hello, ConnError> {
    let lenient: Hello = codec::decode(body, Compat::Record).map_err(ConnError::BadHello)?;
    let compat = Compat::between(PROTOCOL_VERSION, lenient.versions.max);
    let hello: Hello = codec::decode(body, compat).map_err(ConnError::BadHello)?;
    if hello.client.len() > MAX_CLIENT_NAME {
        return Err(ConnError::ClientNameTooLong);
    }
    Ok(hello)
}

/// Refuses a connection over the limits: reads the `Hello` (briefly),
/// answers a connection-level `Busy`, then closes. `permit` counts it among
/// the refusals in progress.
pub async fn refuse(
    socket: UnixSeqpacket,
    peer: Peer,
    ctx: Arc<Ctx>,
    permit: OwnedSemaphorePermit,
) {
    if ctx.log_limit.allow() {
        tracing::warn!(
            uid = peer.uid,
            pid = peer.pid,
            "connection refused: too many connections"
        );
    }
    // Read the Hello first: closing a socket with unread data resets the
    // peer's connection, and it would never see the answer.
    let mut buf = vec![0u8; HANDSHAKE_MAX_FRAME as usize + 1];
    let _ = tokio::time::timeout(REFUSAL_WAIT, socket.recv(&mut buf)).await;
    send_conn_error(&socket, &ConnError::TooManyConnections.to_wire()).await;
    drop(permit);
}

/// Logs a connection-level failure (protocol violations at warn, rate
/// limited: a client can trigger them) and gives its wire body.
pub fn report(ctx: &Ctx, e: &ConnError) -> ErrorBody {
    let body = e.to_wire();
    if body.code == ErrorCode::ProtocolViolation {
        if ctx.log_limit.allow() {
            tracing::warn!(what = %e, "protocol violation");
        }
    } else {
        tracing::debug!(error = %e, "connection failed");
    }
    body
}

/// Sends a connection-level error before (or instead of) a handshake,
/// never waiting long on a peer that does not read.
async fn send_conn_error(socket: &UnixSeqpacket, body: &ErrorBody) {
    let Ok(frame) = message::error(0, 0, body, HANDSHAKE_MAX_FRAME) else {
        return;
    };
    let _ = tokio::time::timeout(CONN_ERROR_WAIT, socket.send(&frame)).await;
}
