//! The next snapshot and its change batch: [`Catalog::successor`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use vm_catalog_protocol::{
    Change, ChangeItem, ChangeKind, SourceEntry, SourceLabel, VmEntry, VmName,
};

use super::{Candidate, Catalog, Draft};

/// Whether two entries are equal but for their revision.
fn same_entry(a: &VmEntry, b: &VmEntry) -> bool {
    let VmEntry {
        name,
        source,
        state,
        path,
        view,
        service,
        providers,
        diagnostics,
        restart_pending,
        shadowed_by,
        revision: _,
        fingerprint,
        id,
    } = a;
    (name, source, state, path, view, service)
        == (&b.name, &b.source, &b.state, &b.path, &b.view, &b.service)
        && (providers, diagnostics, restart_pending, shadowed_by)
            == (
                &b.providers,
                &b.diagnostics,
                &b.restart_pending,
                &b.shadowed_by,
            )
        && (fingerprint, id) == (&b.fingerprint, &b.id)
}

/// What happened to a candidate present in both generations.
fn vm_change(old: &Candidate, new: &Candidate) -> Option<ChangeKind> {
    let same_definition =
        Arc::ptr_eq(&old.definition, &new.definition) || old.definition == new.definition;
    if same_definition && same_entry(&old.entry, &new.entry) {
        None
    } else if same_definition && old.entry.state != new.entry.state {
        Some(ChangeKind::StateChanged)
    } else {
        Some(ChangeKind::Changed)
    }
}

/// What happened to a source present in both generations.
fn source_change(old: &SourceEntry, new: &SourceEntry) -> Option<ChangeKind> {
    let SourceEntry {
        label,
        kind,
        trust,
        path,
        device,
        partuuid,
        state,
        read_only,
        precedence,
        definitions,
        diagnostics,
        revision: _,
    } = old;
    let identity = (
        label, kind, trust, path, device, partuuid, read_only, precedence,
    ) == (
        &new.label,
        &new.kind,
        &new.trust,
        &new.path,
        &new.device,
        &new.partuuid,
        &new.read_only,
        &new.precedence,
    );
    if identity
        && (state, definitions, diagnostics) == (&new.state, &new.definitions, &new.diagnostics)
    {
        None
    } else if identity && *state != new.state {
        Some(ChangeKind::StateChanged)
    } else {
        Some(ChangeKind::Changed)
    }
}

/// The changes of one generation, in three groups (see
/// [`Catalog::successor`] for their order).
struct Changes {
    /// Sources added or changed, in the new precedence order.
    sources: Vec<Change>,
    /// VM candidates added, changed or removed, with their sort key.
    vms: Vec<((VmName, u32, SourceLabel), Change)>,
    /// Sources removed, in the old precedence order.
    removed_sources: Vec<Change>,
}

/// A change of `generation` to `item`.
fn change(generation: u64, kind: ChangeKind, item: ChangeItem) -> Change {
    Change {
        generation,
        kind,
        item,
    }
}

/// Sets the revision of each of `sources` (the new ones) and returns
/// their changes from `old`: (added or changed, removed).
fn diff_sources(
    old: &[SourceEntry],
    sources: &mut [SourceEntry],
    generation: u64,
) -> (Vec<Change>, Vec<Change>) {
    let by_label: BTreeMap<&SourceLabel, &SourceEntry> =
        old.iter().map(|s| (&s.label, s)).collect();
    let mut changed = Vec::new();
    for s in sources.iter_mut() {
        let kind = match by_label.get(&s.label) {
            None => Some(ChangeKind::Added),
            Some(old) => {
                s.revision = old.revision;
                source_change(old, s)
            }
        };
        if let Some(kind) = kind {
            s.revision = generation;
            changed.push(change(generation, kind, ChangeItem::Source(s.clone())));
        }
    }
    let kept: BTreeSet<&SourceLabel> = sources.iter().map(|s| &s.label).collect();
    let removed = old
        .iter()
        .filter(|s| !kept.contains(&s.label))
        .map(|s| {
            let last = SourceEntry {
                revision: generation,
                ..s.clone()
            };
            change(generation, ChangeKind::Removed, ChangeItem::Source(last))
        })
        .collect();
    (changed, removed)
}

/// Sets the revision of each of `candidates` (the new ones) and returns
/// the changes from `old`, each with its sort key (name, precedence,
/// label).
fn diff_vms(
    old: &[Candidate],
    candidates: &mut [Candidate],
    generation: u64,
) -> Vec<((VmName, u32, SourceLabel), Change)> {
    type Key<'a> = (&'a VmName, &'a SourceLabel);
    let key = |c: &Candidate| (c.entry.name.clone(), c.precedence, c.entry.source.clone());
    let by_key: BTreeMap<Key<'_>, &Candidate> = old
        .iter()
        .map(|c| ((&c.entry.name, &c.entry.source), c))
        .collect();
    let mut out = Vec::new();
    for c in candidates.iter_mut() {
        let kind = match by_key.get(&(&c.entry.name, &c.entry.source)) {
            None => Some(ChangeKind::Added),
            Some(o) => {
                c.entry.revision = o.entry.revision;
                vm_change(o, c)
            }
        };
        if let Some(kind) = kind {
            c.entry.revision = generation;
            out.push((
                key(c),
                change(generation, kind, ChangeItem::Vm(c.entry.clone())),
            ));
        }
    }
    let kept: BTreeSet<Key<'_>> = candidates
        .iter()
        .map(|c| (&c.entry.name, &c.entry.source))
        .collect();
    for (k, c) in &by_key {
        if !kept.contains(k) {
            let last = VmEntry {
                revision: generation,
                ..c.entry.clone()
            };
            out.push((
                key(c),
                change(generation, ChangeKind::Removed, ChangeItem::Vm(last)),
            ));
        }
    }
    out
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.vms.is_empty() && self.removed_sources.is_empty()
    }

    /// In order: sources added or changed, VMs by (name, precedence,
    /// label), sources removed.
    fn into_ordered(mut self) -> Vec<Change> {
        self.vms.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = self.sources;
        out.extend(self.vms.into_iter().map(|(_, c)| c));
        out.extend(self.removed_sources);
        out
    }
}

impl Catalog {
    /// The snapshot that publishing `draft` makes, and its changes; `None`
    /// when nothing changed (the generation stays).
    ///
    /// Otherwise the generation is this one + 1 and the changes come in this
    /// order: sources added or changed (in the new precedence order); then
    /// VM candidates, keyed by (name, source), sorted by name, precedence and
    /// label; then sources removed (in the old precedence order). Each change
    /// carries the resulting entry (the last one, for `Removed`) with its
    /// `revision` set to the new generation; unchanged entries keep theirs.
    pub fn successor(&self, draft: Draft) -> Option<(Catalog, Vec<Change>)> {
        let generation = self.generation + 1;
        let names = draft.options().names;
        let (mut sources, mut candidates, notes) = draft.into_parts();
        let (changed_sources, removed_sources) =
            diff_sources(&self.sources, &mut sources, generation);
        let changes = Changes {
            sources: changed_sources,
            vms: diff_vms(&self.candidates, &mut candidates, generation),
            removed_sources,
        };
        if changes.is_empty() {
            return None;
        }
        let next = Catalog {
            epoch: self.epoch,
            generation,
            candidates,
            sources,
            notes,
            names,
        };
        Some((next, changes.into_ordered()))
    }
}
