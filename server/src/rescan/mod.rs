//! Rescans: one at a time, on one worker thread.
//!
//! Every trigger (start-up, `Rescan` calls, the `triggers` module) becomes a
//! request on one channel through the [`Rescans`] handle. The worker
//! takes every request that is waiting, runs one rescan for all of them, and
//! answers them all: a request is answered by the first rescan that *started
//! after it arrived*, so a caller's reply always reflects its change on disk.
//! Dry runs are computed separately and never applied or published.
//!
//! A rescan is a [`plan`] (discover → scan → merge: what the next catalog
//! would be) and a [`commit`] (views → apply → publish: making it the
//! catalog). A dry run is a plan that is not committed. [`pipeline`] holds
//! what lives between rescans and the [`Pipeline`] trait the worker runs.
//!
//! The worker owns the pipeline, and so the applier and the partition
//! manager: every s6-rc call and every mount is serialized there. A rescan
//! that started always runs to completion; callers that go away only stop
//! waiting for it.

pub mod commit;
pub mod handoff;
pub mod ids;
pub mod pipeline;
pub mod plan;
pub mod retry;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use vm_catalog_protocol::{ApplyOutcome, Change, RescanOutcome, RescanTrigger};

pub use pipeline::{Pipeline, PipelineConfig, PipelineError, RealPipeline};
pub use plan::{Plan, ScanExhausted};

use crate::definition::watch_targets::Dirty;
use retry::RetryPolicy;
use worker::{Msg, Worker};

/// The answer to a rescan request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescanResult {
    /// The changes, in order (computed only, for a dry run).
    pub changes: Vec<Change>,
    /// The outcome.
    pub outcome: RescanOutcome,
}

/// Why a rescan request got no result. (A failed apply is not one: the
/// rescan's outcome says how the apply went.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RescanError {
    /// The daemon is stopping.
    #[error("the daemon is shutting down")]
    Stopped,
    /// A scan ran out of file descriptors or memory, so it says nothing
    /// about its source: the catalog (and every running VM) stays as it is,
    /// and the worker retries later.
    #[error("{0}: the catalog is unchanged")]
    ScanExhausted(ScanExhausted),
    /// The rescan panicked (a bug); the worker carries on.
    #[error("internal error: {what}")]
    Panicked {
        /// The panic's message.
        what: String,
    },
}

/// A handle to the rescan worker.
#[derive(Debug, Clone)]
pub struct Rescans {
    tx: std_mpsc::Sender<Msg>,
}

impl Rescans {
    /// Starts the worker thread, retrying failures after the default delays.
    pub fn spawn<P: Pipeline>(pipeline: P) -> (Rescans, JoinHandle<()>) {
        Rescans::spawn_with(pipeline, RetryPolicy::default())
    }

    /// Starts the worker thread, retrying failures after `retry`'s delays.
    pub fn spawn_with<P: Pipeline>(pipeline: P, retry: RetryPolicy) -> (Rescans, JoinHandle<()>) {
        let (tx, rx) = std_mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("rescan".into())
            .spawn(move || Worker::new(pipeline, rx, retry).run())
            .expect("spawning the rescan thread");
        (Rescans { tx }, handle)
    }

    /// Asks for a rescan and waits for its result.
    pub async fn rescan(
        &self,
        trigger: RescanTrigger,
        dry_run: bool,
    ) -> Result<RescanResult, RescanError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Rescan {
                trigger,
                dry_run,
                dirty: Dirty::Whole,
                reply: Some(reply),
            })
            .map_err(|_| RescanError::Stopped)?;
        rx.await.map_err(|_| RescanError::Stopped)?
    }

    /// Asks for a rescan without waiting (signals, watches, hotplug).
    pub fn trigger(&self, trigger: RescanTrigger) {
        let _ = self.tx.send(Msg::Rescan {
            trigger,
            dry_run: false,
            dirty: Dirty::Whole,
            reply: None,
        });
    }

    /// Asks for a rescan after watch events that marked `dirty`, without
    /// waiting.
    pub fn trigger_changed(&self, dirty: Dirty) {
        let _ = self.tx.send(Msg::Rescan {
            trigger: RescanTrigger::Watch,
            dry_run: false,
            dirty,
            reply: None,
        });
    }

    /// Asks the worker to stop once the rescan in progress (if any) is done.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }

    /// A handle with no worker behind it: what is asked of it is kept for
    /// a trigger's tests to read, at the moment they look.
    #[cfg(test)]
    pub(crate) fn recording() -> (Rescans, Requested) {
        let (tx, rx) = std_mpsc::channel();
        (Rescans { tx }, Requested(rx))
    }
}

/// What was asked of a [`Rescans::recording`] handle.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Requested(std_mpsc::Receiver<Msg>);

#[cfg(test)]
impl Requested {
    /// The oldest request not read yet, without waiting: its trigger and
    /// what it marked as changed.
    pub(crate) fn next(&self) -> Option<(RescanTrigger, Dirty)> {
        match self.0.try_recv().ok()? {
            Msg::Rescan { trigger, dirty, .. } => Some((trigger, dirty)),
            Msg::Stop => None,
        }
    }
}

/// When a rescan started, for its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    at: Instant,
    unix_ms: u64,
}

impl Started {
    pub fn now() -> Started {
        Started {
            at: Instant::now(),
            unix_ms: now_unix_ms(),
        }
    }

    /// The outcome of the rescan that started then and ends now.
    pub(crate) fn outcome(
        &self,
        trigger: RescanTrigger,
        dry_run: bool,
        generation_before: u64,
        generation: u64,
        changes: usize,
        apply: ApplyOutcome,
    ) -> RescanOutcome {
        RescanOutcome {
            trigger,
            dry_run,
            generation_before,
            generation,
            changes: changes as u32,
            started_unix_ms: self.unix_ms,
            duration_us: self.at.elapsed().as_micros() as u64,
            apply,
        }
    }
}

/// Wall-clock time in milliseconds since the Unix epoch, as the protocol
/// reports times (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
