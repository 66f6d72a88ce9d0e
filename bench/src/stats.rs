//! Summaries shared by the newer suites: median, min and max of repeated
//! runs, percentiles of latency samples, and how the tables print them.

use std::time::Duration;

/// Repeated measurements of one figure (one value per run).
#[derive(Debug, Clone, Default)]
pub(crate) struct Runs(pub Vec<f64>);

impl Runs {
    /// Adds one run's value.
    pub(crate) fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median (the upper one of an even count); 0 without runs.
    pub(crate) fn median(&self) -> f64 {
        let v = self.sorted();
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// The smallest value; 0 without runs.
    pub(crate) fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(0.0)
    }

    /// The largest value; 0 without runs.
    pub(crate) fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(0.0)
    }

    /// `median [min-max]` with `decimals` digits after the point.
    pub(crate) fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} [{:.d$}-{:.d$}]",
            self.median(),
            self.min(),
            self.max(),
            d = decimals
        )
    }
}

/// The `p`-th percentile (0–100) of `samples` (sorted in place), by the
/// nearest-rank method; zero for no samples.
pub(crate) fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Microseconds, as a float.
pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Milliseconds, as a float.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_give_median_min_and_max() {
        let r = Runs(vec![3.0, 1.0, 2.0, 10.0, 4.0]);
        assert_eq!(r.median(), 3.0);
        assert_eq!(r.min(), 1.0);
        assert_eq!(r.max(), 10.0);
        assert_eq!(r.show(1), "3.0 [1.0-10.0]");
        assert_eq!(Runs::default().median(), 0.0);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        assert_eq!(percentile(&mut v, 50.0), Duration::from_micros(50));
        assert_eq!(percentile(&mut v, 99.0), Duration::from_micros(99));
        assert_eq!(percentile(&mut v, 100.0), Duration::from_micros(100));
        assert_eq!(percentile(&mut [], 50.0), Duration::ZERO);
    }
}
