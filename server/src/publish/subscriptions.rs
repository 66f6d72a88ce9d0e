//! The fan-out: every subscriber's bounded queue and lag signal.
//!
//! [`Hub::publish`] queues each batch to every subscriber without waiting:
//! a subscriber whose queue is full is marked lagged instead, and its task
//! later starts over from a snapshot ([`Subscription::resync`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc};
use vm_catalog_protocol::{Cursor, ResetReason};

use super::Hub;
use super::snapshot::{Batch, Published};

/// Batches queued per subscriber before it is marked lagged.
pub const SUBSCRIPTION_QUEUE: usize = 256;

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
        let subs = self.hub.subscribers();
        while self.queue.try_recv().is_ok() {}
        self.lag.lagged.store(false, Ordering::Release);
        let current = self.hub.current();
        drop(subs);
        current
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers().remove(self.id);
    }
}

/// The sending ends of every subscription.
#[derive(Debug, Default)]
pub(super) struct Subscribers(Vec<Subscriber>);

#[derive(Debug)]
struct Subscriber {
    id: u64,
    queue: mpsc::Sender<Arc<Batch>>,
    lag: Arc<LagSignal>,
}

impl Subscribers {
    /// Adds subscriber `id` of `hub`. The caller holds the lock from before
    /// it computed the start, so that the start and the batches queued from
    /// now on miss nothing and repeat nothing.
    pub(super) fn add(&mut self, hub: &Arc<Hub>, id: u64) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_QUEUE);
        let lag = Arc::new(LagSignal::default());
        self.0.push(Subscriber {
            id,
            queue: tx,
            lag: lag.clone(),
        });
        Subscription {
            id,
            queue: rx,
            lag,
            hub: hub.clone(),
        }
    }

    fn remove(&mut self, id: u64) {
        self.0.retain(|s| s.id != id);
    }

    /// Number of subscribers.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Queues `batch` to every subscriber that is not lagged, never waiting:
    /// one whose queue is full is marked lagged.
    pub(super) fn fan_out(&mut self, batch: &Arc<Batch>) {
        for sub in &self.0 {
            if sub.lag.is_raised() {
                continue;
            }
            if sub.queue.try_send(batch.clone()).is_err() {
                sub.lag.raise();
            }
        }
    }
}
