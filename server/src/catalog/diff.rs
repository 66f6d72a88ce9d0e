//! The next snapshot and its change batch: [`Catalog::successor`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use vm_catalog_protocol::{
    Change, ChangeItem, ChangeKind, SourceEntry, SourceLabel, VmEntry, VmName,
};

use super::{Candidate, Catalog, Draft};

/// Whether two entries are equal but for their revision.
pub(super) fn same_entry(a: &VmEntry, b: &VmEntry) -> bool {
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

/// The changes of the candidates of one name, `old` to `new` (each in
/// precedence order): sets the revision of each of `new` and pushes the
/// changes to `out`, each with its sort key (name, precedence, label). An
/// unchanged candidate becomes `old`'s (the same `Arc`).
fn diff_group(
    old: &[Arc<Candidate>],
    new: &mut [Arc<Candidate>],
    generation: u64,
    out: &mut Vec<((VmName, u32, SourceLabel), Change)>,
) {
    let key = |c: &Candidate| (c.entry.name.clone(), c.precedence, c.entry.source.clone());
    for c in new.iter_mut() {
        let o = old.iter().find(|o| o.entry.source == c.entry.source);
        let kind = match o {
            None => Some(ChangeKind::Added),
            Some(o) if Arc::ptr_eq(o, c) => None,
            Some(o) => vm_change(o, c),
        };
        match (kind, o) {
            (Some(kind), _) => {
                Arc::make_mut(&mut Arc::make_mut(c).entry).revision = generation;
                let change = change(generation, kind, ChangeItem::Vm((*c.entry).clone()));
                out.push((key(c), change));
            }
            (None, Some(o)) => *c = o.clone(),
            (None, None) => {}
        }
    }
    for o in old {
        if !new.iter().any(|c| c.entry.source == o.entry.source) {
            let last = VmEntry {
                revision: generation,
                ..(*o.entry).clone()
            };
            out.push((
                key(o),
                change(generation, ChangeKind::Removed, ChangeItem::Vm(last)),
            ));
        }
    }
}

/// Sets the revision of each of `candidates` (the new ones) and returns
/// the changes from `old`, each with its sort key (name, precedence,
/// label). Both are sorted by name: a candidate that is `old`'s (the same
/// `Arc`) is passed over, only the names around the others are compared;
/// only the names `touched` when it says which.
fn diff_vms(
    old: &[Arc<Candidate>],
    candidates: &mut [Arc<Candidate>],
    touched: Option<&BTreeSet<VmName>>,
    generation: u64,
) -> Vec<((VmName, u32, SourceLabel), Change)> {
    let mut out = Vec::new();
    if let Some(touched) = touched {
        for name in touched {
            let a = super::claim::range_of(old, name.as_str());
            let b = super::claim::range_of(candidates, name.as_str());
            diff_group(&old[a], &mut candidates[b], generation, &mut out);
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < candidates.len() {
        if i < old.len() && j < candidates.len() && Arc::ptr_eq(&old[i], &candidates[j]) {
            i += 1;
            j += 1;
            continue;
        }
        let name = match (old.get(i), candidates.get(j)) {
            (Some(o), Some(c)) => o.entry.name.clone().min(c.entry.name.clone()),
            (Some(o), None) => o.entry.name.clone(),
            (None, Some(c)) => c.entry.name.clone(),
            (None, None) => break,
        };
        let a = i + old[i..].partition_point(|o| o.entry.name == name);
        let b = j + candidates[j..].partition_point(|c| c.entry.name == name);
        diff_group(&old[i..a], &mut candidates[j..b], generation, &mut out);
        (i, j) = (a, b);
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
        let super::draft::Parts {
            mut sources,
            mut candidates,
            notes,
            forced,
            touched,
        } = draft.into_parts();
        let (changed_sources, removed_sources) =
            diff_sources(&self.sources, &mut sources, generation);
        let changes = Changes {
            sources: changed_sources,
            vms: diff_vms(
                &self.candidates,
                &mut candidates,
                touched.as_ref(),
                generation,
            ),
            removed_sources,
        };
        if changes.is_empty() {
            return None;
        }
        let next = Catalog {
            epoch: self.epoch,
            generation,
            candidates: Arc::new(candidates),
            sources,
            notes,
            names,
            forced,
        };
        Some((next, changes.into_ordered()))
    }
}
