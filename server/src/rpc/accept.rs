//! The accept loop, one for every listener: the host socket ([`serve`])
//! and each UI VM's ([`super::ui_vm`]).
//!
//! [`run`] accepts connections on any [`Listen`]er, reads each peer's
//! credentials and asks its [`Admit`] policy what to do: serve it, make
//! room for it first (a user holding two more gives way:
//! [`super::evict`]), or refuse it with an answer, within a bound of its
//! own. Each admitted connection runs as a task of the given tracker, so
//! that the caller can wait for all of them.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_seqpacket::{UnixSeqpacket, UnixSeqpacketListener};
use tokio_util::task::TaskTracker;

use super::admission::{Claim, Tenant};
use super::ctx::Ctx;
use super::evict::EVICT_WAIT;
use super::handshake::Draws;
use super::peer::Peer;
use super::session::Admitted;
use super::stop::Stop;
use super::transport::Transport;
use super::{handshake, session};

/// A listening socket whose connections are one [`Transport`].
pub(super) trait Listen: Send + 'static {
    /// Its connections.
    type Conn: Transport;

    /// The next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Listen for UnixSeqpacketListener {
    type Conn = UnixSeqpacket;

    async fn accept(&mut self) -> io::Result<UnixSeqpacket> {
        UnixSeqpacketListener::accept(self).await
    }
}

impl Listen for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;

    async fn accept(&mut self) -> io::Result<tokio::net::UnixStream> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// What to do with a connection.
pub(super) enum Admission {
    /// Serve it.
    Serve(Admitted),
    /// Serve it in the slot that evicting someone frees (`permit` counts
    /// the evictions in progress), or refuse it after all.
    AfterEviction(Tenant, OwnedSemaphorePermit),
    /// Refuse it with an answer, holding one refusal slot; with none
    /// left, close it without a word.
    Refuse(Option<OwnedSemaphorePermit>),
}

/// Who a listener's peers are and what they draw on.
pub(super) trait Admit: Send + 'static {
    /// The peer on `fd`.
    fn peer(&self, fd: BorrowedFd<'_>, conn_id: u64) -> io::Result<Peer>;

    /// What to do with `peer`'s connection.
    fn admit(&self, ctx: &Arc<Ctx>, peer: &Peer) -> Admission;
}

/// Accepts connections on `listener` until `stop`, admitting each as
/// `admit` says; the connections run on `tracker`.
pub(super) async fn run<L: Listen, A: Admit>(
    mut listener: L,
    admit: A,
    ctx: Arc<Ctx>,
    stop: Stop,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = stop.stopped() => break,
            r = listener.accept() => r,
        };
        let socket = match accepted {
            Ok(s) => {
                backoff = Duration::from_millis(10);
                s
            }
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning.
                if ctx.log_limit.allow() {
                    tracing::warn!(error = %e, "accept failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let peer = match admit.peer(socket.as_fd(), ctx.stats.next_conn_id()) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read peer credentials");
                continue;
            }
        };
        match admit.admit(&ctx, &peer) {
            Admission::Serve(a) => tracker.spawn(session::run(socket, peer, ctx.clone(), a)),
            Admission::AfterEviction(tenant, permit) => {
                tracker.spawn(wait_for_room(socket, peer, tenant, ctx.clone(), permit))
            }
            Admission::Refuse(Some(permit)) => {
                tracker.spawn(handshake::refuse(socket, peer, ctx.clone(), permit))
            }
            Admission::Refuse(None) => continue,
        };
    }
}

/// Accepts and serves host connections until `ctx.shutdown` is cancelled,
/// then waits for every connection to finish: each says goodbye within a
/// grace period, and no send waits longer than the send deadline, so that
/// is bounded.
pub async fn serve(listener: UnixSeqpacketListener, ctx: Arc<Ctx>) {
    let tracker = TaskTracker::new();
    let stop = Stop::under(&ctx.shutdown);
    run(listener, Host, ctx, stop, tracker.clone()).await;
    tracker.close();
    tracker.wait().await;
}

/// The host socket's admission: local users by uid, root and the admin
/// group with a reserve, evictions, the host's refusal slots.
struct Host;

impl Admit for Host {
    fn peer(&self, fd: BorrowedFd<'_>, conn_id: u64) -> io::Result<Peer> {
        Peer::of(&fd, conn_id)
    }

    fn admit(&self, ctx: &Arc<Ctx>, peer: &Peer) -> Admission {
        let tenant = ctx.tenant(peer);
        if let Some(slot) = ctx.admit(peer) {
            return Admission::Serve(admitted(ctx, peer, tenant, slot));
        }
        // Refused: room is made for it when someone holds two more.
        match ctx.connections.victim(tenant, 1).and_then(|victim| {
            let permit = ctx.evictions.begin()?;
            ctx.evictions.evict_one(victim).then_some(permit)
        }) {
            Some(permit) => Admission::AfterEviction(tenant, permit),
            None => Admission::Refuse(ctx.refusal()),
        }
    }
}

/// What a host connection of `tenant` holding `slot` is admitted with.
fn admitted(ctx: &Arc<Ctx>, peer: &Peer, tenant: Tenant, slot: Claim) -> Admitted {
    let stop = Stop::under(&ctx.shutdown);
    let registration = match tenant {
        Tenant::User(uid) => Some(ctx.evictions.register(uid, peer.conn_id, stop.clone())),
        Tenant::Admin | Tenant::Vm => None,
    };
    Admitted {
        slot,
        draws: Draws {
            tenant,
            replies: ctx.replies.clone(),
        },
        calls: None,
        stop,
        registration,
    }
}

/// Serves a refused connection in the slot an eviction (`permit`) frees,
/// or refuses it after all.
async fn wait_for_room<T: Transport>(
    socket: T,
    peer: Peer,
    tenant: Tenant,
    ctx: Arc<Ctx>,
    permit: OwnedSemaphorePermit,
) {
    let claimed = tokio::time::timeout(EVICT_WAIT, ctx.connections.claim_evicted(tenant, 1)).await;
    drop(permit);
    match claimed {
        Ok(slot) => {
            let admitted = admitted(&ctx, &peer, tenant, slot);
            session::run(socket, peer, ctx.clone(), admitted).await;
        }
        Err(_) => {
            if let Some(permit) = ctx.refusal() {
                handshake::refuse(socket, peer, ctx, permit).await;
            }
        }
    }
}
