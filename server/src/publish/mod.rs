//! The published state: the catalog snapshot that readers use, the retained
//! history of change batches, and every subscriber's queue, held together by
//! the [`Hub`].
//!
//! Readers never wait for a rescan: the rescan's commit builds the next
//! [`Published`] off to the side and [`Hub::publish`] only swaps an `Arc`;
//! or, when no reader holds the current one, [`Hub::publish_changes`]
//! makes it the next one in place under the write lock, touching only
//! what the change batch names (a reader waits that long at most).
//! Publishing never waits for a subscriber either: each has a bounded queue,
//! and one that is full is marked lagged instead (it resyncs from a snapshot).
//!
//! - [`snapshot`]: one generation as readers see it ([`Published`], its
//!   records encoded once), the rescan and apply [`Status`], the batches and
//!   their history.
//! - [`subscriptions`]: the fan-out to bounded queues, lag, how a
//!   subscription starts.
//! - [`vm_view`]: what a UI VM sees, built from typed data.
//!
//! Whoever follows the catalog without subscribing (the UI VM listeners)
//! waits on [`Hub::published`], told of every publish, and leaves what it
//! found about a VM for the next generation in [`Hub::notes`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use vm_catalog_protocol::{Change, Cursor, Epoch, ResetReason, SourceEntry, VmEntry};

use crate::catalog::Names;

mod notes;
pub mod snapshot;
pub mod subscriptions;
pub mod vm_view;

pub use notes::{Notes, VmNotes};
pub use snapshot::{Batch, HISTORY, Published, Records, Status};
pub use subscriptions::{LagSignal, SUBSCRIPTION_QUEUE, Start, Subscription};
pub use vm_view::Audience;

use snapshot::History;
use subscriptions::Subscribers;

/// The published state, shared by the rescan worker and every connection.
#[derive(Debug)]
pub struct Hub {
    epoch: Epoch,
    current: RwLock<Arc<Published>>,
    status: RwLock<Arc<Status>>,
    history: Mutex<History>,
    /// Also serializes [`Hub::publish`] against subscription starts and resyncs.
    subscribers: Mutex<Subscribers>,
    next_id: AtomicU64,
    /// Counts publishes, for [`Hub::published`].
    publishes: tokio::sync::watch::Sender<u64>,
    notes: VmNotes,
}

impl Hub {
    /// A hub holding the empty generation 0 of `epoch`.
    pub fn new(epoch: Epoch) -> Arc<Self> {
        Arc::new(Hub {
            epoch,
            current: RwLock::new(Arc::new(Published::empty(epoch))),
            status: RwLock::new(Arc::new(Status::default())),
            history: Mutex::new(History::new()),
            subscribers: Mutex::new(Subscribers::default()),
            next_id: AtomicU64::new(1),
            publishes: tokio::sync::watch::Sender::new(0),
            notes: VmNotes::default(),
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

    /// Told of every publish (the count of publishes so far): read
    /// [`Hub::current`] when it changes.
    pub fn published(&self) -> tokio::sync::watch::Receiver<u64> {
        self.publishes.subscribe()
    }

    /// What the readers' side found about published VMs (a UI VM's listener
    /// refused), which the next rescan's commit shows on their entries.
    pub fn notes(&self) -> &VmNotes {
        &self.notes
    }

    /// Number of subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers().len()
    }

    fn subscribers(&self) -> MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the snapshot. With changes, `next.cursor.generation` must be
    /// the next generation; the batch is kept in the history and queued to
    /// every subscriber. Without changes, nothing is queued.
    pub fn publish(&self, next: Published, changes: Vec<Change>) {
        let subs = self.subscribers();
        let generation = next.cursor.generation;
        // Encoded before the swap, off the readers' path: only what changed.
        next.encode_after(&self.current(), &changes);
        let previous = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(next),
        );
        self.after_publish(subs, generation, changes, Some(previous));
    }

    /// What follows the swap of a publish: readers told, the batch kept and
    /// queued to every subscriber; then `previous` (the generation before)
    /// dropped.
    fn after_publish(
        &self,
        mut subs: MutexGuard<'_, Subscribers>,
        generation: u64,
        changes: Vec<Change>,
        previous: Option<Arc<Published>>,
    ) {
        self.publishes.send_modify(|n| *n += 1);
        if changes.is_empty() {
            return;
        }
        let batch = Arc::new(Batch::new(generation, changes));
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(batch.clone());
        subs.fan_out(&batch);
        drop(subs);
        // The previous generation is freed (when no reader holds it) once
        // the subscribers have the batch, not before.
        drop(previous);
    }

    /// [`Hub::publish`] of the generation that `changes` make of the
    /// current one (`cursor`, with `sources`; `entry` gives an entry a
    /// change names as it is now; `all` every entry, sorted by name then
    /// precedence). When nothing else holds the current generation (no
    /// reader is using it), it becomes the next one in place, touching
    /// only what the changes name ([`Published::patch`]); else the next
    /// one is built from `all` beside it.
    pub fn publish_changes(
        &self,
        (cursor, sources, names): (Cursor, Vec<SourceEntry>, Names),
        changes: Vec<Change>,
        entry: &dyn Fn(&VmEntry) -> Option<Arc<VmEntry>>,
        all: &dyn Fn() -> Vec<Arc<VmEntry>>,
    ) {
        let subs = self.subscribers();
        let patched = {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            match Arc::get_mut(&mut current) {
                Some(p) if p.names == names && p.cursor.generation + 1 == cursor.generation => {
                    p.patch(cursor, sources.clone(), &changes, entry)
                }
                _ => false,
            }
        };
        if !patched {
            drop(subs);
            return self.publish(Published::new(cursor, all(), sources, names), changes);
        }
        self.after_publish(subs, cursor.generation, changes, None);
    }

    /// Registers a subscriber. Atomic with respect to [`Hub::publish`]: the
    /// start and the queued batches together miss nothing and repeat nothing.
    pub fn subscribe(self: &Arc<Self>, since: Option<Cursor>) -> (Start, Subscription) {
        let mut subs = self.subscribers();
        let start = self.start_for(since, self.current());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let subscription = subs.add(self, id);
        drop(subs);
        (start, subscription)
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
                match history.since(s.generation, now.generation) {
                    Some(batches) => {
                        return Start::Resume {
                            from: s,
                            batches,
                            now,
                        };
                    }
                    None => ResetReason::TooOld,
                }
            }
        };
        Start::Snapshot {
            published: current,
            reason,
        }
    }
}

#[cfg(test)]
mod tests;
