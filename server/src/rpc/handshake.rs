//! The handshake: read the `Hello`, negotiate, answer `Welcome`; or answer
//! a connection-level error and close. Also the refusal of a connection
//! over the limits, which answers the same way before any handshake.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::{
    ErrorBody, ErrorCode, FrameKind, HANDSHAKE_MAX_FRAME, Hello, MAX_CLIENT_NAME, PROTOCOL_VERSION,
    SUPPORTED_VERSIONS, Welcome, decode_frame, message, negotiate_max_frame,
};

use super::ctx::Ctx;
use super::error::ConnError;
use super::peer::Peer;
use super::send::{Conn, Negotiated};
use super::transport::{FrameRx, FrameTx, Incoming, Transport};

/// How long a refused connection may take to send its `Hello`.
const REFUSAL_WAIT: Duration = Duration::from_millis(200);

/// How long a connection-level error may wait for a peer that does not read.
const CONN_ERROR_WAIT: Duration = Duration::from_secs(1);

/// Where an admitted connection draws from: its tenant and the reply
/// ledger its frames claim bytes from (the host's, or its VM's own).
#[derive(Debug, Clone)]
pub(super) struct Draws {
    /// Whose share the peer draws from.
    pub(super) tenant: super::admission::Tenant,
    /// The reply bytes.
    pub(super) replies: Arc<super::Ledger>,
}

/// Reads `Hello` (through `rx`, which then reads the rest of the
/// connection) and answers `Welcome` (through `tx`, which the connection
/// then keeps): the connection, or `None` once a failure was answered (or
/// the peer left).
pub(super) async fn handshake(
    tx: Box<dyn FrameTx>,
    rx: &mut impl FrameRx,
    peer: Arc<Peer>,
    draws: Draws,
    ctx: &Ctx,
) -> Option<Conn> {
    let hello = match read_hello(rx, ctx).await {
        Ok(Some(hello)) => hello,
        Ok(None) => return None,
        Err(e) => {
            send_conn_error(&*tx, &report(ctx, &e)).await;
            return None;
        }
    };
    let Some(version) = SUPPORTED_VERSIONS.negotiate(hello.versions) else {
        let e = ConnError::UnsupportedVersion {
            client: hello.versions,
        };
        send_conn_error(&*tx, &report(ctx, &e)).await;
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
    tokio::time::timeout(ctx.limits.send_timeout, tx.send(&frame))
        .await
        .ok()?
        .ok()?;
    tracing::debug!(client = %hello.client.escape_debug(), version, max_frame = welcome.max_frame, "welcome");
    let negotiated = Negotiated {
        version,
        max_frame: welcome.max_frame,
        compat: Compat::between(PROTOCOL_VERSION, hello.versions.max),
    };
    Some(Conn::new(
        tx,
        peer,
        draws.tenant,
        negotiated,
        draws.replies,
        ctx.limits.send_timeout,
    ))
}

/// The client's `Hello`; `None` if the peer left or the socket failed.
async fn read_hello(rx: &mut impl FrameRx, ctx: &Ctx) -> Result<Option<Hello>, ConnError> {
    let received =
        tokio::time::timeout(ctx.limits.handshake_timeout, rx.recv(HANDSHAKE_MAX_FRAME)).await;
    let bytes = match received {
        Err(_) => return Err(ConnError::NoHello),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "receive failed");
            return Ok(None);
        }
        Ok(Ok(Incoming::Eof | Incoming::Cut)) => return Ok(None),
        Ok(Ok(Incoming::TooLarge(_))) => return Err(ConnError::HelloTooLarge),
        Ok(Ok(Incoming::Garbage(e))) => return Err(ConnError::BadStream(e)),
        Ok(Ok(Incoming::Frame(bytes))) => bytes,
    };
    let frame = decode_frame(&bytes, HANDSHAKE_MAX_FRAME).map_err(ConnError::BadFrame)?;
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
pub(super) async fn refuse<T: Transport>(
    socket: T,
    peer: Peer,
    ctx: Arc<Ctx>,
    permit: OwnedSemaphorePermit,
) {
    if ctx.log_limit.allow() {
        tracing::warn!(
            uid = peer.uid,
            pid = peer.pid,
            vm = peer.vm_name().map(|n| n.as_str()),
            "connection refused: too many connections"
        );
    }
    // Read the Hello first: closing a socket with unread data resets the
    // peer's connection, and it would never see the answer.
    let (tx, mut rx) = socket.split();
    let _ = tokio::time::timeout(REFUSAL_WAIT, rx.recv(HANDSHAKE_MAX_FRAME)).await;
    send_conn_error(&tx, &ConnError::TooManyConnections.to_wire()).await;
    drop(permit);
}

/// Logs a connection-level failure (protocol violations at warn, rate
/// limited: a client can trigger them) and gives its wire body.
pub(super) fn report(ctx: &Ctx, e: &ConnError) -> ErrorBody {
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
async fn send_conn_error(tx: &dyn FrameTx, body: &ErrorBody) {
    let Ok(frame) = message::error(0, 0, body, HANDSHAKE_MAX_FRAME) else {
        return;
    };
    let _ = tokio::time::timeout(CONN_ERROR_WAIT, tx.send(&frame)).await;
}
