//! What every connection shares: the published state, the rescan handle,
//! what the server says about itself, its limits, its counters, and the
//! admission of new connections against the per-uid and total limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::Features;

use crate::logging::RateLimit;
use crate::publish::Hub;
use crate::rescan::Rescans;

/// Limits that protect the daemon from its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections in all.
    pub max_connections: u32,
    /// Open connections per uid.
    pub max_connections_per_uid: u32,
    /// Calls running in their own task (streams) per connection; beyond
    /// it, a call is answered `Busy` before a task exists for it.
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

impl Stats {
    /// A number for the next accepted connection (from 1), for logs.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }
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
    pub log_limit: RateLimit,
    /// Connections counted per uid.
    uids: Mutex<HashMap<u32, u32>>,
    /// Refusals in progress (each holds a connection for a moment).
    refusals: Arc<Semaphore>,
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
            log_limit: RateLimit::new(20, Duration::from_secs(10)),
            uids: Mutex::new(HashMap::new()),
            refusals: Arc::new(Semaphore::new(limits.max_refusals)),
            limits,
        })
    }

    /// Counts a new connection from `uid`, or refuses it over a limit.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Option<Admission> {
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

    /// A slot to refuse one connection with an answer, or `None` when
    /// [`Limits::max_refusals`] refusals are in progress already.
    pub fn refusal(&self) -> Option<OwnedSemaphorePermit> {
        self.refusals.clone().try_acquire_owned().ok()
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
