//! The rescan worker: one thread that takes every request waiting, runs one
//! rescan for all of them (dry runs apart), answers them all, and turns a
//! due [`Retry`] or a follow-up that the pipeline asked for into the next
//! rescan. A panicking rescan is caught and answered as
//! [`RescanError::Panicked`].

use std::panic::AssertUnwindSafe;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use tokio::sync::oneshot;
use vm_catalog_protocol::RescanTrigger;

use super::retry::{Retry, RetryPolicy};
use super::{Pipeline, RescanError, RescanResult};
use crate::definition::watch_targets::Dirty;

type Reply = oneshot::Sender<Result<RescanResult, RescanError>>;

/// A request to the worker.
pub(super) enum Msg {
    Rescan {
        trigger: RescanTrigger,
        dry_run: bool,
        /// What the request says changed ([`Dirty::Whole`] but for watch
        /// events).
        dirty: Dirty,
        reply: Option<Reply>,
    },
    Stop,
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

/// The worker thread's state.
pub(super) struct Worker<P> {
    pipeline: P,
    rx: std_mpsc::Receiver<Msg>,
    /// A rescan that [`Pipeline::after`] asked for, run next.
    follow_up: Option<RescanTrigger>,
    retry: Retry,
}

impl<P: Pipeline> Worker<P> {
    pub(super) fn new(pipeline: P, rx: std_mpsc::Receiver<Msg>, retry: RetryPolicy) -> Self {
        Worker {
            pipeline,
            rx,
            follow_up: None,
            retry: Retry::new(retry),
        }
    }

    /// Serves requests until [`Msg::Stop`] or until every handle is gone.
    pub(super) fn run(mut self) {
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
            let mut dirty = Dirty::Nothing;
            for msg in batch {
                match msg {
                    Msg::Stop => stop = true,
                    Msg::Rescan {
                        dry_run: true,
                        reply,
                        ..
                    } => dry.extend(reply),
                    Msg::Rescan {
                        trigger,
                        reply,
                        dirty: d,
                        ..
                    } => {
                        real_trigger = Some(pick(real_trigger, trigger));
                        dirty.add(d);
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
                let result = self.guarded(|p| p.dry_run(RescanTrigger::Request));
                for reply in dry {
                    let _ = reply.send(result.clone());
                }
            }
            if let Some(trigger) = real_trigger {
                let result = self.guarded(|p| p.rescan_changed(trigger, &dirty));
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
                dirty: Dirty::Whole,
                reply: None,
            });
        }
        match self.retry.due() {
            None => self.rx.recv().ok(),
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => Some(Msg::Rescan {
                        trigger: RescanTrigger::Retry,
                        dry_run: false,
                        dirty: Dirty::Whole,
                        reply: None,
                    }),
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => None,
                }
            }
        }
    }

    /// Runs `f` on the pipeline; a panic becomes [`RescanError::Panicked`].
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut P) -> Result<RescanResult, RescanError>,
    ) -> Result<RescanResult, RescanError> {
        let pipeline = &mut self.pipeline;
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(pipeline))) {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(what, "rescan panicked");
                Err(RescanError::Panicked { what })
            }
        }
    }

    fn schedule_retry(&mut self, result: &Result<RescanResult, RescanError>) {
        let failed = match result {
            Ok(r) => r.outcome.apply.status.is_failure(),
            Err(_) => true,
        };
        let pipeline = &self.pipeline;
        let source_failed =
            std::panic::catch_unwind(AssertUnwindSafe(|| pipeline.needs_retry())).unwrap_or(false);
        if let Some(delay) = self.retry.record(failed || source_failed, Instant::now()) {
            tracing::info!(
                delay_s = delay.as_secs(),
                "the rescan, the apply or a source failed, retrying later"
            );
        }
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
    use crate::rescan::Rescans;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use vm_catalog_protocol::{ApplyOutcome, ApplyStatus, RescanOutcome};

    /// Counts rescans; each takes `delay` and reports its sequence number as
    /// the generation. `panic_on` makes that rescan (1-based) panic.
    #[derive(Default)]
    struct Counting {
        runs: Arc<Mutex<Vec<(RescanTrigger, bool)>>>,
        delay: Duration,
        fail_apply: bool,
        source_failed: bool,
        panic_on: Option<usize>,
        /// What each real rescan was told changed.
        changed: Arc<Mutex<Vec<Dirty>>>,
        /// Told as each rescan starts.
        started: Option<tokio::sync::mpsc::UnboundedSender<()>>,
        /// Each rescan waits for it once started (held: the rescan runs on).
        hold: Option<Arc<tokio::sync::Mutex<()>>>,
    }

    impl Counting {
        fn record(&mut self, trigger: RescanTrigger, dry_run: bool) -> RescanResult {
            if let Some(started) = &self.started {
                let _ = started.send(());
            }
            if let Some(hold) = &self.hold {
                drop(hold.blocking_lock());
            }
            std::thread::sleep(self.delay);
            let mut runs = self.runs.lock().unwrap();
            runs.push((trigger, dry_run));
            let n = runs.len() as u64;
            if self.panic_on == Some(runs.len()) {
                drop(runs);
                panic!("rescan {n} broke");
            }
            RescanResult {
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
            }
        }
    }

    impl Pipeline for Counting {
        fn rescan(&mut self, trigger: RescanTrigger) -> Result<RescanResult, RescanError> {
            Ok(self.record(trigger, false))
        }

        fn rescan_changed(
            &mut self,
            trigger: RescanTrigger,
            dirty: &Dirty,
        ) -> Result<RescanResult, RescanError> {
            self.changed.lock().unwrap().push(dirty.clone());
            self.rescan(trigger)
        }

        fn dry_run(&mut self, trigger: RescanTrigger) -> Result<RescanResult, RescanError> {
            Ok(self.record(trigger, true))
        }

        fn needs_retry(&self) -> bool {
            self.source_failed
        }
    }

    /// The requests waiting in one batch, then the worker run until every
    /// handle is gone: what each real rescan was told changed.
    fn changed_after(send: impl FnOnce(&Rescans)) -> Vec<Dirty> {
        let changed = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std_mpsc::channel();
        send(&Rescans { tx });
        let pipeline = Counting {
            changed: changed.clone(),
            ..Counting::default()
        };
        Worker::new(pipeline, rx, RetryPolicy::default()).run();
        changed.lock().unwrap().clone()
    }

    fn entries(names: &[&str]) -> Dirty {
        Dirty::Entries(
            names
                .iter()
                .map(|n| ("user".parse().unwrap(), (*n).into()))
                .collect(),
        )
    }

    #[test]
    fn coalesced_watch_events_tell_the_rescan_everything_they_marked() {
        let changed = changed_after(|r| {
            r.trigger_changed(entries(&["a"]));
            r.trigger_changed(entries(&["b", "c"]));
        });
        assert_eq!(changed, [entries(&["a", "b", "c"])]);
        // Any other request (here SIGHUP) makes it a whole rescan.
        let changed = changed_after(|r| {
            r.trigger_changed(entries(&["a"]));
            r.trigger(RescanTrigger::Signal);
        });
        assert_eq!(changed, [Dirty::Whole]);
    }

    /// Waits for events, not times (issue 22: a 50 ms guess that rescan 1
    /// had started, and 200 ms for the others to arrive while it ran).
    #[tokio::test]
    async fn concurrent_requests_coalesce_into_rescans_that_started_after_them() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let hold = Arc::new(tokio::sync::Mutex::new(()));
        let held = hold.clone().lock_owned().await;
        let (r, worker) = Rescans::spawn(Counting {
            runs: runs.clone(),
            started: Some(started_tx),
            hold: Some(hold),
            ..Counting::default()
        });
        // The first request starts rescan 1; the next ten arrive while it
        // runs (held until they are all sent).
        let first = tokio::spawn({
            let r = r.clone();
            async move { r.rescan(RescanTrigger::Request, false).await }
        });
        started.recv().await.unwrap();
        let later: Vec<_> = (0..10)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move { r.rescan(RescanTrigger::Request, false).await })
            })
            .collect();
        // Each sends its request when first run: after this task yields,
        // the runtime (one thread) runs the ten, queued before it.
        tokio::task::yield_now().await;
        drop(held);
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
            ..Counting::default()
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
        // Short delays instead of RETRY_FIRST (whose schedule `Retry`'s own
        // tests check without waiting).
        let retry = RetryPolicy {
            first: Duration::from_millis(1),
            max: Duration::from_millis(20),
        };
        let (r, worker) = Rescans::spawn_with(
            Counting {
                runs: runs.clone(),
                fail_apply: true,
                ..Counting::default()
            },
            retry,
        );
        r.rescan(RescanTrigger::Request, false).await.unwrap();
        // Poll for the retry (no one asks for it).
        let give_up = Instant::now() + Duration::from_secs(30);
        while runs.lock().unwrap().len() < 2 && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(runs.lock().unwrap()[1], (RescanTrigger::Retry, false));
        r.stop();
        worker.join().unwrap();
    }

    /// Regression: a source that failed was only seen
    /// again on a trigger; with nothing to watch (a device error), never.
    #[tokio::test]
    async fn a_failed_source_is_retried_without_a_trigger() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let retry = RetryPolicy {
            first: Duration::from_millis(1),
            max: Duration::from_millis(20),
        };
        let (r, worker) = Rescans::spawn_with(
            Counting {
                runs: runs.clone(),
                source_failed: true,
                ..Counting::default()
            },
            retry,
        );
        r.rescan(RescanTrigger::Request, false).await.unwrap();
        let give_up = Instant::now() + Duration::from_secs(30);
        while runs.lock().unwrap().len() < 2 && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(runs.lock().unwrap()[1], (RescanTrigger::Retry, false));
        r.stop();
        worker.join().unwrap();
    }

    #[tokio::test]
    async fn a_panicking_rescan_is_an_error_and_the_worker_carries_on() {
        let (r, worker) = Rescans::spawn(Counting {
            panic_on: Some(1),
            ..Counting::default()
        });
        assert_eq!(
            r.rescan(RescanTrigger::Request, false).await,
            Err(RescanError::Panicked {
                what: "rescan 1 broke".into()
            })
        );
        let next = r.rescan(RescanTrigger::Request, false).await.unwrap();
        assert_eq!(next.outcome.generation, 2);
        r.stop();
        worker.join().unwrap();
    }

    #[tokio::test]
    async fn requests_after_stop_get_stopped() {
        let (r, worker) = Rescans::spawn(Counting::default());
        r.stop();
        worker.join().unwrap();
        assert_eq!(
            r.rescan(RescanTrigger::Request, false).await,
            Err(RescanError::Stopped)
        );
    }
}
