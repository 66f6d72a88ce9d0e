//! Making room for a user refused a connection slot.
//!
//! The fair share alone lets enough users together hold every user slot
//! (15 with the defaults), and a sixteenth would then never get in. So a
//! user refused because the users' part is full takes a slot from the user
//! holding the most, when that one holds at least two more than it
//! ([`super::Ledger::victim`]): the victim's oldest idle connection (no
//! call in flight) gets a `Goodbye` ([`EVICTED_GOODBYE`]), or, when none
//! is idle, its oldest connection. The refused connection waits (at most
//! [`EVICT_WAIT`]) for the slot that frees. One eviction is under way at a
//! time, so a burst of connections cannot evict more than the slots it
//! gets: each one taken counts before the next victim is chosen.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::stop::Stop;

/// What an evicted connection is told.
pub(super) const EVICTED_GOODBYE: &str = "evicted: another user needed a connection slot";

/// How long a refused connection waits for the slot its eviction frees.
pub(super) const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Every user connection, by uid then age, for choosing one to evict.
#[derive(Debug)]
pub(super) struct Evictions {
    conns: Mutex<HashMap<u32, BTreeMap<u64, Held>>>,
    one_at_a_time: Arc<Semaphore>,
}

#[derive(Debug)]
struct Held {
    stop: Stop,
    idle: Arc<AtomicBool>,
}

impl Default for Evictions {
    fn default() -> Self {
        Evictions {
            conns: Mutex::new(HashMap::new()),
            one_at_a_time: Arc::new(Semaphore::new(1)),
        }
    }
}

/// A connection's entry; dropping it forgets the connection.
#[derive(Debug)]
pub(super) struct Registration {
    evictions: Arc<Evictions>,
    uid: u32,
    conn_id: u64,
    idle: Arc<AtomicBool>,
}

impl Registration {
    /// Says whether the connection has no call in flight (it starts busy:
    /// in its handshake).
    pub(super) fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut conns = self.evictions.conns();
        if let Some(of_uid) = conns.get_mut(&self.uid) {
            of_uid.remove(&self.conn_id);
            if of_uid.is_empty() {
                conns.remove(&self.uid);
            }
        }
    }
}

impl Evictions {
    fn conns(&self) -> MutexGuard<'_, HashMap<u32, BTreeMap<u64, Held>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers connection `conn_id` of user `uid`, which `stop` ends.
    pub(super) fn register(self: &Arc<Self>, uid: u32, conn_id: u64, stop: Stop) -> Registration {
        let idle = Arc::new(AtomicBool::new(false));
        self.conns().entry(uid).or_default().insert(
            conn_id,
            Held {
                stop,
                idle: idle.clone(),
            },
        );
        Registration {
            evictions: self.clone(),
            uid,
            conn_id,
            idle,
        }
    }

    /// The right to evict, or `None` while another eviction is under way.
    pub(super) fn begin(&self) -> Option<OwnedSemaphorePermit> {
        self.one_at_a_time.clone().try_acquire_owned().ok()
    }

    /// Ends the oldest idle connection of `uid` (else its oldest) with a
    /// `Goodbye`; whether there was one.
    pub(super) fn evict_one(&self, uid: u32) -> bool {
        let mut conns = self.conns();
        let Some(of_uid) = conns.get_mut(&uid) else {
            return false;
        };
        let pick = of_uid
            .iter()
            .find(|(_, h)| h.idle.load(Ordering::Relaxed))
            .or_else(|| of_uid.iter().next())
            .map(|(id, _)| *id);
        let Some(id) = pick else {
            return false;
        };
        // Forgotten at once: it is never chosen twice.
        let held = of_uid.remove(&id).expect("picked from the map");
        held.stop.stop(EVICTED_GOODBYE);
        tracing::info!(uid, conn = id, "connection evicted for another user");
        true
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    #[test]
    fn the_oldest_idle_connection_goes_first_then_the_oldest() {
        let e = Arc::new(Evictions::default());
        let root = CancellationToken::new();
        let stops: Vec<Stop> = (0..3).map(|_| Stop::under(&root)).collect();
        let regs: Vec<Registration> = stops
            .iter()
            .enumerate()
            .map(|(i, s)| e.register(1000, i as u64 + 1, s.clone()))
            .collect();
        regs[2].set_idle(true);
        assert!(e.evict_one(1000));
        assert!(stops[2].is_stopped(), "the idle one");
        assert!(e.evict_one(1000));
        assert!(stops[0].is_stopped(), "then the oldest");
        drop(regs);
        assert!(!e.evict_one(1000), "nothing left");
        assert!(!stops[1].is_stopped());
        let permit = e.begin().unwrap();
        assert!(e.begin().is_none(), "one at a time");
        drop(permit);
        assert!(e.begin().is_some());
    }
}
