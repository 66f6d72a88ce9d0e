//! The second half of a rescan: make a [`Plan`] the catalog. This is the
//! only place where the catalog meets the views and the applier. Its
//! stages, each a small step of [`Commit::commit`]:
//!
//! 1. **views**: build the views of the draft's active VMs (only those of
//!    the names the draft touched, when the last build's draft became the
//!    catalog); the VMs whose view cannot be built are rejected (the draft
//!    resolves them, and what depends on them, once for all of them);
//! 2. **hooks, apply**: the VMs not prepared yet are prepared
//!    (`crate::hooks`; a VM whose hook fails is left out), the active set
//!    goes to the applier as its request ([`handoff::apply_request`]), the
//!    VMs that left are released and their directories removed, and the
//!    applier's report comes back as the catalog's annotations
//!    ([`handoff::annotations`]; resolved once);
//! 3. **successor**: the draft becomes the next catalog, if anything
//!    changed;
//! 4. **status, watches, publish**: the apply and rescan outcomes go into
//!    the status, the directories to watch to the inotify trigger, and the
//!    new catalog to the readers.
//!
//! A dry run commits nothing: only its outcome goes into the status
//! ([`Commit::record_dry_run`]).

use std::sync::Arc;

use tokio::sync::watch;
use vm_catalog_protocol::{
    ApplyOutcome, ApplyStatus, Change, DiagCode, RescanOutcome, RescanTrigger, VmName,
};

use super::{Plan, RescanResult, Started, handoff};
use crate::apply::{Applier, ApplyReport};
use crate::catalog::{Catalog, Draft};
use crate::definition::watch_targets::WatchSet;
use crate::hooks::{Hooks, VmFacts};
use crate::publish::{Hub, Status};
use crate::views::Views;

/// Where the directories to watch go after every real rescan (changed or
/// not, so that watches that could not be added before are tried again).
pub type Watched = watch::Sender<Arc<WatchSet>>;

/// The stages after the plan, and what they keep between rescans.
pub struct Commit {
    /// The views, remembered between rescans (an unchanged rescan does not
    /// read them back from disk).
    views: Views,
    hooks: Hooks,
    applier: Box<dyn Applier>,
    hub: Arc<Hub>,
    status: Status,
    watched: Watched,
    /// Said once, at the end of the next apply's message (in the status):
    /// what was wrong with the pipeline's own state when it was read.
    note: Option<String>,
    /// The applier's requests, each made from the last.
    requests: handoff::Requests,
    /// The generation of the catalog that the last build of the views
    /// became: a draft merged against it builds only what it touched.
    views_after: Option<u64>,
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
        watched: Watched,
    ) -> Self {
        Commit {
            views,
            hooks,
            applier,
            hub,
            status: Status::default(),
            watched,
            note: None,
            requests: handoff::Requests::default(),
            views_after: None,
        }
    }

    /// Ends the next apply's message with `note` (damage found in the
    /// pipeline's own state: `vm-ids`), so that `vm-catalog status` says it.
    pub fn note_once(&mut self, note: String) {
        self.note = Some(note);
    }

    /// Views → apply → successor → publish: makes `plan` (made against
    /// `catalog`) the catalog, and publishes it if anything changed.
    pub fn commit(
        &mut self,
        catalog: &mut Catalog,
        plan: Plan,
        trigger: RescanTrigger,
        started: Started,
    ) -> RescanResult {
        let before = catalog.generation();
        let (mut draft, targets) = plan.into_parts();
        self.build_views(catalog, &mut draft);
        let report = self.apply(catalog, &mut draft);
        let changes = succeed(catalog, draft);
        self.requests.committed(catalog.generation());
        self.views_after = Some(catalog.generation());
        let apply = self.record_apply(report, catalog.generation());
        let _ = self.watched.send_replace(Arc::new(WatchSet {
            targets,
            scan_started_unix_ms: started.unix_ms,
        }));
        let outcome = started.outcome(
            trigger,
            false,
            before,
            catalog.generation(),
            changes.len(),
            apply,
        );
        self.publish(catalog, &changes, &outcome);
        RescanResult { changes, outcome }
    }

    /// Builds the views of the draft's active VMs (merged against
    /// `current`); the VMs whose view cannot be built are rejected.
    fn build_views(&mut self, current: &Catalog, draft: &mut Draft) {
        let after = self.views_after.take();
        let synced = match draft.touched() {
            Some(touched) if after == Some(current.generation()) => {
                self.views.build_names(draft.candidates(), touched)
            }
            _ => self.views.build(draft.active()),
        };
        draft.reject_all(
            synced
                .errors
                .iter()
                .filter_map(|e| Some((e.name.clone()?, e.to_diagnostic()))),
        );
    }

    /// Applies the draft's active set (against `current`) and annotates the
    /// draft with what the applier reports.
    fn apply(&mut self, current: &Catalog, draft: &mut Draft) -> ApplyReport {
        // Hooks: prepare new VMs before their services exist; release the
        // VMs that left once theirs are gone, then remove their directories.
        let request = self.requests.next(current, draft);
        // The hooks may leave VMs out: theirs is a copy (the kept request
        // is what the next one is made from).
        let mut hooked;
        let (request, held) = match self.hooks.config() {
            None => (request, Vec::new()),
            Some(_) => {
                hooked = request.clone();
                let held = self
                    .hooks
                    .prepare(&mut hooked, |names| VmFacts::of_draft(draft, names));
                (&hooked, held)
            }
        };
        let mut report = self.applier.apply(request);
        report.left_out.extend(held);
        let keep = self.hooks.release(&report);
        if !report.outcome.status.is_failure() {
            // After a failed apply, services of VMs that left may remain:
            // their directories stay until an apply succeeds.
            self.remove_left_views(&keep);
        }
        let mut annotations = handoff::annotations(&report);
        annotations.warnings = self.notes();
        draft.annotate(annotations);
        report
    }

    /// What the readers' side found about published VMs (a UI VM's
    /// listener refused), as warnings for their entries.
    fn notes(&self) -> std::collections::BTreeMap<VmName, Vec<(DiagCode, String)>> {
        self.hub
            .notes()
            .current()
            .into_iter()
            .map(|(vm, notes)| (vm, notes.into_iter().collect()))
            .collect()
    }

    /// Removes the views and directories of the VMs that left, but those
    /// in `keep` (not released yet).
    fn remove_left_views(&mut self, keep: &std::collections::BTreeSet<std::path::PathBuf>) {
        for e in self.views.remove_left(keep).errors {
            tracing::warn!(error = %e, "cannot remove the view of a vm that left");
        }
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

    /// Records the apply's outcome in the status, as that of `generation`
    /// (the one published from the draft the applier saw).
    fn record_apply(&mut self, report: ApplyReport, generation: u64) -> ApplyOutcome {
        let mut apply = report.outcome;
        apply.generation = generation;
        if let Some(note) = self.note.take() {
            apply.message = match apply.message.is_empty() {
                true => note,
                false => format!("{}; {note}", apply.message),
            };
        }
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
        apply
    }

    /// Publishes the status, then the catalog if it changed.
    fn publish(&mut self, catalog: &Catalog, changes: &[Change], outcome: &RescanOutcome) {
        self.status.last_rescan = Some(outcome.clone());
        // The status first: whoever sees the new generation must also see
        // the rescan that made it (a reader that waited for the catalog then
        // asked for `GetInfo` saw the previous rescan's trigger).
        self.hub.set_status(self.status.clone());
        if !changes.is_empty() {
            // Each entry a change names, as the catalog has it now.
            let entry = |e: &vm_catalog_protocol::VmEntry| {
                let same = catalog.candidates_of(e.name.as_str());
                let c = same.iter().find(|c| c.entry.source == e.source)?;
                Some(c.entry.clone())
            };
            let all = || catalog.shared_entries().cloned().collect();
            self.hub.publish_changes(
                (
                    catalog.cursor(),
                    catalog.sources().to_vec(),
                    catalog.names(),
                ),
                changes.to_vec(),
                &entry,
                &all,
            );
            debug_assert!(
                self.hub
                    .current()
                    .vms
                    .iter()
                    .map(|e| &**e)
                    .eq(catalog.entries()),
                "the published entries are the catalog's"
            );
            debug_assert!({
                let p = self.hub.current();
                p.records().vms == (*p).clone().records().vms
            });
        }
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
}

/// Makes `draft` the catalog if anything changed; returns the changes.
fn succeed(catalog: &mut Catalog, draft: Draft) -> Vec<Change> {
    match catalog.successor(draft) {
        Some((next, changes)) => {
            *catalog = next;
            changes
        }
        None => Vec::new(),
    }
}
