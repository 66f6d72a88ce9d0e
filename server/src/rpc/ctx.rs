//! What every connection shares: the published state, the rescan handle,
//! what the server says about itself, its limits, its counters, and the
//! two [ledgers](super::admission) its peers draw from: connection slots and
//! reply bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::Features;

use super::admission::{Claim, Ledger, Share, Tenant};
use super::peer::Peer;
use crate::logging::RateLimit;
use crate::publish::Hub;
use crate::rescan::Rescans;

/// Limits that protect the daemon from its clients. `docs/security.md`
/// says what each one protects against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections in all.
    pub max_connections: u32,
    /// Open connections per uid, for users other than root and the admin
    /// group (who are bounded by `max_connections` only).
    pub max_connections_per_uid: u32,
    /// Connections only root and the admin group may use (at most half of
    /// `max_connections`).
    pub reserved_connections: u32,
    /// Calls running in their own task (streams) per connection; beyond
    /// it, a call is answered `Busy` before a task exists for it.
    pub calls_per_connection: usize,
    /// Time allowed for the `Hello`.
    pub handshake_timeout: Duration,
    /// A connection with no call in flight (and so no subscription) that
    /// sends nothing for this long is closed with a `Goodbye`.
    pub idle_timeout: Duration,
    /// Bytes of frames built and not yet taken by the kernel, for every
    /// peer together (frames of at most [`super::send::UNCOUNTED_FRAME`]
    /// bytes aside). A frame over the budget waits, up to `send_timeout`,
    /// then its call ends `Busy`.
    pub reply_budget: u64,
    /// Of `reply_budget`, bytes only root and the admin group may use.
    pub reply_reserve: u64,
    /// Of `reply_budget`, the most one other user may hold (at least one
    /// frame of `max_frame`).
    pub reply_budget_per_uid: u64,
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
    /// Open connections of one UI VM (its own: none of the host's).
    pub vm_connections: u32,
    /// Calls in their own task (streams) of one UI VM, over all its
    /// connections.
    pub vm_calls: u32,
    /// Bytes of frames built for one UI VM and not yet taken by the kernel
    /// (its own budget: none of the host's; at least two frames of
    /// `max_frame`).
    pub vm_reply_budget: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_connections_per_uid: 32,
            reserved_connections: 32,
            calls_per_connection: 32,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            reply_budget: 32 << 20,
            reply_reserve: 8 << 20,
            reply_budget_per_uid: 8 << 20,
            max_frame: vm_catalog_protocol::LIMIT_MAX_FRAME,
            call_timeout: Duration::from_secs(10),
            stream_timeout: Duration::from_secs(60),
            rescan_timeout: Duration::from_secs(600),
            send_timeout: Duration::from_secs(10),
            max_refusals: 64,
            vm_connections: 8,
            vm_calls: 32,
            vm_reply_budget: 4 << 20,
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

impl Limits {
    /// How connection slots are shared.
    pub(super) fn connection_share(&self) -> Share {
        Share {
            total: self.max_connections.into(),
            reserve: self
                .reserved_connections
                .min(self.max_connections / 2)
                .into(),
            per_user: self.max_connections_per_uid.into(),
        }
    }

    /// How reply bytes are shared. Users may always hold one frame of the
    /// largest size: a claim beyond what a tenant may ever hold would wait
    /// forever.
    pub(super) fn reply_share(&self) -> Share {
        let frame = u64::from(self.max_frame);
        let total = self.reply_budget.max(2 * frame);
        Share {
            total,
            reserve: self.reply_reserve.min(total - frame),
            per_user: self.reply_budget_per_uid.max(frame),
        }
    }
}

/// One UI VM's own ledgers: what its connections draw from instead of the
/// host's (see [`super::admission`]).
#[derive(Debug, Clone)]
pub(super) struct VmShare {
    /// Its connection slots.
    pub connections: Arc<Ledger>,
    /// Its calls in their own task.
    pub calls: Arc<Ledger>,
    /// Its reply bytes.
    pub replies: Arc<Ledger>,
    /// Its refusals in progress (as many as its connections): a VM's
    /// flood of connections never takes the host's refusal slots.
    pub refusals: Arc<Semaphore>,
}

impl Limits {
    /// Fresh ledgers for one UI VM.
    pub(super) fn vm_share(&self) -> VmShare {
        let whole = |total: u64| Share {
            total,
            reserve: 0,
            per_user: total,
        };
        VmShare {
            connections: Ledger::new(whole(self.vm_connections.into())),
            calls: Ledger::new(whole(self.vm_calls.into())),
            replies: Ledger::new(whole(
                self.vm_reply_budget.max(2 * u64::from(self.max_frame)),
            )),
            refusals: Arc::new(Semaphore::new(self.vm_connections as usize)),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    next_conn: AtomicU64,
}

impl Stats {
    /// A number for the next accepted connection (from 1), for logs.
    pub(super) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Everything a connection needs.
#[derive(Debug)]
pub struct Ctx {
    /// The published state.
    pub hub: Arc<Hub>,
    /// The rescan worker.
    pub(super) rescans: Rescans,
    /// What the server says about itself.
    pub(super) server: ServerInfo,
    pub(super) stats: Stats,
    /// The group allowed to `Rescan` besides root.
    pub(super) admin_gid: Option<u32>,
    /// Limits.
    pub(super) limits: Limits,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
    /// Rate limit for log lines clients can trigger.
    pub(super) log_limit: RateLimit,
    /// Connection slots.
    pub(super) connections: Arc<Ledger>,
    /// Reply bytes.
    pub replies: Arc<Ledger>,
    /// User connections, for making room for a refused user.
    pub(super) evictions: Arc<super::evict::Evictions>,
    /// Refusals in progress (each holds a connection for a moment).
    refusals: Arc<Semaphore>,
    /// A return of free memory to the system is scheduled.
    trim_pending: AtomicBool,
}

/// Reply bytes held at once past which, once they are given back, the
/// allocator is asked to return its free memory to the system (or half of
/// a smaller ledger: one UI VM's).
const TRIM_AFTER: u64 = 4 << 20;

/// How long after the peers that held them left that is done: peers that
/// leave together make one request.
const TRIM_DELAY: Duration = Duration::from_secs(1);

impl Ctx {
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
            connections: Ledger::new(limits.connection_share()),
            replies: Ledger::new(limits.reply_share()),
            evictions: Arc::default(),
            refusals: Arc::new(Semaphore::new(limits.max_refusals)),
            trim_pending: AtomicBool::new(false),
            limits,
        })
    }

    /// Whose share `peer` draws from.
    pub(super) fn tenant(&self, peer: &Peer) -> Tenant {
        Tenant::of(peer, self.admin_gid)
    }

    /// A connection slot for `peer`, or `None` over its share.
    pub(super) fn admit(&self, peer: &Peer) -> Option<Claim> {
        self.connections.try_claim(self.tenant(peer), 1)
    }

    /// Open connections.
    pub(super) fn open_connections(&self) -> u32 {
        self.connections.used() as u32
    }

    /// A slot to refuse one connection with an answer, or `None` when
    /// [`Limits::max_refusals`] refusals are in progress already.
    pub(super) fn refusal(&self) -> Option<OwnedSemaphorePermit> {
        self.refusals.clone().try_acquire_owned().ok()
    }

    /// Called as a connection that drew its reply bytes from `replies`
    /// (the host's ledger, or its UI VM's own) ends. Once the bytes held
    /// at once in that ledger went past 4 MiB (half of a smaller ledger)
    /// and almost all are given back, asks the allocator to return its
    /// free memory to the system: it keeps freed memory for reuse
    /// otherwise, and a burst of replies nobody read would stay in the
    /// daemon's resident memory after those peers (or that VM) left.
    pub(super) fn connection_ended(self: &Arc<Self>, replies: &Ledger) {
        let threshold = TRIM_AFTER.min(replies.share().total / 2);
        if replies.used() > threshold / 4
            || replies.take_peak() < threshold
            || self.trim_pending.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let ctx = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TRIM_DELAY).await;
            ctx.trim_pending.store(false, Ordering::Release);
            #[cfg(target_env = "gnu")]
            let _ = tokio::task::spawn_blocking(|| {
                // SAFETY: malloc_trim has no preconditions; it only gives
                // free memory of the allocator back to the system.
                unsafe { libc::malloc_trim(0) };
            })
            .await;
        });
    }
}
