//! The second half of a rescan: make a [`Plan`] the catalog. Build the
//! views of its active VMs (a VM whose view cannot be built is rejected),
//! prepare the new ones (`crate::hooks`: a VM whose hook fails is left out),
//! apply the active set (the applier's report annotates the draft), release
//! the VMs that left and remove their directories, take
//! the successor, and publish it with the status. A dry run commits
//! nothing: only its outcome goes into the status
//! ([`Commit::record_dry_run`]).

use std::sync::Arc;

use vm_catalog_protocol::{ApplyStatus, RescanOutcome, RescanTrigger};

use super::{Plan, RescanResult, Started};
use crate::apply::Applier;
use crate::catalog::{Catalog, Draft};
use crate::hooks::{Hooks, VmFacts};
use crate::publish::{Hub, Published, Status};
use crate::triggers::inotify::TargetTx;
use crate::views::Views;

/// The stages after the plan, and what they keep between rescans.
pub struct Commit {
    /// The views, remembered between rescans (an unchanged rescan does not
    /// read them back from disk).
    views: Views,
    hooks: Hooks,
    applier: Box<dyn Applier>,
    hub: Arc<Hub>,
    status: Status,
    watched: TargetTx,
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commit")
            .field("views", &self.views.vm_dir())
            .field("applier", &self.applier.name())
            .finish()
    }
}

impl Commit {
    /// Views in `views`, applied by `applier`, published on `hub`; the
    /// directories to watch go to `watched`.
    pub fn new(
        views: Views,
        hooks: Hooks,
        applier: Box<dyn Applier>,
        hub: Arc<Hub>,
        watched: TargetTx,
    ) -> Self {
        Commit {
            views,
            hooks,
            applier,
            hub,
            status: Status::default(),
            watched,
        }
    }

    /// Views → apply → publish: makes `plan` (made against `catalog`) the
    /// catalog, and publishes it if anything changed.
    pub fn commit(
        &mut self,
        catalog: &mut Catalog,
        plan: Plan,
        trigger: RescanTrigger,
        started: Started,
    ) -> RescanResult {
        let before = catalog.generation();
        let (mut draft, targets) = plan.into_parts();
        self.build_views(&mut draft);
        // Hooks: prepare new VMs before their services exist; release the
        // VMs that left once theirs are gone, then remove their directories.
        let mut request = draft.apply_request();
        let held = self
            .hooks
            .prepare(&mut request, |names| VmFacts::of_draft(&draft, names));
        let mut report = self.applier.apply(&request);
        report.left_out.extend(held);
        let keep = self.hooks.release(&report);
        if !report.outcome.status.is_failure() {
            // After a failed apply, services of VMs that left may remain:
            // their directories stay until an apply succeeds.
            self.remove_left_views(&keep);
        }
        draft.annotate(&report);
        let changes = match catalog.successor(draft) {
            Some((next, changes)) => {
                *catalog = next;
                changes
            }
            None => Vec::new(),
        };
        let generation = catalog.generation();
        // The applier saw the draft; the outcome belongs to the generation
        // that was published from it.
        let mut apply = report.outcome;
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
        self.watched.set(targets);
        let outcome = started.outcome(trigger, false, before, generation, changes.len(), apply);
        self.status.last_rescan = Some(outcome.clone());
        // The status first: whoever sees the new generation must also see
        // the rescan that made it (a reader that waited for the catalog then
        // asked for `GetInfo` saw the previous rescan's trigger).
        self.hub.set_status(self.status.clone());
        if !changes.is_empty() {
            self.hub.publish(
                Published::new(
                    catalog.cursor(),
                    catalog.entries().cloned().collect(),
                    catalog.sources().to_vec(),
                    catalog.names(),
                ),
                changes.clone(),
            );
        }
        RescanResult { changes, outcome }
    }

    /// The applier's work put off until after the reply
    /// ([`Applier::tidy`]).
    pub fn tidy(&mut self) {
        self.applier.tidy();
    }

    /// Records a dry run's outcome in the status, and publishes the status:
    /// a dry run commits nothing else.
    pub fn record_dry_run(&mut self, outcome: &RescanOutcome) {
        self.status.last_rescan = Some(outcome.clone());
        self.hub.set_status(self.status.clone());
    }

    /// Calls `f` with each VM about to be released, before its hook runs
    /// ([`Hooks::before_release`]).
    pub fn before_release(&mut self, f: crate::hooks::BeforeRelease) {
        self.hooks.before_release(f);
    }

    /// Whether a hook failed, so that a retry is due.
    pub fn needs_retry(&self) -> bool {
        self.hooks.needs_retry()
    }

    /// Removes the views and directories of the VMs that left, but those
    /// in `keep` (not released yet).
    fn remove_left_views(&mut self, keep: &std::collections::BTreeSet<std::path::PathBuf>) {
        for e in self.views.remove_left(keep).errors {
            tracing::warn!(error = %e, "cannot remove the view of a vm that left");
        }
    }

    /// Builds the views of the draft's active VMs; a VM whose view cannot
    /// be built is rejected.
    fn build_views(&mut self, draft: &mut Draft) {
        let synced = self.views.build(draft.active());
        for e in &synced.errors {
            if let Some(name) = &e.name {
                draft.reject(name, e.to_diagnostic());
            }
        }
    }
}
