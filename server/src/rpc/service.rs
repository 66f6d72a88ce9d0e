//! The call service: one `match` over the request, one handler per method,
//! behind one middleware that applies the method's policy row (carried in
//! the [`Call`]): it
//! refuses a peer whose credentials do not allow the call, and bounds the
//! call's time.
//!
//! ```text
//! Enforce (policy: who may call, deadline) → dispatch → handlers::<method>
//! ```
//!
//! The in-flight limit is not here: the read loop applies it before a task
//! exists for a call ([`super::session`]). Timeouts never cancel a rescan
//! half-way: the rescan runs on the rescan worker, and the handler future
//! only waits for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio_util::sync::CancellationToken;
use tower::layer::layer_fn;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use vm_catalog_protocol::Request;

use super::ctx::Ctx;
use super::error::{CallError, denied};
use super::handlers;
use super::policy::Policy;
use super::send::Conn;

/// One call, as the service sees it.
#[derive(Debug)]
pub(super) struct Call {
    /// The connection (with the peer's credentials).
    pub conn: Arc<Conn>,
    /// The call id.
    pub call_id: u32,
    /// The decoded parameters.
    pub request: Request,
    /// The method's policy row (looked up once, by the read loop).
    pub policy: Policy,
    /// Cancelled by `Cancel` or when the connection goes away.
    pub cancel: CancellationToken,
}

type CallFuture = Pin<Box<dyn Future<Output = Result<(), CallError>> + Send>>;

/// The service a connection calls: the whole stack, type-erased.
pub(super) type CallService = BoxCloneSyncService<Call, (), CallError>;

/// Builds the stack.
pub(super) fn stack(ctx: Arc<Ctx>) -> CallService {
    let enforce = layer_fn({
        let ctx = ctx.clone();
        move |inner| Enforce {
            inner,
            ctx: ctx.clone(),
        }
    });
    let svc = ServiceBuilder::new()
        .layer(enforce)
        .service(service_fn(move |call| dispatch(ctx.clone(), call)));
    BoxCloneSyncService::new(svc)
}

/// Runs one call through `svc`.
pub(super) async fn call(svc: &mut CallService, call: Call) -> Result<(), CallError> {
    svc.ready().await?.call(call).await
}

/// The innermost service: one handler per method.
async fn dispatch(ctx: Arc<Ctx>, c: Call) -> Result<(), CallError> {
    let Call {
        conn,
        call_id,
        request,
        policy: _,
        cancel,
    } = c;
    match request {
        Request::Ping(p) => handlers::ping::handle(&conn, call_id, p).await,
        Request::GetInfo(p) => handlers::info::handle(&ctx, &conn, call_id, p).await,
        Request::ListVms(p) => handlers::list_vms::handle(&ctx, &conn, call_id, p, &cancel).await,
        Request::GetVm(p) => handlers::get_vm::handle(&ctx, &conn, call_id, p).await,
        Request::ListSources(p) => handlers::list_sources::handle(&ctx, &conn, call_id, p).await,
        Request::Rescan(p) => handlers::rescan::handle(&ctx, &conn, call_id, p, &cancel).await,
        Request::Subscribe(p) => {
            handlers::subscribe::handle(&ctx, &conn, call_id, p, &cancel).await
        }
        Request::Cancel(p) => handlers::cancel::handle(&conn, call_id, p).await,
    }
}

/// Applies the method's policy row around `inner`: who may call (from the
/// peer's credentials, never from anything the peer says), and the deadline.
#[derive(Debug, Clone)]
struct Enforce<S> {
    inner: S,
    ctx: Arc<Ctx>,
}

impl<S> Service<Call> for Enforce<S>
where
    S: Service<Call, Response = (), Error = CallError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = CallError;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> CallFuture {
        let method = call.request.method();
        let row = call.policy;
        if !row.admits(&call.conn.peer, self.ctx.admin_gid) {
            let e = if call.conn.peer.is_vm() {
                CallError::ReadOnly {
                    method: method.name(),
                }
            } else {
                denied(method)
            };
            return Box::pin(async move { Err(e) });
        }
        let fut = self.inner.call(call);
        match row.deadline.under(&self.ctx.limits) {
            None => Box::pin(fut),
            Some(d) => Box::pin(async move {
                tokio::time::timeout(d, fut)
                    .await
                    .unwrap_or(Err(CallError::Timeout {
                        method: method.name(),
                    }))
            }),
        }
    }
}
