//! Signals: `SIGHUP` asks for a rescan; `SIGTERM` and `SIGINT` stop the
//! daemon.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::RescanTrigger;

use crate::rescan::Rescans;

/// The daemon's signal handlers.
#[derive(Debug)]
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers. From then on `SIGTERM` and `SIGINT` no longer
    /// kill the process: they wait, queued, for [`Signals::run`]. Must be
    /// called inside a tokio runtime.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Turns every `SIGHUP` into a rescan; returns at `SIGTERM`, `SIGINT` or
    /// when `shutdown` is cancelled.
    pub async fn run(mut self, rescans: &Rescans, shutdown: &CancellationToken) {
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: rescanning");
                    rescans.trigger(RescanTrigger::Signal);
                }
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
