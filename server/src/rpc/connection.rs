//! One connection: the handshake, then the read loop that turns frames into
//! calls.
//!
//! Quick unary calls (`Ping`, `GetInfo`, `GetVm`, `ListSources`, `Cancel`)
//! run inline in the read loop: they only read the published snapshot. The
//! others (`ListVms`, `Rescan`, `Subscribe`) run in their own task, tracked by
//! call id so `Cancel` can reach them. A frame that makes the stream
//! untrustworthy (bad header, wrong kind, truncated) gets a connection-level
//! error and a close; a bad call gets an error for that call only.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_seqpacket::UnixSeqpacket;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::{
    ErrorBody, ErrorCode, FrameError, FrameKind, Goodbye, HANDSHAKE_MAX_FRAME, Hello,
    MAX_CLIENT_NAME, Method, PROTOCOL_VERSION, Request, RequestError, SUPPORTED_VERSIONS, Welcome,
    decode_frame, message, negotiate_max_frame,
};

use super::conn::Conn;
use super::error::CallError;
use super::peer::Peer;
use super::recv::{self, Datagram};
use super::service::{self, Call, CallService};
use super::{Admission, Ctx};

/// How long a stopping daemon waits for a connection's calls to send their
/// last frames before it drops them.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);

/// Serves one admitted connection to the end.
pub async fn run(socket: UnixSeqpacket, peer: Peer, ctx: Arc<Ctx>, admission: Admission) {
    let span = tracing::info_span!("conn", id = peer.conn_id, uid = peer.uid, pid = peer.pid);
    async move {
        tracing::debug!("connected");
        if let Some(conn) = handshake(socket, Arc::new(peer), &ctx).await {
            serve_calls(Arc::new(conn), &ctx).await;
        }
        tracing::debug!("disconnected");
        drop(admission);
    }
    .instrument(span)
    .await
}

/// How long a refused connection may take to send its `Hello`.
const REFUSAL_WAIT: Duration = Duration::from_millis(200);

/// Refuses a connection over the limits: reads the `Hello` (briefly),
/// answers a connection-level `Busy`, then closes. `permit` counts it among
/// the refusals in progress.
pub async fn refuse(
    socket: UnixSeqpacket,
    peer: Peer,
    ctx: Arc<Ctx>,
    permit: tokio::sync::OwnedSemaphorePermit,
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
    let body = ErrorBody::new(ErrorCode::Busy, "too many connections");
    let _ = send_conn_error(&socket, &body).await;
    drop(permit);
}

async fn send_conn_error(socket: &UnixSeqpacket, body: &ErrorBody) -> std::io::Result<()> {
    let frame = message::error(0, 0, body, HANDSHAKE_MAX_FRAME).map_err(std::io::Error::other)?;
    // Never wait long on a peer that does not read.
    match tokio::time::timeout(Duration::from_secs(1), socket.send(&frame)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Ok(()),
    }
}

fn violation(ctx: &Ctx, what: &str) -> ErrorBody {
    if ctx.log_limit.allow() {
        tracing::warn!(what, "protocol violation");
    }
    ErrorBody::new(ErrorCode::ProtocolViolation, what)
}

/// Reads `Hello` and answers `Welcome`, or an error and `None`.
async fn handshake(socket: UnixSeqpacket, peer: Arc<Peer>, ctx: &Ctx) -> Option<Conn> {
    let mut buf = vec![0u8; HANDSHAKE_MAX_FRAME as usize + 1];
    let received = tokio::time::timeout(ctx.limits.handshake_timeout, socket.recv(&mut buf)).await;
    let info = match received {
        Err(_) => {
            tracing::debug!("no Hello in time");
            let _ = send_conn_error(
                &socket,
                &ErrorBody::new(ErrorCode::Timeout, "no Hello in time"),
            )
            .await;
            return None;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "receive failed");
            return None;
        }
        Ok(Ok(info)) => info,
    };
    let n = info.bytes_read();
    if n == 0 {
        return None;
    }
    let refuse = |body: ErrorBody| {
        let socket = &socket;
        async move {
            let _ = send_conn_error(socket, &body).await;
            None
        }
    };
    if info.truncated() || n > HANDSHAKE_MAX_FRAME as usize {
        let mut body = ErrorBody::new(ErrorCode::FrameTooLarge, "Hello too large");
        body.max_frame = Some(HANDSHAKE_MAX_FRAME);
        return refuse(body).await;
    }
    let frame = match decode_frame(&buf[..n], HANDSHAKE_MAX_FRAME) {
        Ok(f) if f.header.kind == FrameKind::Hello => f,
        Ok(f) => {
            return refuse(violation(
                ctx,
                &format!("expected Hello, got {:?}", f.header.kind),
            ))
            .await;
        }
        Err(e) => return refuse(violation(ctx, &e.to_string())).await,
    };
    // The peer's version is not known yet: read Hello leniently both ways.
    let hello: Hello = match codec::decode(frame.body, Compat::Record) {
        Ok(h) => h,
        Err(e) => {
            return refuse(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("bad Hello: {e}"),
            ))
            .await;
        }
    };
    if hello.client.len() > MAX_CLIENT_NAME {
        return refuse(ErrorBody::new(
            ErrorCode::InvalidRequest,
            "client name too long",
        ))
        .await;
    }
    let Some(version) = SUPPORTED_VERSIONS.negotiate(hello.versions) else {
        let mut body = ErrorBody::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "client speaks versions {}..={}, server {}..={}",
                hello.versions.min,
                hello.versions.max,
                SUPPORTED_VERSIONS.min,
                SUPPORTED_VERSIONS.max
            ),
        );
        body.supported = Some(SUPPORTED_VERSIONS);
        return refuse(body).await;
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
    Some(Conn::new(
        socket,
        peer,
        version,
        welcome.max_frame,
        Compat::between(PROTOCOL_VERSION, hello.versions.max),
        ctx.limits.send_timeout,
    ))
}

/// Whether a method runs inline in the read loop.
fn is_quick(m: Method) -> bool {
    match m {
        Method::Ping | Method::GetInfo | Method::GetVm | Method::ListSources | Method::Cancel => {
            true
        }
        Method::ListVms | Method::Rescan | Method::Subscribe => false,
    }
}

enum Flow {
    Continue,
    Close,
}

async fn serve_calls(conn: Arc<Conn>, ctx: &Arc<Ctx>) {
    let mut svc = service::stack(ctx.clone());
    let mut tasks = JoinSet::new();
    let mut shutting_down = false;
    loop {
        let received = tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                shutting_down = true;
                break;
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            r = recv::recv(&conn.socket, conn.max_frame as usize) => r,
        };
        let flow = match received {
            Ok(Datagram::Eof) => break,
            Err(e) => {
                tracing::debug!(error = %e, "receive failed");
                break;
            }
            Ok(Datagram::TooLarge(_)) => {
                let _ = conn.error(0, 0, &too_large(conn.max_frame)).await;
                Flow::Close
            }
            // Sends within have a deadline: a peer that stops reading is
            // cut off and this loop ends, so shutdown never waits on it.
            Ok(Datagram::Frame(frame)) => on_frame(&conn, ctx, &mut svc, &mut tasks, &frame).await,
        };
        if let Flow::Close = flow {
            break;
        }
    }
    if shutting_down {
        // Calls see the shutdown themselves and end with `ShuttingDown`.
        let drained = tokio::time::timeout(GOODBYE_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
        }
        let goodbye = Goodbye {
            reason: "shutting down".into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            conn.send(message::goodbye(&goodbye, conn.max_frame)),
        )
        .await;
    } else {
        // The peer went away or broke the protocol: stop its calls.
        for token in conn.tokens() {
            token.cancel();
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

fn too_large(max_frame: u32) -> ErrorBody {
    let mut body = ErrorBody::new(ErrorCode::FrameTooLarge, "frame too large");
    body.max_frame = Some(max_frame);
    body
}

async fn on_frame(
    conn: &Arc<Conn>,
    ctx: &Arc<Ctx>,
    svc: &mut CallService,
    tasks: &mut JoinSet<()>,
    datagram: &[u8],
) -> Flow {
    let frame = match decode_frame(datagram, conn.max_frame) {
        Ok(f) => f,
        Err(FrameError::TooLarge { max, .. }) => {
            let _ = conn.error(0, 0, &too_large(max)).await;
            return Flow::Close;
        }
        Err(e) => {
            let _ = conn.error(0, 0, &violation(ctx, &e.to_string())).await;
            return Flow::Close;
        }
    };
    let h = frame.header;
    let refuse = |what: String| async move {
        let _ = conn.error(0, 0, &violation(ctx, &what)).await;
        Flow::Close
    };
    if h.kind != FrameKind::Request {
        return refuse(format!("unexpected {:?} frame", h.kind)).await;
    }
    if h.call_id == 0 {
        return refuse("call id 0 is reserved".into()).await;
    }
    if conn.is_in_flight(h.call_id) {
        return refuse(format!("call id {} is already in flight", h.call_id)).await;
    }
    let request = match Request::decode(h.method, frame.body, conn.compat) {
        Ok(r) => r,
        Err(e) => {
            let code = match e {
                RequestError::UnknownMethod(_) => ErrorCode::UnknownMethod,
                RequestError::Invalid { .. } => ErrorCode::InvalidRequest,
            };
            tracing::debug!(call_id = h.call_id, error = %e, "bad request");
            let body = ErrorBody::new(code, e.to_string());
            return answered(conn.error(h.call_id, h.method, &body).await);
        }
    };
    let method = request.method();
    // A debug span: no event at info level or above happens inside a call,
    // and an enabled span costs every call the formatting of its fields
    // (about 1-2 us of a 16 us Ping on a 2-CPU VM; see docs/benchmarks.md).
    let span = tracing::debug_span!("call", call_id = h.call_id, method = method.name());
    let cancel = CancellationToken::new();
    let call = Call {
        conn: conn.clone(),
        call_id: h.call_id,
        request,
        cancel: cancel.clone(),
    };
    if is_quick(method) {
        let result = service::call(svc, call).instrument(span.clone()).await;
        return finish(conn, h.call_id, method, result)
            .instrument(span)
            .await;
    }
    // The in-flight limit is enforced here, before a task exists: a peer
    // cannot make the daemon hold more than this many tasks for it.
    if conn.in_flight() >= ctx.limits.calls_per_connection {
        let body = ErrorBody::new(
            ErrorCode::Busy,
            "too many calls in flight on this connection",
        );
        return answered(conn.error(h.call_id, h.method, &body).await);
    }
    let serial = conn
        .register(h.call_id, cancel)
        .expect("checked above: not in flight");
    let mut svc = svc.clone();
    let conn = conn.clone();
    tasks.spawn(
        async move {
            let result = service::call(&mut svc, call).await;
            let _ = finish(&conn, h.call_id, method, result).await;
            conn.release(h.call_id, serial);
        }
        .instrument(span),
    );
    Flow::Continue
}

/// `Continue` when an answer went out, `Close` when the peer is gone.
fn answered(sent: Result<(), CallError>) -> Flow {
    match sent {
        Ok(()) => Flow::Continue,
        Err(_) => Flow::Close,
    }
}

/// Reports a call's failure to the peer.
async fn finish(conn: &Conn, call_id: u32, method: Method, result: Result<(), CallError>) -> Flow {
    match result {
        Ok(()) => Flow::Continue,
        Err(e) if e.is_reportable() => {
            tracing::debug!(error = %e, "call failed");
            match conn.error(call_id, method.id(), &e.to_wire()).await {
                Ok(()) => Flow::Continue,
                Err(_) => Flow::Close,
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "call failed");
            Flow::Close
        }
    }
}
