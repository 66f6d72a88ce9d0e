//! The reconnection delays of a [`super::Watch`].

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff with jitter: 100 ms doubling to 30 s, each delay
/// drawn from [d/2, d].
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    next: Duration,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Backoff {
    /// Starts at the first delay.
    pub(super) fn new() -> Self {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }

    /// Back to the first delay (the watch is synced again).
    pub(super) fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }

    /// The delay to wait now (random in [d/2, d]); doubles `d` for the
    /// attempt after.
    pub(super) fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        let rnd = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let half = d / 2;
        half + Duration::from_nanos(rnd % (half.as_nanos() as u64 + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new();
        let first = b.step();
        assert!(first >= BACKOFF_FIRST / 2 && first <= BACKOFF_FIRST);
        for _ in 0..20 {
            assert!(b.step() <= BACKOFF_MAX);
        }
        b.reset();
        assert!(b.step() <= BACKOFF_FIRST);
    }
}
