//! The call service: one `match` over the request, one handler per method,
//! behind a tower stack that sheds load, limits calls in flight per
//! connection, authorizes from the peer's credentials and bounds each call's
//! time.
//!
//! ```text
//! MapErr → LoadShed → ConcurrencyLimit(per connection) → Authorize → Deadline → Handler
//! ```
//!
//! Timeouts never cancel a rescan half-way: the rescan runs on the rescan
//! worker, and the handler future only waits for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use vm_catalog_protocol::{Method, Request};

use super::Ctx;
use super::conn::Conn;
use super::error::{CallError, denied};
use super::handlers;

/// One call, as the service sees it.
#[derive(Debug)]
pub struct Call {
    /// The connection (with the peer's credentials).
    pub conn: Arc<Conn>,
    /// The call id.
    pub call_id: u32,
    /// The decoded parameters.
    pub request: Request,
    /// Cancelled by `Cancel` or when the connection goes away.
    pub cancel: CancellationToken,
}

type CallFuture = Pin<Box<dyn Future<Output = Result<(), CallError>> + Send>>;

/// The service a connection calls: the whole stack, type-erased.
pub type CallService = BoxCloneSyncService<Call, (), CallError>;

/// Builds the stack for one connection (the concurrency limit is per connection).
pub fn stack(ctx: Arc<Ctx>) -> CallService {
    let limit = ctx.limits.calls_per_connection;
    let svc = ServiceBuilder::new()
        .map_err(into_call_error)
        .load_shed()
        .concurrency_limit(limit)
        .layer(AuthorizeLayer { ctx: ctx.clone() })
        .layer(DeadlineLayer { ctx: ctx.clone() })
        .service(Handler { ctx });
    BoxCloneSyncService::new(svc)
}

/// Runs one call through `svc`.
pub async fn call(svc: &mut CallService, call: Call) -> Result<(), CallError> {
    svc.ready().await?.call(call).await
}

fn into_call_error(e: BoxError) -> CallError {
    match e.downcast::<CallError>() {
        Ok(e) => *e,
        Err(e) if e.is::<tower::load_shed::error::Overloaded>() => CallError::Busy,
        Err(e) => CallError::Internal(e.to_string()),
    }
}

/// The innermost service: dispatch to the handlers.
#[derive(Debug, Clone)]
struct Handler {
    ctx: Arc<Ctx>,
}

impl Service<Call> for Handler {
    type Response = ();
    type Error = CallError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, c: Call) -> CallFuture {
        let ctx = self.ctx.clone();
        let Call {
            conn,
            call_id,
            request,
            cancel,
        } = c;
        Box::pin(async move {
            match request {
                Request::Ping(p) => handlers::ping::handle(&conn, call_id, p).await,
                Request::GetInfo(p) => handlers::info::handle(&ctx, &conn, call_id, p).await,
                Request::ListVms(p) => {
                    handlers::list_vms::handle(&ctx, &conn, call_id, p, &cancel).await
                }
                Request::GetVm(p) => handlers::get_vm::handle(&ctx, &conn, call_id, p).await,
                Request::ListSources(p) => {
                    handlers::list_sources::handle(&ctx, &conn, call_id, p).await
                }
                Request::Rescan(p) => {
                    handlers::rescan::handle(&ctx, &conn, call_id, p, &cancel).await
                }
                Request::Subscribe(p) => {
                    handlers::subscribe::handle(&ctx, &conn, call_id, p, &cancel).await
                }
                Request::Cancel(p) => handlers::cancel::handle(&conn, call_id, p).await,
            }
        })
    }
}

/// Refuses calls the peer's credentials do not allow: `Rescan` needs root or
/// the admin group; everything else is open to anyone who may connect.
#[derive(Debug, Clone)]
struct AuthorizeLayer {
    ctx: Arc<Ctx>,
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Authorize<S> {
    inner: S,
    ctx: Arc<Ctx>,
}

/// Whether the peer of `call` may make it.
pub fn allowed(ctx: &Ctx, call: &Call) -> bool {
    match call.request.method() {
        Method::Rescan => call.conn.peer.is_root_or_in(ctx.admin_gid),
        Method::Ping
        | Method::GetInfo
        | Method::ListVms
        | Method::GetVm
        | Method::ListSources
        | Method::Subscribe
        | Method::Cancel => true,
    }
}

impl<S> Service<Call> for Authorize<S>
where
    S: Service<Call, Response = (), Error = CallError, Future = CallFuture>,
{
    type Response = ();
    type Error = CallError;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> CallFuture {
        if allowed(&self.ctx, &call) {
            self.inner.call(call)
        } else {
            let method = call.request.method();
            Box::pin(async move { Err(denied(method)) })
        }
    }
}

/// Bounds each call's time, per method. Subscriptions have no deadline.
#[derive(Debug, Clone)]
struct DeadlineLayer {
    ctx: Arc<Ctx>,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Deadline<S> {
    inner: S,
    ctx: Arc<Ctx>,
}

fn deadline(ctx: &Ctx, method: Method) -> Option<Duration> {
    match method {
        Method::Subscribe => None,
        Method::Rescan => Some(ctx.limits.rescan_timeout),
        Method::ListVms => Some(ctx.limits.stream_timeout),
        Method::Ping | Method::GetInfo | Method::GetVm | Method::ListSources | Method::Cancel => {
            Some(ctx.limits.call_timeout)
        }
    }
}

impl<S> Service<Call> for Deadline<S>
where
    S: Service<Call, Response = (), Error = CallError, Future = CallFuture>,
{
    type Response = ();
    type Error = CallError;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> CallFuture {
        let method = call.request.method();
        let fut = self.inner.call(call);
        match deadline(&self.ctx, method) {
            None => fut,
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
