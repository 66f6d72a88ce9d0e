//! A [`Draft`]: the next catalog before it is published. The rescan's commit
//! builds views from it and rejects the VMs whose view failed (once, for
//! all of them: [`Draft::reject_all`]), feeds its active set to the applier
//! and annotates it with the report (once: [`Draft::annotate`]), and
//! [`super::Catalog::successor`] turns it into the next snapshot. Each of
//! those resolves the draft again, at most twice per rescan.

use std::collections::BTreeMap;

use vm_catalog_protocol::{Cursor, Diagnostic, SourceEntry, VmEntry, VmName, VmState};

use super::resolve::{Annotations, Raw, resolve};
use super::{Candidate, MergeOptions};
use crate::definition::Definition;

/// The merged result of a rescan, not yet published.
#[derive(Debug, Clone)]
pub struct Draft {
    base: Cursor,
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
        opts: MergeOptions,
        raws: Vec<Raw>,
        sources: Vec<SourceEntry>,
        notes: Annotations,
    ) -> Draft {
        let mut d = Draft {
            base,
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

    /// Rejects VMs from outside the scan (for example, their view could not
    /// be built), each with its diagnostic; VMs they provide for are
    /// rejected too. A name that is not claimed is ignored. Resolves the
    /// draft once, and not at all when there is nothing to reject.
    pub fn reject_all(&mut self, rejected: impl IntoIterator<Item = (VmName, Diagnostic)>) {
        let mut any = false;
        for (name, diagnostic) in rejected {
            self.forced.entry(name).or_default().push(diagnostic);
            any = true;
        }
        if any {
            self.rebuild();
        }
    }

    /// Records what the applier reported, in the catalog's words: `service`
    /// and `restart_pending` of the active entries follow `notes` (other
    /// entries have neither), and each VM the applier left out gets an
    /// error diagnostic with the applier's code; it stays active (its view
    /// and definition are fine) with no service. Resolves the draft once.
    ///
    /// Notes the same as those the draft was resolved with (the usual
    /// case: the applier reports what it reported last time) change
    /// nothing, and resolve nothing.
    pub fn annotate(&mut self, notes: Annotations) {
        if notes == self.notes {
            return;
        }
        self.notes = notes;
        self.rebuild();
    }

    /// Takes the draft apart for [`super::Catalog::successor`].
    pub(super) fn into_parts(self) -> (Vec<SourceEntry>, Vec<Candidate>, Annotations) {
        (self.sources, self.candidates, self.notes)
    }
}
