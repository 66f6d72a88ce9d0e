//! The first half of a rescan: discover the sources, scan them, merge the
//! scans against the current catalog. A [`Plan`] is what the next catalog
//! would be; nothing is built, applied or published yet. A dry run stops
//! here ([`Plan::dry_run`]): the successor is computed for its changes and
//! thrown away.
//!
//! [`Plan::new`] takes its inputs explicitly (the current catalog, the
//! source specs, the scan and merge options, the ids), so that anything
//! that needs a verdict on sources (a dry run, an offline check) reaches it
//! through the same code as the daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use vm_catalog_protocol::{ApplyOutcome, ApplyStatus, Change, RescanTrigger, SourceLabel, VmName};

use super::{RescanResult, Started};
use crate::catalog::{self, Catalog, Changed, Draft, MergeOptions, Refs, VmIds};
use crate::definition::watch_targets::{Target, targets_of};
use crate::definition::{ScanOptions, SourceScan, rescan_entries, scan_source};
use crate::source::SourceSpec;
use crate::source::partition::PartitionManager;

/// A scan ran out of file descriptors or memory: it says nothing about its
/// source, so nothing may be concluded from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("out of file descriptors or memory while scanning source {label}")]
pub struct ScanExhausted {
    /// The source being scanned.
    pub label: SourceLabel,
}

/// Every source a rescan reads, in precedence order: the directory sources,
/// then the user partitions when they are looked for.
#[derive(Debug)]
pub struct Sources {
    dirs: Vec<SourceSpec>,
    partitions: Option<PartitionManager>,
    /// The partition sources as the last [`Sources::discover`] found them.
    found: Vec<SourceSpec>,
}

impl Sources {
    /// The directory sources `dirs` (in precedence order), and the
    /// partitions of `partitions` after them.
    pub fn new(dirs: Vec<SourceSpec>, partitions: Option<PartitionManager>) -> Sources {
        Sources {
            dirs,
            partitions,
            found: Vec::new(),
        }
    }

    /// Every source, after a partition reconcile: new partitions are
    /// mounted, removed ones are marked gone.
    pub fn discover(&mut self) -> Vec<SourceSpec> {
        if let Some(pm) = &mut self.partitions {
            self.found = pm.reconcile();
        }
        self.known()
    }

    /// Every source as the last [`Sources::discover`] found them, without
    /// looking again (a dry run mounts nothing). An untrusted directory
    /// source on a mount that follows symlinks carries a
    /// `symlinks-followed` warning.
    pub fn known(&self) -> Vec<SourceSpec> {
        self.dirs
            .iter()
            .cloned()
            .map(SourceSpec::with_mount_check)
            .chain(self.found.iter().cloned())
            .collect()
    }

    /// Unmounts the partitions that were removed, now that the catalog and
    /// the applier no longer use them. Returns whether that calls for
    /// another rescan (a partition waiting for a released one can now be
    /// mounted).
    pub fn release_removed(&mut self) -> bool {
        self.partitions
            .as_mut()
            .is_some_and(PartitionManager::release_removed)
    }
}

/// What a rescan keeps for the next one: its scans, the directories it
/// asked to watch, and its definitions' provider references.
#[derive(Debug, Default)]
pub struct Kept {
    /// Its scans, in precedence order.
    pub scans: Vec<SourceScan>,
    /// The directories to watch, as [`targets_of`] made them from `scans`.
    pub targets: Arc<Vec<Target>>,
    /// The provider references of the definitions merged from `scans`
    /// (none until the first merge).
    pub refs: Option<Arc<Refs>>,
}

/// What the next catalog would be.
#[derive(Debug)]
pub struct Plan {
    draft: Draft,
    targets: Arc<Vec<Target>>,
    /// The scans it was merged from, for the next rescan to start from.
    scans: Vec<SourceScan>,
}

impl Plan {
    /// Scans `specs` with `opts` and merges the scans against `current`,
    /// naming the VMs and placing their views as `merge` says; a definition
    /// without an id gets one in `ids`. Fails, and concludes nothing, when a
    /// scan ran out of file descriptors or memory.
    pub fn new(
        current: &Catalog,
        specs: &[SourceSpec],
        opts: &ScanOptions,
        merge: &MergeOptions,
        ids: &mut VmIds,
    ) -> Result<Plan, ScanExhausted> {
        let scans: Vec<SourceScan> = specs.iter().map(|s| scan_source(s, opts)).collect();
        Plan::merged(current, scans, None, merge, ids)
    }

    /// [`Plan::new`] after watch events that named only `dirty` (entries
    /// of source roots) as changed since the rescan that scanned `prev`:
    /// each source reads only its dirty entries again and keeps what its
    /// other entries gave in `prev`; a source that cannot (it was not
    /// ready, its spec changed: it appeared, failed or went; see
    /// [`rescan_entries`]) is read whole. The result is what [`Plan::new`]
    /// would give, as long as nothing outside `dirty` changed. When every
    /// source was read that way and no definition came, went or moved, the
    /// directories to watch are `prev`'s. The merge resolves only the names
    /// of the definitions read again and what depends on them
    /// ([`catalog::merge_changed`]), when it can.
    pub fn changed(
        current: &Catalog,
        prev: Kept,
        dirty: &BTreeSet<(SourceLabel, OsString)>,
        specs: &[SourceSpec],
        opts: &ScanOptions,
        merge: &MergeOptions,
        ids: &mut VmIds,
    ) -> Result<Plan, ScanExhausted> {
        let labels = specs.iter().map(|s| &s.label);
        let mut same_targets = prev.scans.iter().map(|s| &s.spec.label).eq(labels);
        let mut scans_of: BTreeMap<SourceLabel, SourceScan> = prev
            .scans
            .into_iter()
            .map(|s| (s.spec.label.clone(), s))
            .collect();
        let mut changed = Vec::with_capacity(specs.len());
        let scans = specs
            .iter()
            .map(|spec| {
                let names: BTreeSet<OsString> = dirty
                    .iter()
                    .filter(|(label, _)| *label == spec.label)
                    .map(|(_, name)| name.clone())
                    .collect();
                let prev = scans_of.remove(&spec.label);
                let before = prev.as_ref().map(|p| definitions_named(p, &names));
                let diagnostics_before = prev.as_ref().map_or(0, |p| p.diagnostics.len());
                let defs_before = prev.as_ref().map(|p| definitions_of(p, &names));
                match prev.and_then(|p| rescan_entries(p, spec, &names, opts)) {
                    Some(scan) => {
                        same_targets &= before == Some(definitions_named(&scan, &names));
                        let after = definitions_of(&scan, &names);
                        changed.push(Changed {
                            entries: defs_before.map(|b| b.into_iter().zip(after).collect()),
                            diagnostics_before,
                        });
                        scan
                    }
                    None => {
                        same_targets = false;
                        changed.push(Changed {
                            entries: None,
                            diagnostics_before,
                        });
                        scan_source(spec, opts)
                    }
                }
            })
            .collect();
        let targets = same_targets.then_some(prev.targets);
        let since = prev.refs.map(|refs| (changed, refs));
        Plan::merged_since(current, scans, targets, since, merge, ids)
    }

    /// [`Plan::merged`], resolving only what changed when `since` says
    /// what did and the merge can ([`catalog::merge_changed`]).
    fn merged_since(
        current: &Catalog,
        scans: Vec<SourceScan>,
        targets: Option<Arc<Vec<Target>>>,
        since: Option<(Vec<Changed>, Arc<Refs>)>,
        merge: &MergeOptions,
        ids: &mut VmIds,
    ) -> Result<Plan, ScanExhausted> {
        let Some((changed, refs)) = since else {
            return Plan::merged(current, scans, targets, merge, ids);
        };
        if scans.iter().any(|s| s.exhausted) {
            return Plan::merged(current, scans, targets, merge, ids);
        }
        match catalog::merge_changed(current, &scans, &changed, refs, (merge, ids)) {
            Some(draft) => Ok(Plan {
                draft,
                targets: targets.unwrap_or_else(|| Arc::new(targets_of(&scans))),
                scans,
            }),
            None => Plan::merged(current, scans, targets, merge, ids),
        }
    }

    /// Merges `scans`; the directories to watch are `targets`, or made
    /// from the scans.
    fn merged(
        current: &Catalog,
        scans: Vec<SourceScan>,
        targets: Option<Arc<Vec<Target>>>,
        merge: &MergeOptions,
        ids: &mut VmIds,
    ) -> Result<Plan, ScanExhausted> {
        if let Some(s) = scans.iter().find(|s| s.exhausted) {
            return Err(ScanExhausted {
                label: s.spec.label.clone(),
            });
        }
        Ok(Plan {
            draft: catalog::merge_scans(current, &scans, merge, ids),
            targets: targets.unwrap_or_else(|| Arc::new(targets_of(&scans))),
            scans,
        })
    }

    /// Takes what the next rescan starts from: the scans the plan was
    /// merged from, and its directories to watch.
    pub fn take_kept(&mut self) -> Kept {
        Kept {
            scans: std::mem::take(&mut self.scans),
            targets: self.targets.clone(),
            refs: Some(self.draft.refs()),
        }
    }

    /// The merged catalog, before views, apply and publish. (It inherits
    /// the last apply's services and restart-pending flags from the current
    /// catalog, so it differs from it only where the sources do.)
    pub fn draft(&self) -> &Draft {
        &self.draft
    }

    /// The changes from `current` (the catalog the plan was made against)
    /// to the plan, without committing it: the successor is thrown away.
    pub fn changes(self, current: &Catalog) -> Vec<Change> {
        current
            .successor(self.draft)
            .map(|(_, changes)| changes)
            .unwrap_or_default()
    }

    /// A dry run's result: the [`Plan::changes`], and an outcome in which
    /// the generation stays and nothing is applied.
    pub fn dry_run(
        self,
        current: &Catalog,
        trigger: RescanTrigger,
        started: Started,
    ) -> RescanResult {
        let generation = current.generation();
        let changes = self.changes(current);
        let apply = ApplyOutcome {
            status: ApplyStatus::Disabled,
            generation,
            database: None,
            services: 0,
            duration_us: 0,
            message: "dry run: nothing applied".into(),
        };
        let outcome = started.outcome(trigger, true, generation, generation, changes.len(), apply);
        RescanResult { changes, outcome }
    }

    /// The draft to commit, and the directories to watch after it.
    pub fn into_parts(self) -> (Draft, Arc<Vec<Target>>) {
        (self.draft, self.targets)
    }
}

/// The definition of each of `scan`'s entries `names` (`None`: it is not
/// one, or not there).
fn definitions_of(
    scan: &SourceScan,
    names: &BTreeSet<OsString>,
) -> Vec<Option<Arc<crate::definition::Definition>>> {
    let by_name = scan.entries.as_ref().map(|e| &e.by_name);
    names
        .iter()
        .map(|n| by_name?.get(n)?.definition.clone())
        .collect()
}

/// The name and directory of each definition among `scan`'s entries
/// `names` (what the directories to watch are made of).
fn definitions_named(
    scan: &SourceScan,
    names: &BTreeSet<OsString>,
) -> Vec<Option<(VmName, PathBuf)>> {
    let by_name = scan.entries.as_ref().map(|e| &e.by_name);
    names
        .iter()
        .map(|n| {
            let def = by_name?.get(n)?.definition.as_ref()?;
            Some((def.name.clone(), def.dir.clone()))
        })
        .collect()
}
