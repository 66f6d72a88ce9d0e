//! The accept loop: the whole server, [`serve`].
//!
//! It reads each peer's credentials, admits it against the connection
//! limits (or refuses it with an answer, within a bound of its own, unless
//! a user holding two more gives way: [`super::evict`]), and
//! runs each admitted connection as a tracked task, so that it can wait for
//! all of them when the daemon stops.

use std::sync::Arc;
use std::time::Duration;

use tokio_seqpacket::UnixSeqpacketListener;
use tokio_util::task::TaskTracker;

use tokio::sync::OwnedSemaphorePermit;

use super::admission::{Claim, Tenant};
use super::ctx::Ctx;
use super::evict::EVICT_WAIT;
use super::handshake::Draws;
use super::peer::Peer;
use super::session::{Admitted, Stop};
use super::transport::Transport;
use super::{handshake, session};

/// Accepts and serves connections until `ctx.shutdown` is cancelled, then
/// waits for every connection to finish: each says goodbye within a grace
/// period, and no send waits longer than the send deadline, so that is
/// bounded.
pub async fn serve(mut listener: UnixSeqpacketListener, ctx: Arc<Ctx>) {
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let socket = match accepted {
            Ok(s) => {
                backoff = Duration::from_millis(10);
                Transport::Seqpacket(s)
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
        let peer = match Peer::of(&socket, ctx.stats.next_conn_id()) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read peer credentials");
                continue;
            }
        };
        let tenant = ctx.tenant(&peer);
        if let Some(slot) = ctx.admit(&peer) {
            let admitted = admitted(&ctx, &peer, tenant, slot);
            tracker.spawn(session::run(socket, peer, ctx.clone(), admitted));
            continue;
        }
        // Refused: room is made for it when someone holds two more.
        if let Some(permit) = ctx.connections.victim(tenant, 1).and_then(|victim| {
            let permit = ctx.evictions.begin()?;
            ctx.evictions.evict_one(victim).then_some(permit)
        }) {
            tracker.spawn(wait_for_room(socket, peer, tenant, ctx.clone(), permit));
            continue;
        }
        refuse(socket, peer, &ctx, &tracker);
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// What a connection of `tenant` holding `slot` is admitted with.
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
async fn wait_for_room(
    socket: Transport,
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

/// Refuses a connection with an answer, or closes it at once when too many
/// refusals are in progress (rather than hold more descriptors).
fn refuse(socket: Transport, peer: Peer, ctx: &Arc<Ctx>, tracker: &TaskTracker) {
    if let Some(permit) = ctx.refusal() {
        tracker.spawn(handshake::refuse(socket, peer, ctx.clone(), permit));
    }
}
