//! A [`Draft`]: the next catalog before it is published. Views are built
//! from it, the applier is fed from it and annotates it, and
//! [`super::Catalog::successor`] turns it into the next snapshot.

use std::collections::BTreeMap;

use vm_catalog_protocol::{Cursor, DiagCode, Diagnostic, SourceEntry, VmEntry, VmName, VmState};

use super::resolve::{Annotations, Raw, resolve};
use super::{Candidate, MergeOptions, active_vms};
use crate::apply::{ActiveVm, ApplyReport, ApplyRequest};
use crate::definition::Definition;

/// The merged result of a rescan, not yet published.
#[derive(Debug, Clone)]
pub struct Draft {
    base: Cursor,
    base_active: Vec<ActiveVm>,
    opts: MergeOptions,
    raws: Vec<Raw>,
    forced: BTreeMap<VmName, Vec<Diagnostic>>,
    notes: Annotations,
    sources: Vec<SourceEntry>,
    candidates: Vec<Candidate>,
}

impl Draft {
    pub(super) fn new(
        base: Cursor,
        base_active: Vec<ActiveVm>,
        opts: MergeOptions,
        raws: Vec<Raw>,
        sources: Vec<SourceEntry>,
        notes: Annotations,
    ) -> Draft {
        let mut d = Draft {
            base,
            base_active,
            opts,
            raws,
            forced: BTreeMap::new(),
            notes,
            sources,
            candidates: Vec::new(),
        };
        d.rebuild();
        d
    }

    fn rebuild(&mut self) {
        self.candidates = resolve(
            &self.raws,
            &self.sources,
            &self.forced,
            &self.opts,
            &self.notes,
        );
    }

    /// The catalog position this draft was merged against.
    pub fn base(&self) -> Cursor {
        self.base
    }

    /// Every candidate, sorted by name then precedence (revisions are not
    /// set yet).
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Every candidate's entry.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &VmEntry> + '_ {
        self.candidates.iter().map(|c| &c.entry)
    }

    /// The sources, in precedence order.
    pub fn sources(&self) -> &[SourceEntry] {
        &self.sources
    }

    /// The definitions of the active VMs, sorted by name.
    pub fn active_definitions(&self) -> Vec<&Definition> {
        self.active().map(|c| &*c.definition).collect()
    }

    /// The active candidates, sorted by name: what the views show.
    pub fn active(&self) -> impl Iterator<Item = &Candidate> + '_ {
        self.candidates
            .iter()
            .filter(|c| c.entry.state == VmState::Active)
    }

    /// How the draft names VMs and places their views.
    pub fn options(&self) -> &MergeOptions {
        &self.opts
    }

    /// Rejects the VM `name` from outside the scan (for example, its view
    /// could not be built), with `diagnostic`; VMs it provides for are
    /// rejected too. Does nothing if `name` is not claimed.
    pub fn reject(&mut self, name: &VmName, diagnostic: Diagnostic) {
        self.forced
            .entry(name.clone())
            .or_default()
            .push(diagnostic);
        self.rebuild();
    }

    /// What the applier must make live: every active VM, sorted by name.
    ///
    /// `generation` is the base generation when the active set (names,
    /// views, providers, fingerprints) is the base's, else base + 1: the
    /// generation whose active set this is. (If only other things changed,
    /// the published catalog becomes base + 1 with the same active set.)
    pub fn apply_request(&self) -> ApplyRequest {
        let vms = active_vms(&self.candidates);
        let generation = if vms == self.base_active {
            self.base.generation
        } else {
            self.base.generation + 1
        };
        ApplyRequest { generation, vms }
    }

    /// Records what the applier reports: `service` and `restart_pending` of
    /// the active entries follow `report` (other entries have neither), and
    /// each VM the applier left out of the database gets an error
    /// diagnostic with the applier's code; it stays active (its view and
    /// definition are fine) with no service.
    pub fn annotate(&mut self, report: &ApplyReport) {
        let mut left_out: BTreeMap<VmName, Vec<(DiagCode, String)>> = BTreeMap::new();
        for l in &report.left_out {
            left_out
                .entry(l.vm.clone())
                .or_default()
                .push((l.code, l.message.clone()));
        }
        self.notes = Annotations {
            services: report
                .services
                .iter()
                .map(|(vm, service)| (vm.clone(), service.to_string()))
                .collect(),
            restart_pending: report.restart_pending.clone(),
            left_out,
        };
        self.rebuild();
    }

    /// Takes the draft apart for [`super::Catalog::successor`].
    pub(super) fn into_parts(self) -> (Vec<SourceEntry>, Vec<Candidate>, Annotations) {
        (self.sources, self.candidates, self.notes)
    }
}
