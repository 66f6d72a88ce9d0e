//! The calls of one connection that run in their own task, by call id, so
//! that `Cancel` and a closing connection can reach them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// The calls in flight in their own task. A call id may be reused as soon
/// as its terminal frame is out, so each registration also has a serial
/// number.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    calls: Mutex<HashMap<u32, (u64, CancellationToken)>>,
    serial: AtomicU64,
}

impl InFlight {
    fn calls(&self) -> MutexGuard<'_, HashMap<u32, (u64, CancellationToken)>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a call; its serial number, or `None` if `call_id` is in
    /// flight already.
    pub(super) fn register(&self, call_id: u32, token: CancellationToken) -> Option<u64> {
        let mut calls = self.calls();
        if calls.contains_key(&call_id) {
            return None;
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        calls.insert(call_id, (serial, token));
        Some(serial)
    }

    /// Whether `call_id` is in flight.
    pub(super) fn contains(&self, call_id: u32) -> bool {
        self.calls().contains_key(&call_id)
    }

    /// The cancellation token of call `call_id`, if it is in flight.
    pub(super) fn token(&self, call_id: u32) -> Option<CancellationToken> {
        self.calls().get(&call_id).map(|(_, t)| t.clone())
    }

    /// Number of calls in flight.
    pub(super) fn len(&self) -> usize {
        self.calls().len()
    }

    #[cfg(test)]
    /// Whether no call is in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.calls().is_empty()
    }

    /// Forgets call `call_id`, just before its terminal frame goes out: the
    /// peer may reuse the id as soon as it sees that frame.
    pub(super) fn done(&self, call_id: u32) {
        self.calls().remove(&call_id);
    }

    /// Forgets the call registered as `serial` (if its id was not reused since).
    pub(super) fn release(&self, call_id: u32, serial: u64) {
        let mut calls = self.calls();
        if calls.get(&call_id).is_some_and(|(s, _)| *s == serial) {
            calls.remove(&call_id);
        }
    }

    /// Cancels call `call_id`; whether it was in flight.
    pub(super) fn cancel(&self, call_id: u32) -> bool {
        match self.calls().get(&call_id) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancels every call in flight.
    pub(super) fn cancel_all(&self) {
        let tokens: Vec<CancellationToken> =
            self.calls().values().map(|(_, t)| t.clone()).collect();
        for token in tokens {
            token.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_id_is_not_released_by_its_earlier_call() {
        let f = InFlight::default();
        let first = f.register(3, CancellationToken::new()).unwrap();
        assert_eq!(f.register(3, CancellationToken::new()), None);
        f.done(3);
        let token = CancellationToken::new();
        let second = f.register(3, token.clone()).unwrap();
        f.release(3, first);
        assert!(f.contains(3), "the second call is still in flight");
        assert!(f.cancel(3));
        assert!(token.is_cancelled());
        f.release(3, second);
        assert!(f.is_empty());
        assert!(!f.cancel(3));
    }
}
