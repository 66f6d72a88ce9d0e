//! The rescan worker's retry schedule: a rescan that failed, or whose apply failed, is tried again
//! later without a trigger, after a delay that doubles with every failure
//! in a row (5 s, 10 s, … up to 5 min) and resets after a success.
//!
//! [`Retry`] is only the schedule; the clock is its caller's (the rescan
//! worker passes `Instant::now()`, tests pass made-up instants), and the
//! worker turns a due retry into a rescan with [`RescanTrigger::Retry`].
//!
//! [`RescanTrigger::Retry`]: vm_catalog_protocol::RescanTrigger::Retry

use std::time::{Duration, Instant};

/// The first delay before a retry.
pub const RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest delay between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// How long to wait before retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failure; it doubles with every failure in a row.
    pub first: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// [`RETRY_FIRST`], doubling up to [`RETRY_MAX`].
    fn default() -> Self {
        RetryPolicy {
            first: RETRY_FIRST,
            max: RETRY_MAX,
        }
    }
}

/// When the next retry is due, if one is.
#[derive(Debug, Clone)]
pub struct Retry {
    policy: RetryPolicy,
    /// (when, the delay that led to it)
    next: Option<(Instant, Duration)>,
}

impl Retry {
    /// No retry due yet.
    pub fn new(policy: RetryPolicy) -> Retry {
        Retry { policy, next: None }
    }

    /// Records how the rescan that ended at `now` went: a failure schedules
    /// a retry (and returns its delay), a success cancels any.
    pub fn record(&mut self, failed: bool, now: Instant) -> Option<Duration> {
        self.next = failed.then(|| {
            let delay = match self.next {
                Some((_, d)) => (d * 2).min(self.policy.max),
                None => self.policy.first,
            };
            (now + delay, delay)
        });
        self.next.map(|(_, delay)| delay)
    }

    /// When the retry is due, if one is scheduled.
    pub fn due(&self) -> Option<Instant> {
        self.next.map(|(at, _)| at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_a_success_resets_them() {
        let t0 = Instant::now();
        let mut r = Retry::new(RetryPolicy::default());
        assert_eq!(r.due(), None);
        assert_eq!(r.record(true, t0), Some(RETRY_FIRST));
        assert_eq!(r.due(), Some(t0 + Duration::from_secs(5)));
        let mut delays = Vec::new();
        let mut now = t0;
        for _ in 0..8 {
            now += Duration::from_secs(1);
            delays.push(r.record(true, now).unwrap().as_secs());
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(r.due(), Some(now + RETRY_MAX));
        assert_eq!(r.record(false, now), None);
        assert_eq!(r.due(), None);
        assert_eq!(r.record(true, now), Some(RETRY_FIRST), "starts over");
    }

    #[test]
    fn a_success_schedules_nothing() {
        let mut r = Retry::new(RetryPolicy::default());
        assert_eq!(r.record(false, Instant::now()), None);
        assert_eq!(r.due(), None);
    }
}
