//! The socket server: accept, limit, authenticate, and serve calls.
//!
//! [`serve`] is the whole server: it takes a bound listener and the shared
//! [`Ctx`], and returns when `ctx.shutdown` is cancelled and every connection
//! has closed: each says goodbye within a grace period, and no send waits
//! longer than the send deadline, so that is bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_seqpacket::UnixSeqpacketListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vm_catalog_protocol::Features;

use crate::publish::Hub;
use crate::rescan::Rescans;

pub mod conn;
pub mod connection;
pub mod error;
pub mod handlers;
pub mod listener;
pub mod peer;
pub mod recv;
pub mod service;

/// Limits that protect the daemon from its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections in all.
    pub max_connections: u32,
    /// Open connections per uid.
    pub max_connections_per_uid: u32,
    /// Calls in flight per connection.
    pub calls_per_connection: usize,
    /// Time allowed for the `Hello`.
    pub handshake_timeout: Duration,
    /// The largest max frame size granted.
    pub max_frame: u32,
    /// Deadline of unary calls.
    pub call_timeout: Duration,
    /// Deadline of `ListVms`.
    pub stream_timeout: Duration,
    /// Deadline of `Rescan` (waiting only: the rescan itself always completes).
    pub rescan_timeout: Duration,
    /// How long one send may wait for a peer that does not read before the
    /// peer is disconnected.
    pub send_timeout: Duration,
    /// Connections over the limits that are being refused at once; beyond
    /// this, further ones are closed without an answer.
    pub max_refusals: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_connections_per_uid: 32,
            calls_per_connection: 32,
            handshake_timeout: Duration::from_secs(5),
            max_frame: vm_catalog_protocol::LIMIT_MAX_FRAME,
            call_timeout: Duration::from_secs(10),
            stream_timeout: Duration::from_secs(60),
            rescan_timeout: Duration::from_secs(600),
            send_timeout: Duration::from_secs(10),
            max_refusals: 64,
        }
    }
}

/// What the server says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `vm-catalogd X.Y.Z`.
    pub version: String,
    /// `s6-rc` or `none`.
    pub applier: &'static str,
    /// Features offered.
    pub features: Features,
    /// Start time, ms since the Unix epoch.
    pub started_unix_ms: u64,
}

/// Counters shown by `GetInfo`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Open connections.
    pub connections: AtomicU32,
    next_conn: AtomicU64,
}

/// Everything a connection needs.
#[derive(Debug)]
pub struct Ctx {
    /// The published state.
    pub hub: Arc<Hub>,
    /// The rescan worker.
    pub rescans: Rescans,
    /// What the server says about itself.
    pub server: ServerInfo,
    /// Counters.
    pub stats: Stats,
    /// The group allowed to `Rescan` besides root.
    pub admin_gid: Option<u32>,
    /// Limits.
    pub limits: Limits,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
    /// Rate limit for log lines clients can trigger.
    pub log_limit: crate::logging::RateLimit,
    uids: Mutex<HashMap<u32, u32>>,
    /// Refusals in progress (each holds a connection for a moment).
    refusals: Arc<tokio::sync::Semaphore>,
}

impl Ctx {
    /// A context.
    pub fn new(
        hub: Arc<Hub>,
        rescans: Rescans,
        server: ServerInfo,
        admin_gid: Option<u32>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Ctx {
            hub,
            rescans,
            server,
            stats: Stats::default(),
            admin_gid,
            shutdown,
            log_limit: crate::logging::RateLimit::new(20, Duration::from_secs(10)),
            uids: Mutex::new(HashMap::new()),
            refusals: Arc::new(tokio::sync::Semaphore::new(limits.max_refusals)),
            limits,
        })
    }

    /// Counts a new connection from `uid`, or refuses it over a limit.
    fn admit(self: &Arc<Self>, uid: u32) -> Option<Admission> {
        let mut uids = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.stats.connections.load(Ordering::Relaxed);
        let mine = uids.get(&uid).copied().unwrap_or(0);
        if total >= self.limits.max_connections || mine >= self.limits.max_connections_per_uid {
            return None;
        }
        uids.insert(uid, mine + 1);
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        Some(Admission {
            ctx: self.clone(),
            uid,
        })
    }
}

/// A counted connection; dropping it uncounts it.
#[derive(Debug)]
pub struct Admission {
    ctx: Arc<Ctx>,
    uid: u32,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut uids = self.ctx.uids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = uids.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                uids.remove(&self.uid);
            }
        }
        self.ctx.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts and serves connections until `ctx.shutdown` is cancelled, then
/// waits for every connection to finish.
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
        let conn_id = ctx.stats.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let peer = match peer::Peer::of(&socket, conn_id) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read peer credentials");
                continue;
            }
        };
        match ctx.admit(peer.uid) {
            Some(admission) => {
                tracker.spawn(connection::run(socket, peer, ctx.clone(), admission));
            }
            None => match ctx.refusals.clone().try_acquire_owned() {
                Ok(permit) => {
                    tracker.spawn(connection::refuse(socket, peer, ctx.clone(), permit));
                }
                // Too many refusals at once: close without an answer rather
                // than hold more descriptors.
                Err(_) => drop(socket),
            },
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}
