//! Logging: `tracing` set up from the command line, and a rate limit for
//! lines that clients can trigger.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `level` is an `EnvFilter` directive
/// (`info`, `debug`, `vm_catalogd::rpc=debug,info`); `RUST_LOG` wins when set.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Allows `burst` events per `window`; beyond that, events are dropped and
/// counted, and the next allowed event reports how many were suppressed.
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    window: Duration,
    state: Mutex<(Instant, u32, u64)>,
}

impl RateLimit {
    /// A limit of `burst` events per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        RateLimit {
            burst,
            window,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// Whether to log this event.
    pub fn allow(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(s.0) >= self.window {
            if s.2 > 0 {
                tracing::warn!(suppressed = s.2, "log lines suppressed by the rate limit");
            }
            *s = (now, 0, 0);
        }
        if s.1 < self.burst {
            s.1 += 1;
            true
        } else {
            s.2 += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_drops() {
        let r = RateLimit::new(3, Duration::from_secs(3600));
        assert_eq!((0..10).filter(|_| r.allow()).count(), 3);
    }
}
