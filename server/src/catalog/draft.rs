//! A [`Draft`]: the next catalog before it is published. The rescan's commit
//! builds views from it and rejects the VMs whose view failed (once, for
//! all of them: [`Draft::reject_all`]), feeds its active set to the applier
//! and annotates it with the report (once: [`Draft::annotate`]), and
//! [`super::Catalog::successor`] turns it into the next snapshot.
//!
//! A draft resolves only what it must: a merge told which definitions
//! changed ([`super::merge_changed`]), a rejection and an annotation
//! resolve again the names they touch and every name whose resolution
//! depends on those (through provider references, [`Refs`]), and take
//! every other candidate as it is. A resolved candidate equal to the
//! current catalog's is that candidate (the same `Arc`), so that the later
//! stages skip what did not change by `Arc::ptr_eq`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use vm_catalog_protocol::{Cursor, Diagnostic, SourceEntry, SourceLabel, VmEntry, VmName, VmState};

use super::providers::Outside;
use super::refs::Refs;
use super::resolve::{Annotations, Raw, resolve};
use super::{Candidate, Catalog, MergeOptions, claim};
use crate::definition::Definition;

/// The merged result of a rescan, not yet published.
#[derive(Debug, Clone)]
pub struct Draft {
    base: Cursor,
    opts: MergeOptions,
    /// The candidates of the catalog it was merged against: a resolved
    /// candidate equal to one of them is taken as that one.
    prev: Arc<Vec<Arc<Candidate>>>,
    /// The provider references of its definitions.
    refs: Arc<Refs>,
    forced: BTreeMap<VmName, Vec<Diagnostic>>,
    notes: Annotations,
    sources: Vec<SourceEntry>,
    candidates: Vec<Arc<Candidate>>,
    /// The names whose candidates may differ from the catalog's it was
    /// merged against; `None`: any.
    touched: Option<BTreeSet<VmName>>,
}

/// The definitions of some names, replacing theirs: name → its definitions
/// in precedence order (none: the name is gone).
pub(super) type Replaced = BTreeMap<VmName, Vec<Raw>>;

impl Draft {
    /// Resolves `raws` (sorted by name, then precedence), all of them.
    pub(super) fn new(
        prev: &Catalog,
        opts: MergeOptions,
        raws: Vec<Raw>,
        sources: Vec<SourceEntry>,
        notes: Annotations,
    ) -> Draft {
        let has_label = |l: &SourceLabel| sources.iter().any(|s| &s.label == l);
        let refs = Refs::of(&raws, has_label, opts.names);
        let mut d = Draft {
            base: prev.cursor(),
            opts,
            prev: prev.candidates.clone(),
            refs: Arc::new(refs),
            forced: BTreeMap::new(),
            notes,
            sources,
            candidates: Vec::new(),
            touched: None,
        };
        d.candidates = d.resolved(&[], &BTreeSet::new(), &raws, None);
        d
    }

    /// `prev`'s candidates, but for the names of `replaced`, which get the
    /// definitions it gives; resolves those names again, and every name
    /// in `seeds` or whose resolution depends on one of them. `refs` are
    /// `prev`'s provider references; `sources` are `prev`'s sources as
    /// they are now (the same labels, trust and precedence).
    pub(super) fn incremental(
        prev: &Catalog,
        opts: MergeOptions,
        sources: Vec<SourceEntry>,
        (replaced, mut seeds): (Replaced, BTreeSet<VmName>),
        mut refs: Arc<Refs>,
    ) -> Draft {
        {
            let has_label = |l: &SourceLabel| sources.iter().any(|s| &s.label == l);
            let r = Arc::make_mut(&mut refs);
            for (name, raws) in &replaced {
                for c in prev.candidates_of(name.as_str()) {
                    r.remove(&Raw::of(c), &has_label, opts.names);
                }
                for raw in raws {
                    r.add(raw, &has_label, opts.names);
                }
            }
        }
        seeds.extend(replaced.keys().cloned());
        seeds.extend(prev.forced.iter().cloned());
        let mut d = Draft {
            base: prev.cursor(),
            opts,
            prev: prev.candidates.clone(),
            refs,
            forced: BTreeMap::new(),
            notes: prev.notes.clone(),
            sources,
            candidates: Vec::new(),
            touched: Some(BTreeSet::new()),
        };
        d.resolve_again(&prev.candidates, &replaced, seeds);
        d
    }

    /// Resolves again the names of `seeds` and `replaced` (with the
    /// definitions `replaced` gives), and every name whose resolution
    /// depends on one of them; all of them when that is most.
    fn resolve_again(
        &mut self,
        cands: &[Arc<Candidate>],
        replaced: &Replaced,
        seeds: BTreeSet<VmName>,
    ) {
        let (inside, partial) = match self.closure(cands, replaced, seeds) {
            Some(inside) => (inside, true),
            None => {
                let mut all: BTreeSet<VmName> =
                    cands.iter().map(|c| c.entry.name.clone()).collect();
                all.extend(replaced.keys().cloned());
                (all, false)
            }
        };
        let mut raws = Vec::new();
        for name in &inside {
            match replaced.get(name) {
                Some(group) => raws.extend(group.iter().cloned()),
                None => raws.extend(
                    cands[claim::range_of(cands, name.as_str())]
                        .iter()
                        .map(|c| Raw::of(c)),
                ),
            }
        }
        let outside = partial.then_some(Outside {
            cands,
            inside: &inside,
        });
        self.candidates = self.resolved(cands, &inside, &raws, outside);
        if let Some(touched) = &mut self.touched {
            touched.extend(inside);
        }
    }

    /// The names `seeds`, and every name whose resolution depends on one
    /// of them, transitively; `None` when that is more than half of them.
    fn closure(
        &self,
        cands: &[Arc<Candidate>],
        replaced: &Replaced,
        seeds: BTreeSet<VmName>,
    ) -> Option<BTreeSet<VmName>> {
        let limit = cands.len() / 2;
        let mut work: Vec<VmName> = seeds.iter().cloned().collect();
        let mut inside = seeds;
        while let Some(name) = work.pop() {
            let old = cands[claim::range_of(cands, name.as_str())]
                .iter()
                .map(|c| c.definition.name.as_str());
            let new = replaced
                .get(&name)
                .into_iter()
                .flatten()
                .map(|r| r.def.name.as_str());
            let keys: BTreeSet<&str> = std::iter::once(name.as_str())
                .chain(old)
                .chain(new)
                .collect();
            for key in keys {
                for d in self.refs.dependants(key) {
                    if inside.insert(d.clone()) {
                        work.push(d.clone());
                    }
                }
            }
            if inside.len() > limit && inside.len() > 1 {
                return None;
            }
        }
        Some(inside)
    }

    /// `cands` with the names `inside` replaced by `raws` (theirs, sorted
    /// by name then precedence) resolved; `outside` for references to the
    /// others.
    fn resolved(
        &self,
        cands: &[Arc<Candidate>],
        inside: &BTreeSet<VmName>,
        raws: &[Raw],
        outside: Option<Outside<'_>>,
    ) -> Vec<Arc<Candidate>> {
        let fresh = resolve(
            raws,
            &self.sources,
            (&self.forced, &self.notes),
            &self.opts,
            outside,
        );
        let mut cursor = 0;
        if cands.is_empty() {
            return fresh
                .into_iter()
                .map(|c| share(&self.prev, &mut cursor, c))
                .collect();
        }
        let mut out = Vec::with_capacity(cands.len() + fresh.len());
        let mut fresh = fresh.into_iter().peekable();
        let mut at = 0;
        for name in inside {
            let r = claim::range_of(&cands[at..], name.as_str());
            out.extend_from_slice(&cands[at..at + r.start]);
            at += r.end;
            while let Some(c) = fresh.next_if(|c| c.entry.name == *name) {
                out.push(share(&self.prev, &mut cursor, c));
            }
        }
        out.extend_from_slice(&cands[at..]);
        out
    }

    /// The catalog position this draft was merged against.
    pub fn base(&self) -> Cursor {
        self.base
    }

    /// Every candidate, sorted by name then precedence (revisions are not
    /// set yet, but for candidates equal to the catalog's).
    pub fn candidates(&self) -> &[Arc<Candidate>] {
        &self.candidates
    }

    /// Every candidate's entry.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &VmEntry> + '_ {
        self.candidates.iter().map(|c| &*c.entry)
    }

    /// Every candidate of `name`, in precedence order.
    pub fn candidates_of(&self, name: &str) -> &[Arc<Candidate>] {
        &self.candidates[claim::range_of(&self.candidates, name)]
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
    pub fn active(&self) -> impl Iterator<Item = &Arc<Candidate>> + '_ {
        self.candidates
            .iter()
            .filter(|c| c.entry.state == VmState::Active)
    }

    /// How the draft names VMs and places their views.
    pub fn options(&self) -> &MergeOptions {
        &self.opts
    }

    /// The names whose candidates may differ from those of the catalog it
    /// was merged against: every other name's are that catalog's (the same
    /// `Arc`s). `None`: any name's may.
    pub fn touched(&self) -> Option<&BTreeSet<VmName>> {
        self.touched.as_ref()
    }

    /// The provider references of its definitions, for the next
    /// incremental merge.
    pub fn refs(&self) -> Arc<Refs> {
        self.refs.clone()
    }

    /// Rejects VMs from outside the scan (for example, their view could not
    /// be built), each with its diagnostic; VMs they provide for are
    /// rejected too. A name that is not claimed is ignored. Resolves those
    /// names again, and what depends on them, once; nothing when there is
    /// nothing to reject.
    pub fn reject_all(&mut self, rejected: impl IntoIterator<Item = (VmName, Diagnostic)>) {
        let mut seeds = BTreeSet::new();
        for (name, diagnostic) in rejected {
            self.forced
                .entry(name.clone())
                .or_default()
                .push(diagnostic);
            seeds.insert(name);
        }
        if !seeds.is_empty() {
            let cands = std::mem::take(&mut self.candidates);
            self.resolve_again(&cands, &Replaced::new(), seeds);
        }
    }

    /// Records what the applier reported, in the catalog's words: `service`
    /// and `restart_pending` of the active entries follow `notes` (other
    /// entries have neither), and each VM the applier left out gets an
    /// error diagnostic with the applier's code; it stays active (its view
    /// and definition are fine) with no service. Resolves again the names
    /// whose notes changed.
    ///
    /// Notes the same as those the draft was resolved with (the usual
    /// case: the applier reports what it reported last time) change
    /// nothing, and resolve nothing.
    pub fn annotate(&mut self, notes: Annotations) {
        if notes == self.notes {
            return;
        }
        let seeds = notes.differences(&self.notes);
        self.notes = notes;
        let cands = std::mem::take(&mut self.candidates);
        self.resolve_again(&cands, &Replaced::new(), seeds);
    }

    /// Takes the draft apart for [`super::Catalog::successor`]: its
    /// sources, candidates, notes and the names rejected from outside.
    pub(super) fn into_parts(self) -> Parts {
        Parts {
            forced: self.forced.into_keys().collect(),
            sources: self.sources,
            candidates: self.candidates,
            notes: self.notes,
            touched: self.touched,
        }
    }
}

/// A draft taken apart ([`Draft::into_parts`]).
pub(super) struct Parts {
    pub sources: Vec<SourceEntry>,
    pub candidates: Vec<Arc<Candidate>>,
    pub notes: Annotations,
    /// The names rejected from outside.
    pub forced: BTreeSet<VmName>,
    /// [`Draft::touched`].
    pub touched: Option<BTreeSet<VmName>>,
}

/// `c`, or the candidate of `prev` (sorted by name, then precedence) it
/// equals but for its revision; `cursor` goes along `prev` (the
/// candidates asked for come sorted by name: all of them, or a few among
/// many).
fn share(prev: &[Arc<Candidate>], cursor: &mut usize, c: Candidate) -> Arc<Candidate> {
    // Galloping: the one asked for is most often at the cursor (a whole
    // merge asks for every one, in order), else a binary search finds it.
    let before = |k: usize| prev[k].entry.name < c.entry.name;
    if *cursor < prev.len() && before(*cursor) {
        let (mut lo, mut step) = (*cursor, 1);
        while lo + step < prev.len() && before(lo + step) {
            lo += step;
            step *= 2;
        }
        let hi = (lo + step).min(prev.len());
        *cursor = lo + 1 + prev[lo + 1..hi].partition_point(|p| p.entry.name < c.entry.name);
    }
    let same = prev[*cursor..]
        .iter()
        .take_while(|p| p.entry.name == c.entry.name)
        .find(|p| p.entry.source == c.entry.source)
        .filter(|p| p.same_but_revision(&c));
    match same {
        Some(p) => p.clone(),
        None => Arc::new(c),
    }
}
