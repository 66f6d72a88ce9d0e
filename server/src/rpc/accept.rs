//! The accept loop: the whole server, [`serve`].
//!
//! It reads each peer's credentials, admits it against the connection
//! limits (or refuses it with an answer, within a bound of its own), and
//! runs each admitted connection as a tracked task, so that it can wait for
//! all of them when the daemon stops.

use std::sync::Arc;
use std::time::Duration;

use tokio_seqpacket::UnixSeqpacketListener;
use tokio_util::task::TaskTracker;

use super::ctx::Ctx;
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
        match ctx.admit(&peer) {
            Some(slot) => {
                let admitted = Admitted {
                    slot,
                    draws: Draws {
                        tenant: ctx.tenant(&peer),
                        replies: ctx.replies.clone(),
                    },
                    calls: None,
                    stop: Stop::under(&ctx.shutdown),
                };
                tracker.spawn(session::run(socket, peer, ctx.clone(), admitted));
            }
            None => match ctx.refusal() {
                Some(permit) => {
                    tracker.spawn(handshake::refuse(socket, peer, ctx.clone(), permit));
                }
                // Too many refusals at once: close without an answer rather
                // than hold more descriptors.
                None => drop(socket),
            },
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}
