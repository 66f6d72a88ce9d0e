//! One rescan, end to end: discover the sources, scan them, merge, build the
//! views, apply, and publish the next generation.
//!
//! The pipeline lives on the rescan worker thread (see [`crate::rescan`]),
//! so the partition manager and the applier are only ever used from there.
//! A dry run stops after the merge: it mounts nothing new (it reuses the
//! partitions found by the last real rescan), builds no view, applies
//! nothing and publishes no catalog, only its own outcome in the status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::{ApplyOutcome, ApplyStatus, RescanOutcome, RescanTrigger, SourceState};

use crate::apply::Applier;
use crate::apply::none::NoneApplier;
use crate::apply::s6rc::S6rcApplier;
use crate::catalog::{self, Catalog};
use crate::config::{ApplyConfig, Config};
use crate::definition::{ScanOptions, SourceScan, scan_source};
use crate::hub::{Hub, Published, Status};
use crate::rescan::{Pipeline, RescanError, RescanResult, Rescans};
use crate::source::SourceSpec;
use crate::source::partition::{PartitionManager, UeventListener};
use crate::views;
use crate::watch::Target;

/// Why the pipeline could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The s6-rc applier could not start (bad configuration, no programs,
    /// an unusable live directory).
    #[error("cannot set up the s6-rc applier")]
    Applier(#[source] crate::apply::s6rc::OpenError),
}

/// The real pipeline.
pub struct RealPipeline {
    hub: Arc<Hub>,
    catalog: Catalog,
    dirs: Vec<SourceSpec>,
    partitions: Option<PartitionManager>,
    /// The partition sources of the last real rescan (for dry runs).
    partition_specs: Vec<SourceSpec>,
    uevents: Option<UeventListener>,
    scan: ScanOptions,
    vm_dir: PathBuf,
    applier: Box<dyn Applier>,
    /// The views, remembered between rescans (an unchanged rescan does not
    /// read them back from disk).
    views: views::Views,
    status: Status,
    paths: watch::Sender<Arc<Vec<Target>>>,
}

impl std::fmt::Debug for RealPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealPipeline")
            .field("generation", &self.catalog.generation())
            .field("applier", &self.applier.name())
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RealPipeline {
    /// Sets up the sources, the partition manager (its uevent socket bound
    /// before the first reconcile, so no event is missed) and the applier.
    /// Must be called inside a tokio runtime.
    pub fn open(
        config: &Config,
        hub: Arc<Hub>,
        paths: watch::Sender<Arc<Vec<Target>>>,
    ) -> Result<Self, PipelineError> {
        let (partitions, uevents) = match &config.partitions {
            None => (None, None),
            Some(p) => {
                let uevents = match UeventListener::bind(p.uevent_group) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen to block device uevents; partitions are seen on rescans only");
                        None
                    }
                };
                (Some(PartitionManager::new(p.clone())), uevents)
            }
        };
        let applier: Box<dyn Applier> = match &config.apply {
            ApplyConfig::None => Box::new(NoneApplier::new()),
            ApplyConfig::S6rc(c) => {
                Box::new(S6rcApplier::open(c.clone()).map_err(PipelineError::Applier)?)
            }
        };
        Ok(RealPipeline {
            catalog: Catalog::empty(hub.epoch()),
            hub,
            dirs: config.sources.clone(),
            partitions,
            partition_specs: Vec::new(),
            uevents,
            scan: config.scan.clone(),
            vm_dir: config.vm_dir.clone(),
            views: views::Views::new(&config.vm_dir),
            applier,
            status: Status::default(),
            paths,
        })
    }

    /// The uevent listener, to run on the async side.
    pub fn take_uevents(&mut self) -> Option<Uevents> {
        self.uevents.take().map(Uevents)
    }

    fn discover(&mut self, dry_run: bool) -> Vec<SourceSpec> {
        let mut specs = self.dirs.clone();
        if let Some(pm) = &mut self.partitions {
            if !dry_run {
                self.partition_specs = pm.reconcile();
            }
            specs.extend(self.partition_specs.iter().cloned());
        }
        specs
    }

    /// The directories to watch: each source root (its parent when it is
    /// missing), each definition directory, its `blk/`, `providers/` and
    /// `providers/net/`.
    fn watch_targets(scans: &[SourceScan]) -> Vec<Target> {
        let mut out = Vec::new();
        for s in scans {
            let root = &s.spec.root;
            match s.state {
                SourceState::Ready => {}
                SourceState::Missing => {
                    if let Some(parent) = root.parent() {
                        out.push(Target::root(parent));
                    }
                    continue;
                }
                SourceState::Unavailable | SourceState::Failed => continue,
            }
            out.push(Target::root(root));
            // A definition is the root's child named after the VM.
            for d in &s.definitions {
                let dir = PathBuf::from(d.name.as_str());
                out.push(Target::below(root, &dir));
                for sub in ["blk", "providers", "providers/net"] {
                    out.push(Target::below(root, dir.join(sub)));
                }
            }
        }
        out
    }
}

impl Pipeline for RealPipeline {
    fn run(&mut self, trigger: RescanTrigger, dry_run: bool) -> Result<RescanResult, RescanError> {
        let started = Instant::now();
        let started_unix_ms = now_ms();
        let before = self.catalog.generation();
        let specs = self.discover(dry_run);
        let scans: Vec<SourceScan> = specs.iter().map(|s| scan_source(s, &self.scan)).collect();
        if let Some(s) = scans.iter().find(|s| s.exhausted) {
            // Out of file descriptors or memory: the scan says nothing about
            // the source. Keep the catalog (and every running VM) as it is;
            // the worker retries later.
            return Err(RescanError::Failed(format!(
                "out of file descriptors or memory while scanning source {}: the catalog is unchanged",
                s.spec.label
            )));
        }
        let targets = Self::watch_targets(&scans);
        let mut draft = catalog::merge(&self.catalog, scans, &self.vm_dir);

        // (The draft inherits the last apply's services and restart-pending
        // flags from the catalog, so a dry run shows only real differences.)
        let apply = if dry_run {
            ApplyOutcome {
                status: ApplyStatus::Disabled,
                generation: before,
                database: None,
                services: 0,
                duration_us: 0,
                message: "dry run: nothing applied".into(),
            }
        } else {
            let synced = self.views.sync(draft.active_definitions());
            for e in &synced.errors {
                if let Some(name) = &e.name {
                    draft.reject(name, e.to_diagnostic());
                }
            }
            let report = self.applier.apply(&draft.apply_request());
            draft.annotate(&report);
            report.outcome
        };

        let (changes, generation) = match self.catalog.successor(draft) {
            Some((next, changes)) if !dry_run => {
                let g = next.generation();
                self.catalog = next;
                (changes, g)
            }
            Some((_, changes)) => (changes, before),
            None => (Vec::new(), before),
        };
        let mut apply = apply;
        if !dry_run {
            // The applier saw the draft; the outcome belongs to the generation
            // that was published from it.
            apply.generation = generation;
            if matches!(
                apply.status,
                ApplyStatus::Applied
                    | ApplyStatus::Unchanged
                    | ApplyStatus::Repaired
                    | ApplyStatus::Disabled
            ) {
                self.status.applied_generation = generation;
            }
            self.status.last_apply = Some(apply.clone());
            // Sent after every rescan, changed or not: watches that could
            // not be added before (a directory created since) are retried.
            self.paths.send_replace(Arc::new(targets));
        }
        let outcome = RescanOutcome {
            trigger,
            dry_run,
            generation_before: before,
            generation,
            changes: changes.len() as u32,
            started_unix_ms,
            duration_us: started.elapsed().as_micros() as u64,
            apply,
        };
        self.status.last_rescan = Some(outcome.clone());
        if !dry_run && !changes.is_empty() {
            self.hub.publish(
                Published::new(
                    self.catalog.cursor(),
                    self.catalog.entries().cloned().collect(),
                    self.catalog.sources().to_vec(),
                ),
                changes.clone(),
            );
        }
        self.hub.set_status(self.status.clone());
        log_outcome(&outcome);
        Ok(RescanResult { changes, outcome })
    }

    fn after(&mut self) -> Option<RescanTrigger> {
        let pm = self.partitions.as_mut()?;
        // The catalog and the database no longer use removed partitions:
        // unmount them. A release may let a waiting device be mounted.
        pm.release_removed().then_some(RescanTrigger::Hotplug)
    }
}

fn log_outcome(o: &RescanOutcome) {
    if o.apply.status.is_failure() {
        tracing::warn!(
            trigger = o.trigger.as_str(),
            generation = o.generation,
            apply = o.apply.status.as_str(),
            message = %o.apply.message,
            "rescan done, apply failed"
        );
    } else {
        tracing::info!(
            trigger = o.trigger.as_str(),
            dry_run = o.dry_run,
            generation = o.generation,
            changes = o.changes,
            apply = o.apply.status.as_str(),
            ms = o.duration_us / 1000,
            "rescan done"
        );
    }
}

/// The uevent listener, run on the async side: every hint triggers a rescan
/// (whose first step is a partition reconcile).
pub struct Uevents(UeventListener);

impl std::fmt::Debug for Uevents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Uevents")
    }
}

impl Uevents {
    /// Runs until `shutdown`.
    pub async fn run(mut self, rescans: Rescans, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                hint = self.0.next() => match hint {
                    Ok(h) => {
                        tracing::debug!(events = h.events, lost = h.lost, "block device uevents");
                        rescans.trigger(RescanTrigger::Hotplug);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "uevent listener failed; rescanning");
                        rescans.trigger(RescanTrigger::Hotplug);
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                },
            }
        }
    }
}
