//! The published state: the catalog snapshot that readers use, the retained
//! history of change batches, and every subscriber's queue.
//!
//! Readers never wait for a rescan: the rescan worker builds the next
//! [`Published`] off to the side and [`Hub::publish`] only swaps an `Arc`.
//! Publishing never waits for a subscriber either: each has a bounded queue,
//! and one that is full is marked lagged instead (it resyncs from a snapshot).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::{Notify, mpsc};

use crate::rpc::pages;
use vm_catalog_protocol::{
    ApplyOutcome, Change, Cursor, Epoch, RescanOutcome, ResetReason, SourceEntry, VmEntry, VmState,
};

/// Generations kept for `Subscribe { since }` resumption.
pub const HISTORY: usize = 1024;
/// Batches queued per subscriber before it is marked lagged.
pub const SUBSCRIPTION_QUEUE: usize = 256;

/// Everything readers see of one catalog generation.
#[derive(Debug)]
pub struct Published {
    /// Its position.
    pub cursor: Cursor,
    /// Every candidate definition, sorted by name, then precedence.
    pub vms: Vec<VmEntry>,
    /// The sources, in precedence order.
    pub sources: Vec<SourceEntry>,
    /// The encoded records, built once on first use.
    records: OnceLock<Records>,
}

/// The records of one generation, encoded once (each trimmed to fit any
/// frame, see [`crate::rpc::pages::RECORD_BUDGET`]) and shared by every
/// `ListVms`, `GetVm`, `ListSources` and subscription snapshot.
#[derive(Debug, Clone)]
pub struct Records {
    /// One per entry of [`Published::vms`], in the same order.
    pub vms: Vec<Vec<u8>>,
    /// One per entry of [`Published::sources`].
    pub sources: Vec<Vec<u8>>,
}

/// Rescan and apply status, as `GetInfo` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// The last generation the applier made live.
    pub applied_generation: u64,
    /// The last rescan, dry runs included.
    pub last_rescan: Option<RescanOutcome>,
    /// The last apply attempt.
    pub last_apply: Option<ApplyOutcome>,
}

/// A clone starts without the encoded records: the clone may be changed.
impl Clone for Published {
    fn clone(&self) -> Self {
        Published::new(self.cursor, self.vms.clone(), self.sources.clone())
    }
}

impl Published {
    /// A generation.
    pub fn new(cursor: Cursor, vms: Vec<VmEntry>, sources: Vec<SourceEntry>) -> Self {
        Published {
            cursor,
            vms,
            sources,
            records: OnceLock::new(),
        }
    }

    /// The empty catalog of generation 0.
    pub fn empty(epoch: Epoch) -> Self {
        Self::new(
            Cursor {
                epoch,
                generation: 0,
            },
            Vec::new(),
            Vec::new(),
        )
    }

    /// The encoded records (built on first use).
    pub fn records(&self) -> &Records {
        self.records.get_or_init(|| Records {
            vms: self
                .vms
                .iter()
                .map(|e| pages::encode_vm(e, pages::RECORD_BUDGET))
                .collect(),
            sources: self
                .sources
                .iter()
                .map(|s| pages::encode_source(s, pages::RECORD_BUDGET))
                .collect(),
        })
    }

    /// Every definition of `name`, in precedence order.
    pub fn definitions(&self, name: &str) -> &[VmEntry] {
        let (start, end) = self.range_of(name);
        &self.vms[start..end]
    }

    /// Where the definitions of `name` are in [`Published::vms`].
    pub fn range_of(&self, name: &str) -> (usize, usize) {
        let start = self.vms.partition_point(|e| e.name.as_str() < name);
        let end = start + self.vms[start..].partition_point(|e| e.name.as_str() == name);
        (start, end)
    }

    /// The definition that claims `name` (the first that is not shadowed)
    /// and every other one, or `None` if no source defines it.
    pub fn lookup(&self, name: &str) -> Option<(&VmEntry, Vec<&VmEntry>)> {
        let defs = self.definitions(name);
        let claimant = defs
            .iter()
            .position(|e| e.state != VmState::Shadowed)
            .unwrap_or(0);
        let vm = defs.get(claimant)?;
        let others = defs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != claimant)
            .map(|(_, e)| e)
            .collect();
        Some((vm, others))
    }

    /// Number of active VMs.
    pub fn active_count(&self) -> usize {
        self.vms
            .iter()
            .filter(|e| e.state == VmState::Active)
            .count()
    }
}

/// The changes of one generation, shared by every subscriber that gets them.
#[derive(Debug)]
pub struct Batch {
    /// The generation.
    pub generation: u64,
    /// Its changes, in order.
    pub changes: Vec<Change>,
    /// The encoded `Event::Batch` bodies, split to fit any negotiated frame
    /// size; built once, on first use.
    pub encoded: OnceLock<Vec<Vec<u8>>>,
}

impl Batch {
    /// A batch of `changes` for `generation`.
    pub fn new(generation: u64, changes: Vec<Change>) -> Self {
        Batch {
            generation,
            changes,
            encoded: OnceLock::new(),
        }
    }
}

/// Tells a subscription task that its queue overflowed.
#[derive(Debug, Default)]
pub struct LagSignal {
    lagged: AtomicBool,
    notify: Notify,
}

impl LagSignal {
    fn raise(&self) {
        self.lagged.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether the queue overflowed since the last resync.
    pub fn is_raised(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }

    /// Waits until the queue overflows.
    pub async fn raised(&self) {
        while !self.is_raised() {
            self.notify.notified().await;
        }
    }
}

/// How a subscription starts.
#[derive(Debug)]
pub enum Start {
    /// A full snapshot.
    Snapshot {
        /// The snapshot.
        published: Arc<Published>,
        /// Why not a resumption.
        reason: ResetReason,
    },
    /// Only the batches after `from`, then live ones.
    Resume {
        /// The client's position.
        from: Cursor,
        /// The missed batches, in order.
        batches: Vec<Arc<Batch>>,
        /// The current position.
        now: Cursor,
    },
}

/// One subscriber's end: its queue and lag signal. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    /// Batches in order, from the generation after the start.
    pub queue: mpsc::Receiver<Arc<Batch>>,
    /// Raised when the queue overflowed.
    pub lag: Arc<LagSignal>,
    hub: Arc<Hub>,
}

impl Subscription {
    /// Starts over after a lag: drops the queued batches and returns the
    /// current snapshot. Atomic with respect to [`Hub::publish`]: every batch
    /// queued afterwards is newer than the snapshot.
    pub fn resync(&mut self) -> Arc<Published> {
        let subs = self
            .hub
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while self.queue.try_recv().is_ok() {}
        self.lag.lagged.store(false, Ordering::Release);
        let current = self.hub.current();
        drop(subs);
        current
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self
            .hub
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| s.id != self.id);
    }
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    queue: mpsc::Sender<Arc<Batch>>,
    lag: Arc<LagSignal>,
}

/// The published state, shared by the rescan worker and every connection.
#[derive(Debug)]
pub struct Hub {
    epoch: Epoch,
    current: RwLock<Arc<Published>>,
    status: RwLock<Arc<Status>>,
    history: Mutex<VecDeque<Arc<Batch>>>,
    /// Also serializes [`Hub::publish`] against subscription starts and resyncs.
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
}

impl Hub {
    /// A hub holding the empty generation 0 of `epoch`.
    pub fn new(epoch: Epoch) -> Arc<Self> {
        Arc::new(Hub {
            epoch,
            current: RwLock::new(Arc::new(Published::empty(epoch))),
            status: RwLock::new(Arc::new(Status::default())),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// The daemon run's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The current snapshot. Never waits for a rescan.
    pub fn current(&self) -> Arc<Published> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The rescan and apply status.
    pub fn status(&self) -> Arc<Status> {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the rescan and apply status (nothing is sent to subscribers).
    pub fn set_status(&self, status: Status) {
        *self.status.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(status);
    }

    /// Number of subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Replaces the snapshot. With changes, `next.cursor.generation` must be
    /// the next generation; the batch is kept in the history and queued to
    /// every subscriber. Without changes, nothing is queued.
    pub fn publish(&self, next: Published, changes: Vec<Change>) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        let generation = next.cursor.generation;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        if changes.is_empty() {
            return;
        }
        let batch = Arc::new(Batch::new(generation, changes));
        {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(batch.clone());
        }
        for sub in subs.iter_mut() {
            if sub.lag.is_raised() {
                continue;
            }
            if sub.queue.try_send(batch.clone()).is_err() {
                sub.lag.raise();
            }
        }
    }

    /// Registers a subscriber. Atomic with respect to [`Hub::publish`]: the
    /// start and the queued batches together miss nothing and repeat nothing.
    pub fn subscribe(self: &Arc<Self>, since: Option<Cursor>) -> (Start, Subscription) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current();
        let start = self.start_for(since, current);
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lag = Arc::new(LagSignal::default());
        subs.push(Subscriber {
            id,
            queue: tx,
            lag: lag.clone(),
        });
        drop(subs);
        (
            start,
            Subscription {
                id,
                queue: rx,
                lag,
                hub: self.clone(),
            },
        )
    }

    fn start_for(&self, since: Option<Cursor>, current: Arc<Published>) -> Start {
        let now = current.cursor;
        let reason = match since {
            None => ResetReason::Initial,
            Some(s) if s.epoch != self.epoch => ResetReason::NewEpoch,
            Some(s) if s.generation > now.generation => ResetReason::Unknown,
            Some(s) if s.generation == now.generation => {
                return Start::Resume {
                    from: s,
                    batches: Vec::new(),
                    now,
                };
            }
            Some(s) => {
                let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
                let batches: Vec<_> = history
                    .iter()
                    .filter(|b| b.generation > s.generation)
                    .cloned()
                    .collect();
                // Every generation after `since` must still be there.
                let complete = batches.first().map(|b| b.generation) == Some(s.generation + 1)
                    && batches.len() as u64 == now.generation - s.generation;
                if complete {
                    return Start::Resume {
                        from: s,
                        batches,
                        now,
                    };
                }
                ResetReason::TooOld
            }
        };
        Start::Snapshot {
            published: current,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_catalog_protocol::{ChangeItem, ChangeKind, SourceKind, SourceState, Trust};

    fn source(label: &str) -> SourceEntry {
        SourceEntry {
            label: label.parse().unwrap(),
            kind: SourceKind::Directory,
            trust: Trust::Untrusted,
            path: "/x".into(),
            device: None,
            partuuid: None,
            state: SourceState::Ready,
            read_only: false,
            precedence: 0,
            definitions: 0,
            diagnostics: vec![],
            revision: 0,
        }
    }

    fn publish_generation(hub: &Hub, generation: u64) {
        let mut next = (*hub.current()).clone();
        next.cursor.generation = generation;
        let change = Change {
            generation,
            kind: ChangeKind::Added,
            item: ChangeItem::Source(source("s")),
        };
        hub.publish(next, vec![change]);
    }

    #[test]
    fn subscribe_without_since_gets_a_snapshot() {
        let hub = Hub::new(Epoch(7));
        let (start, _sub) = hub.subscribe(None);
        assert!(matches!(
            start,
            Start::Snapshot {
                reason: ResetReason::Initial,
                ..
            }
        ));
    }

    #[test]
    fn resume_gets_exactly_the_missed_batches_then_live_ones() {
        let hub = Hub::new(Epoch(7));
        for g in 1..=5 {
            publish_generation(&hub, g);
        }
        let since = Cursor {
            epoch: Epoch(7),
            generation: 2,
        };
        let (start, mut sub) = hub.subscribe(Some(since));
        let Start::Resume { batches, now, .. } = start else {
            panic!("{start:?}")
        };
        assert_eq!(
            batches.iter().map(|b| b.generation).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(now.generation, 5);
        publish_generation(&hub, 6);
        assert_eq!(sub.queue.try_recv().unwrap().generation, 6);
        assert!(sub.queue.try_recv().is_err());
    }

    #[test]
    fn since_from_another_epoch_or_the_future_resets() {
        let hub = Hub::new(Epoch(7));
        publish_generation(&hub, 1);
        let (s, _a) = hub.subscribe(Some(Cursor {
            epoch: Epoch(8),
            generation: 1,
        }));
        assert!(matches!(
            s,
            Start::Snapshot {
                reason: ResetReason::NewEpoch,
                ..
            }
        ));
        let (s, _b) = hub.subscribe(Some(Cursor {
            epoch: Epoch(7),
            generation: 9,
        }));
        assert!(matches!(
            s,
            Start::Snapshot {
                reason: ResetReason::Unknown,
                ..
            }
        ));
        let (s, _c) = hub.subscribe(Some(Cursor {
            epoch: Epoch(7),
            generation: 1,
        }));
        assert!(matches!(s, Start::Resume { .. }));
    }

    #[test]
    fn since_older_than_the_history_resets() {
        let hub = Hub::new(Epoch(7));
        for g in 1..=(HISTORY as u64 + 10) {
            publish_generation(&hub, g);
        }
        let (s, _a) = hub.subscribe(Some(Cursor {
            epoch: Epoch(7),
            generation: 5,
        }));
        assert!(matches!(
            s,
            Start::Snapshot {
                reason: ResetReason::TooOld,
                ..
            }
        ));
        let (s, _b) = hub.subscribe(Some(Cursor {
            epoch: Epoch(7),
            generation: 10,
        }));
        assert!(matches!(s, Start::Resume { ref batches, .. } if batches.len() == HISTORY));
    }

    #[test]
    fn a_full_queue_marks_the_subscriber_lagged_and_resync_empties_it() {
        let hub = Hub::new(Epoch(7));
        let (_, mut sub) = hub.subscribe(None);
        let (_, mut other) = hub.subscribe(None);
        for g in 1..=(SUBSCRIPTION_QUEUE as u64 + 5) {
            publish_generation(&hub, g);
            // The other subscriber keeps up.
            assert_eq!(other.queue.try_recv().unwrap().generation, g);
        }
        assert!(sub.lag.is_raised());
        assert!(!other.lag.is_raised());
        let snap = sub.resync();
        assert_eq!(snap.cursor.generation, SUBSCRIPTION_QUEUE as u64 + 5);
        assert!(sub.queue.try_recv().is_err());
        assert!(!sub.lag.is_raised());
        publish_generation(&hub, SUBSCRIPTION_QUEUE as u64 + 6);
        assert_eq!(
            sub.queue.try_recv().unwrap().generation,
            SUBSCRIPTION_QUEUE as u64 + 6
        );
    }

    #[test]
    fn dropping_a_subscription_unsubscribes() {
        let hub = Hub::new(Epoch(7));
        let (_, sub) = hub.subscribe(None);
        assert_eq!(hub.subscriber_count(), 1);
        drop(sub);
        assert_eq!(hub.subscriber_count(), 0);
    }
}
