//! Telling connections to end with a `Goodbye`, and why, before the daemon
//! stops: a UI VM's listener is removed, or a user's connection is evicted.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// Tells connections to end with a `Goodbye` (and why); a child of the
/// daemon's shutdown, which stops it too.
#[derive(Debug, Clone)]
pub(super) struct Stop {
    token: CancellationToken,
    reason: Arc<OnceLock<&'static str>>,
}

impl Stop {
    /// A stop that `shutdown` also triggers.
    pub(super) fn under(shutdown: &CancellationToken) -> Stop {
        Stop {
            token: shutdown.child_token(),
            reason: Arc::new(OnceLock::new()),
        }
    }

    /// Ends every connection of this stop with a `Goodbye` saying `reason`.
    pub(super) fn stop(&self, reason: &'static str) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Waits until it is triggered.
    pub(super) async fn stopped(&self) {
        self.token.cancelled().await;
    }

    /// Whether it was triggered.
    #[cfg(test)]
    pub(super) fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why, once triggered ("shutting down" when the daemon stops).
    pub(super) fn reason(&self) -> &'static str {
        self.reason.get().copied().unwrap_or("shutting down")
    }
}
