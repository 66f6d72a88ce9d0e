//! The next snapshot and its change batch: [`Catalog::successor`].

use std::collections::BTreeMap;
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

        let old_sources: BTreeMap<&SourceLabel, &SourceEntry> =
            self.sources.iter().map(|s| (&s.label, s)).collect();
        let mut source_changes = Vec::new();
        for s in &mut sources {
            let kind = match old_sources.get(&s.label) {
                None => Some(ChangeKind::Added),
                Some(old) => {
                    s.revision = old.revision;
                    source_change(old, s)
                }
            };
            if let Some(kind) = kind {
                s.revision = generation;
                source_changes.push(Change {
                    generation,
                    kind,
                    item: ChangeItem::Source(s.clone()),
                });
            }
        }
        let new_labels: BTreeMap<&SourceLabel, ()> =
            sources.iter().map(|s| (&s.label, ())).collect();
        let removed_sources: Vec<Change> = self
            .sources
            .iter()
            .filter(|s| !new_labels.contains_key(&s.label))
            .map(|s| Change {
                generation,
                kind: ChangeKind::Removed,
                item: ChangeItem::Source(SourceEntry {
                    revision: generation,
                    ..s.clone()
                }),
            })
            .collect();

        type Key<'a> = (&'a VmName, &'a SourceLabel);
        let old: BTreeMap<Key<'_>, &Candidate> = self
            .candidates
            .iter()
            .map(|c| ((&c.entry.name, &c.entry.source), c))
            .collect();
        let mut vm_changes: Vec<((VmName, u32, SourceLabel), Change)> = Vec::new();
        let mut kept: BTreeMap<Key<'_>, ()> = BTreeMap::new();
        for c in &mut candidates {
            let kind = match old.get(&(&c.entry.name, &c.entry.source)) {
                None => Some(ChangeKind::Added),
                Some(o) => {
                    c.entry.revision = o.entry.revision;
                    vm_change(o, c)
                }
            };
            if let Some(kind) = kind {
                c.entry.revision = generation;
                let key = (c.entry.name.clone(), c.precedence, c.entry.source.clone());
                vm_changes.push((
                    key,
                    Change {
                        generation,
                        kind,
                        item: ChangeItem::Vm(c.entry.clone()),
                    },
                ));
            }
        }
        for c in &candidates {
            if let Some((k, _)) = old.get_key_value(&(&c.entry.name, &c.entry.source)) {
                kept.insert(*k, ());
            }
        }
        for (k, c) in &old {
            if !kept.contains_key(k) {
                let key = (c.entry.name.clone(), c.precedence, c.entry.source.clone());
                let entry = VmEntry {
                    revision: generation,
                    ..c.entry.clone()
                };
                vm_changes.push((
                    key,
                    Change {
                        generation,
                        kind: ChangeKind::Removed,
                        item: ChangeItem::Vm(entry),
                    },
                ));
            }
        }
        if source_changes.is_empty() && vm_changes.is_empty() && removed_sources.is_empty() {
            return None;
        }
        vm_changes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut changes = source_changes;
        changes.extend(vm_changes.into_iter().map(|(_, c)| c));
        changes.extend(removed_sources);
        Some((
            Catalog {
                epoch: self.epoch,
                generation,
                candidates,
                sources,
                notes,
                names,
            },
            changes,
        ))
    }
}
