//! The [`Pipeline`] the rescan worker runs, and the real one: what lives
//! between rescans (the catalog, the sources and the partition manager, the
//! views and the applier) and a rescan as [`Plan`] then [`Commit`].
//!
//! The pipeline lives on the rescan worker thread, so the partition manager
//! and the applier are only ever used from there. A dry run is a plan that
//! is not committed: it mounts nothing new (it reuses the partitions found
//! by the last real rescan), builds no view, applies nothing and publishes
//! no catalog, only its own outcome in the status.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use vm_catalog_protocol::{RescanOutcome, RescanTrigger, SourceKind, SourceLabel, SourceState};

use super::commit::{Commit, Watched};
use super::plan::{Kept, Plan, Sources};
use super::{RescanError, RescanResult, Started};
use crate::apply::ApplyConfig;
use crate::catalog::{Catalog, MergeOptions, VmIds};
use crate::definition::ScanOptions;
use crate::definition::watch_targets::Dirty;
use crate::hooks::{HookConfig, Hooks};
use crate::publish::Hub;
use crate::source::SourceSpec;
use crate::source::partition::{PartitionConfig, PartitionManager};
use crate::views::Views;

/// What the rescan worker runs.
pub trait Pipeline: Send + 'static {
    /// One rescan: plan it (discover, scan, merge) and commit it (views,
    /// apply, publish).
    fn rescan(&mut self, trigger: RescanTrigger) -> Result<RescanResult, RescanError>;

    /// One rescan, after requests that together marked `dirty` as changed
    /// ([`Dirty::Whole`] unless only watch events asked). The real
    /// pipeline reads again only what `dirty` names; by default,
    /// [`Pipeline::rescan`].
    fn rescan_changed(
        &mut self,
        trigger: RescanTrigger,
        dirty: &Dirty,
    ) -> Result<RescanResult, RescanError> {
        let _ = dirty;
        self.rescan(trigger)
    }

    /// A dry run: plan a rescan and report what it would change, against
    /// the published catalog, without committing anything.
    fn dry_run(&mut self, trigger: RescanTrigger) -> Result<RescanResult, RescanError>;

    /// Called after every real rescan, once its callers have their answer:
    /// tidy up after the apply, release what the new catalog no longer uses
    /// (unmount removed partitions). Returns a trigger when that
    /// calls for another rescan.
    fn after(&mut self) -> Option<RescanTrigger> {
        None
    }

    /// Whether the catalog holds a failure that a later rescan may clear
    /// by itself (a directory source that failed: a device error, a
    /// directory that could not be read), so that the worker retries even
    /// if no watch fires.
    fn needs_retry(&self) -> bool {
        false
    }
}

/// Why the pipeline could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The applier could not start.
    #[error(transparent)]
    Applier(#[from] crate::apply::OpenError),
}

/// What the real pipeline is made of, as the configuration stage
/// (`config.rs`) resolved it from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// The directory sources, in precedence order (built-in first).
    pub sources: Vec<SourceSpec>,
    /// How every source is scanned (the trusted symlink target prefixes).
    pub scan: ScanOptions,
    /// Partition discovery; `None`: off.
    pub partitions: Option<PartitionConfig>,
    /// The applier.
    pub apply: ApplyConfig,
    /// How VMs are named and where their views are built.
    pub merge: MergeOptions,
    /// Where the VM ids are kept (`<state-dir>/vm-ids`).
    pub ids_file: PathBuf,
    /// The per-VM hook; `None`: no `--vm-hook`.
    pub vm_hook: Option<HookConfig>,
}

/// The real pipeline.
pub struct RealPipeline {
    /// The current catalog: what the next plan is merged against.
    catalog: Catalog,
    sources: Sources,
    scan: ScanOptions,
    merge: MergeOptions,
    /// Every definition's id, as kept in `ids_file`.
    ids: VmIds,
    ids_file: super::ids::Journal,
    commit: Commit,
    /// What the last real rescan kept for the next one to read only what
    /// watch events say changed (nothing until the first).
    kept: Kept,
}

impl std::fmt::Debug for RealPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealPipeline")
            .field("generation", &self.catalog.generation())
            .field("commit", &self.commit)
            .finish()
    }
}

impl RealPipeline {
    /// Sets up the sources, the partition manager and the applier; the
    /// directories to watch go to `watched` after every rescan. (The daemon
    /// binds the uevent listener before the first rescan, so that no
    /// hotplug event before the first reconcile is missed.) Must be called
    /// inside a tokio runtime.
    pub fn open(
        config: &PipelineConfig,
        hub: Arc<Hub>,
        watched: Watched,
    ) -> Result<Self, PipelineError> {
        let partitions = config.partitions.clone().map(PartitionManager::new);
        let applier = crate::apply::open(&config.apply)?;
        let (ids, damage) = super::ids::load(
            &config.ids_file,
            random_seed(),
            &super::ids::OnDisk::of(config),
        );
        warn_of_symlink_races(&config.sources);
        let mut views = Views::with_layout(&config.merge.vm_dir, config.merge.layout);
        if let ApplyConfig::Instance(c) = &config.apply {
            views = views.with_service_links(&c.service);
        }
        let hooks = match &config.vm_hook {
            Some(h) => Hooks::open(h.clone()),
            None => Hooks::none(),
        };
        let mut commit = Commit::new(views, hooks, applier, hub.clone(), watched);
        if let Some(damage) = damage {
            commit.note_once(damage.to_string());
        }
        Ok(RealPipeline {
            catalog: Catalog::empty(hub.epoch()),
            sources: Sources::new(config.sources.clone(), partitions),
            scan: config.scan.clone(),
            merge: config.merge.clone(),
            ids,
            ids_file: super::ids::Journal::new(config.ids_file.clone()),
            commit,
            kept: Kept::default(),
        })
    }

    /// A pipeline of the directory sources `sources` only (no partitions,
    /// no hooks) whose views go where `merge` says, applied by `applier`,
    /// with ids from a fixed `seed` kept in `ids_file`: for tests and
    /// benches that drive rescans without a daemon.
    pub fn of_directories(
        sources: Vec<SourceSpec>,
        scan: ScanOptions,
        merge: MergeOptions,
        (ids_file, seed): (PathBuf, u64),
        applier: Box<dyn crate::apply::Applier>,
        (hub, watched): (Arc<Hub>, Watched),
    ) -> RealPipeline {
        let views = Views::with_layout(&merge.vm_dir, merge.layout);
        RealPipeline {
            catalog: Catalog::empty(hub.epoch()),
            sources: Sources::new(sources, None),
            scan,
            merge,
            ids: VmIds::new(seed),
            ids_file: super::ids::Journal::new(ids_file),
            commit: Commit::new(views, Hooks::none(), applier, hub, watched),
            kept: Kept::default(),
        }
    }

    /// Calls `f` with each VM about to be released, before its `--vm-hook`
    /// runs (the UI VM listeners in its directories go first).
    pub fn before_release(&mut self, f: crate::hooks::BeforeRelease) {
        self.commit.before_release(f);
    }

    /// Plans a rescan of `specs`; new definitions get their ids in `ids`.
    fn plan(&self, specs: &[SourceSpec], ids: &mut VmIds) -> Result<Plan, RescanError> {
        Plan::new(&self.catalog, specs, &self.scan, &self.merge, ids)
            .map_err(RescanError::ScanExhausted)
    }

    /// Plans the rescan after watch events that marked `dirty`: from the
    /// last rescan's scans, reading again only the entries `dirty` names
    /// ([`Plan::changed`]); whole when `dirty` is [`Dirty::Whole`] or there
    /// is no last rescan.
    fn plan_changed(
        &mut self,
        specs: &[SourceSpec],
        dirty: &Dirty,
        ids: &mut VmIds,
    ) -> Result<Plan, RescanError> {
        let prev = std::mem::take(&mut self.kept);
        let entries = match dirty {
            _ if prev.scans.is_empty() => return self.plan(specs, ids),
            Dirty::Whole => return self.plan(specs, ids),
            Dirty::Nothing => &BTreeSet::new(),
            Dirty::Entries(entries) => entries,
        };
        Plan::changed(
            &self.catalog,
            prev,
            entries,
            specs,
            &self.scan,
            &self.merge,
            ids,
        )
        .map_err(RescanError::ScanExhausted)
    }

    /// Saves the ids if they changed (what changed, appended: see
    /// [`super::ids::Journal`]). They are saved before anything is built
    /// with a new one, so that a crash cannot give a view or a service
    /// another id at the next start.
    fn save_ids(&mut self) {
        if let Err(e) = self.ids_file.save(&mut self.ids) {
            tracing::warn!(
                file = %self.ids_file.path().display(),
                error = %e,
                "cannot save the VM ids; new ones may change at the next start"
            );
        }
    }

    /// Forgets the ids of definitions that left the catalog although their
    /// source was read (a source that is gone, failed or not listed keeps
    /// its definitions' ids, for when it is back).
    fn prune_ids(&mut self) {
        let read: BTreeSet<&SourceLabel> = self
            .catalog
            .sources()
            .iter()
            .filter(|s| matches!(s.state, SourceState::Ready | SourceState::Missing))
            .map(|s| &s.label)
            .collect();
        let present: BTreeSet<(&SourceLabel, &vm_catalog_protocol::VmName)> = self
            .catalog
            .candidates()
            .iter()
            .map(|c| (&c.entry.source, &c.definition.name))
            .collect();
        self.ids
            .retain(|(label, name)| !read.contains(label) || present.contains(&(label, name)));
    }
}

/// Whether `changes` may have made an id unused ([`RealPipeline::prune_ids`]):
/// a definition left (its VM entry was removed), or a source changed
/// (whether it was read). Otherwise pruning would keep every id, and is
/// skipped: it reads the whole catalog.
fn may_leave_ids(changes: &[vm_catalog_protocol::Change]) -> bool {
    use vm_catalog_protocol::{ChangeItem, ChangeKind};
    changes.iter().any(|c| match c.item {
        ChangeItem::Source(_) => true,
        ChangeItem::Vm(_) => c.kind == ChangeKind::Removed,
    })
}

/// Warns, once at start, of each untrusted directory source whose file
/// system is not mounted `nosymfollow` (its sources entry says so too).
fn warn_of_symlink_races(sources: &[SourceSpec]) {
    for s in sources {
        if s.follows_symlinks() {
            tracing::warn!(
                source = %s.label,
                root = %crate::definition::display_path(&s.root),
                "untrusted source on a file system not mounted nosymfollow: a symlink \
                 planted after a scan can redirect a VMM; mount it nosymfollow"
            );
        }
    }
}

/// A seed for new ids: the kernel's randomness (the time, without it).
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        b = (super::now_unix_ms() ^ u64::from(std::process::id()) << 40).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

impl Pipeline for RealPipeline {
    fn rescan(&mut self, trigger: RescanTrigger) -> Result<RescanResult, RescanError> {
        self.rescan_changed(trigger, &Dirty::Whole)
    }

    fn rescan_changed(
        &mut self,
        trigger: RescanTrigger,
        dirty: &Dirty,
    ) -> Result<RescanResult, RescanError> {
        let span = tracing::info_span!(
            "rescan",
            trigger = trigger.as_str(),
            changed = %dirty,
            from = self.catalog.generation(),
            generation = tracing::field::Empty,
        );
        let _entered = span.enter();
        let started = Started::now();
        let specs = self.sources.discover();
        let mut ids = std::mem::replace(&mut self.ids, VmIds::new(0));
        let plan = self.plan_changed(&specs, dirty, &mut ids);
        self.ids = ids;
        let mut plan = plan?;
        self.save_ids();
        self.kept = plan.take_kept();
        let result = self
            .commit
            .commit(&mut self.catalog, plan, trigger, started);
        span.record("generation", result.outcome.generation);
        if may_leave_ids(&result.changes) {
            self.prune_ids();
        }
        self.save_ids();
        log_outcome(&result.outcome);
        Ok(result)
    }

    fn dry_run(&mut self, trigger: RescanTrigger) -> Result<RescanResult, RescanError> {
        let span = tracing::info_span!(
            "rescan",
            trigger = trigger.as_str(),
            dry_run = true,
            generation = self.catalog.generation(),
        );
        let _entered = span.enter();
        let started = Started::now();
        // New definitions get ids for the dry run only: they are not kept.
        let mut ids = self.ids.clone();
        let plan = self.plan(&self.sources.known(), &mut ids)?;
        let result = plan.dry_run(&self.catalog, trigger, started);
        self.commit.record_dry_run(&result.outcome);
        log_outcome(&result.outcome);
        Ok(result)
    }

    fn needs_retry(&self) -> bool {
        // Partitions are retried by hotplug and their manager.
        self.commit.needs_retry()
            || self
                .catalog
                .sources()
                .iter()
                .any(|s| s.state == SourceState::Failed && s.kind != SourceKind::Partition)
    }

    fn after(&mut self) -> Option<RescanTrigger> {
        // The callers have their answer: the applier removes what the apply
        // left (old databases).
        self.commit.tidy();
        // The catalog and the database no longer use removed partitions:
        // unmount them. A release may let a waiting device be mounted.
        self.sources
            .release_removed()
            .then_some(RescanTrigger::Hotplug)
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
