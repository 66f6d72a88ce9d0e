//! One connection from its handshake to its close: the read loop that
//! turns frames into calls.
//!
//! Each call runs where its [`policy`] row says: quick unary calls inline in
//! the read loop (they only read the published snapshot), streams in their
//! own task (but a `ListVms` whose answer is one page, which is over as soon
//! as a unary call is), tracked by call id so `Cancel` can reach them and counted
//! against the per-connection limit before the task exists. A frame that
//! makes the stream untrustworthy (bad header, wrong kind, truncated) gets a
//! connection-level error and a close; a bad call gets an error for that
//! call only. A connection with no call in flight that sends nothing for
//! [`super::Limits::idle_timeout`] is closed with a `Goodbye`.
//!
//! The same loop serves every transport ([`super::transport`]): what only
//! a stream can do wrong (garbage, a frame cut by the end of the stream)
//! closes that stream only. A connection can also be told to [`Stop`] —
//! its UI VM's listener was removed — then its calls are cancelled (a
//! subscription ends with its `StreamEnd`) and it gets a `Goodbye`.
//!
//! The method's [`policy`] row is looked up once, here, and carried in the
//! [`Call`] to the service.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vm_catalog_protocol::{FrameKind, Header, Method, Request, RequestError, decode_frame};

use super::admission::{Claim, Ledger, Tenant};
use super::ctx::Ctx;
use super::error::{CallError, ConnError};
use super::handshake::{Draws, handshake, report};
use super::peer::Peer;
use super::policy::{self, Runs};
use super::send::Conn;
use super::service::{self, Call, CallService};
use super::stop::Stop;
use super::transport::{FrameRx, Incoming, Transport};

/// How long a stopping daemon waits for a connection's calls to send their
/// last frames before it drops them.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);

/// How long a `Goodbye` may wait for a peer that does not read.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// What an idle connection is told as it is closed.
const IDLE_GOODBYE: &str = "idle: no call for too long";

/// What an admitted connection holds and draws from.
#[derive(Debug)]
pub(super) struct Admitted {
    /// Its connection slot (given back when it ends).
    pub(super) slot: Claim,
    /// Its tenant and reply ledger.
    pub(super) draws: Draws,
    /// For a VM: the calls in their own task of all its connections.
    pub(super) calls: Option<Arc<Ledger>>,
    /// What ends it early.
    pub(super) stop: Stop,
    /// For a user's connection: its entry among those an eviction may end.
    pub(super) registration: Option<super::evict::Registration>,
}

/// Serves one admitted connection to the end.
pub(super) async fn run<T: Transport>(socket: T, peer: Peer, ctx: Arc<Ctx>, admitted: Admitted) {
    let span = tracing::info_span!(
        "conn",
        id = peer.conn_id,
        uid = peer.uid,
        pid = peer.pid,
        vm = peer.vm_name().map(|n| n.as_str()),
    );
    async move {
        tracing::debug!(transport = T::NAME, "connected");
        let Admitted {
            slot,
            draws,
            calls,
            stop,
            registration,
        } = admitted;
        let replies = draws.replies.clone();
        let (tx, mut rx) = socket.split();
        // Stopped in its handshake (evicted, say): closed without a word,
        // as a refusal before any Hello may be.
        let conn = tokio::select! {
            c = handshake(Box::new(tx), &mut rx, Arc::new(peer), draws, &ctx) => c,
            _ = stop.stopped() => None,
        };
        if let Some(conn) = conn {
            let mut loop_ = ReadLoop {
                conn: Arc::new(conn),
                rx,
                vm_calls: calls,
                stop,
                registration,
            };
            loop_.serve(&ctx).await;
        }
        tracing::debug!("disconnected");
        drop(slot);
        ctx.connection_ended(&replies);
    }
    .instrument(span)
    .await
}

/// The read loop's state.
struct ReadLoop<R> {
    conn: Arc<Conn>,
    rx: R,
    vm_calls: Option<Arc<Ledger>>,
    stop: Stop,
    registration: Option<super::evict::Registration>,
}

enum Flow {
    Continue,
    Close,
}

impl<R: FrameRx> ReadLoop<R> {
    async fn serve(&mut self, ctx: &Arc<Ctx>) {
        let conn = self.conn.clone();
        let mut svc = service::stack(ctx.clone());
        let mut tasks = JoinSet::new();
        let mut stopped = false;
        loop {
            if let Some(r) = &self.registration {
                r.set_idle(tasks.is_empty());
            }
            let received = tokio::select! {
                _ = self.stop.stopped() => {
                    stopped = true;
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
                r = self.rx.recv(conn.max_frame) => r,
            };
            let flow = match received {
                // A stream cut inside a frame: the peer is gone, nothing is sent.
                Ok(Incoming::Eof | Incoming::Cut) => break,
                Ok(Incoming::Garbage(e)) => close(&conn, ctx, ConnError::BadStream(e)).await,
                Err(e) => {
                    tracing::debug!(error = %e, "receive failed");
                    break;
                }
                Ok(Incoming::TooLarge(_)) => {
                    let max = conn.max_frame;
                    close(&conn, ctx, ConnError::FrameTooLarge { max }).await
                }
                // Sends within have a deadline: a peer that stops reading is
                // cut off and this loop ends, so shutdown never waits on it.
                Ok(Incoming::Frame(frame)) => {
                    self.on_frame(ctx, &mut svc, &mut tasks, &frame).await
                }
            };
            if let Flow::Close = flow {
                break;
            }
        }
        self.wind_down(ctx, stopped, tasks).await;
    }

    /// Ends the connection's calls once the loop is over: told to stop
    /// (`stopped`), they end as a `Cancel` would, or see the daemon's
    /// shutdown, within a grace period, before a `Goodbye`; otherwise the
    /// peer is gone and they are cancelled.
    async fn wind_down(&self, ctx: &Ctx, stopped: bool, mut tasks: JoinSet<()>) {
        let conn = &self.conn;
        if stopped {
            let reason = if ctx.shutdown.is_cancelled() {
                // Calls see the shutdown themselves and end with `ShuttingDown`.
                "shutting down"
            } else {
                // Told to stop (not the daemon): end the calls as a `Cancel`
                // would (a subscription sends its `StreamEnd`), then say why.
                conn.calls.cancel_all();
                self.stop.reason()
            };
            let drained = tokio::time::timeout(GOODBYE_GRACE, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tasks.abort_all();
            }
            let _ = tokio::time::timeout(GOODBYE_WAIT, conn.goodbye(reason)).await;
        } else {
            // The peer went away or broke the protocol: stop its calls.
            conn.calls.cancel_all();
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
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

impl<R: FrameRx> ReadLoop<R> {
    async fn on_frame(
        &self,
        ctx: &Arc<Ctx>,
        svc: &mut CallService,
        tasks: &mut JoinSet<()>,
        datagram: &[u8],
    ) -> Flow {
        let conn = &self.conn;
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
        let policy = policy::of(method);
        let call = Call {
            conn: conn.clone(),
            call_id: h.call_id,
            request,
            policy,
            cancel: cancel.clone(),
        };
        let inline = match policy.runs {
            Runs::Inline => true,
            Runs::Task => false,
            Runs::TaskUnlessOneFrame => {
                super::handlers::answers_in_one_frame(ctx, conn, &call.request)
            }
        };
        match inline {
            true => {
                let result = service::call(svc, call).instrument(span.clone()).await;
                finish(conn, h.call_id, method, result)
                    .instrument(span)
                    .await
            }
            false => {
                self.spawn_call(ctx, svc, tasks, (h, cancel), call)
                    .instrument(span)
                    .await
            }
        }
    }

    /// Runs `call` in a task of its own, tracked by call id so `Cancel` can
    /// reach it (`cancel`), once it is within the in-flight limits: the
    /// connection's, and a VM's over all its connections. Over either, it
    /// is answered `Busy` before a task exists.
    async fn spawn_call(
        &self,
        ctx: &Ctx,
        svc: &CallService,
        tasks: &mut JoinSet<()>,
        (h, cancel): (Header, CancellationToken),
        call: Call,
    ) -> Flow {
        let conn = &self.conn;
        let busy = async || {
            let body = CallError::Busy.to_wire();
            answered(conn.error(h.call_id, h.method, &body).await)
        };
        if conn.calls.len() >= ctx.limits.calls_per_connection {
            return busy().await;
        }
        let vm_claim = match &self.vm_calls {
            None => None,
            Some(ledger) => match ledger.try_claim(Tenant::Vm, 1) {
                Some(c) => Some(c),
                None => return busy().await,
            },
        };
        let serial = conn
            .calls
            .register(h.call_id, cancel)
            .expect("checked in decode: not in flight");
        let mut svc = svc.clone();
        let conn = conn.clone();
        let method = call.request.method();
        tasks.spawn(
            async move {
                let result = service::call(&mut svc, call).await;
                let _ = finish(&conn, h.call_id, method, result).await;
                conn.calls.release(h.call_id, serial);
                drop(vm_claim);
            }
            .in_current_span(),
        );
        Flow::Continue
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
