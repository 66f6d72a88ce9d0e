//! The rescan coordinator: one rescan at a time, on one worker thread.
//!
//! Every trigger (start-up, `Rescan` calls, `SIGHUP`, directory watches,
//! partition hotplug, retries) becomes a request on one channel. The worker
//! takes every request that is waiting, runs one rescan for all of them, and
//! answers them all: a request is answered by the first rescan that *started
//! after it arrived*, so a caller's reply always reflects its change on disk.
//! Dry runs are computed separately and never applied or published.
//!
//! The worker owns the [`Pipeline`], and so the applier: every s6-rc call is
//! serialized here. A rescan that started always runs to completion; callers
//! that go away only stop waiting for it.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use vm_catalog_protocol::{Change, RescanOutcome, RescanTrigger};

/// The answer to a rescan request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescanResult {
    /// The changes, in order (computed only, for a dry run).
    pub changes: Vec<Change>,
    /// The outcome.
    pub outcome: RescanOutcome,
}

/// Why a rescan request got no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RescanError {
    /// The daemon is stopping.
    #[error("the daemon is shutting down")]
    Stopped,
    /// The rescan itself failed.
    #[error("{0}")]
    Failed(String),
}

/// What one rescan does: discover, scan, merge, apply, publish.
pub trait Pipeline: Send + 'static {
    /// Runs one rescan. A dry run computes the changes against the published
    /// catalog without applying or publishing anything.
    fn run(&mut self, trigger: RescanTrigger, dry_run: bool) -> Result<RescanResult, RescanError>;

    /// Called after every real rescan: release what the new catalog no
    /// longer uses (unmount removed partitions). Returns a trigger when that
    /// calls for another rescan.
    fn after(&mut self) -> Option<RescanTrigger> {
        None
    }
}

type Reply = oneshot::Sender<Result<RescanResult, RescanError>>;

enum Msg {
    Rescan {
        trigger: RescanTrigger,
        dry_run: bool,
        reply: Option<Reply>,
    },
    Stop,
}

/// First delay before retrying a failed apply; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// A handle to the rescan worker.
#[derive(Debug, Clone)]
pub struct Rescans {
    tx: std_mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Rescan {
                trigger, dry_run, ..
            } => {
                write!(f, "Rescan({}, dry_run={dry_run})", trigger.as_str())
            }
            Msg::Stop => f.write_str("Stop"),
        }
    }
}

impl Rescans {
    /// Starts the worker thread.
    pub fn spawn<P: Pipeline>(pipeline: P) -> (Rescans, JoinHandle<()>) {
        let (tx, rx) = std_mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("rescan".into())
            .spawn(move || {
                Worker {
                    pipeline,
                    rx,
                    retry: None,
                    follow_up: None,
                }
                .run()
            })
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
            reply: None,
        });
    }

    /// Asks the worker to stop once the rescan in progress (if any) is done.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

struct Worker<P> {
    pipeline: P,
    rx: std_mpsc::Receiver<Msg>,
    /// A rescan that [`Pipeline::after`] asked for, run next.
    follow_up: Option<RescanTrigger>,
    retry: Option<(Instant, Duration)>,
}

impl<P: Pipeline> Worker<P> {
    fn run(mut self) {
        loop {
            let first = match self.next_message() {
                Some(m) => m,
                None => return,
            };
            // Everything waiting now arrived before the rescan below starts.
            let mut batch = vec![first];
            batch.extend(self.rx.try_iter());
            let mut stop = false;
            let mut dry = Vec::new();
            let mut real = Vec::new();
            let mut real_trigger = None;
            for msg in batch {
                match msg {
                    Msg::Stop => stop = true,
                    Msg::Rescan {
                        dry_run: true,
                        reply,
                        ..
                    } => dry.extend(reply),
                    Msg::Rescan { trigger, reply, .. } => {
                        real_trigger = Some(pick(real_trigger, trigger));
                        real.extend(reply);
                    }
                }
            }
            if stop {
                for reply in dry.into_iter().chain(real) {
                    let _ = reply.send(Err(RescanError::Stopped));
                }
                return;
            }
            if !dry.is_empty() {
                let result = self.run_once(RescanTrigger::Request, true);
                for reply in dry {
                    let _ = reply.send(result.clone());
                }
            }
            if let Some(trigger) = real_trigger {
                let result = self.run_once(trigger, false);
                self.schedule_retry(&result);
                for reply in real {
                    let _ = reply.send(result.clone());
                }
                let pipeline = &mut self.pipeline;
                self.follow_up = std::panic::catch_unwind(AssertUnwindSafe(|| pipeline.after()))
                    .unwrap_or_else(|_| {
                        tracing::error!("releasing resources after a rescan panicked");
                        None
                    });
            }
        }
    }

    /// Waits for the next message, or makes a retry message when a retry is due.
    fn next_message(&mut self) -> Option<Msg> {
        if let Some(trigger) = self.follow_up.take() {
            return Some(Msg::Rescan {
                trigger,
                dry_run: false,
                reply: None,
            });
        }
        match self.retry {
            None => self.rx.recv().ok(),
            Some((at, _)) => {
                let wait = at.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => Some(Msg::Rescan {
                        trigger: RescanTrigger::Retry,
                        dry_run: false,
                        reply: None,
                    }),
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => None,
                }
            }
        }
    }

    fn run_once(
        &mut self,
        trigger: RescanTrigger,
        dry_run: bool,
    ) -> Result<RescanResult, RescanError> {
        let pipeline = &mut self.pipeline;
        match std::panic::catch_unwind(AssertUnwindSafe(|| pipeline.run(trigger, dry_run))) {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(what, "rescan panicked");
                Err(RescanError::Failed(format!("internal error: {what}")))
            }
        }
    }

    fn schedule_retry(&mut self, result: &Result<RescanResult, RescanError>) {
        let failed = match result {
            Ok(r) => r.outcome.apply.status.is_failure(),
            Err(_) => true,
        };
        self.retry = if failed {
            let delay = match self.retry {
                Some((_, d)) => (d * 2).min(RETRY_MAX),
                None => RETRY_FIRST,
            };
            tracing::info!(
                delay_s = delay.as_secs(),
                "the rescan or apply failed, retrying later"
            );
            Some((Instant::now() + delay, delay))
        } else {
            None
        };
    }
}

/// The trigger reported for a coalesced rescan: an explicit request wins.
fn pick(current: Option<RescanTrigger>, new: RescanTrigger) -> RescanTrigger {
    match current {
        Some(RescanTrigger::Request) => RescanTrigger::Request,
        Some(t) if new == RescanTrigger::Retry => t,
        _ => new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vm_catalog_protocol::{ApplyOutcome, ApplyStatus};

    /// Counts rescans; each takes `delay` and reports its sequence number as
    /// the generation.
    struct Counting {
        runs: Arc<Mutex<Vec<(RescanTrigger, bool)>>>,
        delay: Duration,
        fail_apply: bool,
    }

    impl Pipeline for Counting {
        fn run(
            &mut self,
            trigger: RescanTrigger,
            dry_run: bool,
        ) -> Result<RescanResult, RescanError> {
            std::thread::sleep(self.delay);
            let mut runs = self.runs.lock().unwrap();
            runs.push((trigger, dry_run));
            let n = runs.len() as u64;
            Ok(RescanResult {
                changes: vec![],
                outcome: RescanOutcome {
                    trigger,
                    dry_run,
                    generation_before: n - 1,
                    generation: n,
                    changes: 0,
                    started_unix_ms: 0,
                    duration_us: 0,
                    apply: ApplyOutcome {
                        status: if self.fail_apply {
                            ApplyStatus::FailedBeforeSwitch
                        } else {
                            ApplyStatus::Applied
                        },
                        generation: n,
                        database: None,
                        services: 0,
                        duration_us: 0,
                        message: String::new(),
                    },
                },
            })
        }
    }

    #[tokio::test]
    async fn concurrent_requests_coalesce_into_rescans_that_started_after_them() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let (r, worker) = Rescans::spawn(Counting {
            runs: runs.clone(),
            delay: Duration::from_millis(200),
            fail_apply: false,
        });
        // The first request starts rescan 1; the next ten arrive while it runs.
        let first = tokio::spawn({
            let r = r.clone();
            async move { r.rescan(RescanTrigger::Request, false).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let later: Vec<_> = (0..10)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move { r.rescan(RescanTrigger::Request, false).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap().outcome.generation, 1);
        for h in later {
            // Not answered by rescan 1 (it started before they arrived), all by rescan 2.
            assert_eq!(h.await.unwrap().unwrap().outcome.generation, 2);
        }
        assert_eq!(runs.lock().unwrap().len(), 2);
        r.stop();
        worker.join().unwrap();
    }

    #[tokio::test]
    async fn dry_runs_are_separate_from_real_rescans() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let (r, worker) = Rescans::spawn(Counting {
            runs: runs.clone(),
            delay: Duration::ZERO,
            fail_apply: false,
        });
        let dry = r.rescan(RescanTrigger::Request, true).await.unwrap();
        assert!(dry.outcome.dry_run);
        r.trigger(RescanTrigger::Signal);
        let real = r.rescan(RescanTrigger::Request, false).await.unwrap();
        assert!(!real.outcome.dry_run);
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs[0], (RescanTrigger::Request, true));
        assert!(runs[1..].iter().all(|(_, dry)| !dry));
        r.stop();
        worker.join().unwrap();
    }

    #[tokio::test]
    async fn a_failed_apply_is_retried_without_a_trigger() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let (r, worker) = Rescans::spawn(Counting {
            runs: runs.clone(),
            delay: Duration::ZERO,
            fail_apply: true,
        });
        r.rescan(RescanTrigger::Request, false).await.unwrap();
        // The first retry comes RETRY_FIRST later; poll for it.
        let deadline = Instant::now() + RETRY_FIRST + Duration::from_secs(5);
        while runs.lock().unwrap().len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(runs.lock().unwrap()[1].0, RescanTrigger::Retry);
        r.stop();
        worker.join().unwrap();
    }

    #[tokio::test]
    async fn requests_after_stop_get_stopped() {
        let (r, worker) = Rescans::spawn(Counting {
            runs: Arc::default(),
            delay: Duration::ZERO,
            fail_apply: false,
        });
        r.stop();
        worker.join().unwrap();
        assert_eq!(
            r.rescan(RescanTrigger::Request, false).await,
            Err(RescanError::Stopped)
        );
    }
}
