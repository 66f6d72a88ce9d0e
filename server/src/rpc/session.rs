//! One connection from its handshake to its close: the read loop that
//! turns frames into calls.
//!
//! Each call runs where its [`policy`] row says: quick unary calls inline in
//! the read loop (they only read the published snapshot), streams in their
//! own task, tracked by call id so `Cancel` can reach them and counted
//! against the per-connection limit before the task exists. A frame that
//! makes the stream untrustworthy (bad header, wrong kind, truncated) gets a
//! connection-level error and a close; a bad call gets an error for that
//! call only. A connection with no call in flight that sends nothing for
//! [`super::Limits::idle_timeout`] is closed with a `Goodbye`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_seqpacket::UnixSeqpacket;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vm_catalog_protocol::{FrameKind, Header, Method, Request, RequestError, decode_frame};

use super::admission::Claim;
use super::ctx::Ctx;
use super::error::{CallError, ConnError};
use super::handshake::{handshake, report};
use super::peer::Peer;
use super::policy::{self, Runs};
use super::recv::{self, Datagram};
use super::send::Conn;
use super::service::{self, Call, CallService};

/// How long a stopping daemon waits for a connection's calls to send their
/// last frames before it drops them.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);

/// How long a `Goodbye` may wait for a peer that does not read.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// What an idle connection is told as it is closed.
pub const IDLE_GOODBYE: &str = "idle: no call for too long";

/// Serves one admitted connection (holding `slot`) to the end.
pub async fn run(socket: UnixSeqpacket, peer: Peer, ctx: Arc<Ctx>, slot: Claim) {
    let span = tracing::info_span!("conn", id = peer.conn_id, uid = peer.uid, pid = peer.pid);
    async move {
        tracing::debug!("connected");
        if let Some(conn) = handshake(socket, Arc::new(peer), &ctx).await {
            serve_calls(Arc::new(conn), &ctx).await;
        }
        tracing::debug!("disconnected");
        drop(slot);
        ctx.connection_ended();
    }
    .instrument(span)
    .await
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
            // Idle: no call in flight (a subscription is one) and nothing
            // received for that long. The timer starts over at every frame
            // and every call that ends.
            _ = tokio::time::sleep(ctx.limits.idle_timeout), if tasks.is_empty() => {
                tracing::debug!("idle, closing");
                let _ = tokio::time::timeout(GOODBYE_WAIT, conn.goodbye(IDLE_GOODBYE)).await;
                break;
            }
            r = recv::recv(&conn.socket, conn.max_frame as usize) => r,
        };
        let flow = match received {
            Ok(Datagram::Eof) => break,
            Err(e) => {
                tracing::debug!(error = %e, "receive failed");
                break;
            }
            Ok(Datagram::TooLarge(_)) => {
                let max = conn.max_frame;
                close(&conn, ctx, ConnError::FrameTooLarge { max }).await
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
        let _ = tokio::time::timeout(GOODBYE_WAIT, conn.goodbye("shutting down")).await;
    } else {
        // The peer went away or broke the protocol: stop its calls.
        conn.calls.cancel_all();
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Answers a connection-level error; the connection then closes.
async fn close(conn: &Conn, ctx: &Ctx, e: ConnError) -> Flow {
    let _ = conn.error(0, 0, &report(ctx, &e)).await;
    Flow::Close
}

/// The header and request of a datagram, or why the connection must close.
fn decode(
    conn: &Conn,
    datagram: &[u8],
) -> Result<(Header, Result<Request, RequestError>), ConnError> {
    let frame = decode_frame(datagram, conn.max_frame).map_err(ConnError::of_frame)?;
    let h = frame.header;
    if h.kind != FrameKind::Request {
        return Err(ConnError::UnexpectedFrame(h.kind));
    }
    if h.call_id == 0 {
        return Err(ConnError::ReservedCallId);
    }
    if conn.calls.contains(h.call_id) {
        return Err(ConnError::CallIdInFlight(h.call_id));
    }
    Ok((h, Request::decode(h.method, frame.body, conn.compat)))
}

async fn on_frame(
    conn: &Arc<Conn>,
    ctx: &Arc<Ctx>,
    svc: &mut CallService,
    tasks: &mut JoinSet<()>,
    datagram: &[u8],
) -> Flow {
    let (h, request) = match decode(conn, datagram) {
        Ok(decoded) => decoded,
        Err(e) => return close(conn, ctx, e).await,
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(call_id = h.call_id, error = %e, "bad request");
            let body = CallError::BadRequest(e).to_wire();
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
    match policy::of(method).runs {
        Runs::Inline => {
            let result = service::call(svc, call).instrument(span.clone()).await;
            finish(conn, h.call_id, method, result)
                .instrument(span)
                .await
        }
        Runs::Task => {
            // The in-flight limit, before a task exists: a peer cannot make
            // the daemon hold more than this many tasks for it.
            if conn.calls.len() >= ctx.limits.calls_per_connection {
                let body = CallError::Busy.to_wire();
                return answered(conn.error(h.call_id, h.method, &body).await);
            }
            let serial = conn
                .calls
                .register(h.call_id, cancel)
                .expect("checked in decode: not in flight");
            let mut svc = svc.clone();
            let conn = conn.clone();
            tasks.spawn(
                async move {
                    let result = service::call(&mut svc, call).await;
                    let _ = finish(&conn, h.call_id, method, result).await;
                    conn.calls.release(h.call_id, serial);
                }
                .instrument(span),
            );
            Flow::Continue
        }
    }
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
            answered(conn.error(call_id, method.id(), &e.to_wire()).await)
        }
        Err(e) => {
            tracing::debug!(error = %e, "call failed");
            Flow::Close
        }
    }
}
