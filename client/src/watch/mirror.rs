//! [`Mirror`]: a local copy of the catalog, kept by a [`super::Watch`]; how
//! one generation's changes apply to it, and how two copies differ.

use std::collections::BTreeMap;

use vm_catalog_protocol::{
    Change, ChangeItem, ChangeKind, Cursor, SourceEntry, SourceLabel, VmEntry, VmName, VmState,
};

/// A local copy of the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirror {
    cursor: Option<Cursor>,
    vms: BTreeMap<(VmName, SourceLabel), VmEntry>,
    sources: BTreeMap<SourceLabel, SourceEntry>,
}

impl Mirror {
    /// The position of the copy (`None` before the first snapshot).
    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor
    }

    /// Every definition, by name then source label.
    pub fn vms(&self) -> impl Iterator<Item = &VmEntry> {
        self.vms.values()
    }

    /// The active VMs.
    pub fn active(&self) -> impl Iterator<Item = &VmEntry> {
        self.vms.values().filter(|e| e.state == VmState::Active)
    }

    /// The definition `name` means, by the daemon's claimant rule (as
    /// `GetVm` answers): of the definitions of that name in precedence
    /// order, the first that is active or rejected; when none is (their
    /// sources went away), the first of them.
    pub fn get(&self, name: &str) -> Option<&VmEntry> {
        let precedence = |e: &VmEntry| {
            self.sources
                .get(&e.source)
                .map_or(u32::MAX, |s| s.precedence)
        };
        let mut of_name: Vec<&VmEntry> = self
            .vms
            .values()
            .filter(|e| e.name.as_str() == name)
            .collect();
        of_name.sort_by_key(|e| precedence(e));
        of_name
            .iter()
            .find(|e| matches!(e.state, VmState::Active | VmState::Rejected))
            .or(of_name.first())
            .copied()
    }

    /// Every source.
    pub fn sources(&self) -> impl Iterator<Item = &SourceEntry> {
        self.sources.values()
    }

    /// Applies one generation's changes.
    pub fn apply(&mut self, generation: u64, changes: &[Change]) {
        for c in changes {
            match (&c.item, c.kind) {
                (ChangeItem::Vm(e), ChangeKind::Removed) => {
                    self.vms.remove(&(e.name.clone(), e.source.clone()));
                }
                (ChangeItem::Vm(e), _) => {
                    self.vms
                        .insert((e.name.clone(), e.source.clone()), e.clone());
                }
                (ChangeItem::Source(s), ChangeKind::Removed) => {
                    self.sources.remove(&s.label);
                }
                (ChangeItem::Source(s), _) => {
                    self.sources.insert(s.label.clone(), s.clone());
                }
            }
        }
        if let Some(c) = &mut self.cursor {
            c.generation = generation;
        }
    }

    /// An empty copy at `cursor`, to fill from a snapshot.
    pub(super) fn at(cursor: Option<Cursor>) -> Self {
        Mirror {
            cursor,
            ..Mirror::default()
        }
    }

    /// Adds one snapshot page.
    pub(super) fn extend(&mut self, vms: Vec<VmEntry>, sources: Vec<SourceEntry>) {
        for e in vms {
            self.vms.insert((e.name.clone(), e.source.clone()), e);
        }
        for s in sources {
            self.sources.insert(s.label.clone(), s);
        }
    }

    /// Moves the copy to `cursor` (after a resume: the replayed changes
    /// are applied).
    pub(super) fn set_cursor(&mut self, cursor: Cursor) {
        self.cursor = Some(cursor);
    }

    /// What changed from `self` to `new`, as changes of `new`'s generation.
    pub fn diff(&self, new: &Mirror) -> Vec<Change> {
        let generation = new.cursor.map(|c| c.generation).unwrap_or(0);
        let mut out = Vec::new();
        let mut push = |kind, item| {
            out.push(Change {
                generation,
                kind,
                item,
            })
        };
        for (k, old) in &self.sources {
            if !new.sources.contains_key(k) {
                push(ChangeKind::Removed, ChangeItem::Source(old.clone()));
            }
        }
        for (k, s) in &new.sources {
            match self.sources.get(k) {
                None => push(ChangeKind::Added, ChangeItem::Source(s.clone())),
                Some(old) => {
                    // Revisions restart with every epoch: they are not a change.
                    let old = SourceEntry {
                        revision: s.revision,
                        ..old.clone()
                    };
                    if old != *s {
                        let only_state = SourceEntry {
                            state: s.state,
                            ..old
                        } == *s;
                        push(kind_of(only_state), ChangeItem::Source(s.clone()));
                    }
                }
            }
        }
        for (k, old) in &self.vms {
            if !new.vms.contains_key(k) {
                push(ChangeKind::Removed, ChangeItem::Vm(old.clone()));
            }
        }
        for (k, e) in &new.vms {
            match self.vms.get(k) {
                None => push(ChangeKind::Added, ChangeItem::Vm(e.clone())),
                Some(old) => {
                    // Revisions restart with every epoch. A fingerprint or an
                    // id only one side knows (a daemon that predates them)
                    // says nothing; a fingerprint that differs is a change,
                    // even when nothing else shows it (a file rewritten
                    // while the daemon was down).
                    let old = VmEntry {
                        revision: e.revision,
                        fingerprint: known_or(old.fingerprint, e.fingerprint),
                        id: known_or(old.id.clone(), e.id.clone()),
                        ..old.clone()
                    };
                    if old != *e {
                        let only_state = VmEntry {
                            state: e.state,
                            ..old
                        } == *e;
                        push(kind_of(only_state), ChangeItem::Vm(e.clone()));
                    }
                }
            }
        }
        out
    }
}

/// `old` if it is known, else `new` (so that it compares equal).
fn known_or<T>(old: Option<T>, new: Option<T>) -> Option<T> {
    match (old, new) {
        (Some(o), Some(_)) => Some(o),
        (_, n) => n,
    }
}

/// `StateChanged` when only the state differs, `Changed` otherwise.
fn kind_of(only_state: bool) -> ChangeKind {
    if only_state {
        ChangeKind::StateChanged
    } else {
        ChangeKind::Changed
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use vm_catalog_protocol::Epoch;

    pub(in crate::watch) fn vm(name: &str, state: VmState, path: &str) -> VmEntry {
        VmEntry {
            name: name.parse().unwrap(),
            source: "builtin".parse().unwrap(),
            state,
            path: path.into(),
            view: None,
            service: None,
            providers: vec![],
            diagnostics: vec![],
            restart_pending: false,
            shadowed_by: None,
            revision: 1,
            fingerprint: None,
            id: None,
        }
    }

    pub(in crate::watch) fn mirror(generation: u64, vms: &[VmEntry]) -> Mirror {
        Mirror {
            cursor: Some(Cursor {
                epoch: Epoch(1),
                generation,
            }),
            vms: vms
                .iter()
                .map(|e| ((e.name.clone(), e.source.clone()), e.clone()))
                .collect(),
            sources: BTreeMap::new(),
        }
    }

    #[test]
    fn diff_reports_added_removed_changed_and_state_changed() {
        let old = mirror(
            1,
            &[
                vm("a", VmState::Active, "/a"),
                vm("b", VmState::Active, "/b"),
                vm("c", VmState::Active, "/c"),
            ],
        );
        let new = mirror(
            5,
            &[
                vm("b", VmState::Active, "/b2"),
                vm("c", VmState::Rejected, "/c"),
                vm("d", VmState::Active, "/d"),
            ],
        );
        let kinds: Vec<_> = old
            .diff(&new)
            .iter()
            .map(|c| match &c.item {
                ChangeItem::Vm(e) => (e.name.to_string(), c.kind, c.generation),
                ChangeItem::Source(_) => unreachable!(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("a".into(), ChangeKind::Removed, 5),
                ("b".into(), ChangeKind::Changed, 5),
                ("c".into(), ChangeKind::StateChanged, 5),
                ("d".into(), ChangeKind::Added, 5),
            ]
        );
        let mut applied = old.clone();
        applied.apply(5, &old.diff(&new));
        assert_eq!(applied, new);
    }

    /// Regression: a definition whose kernel grew while
    /// the daemon was down had an entry equal to the old one but for its
    /// fingerprint, and was not reported changed.
    #[test]
    fn diff_reports_a_changed_fingerprint_and_ignores_an_unknown_one() {
        let mut e = vm("a", VmState::Active, "/a");
        e.fingerprint = Some(1);
        let old = mirror(9, std::slice::from_ref(&e));
        e.fingerprint = Some(2);
        let new = mirror(1, std::slice::from_ref(&e));
        let d = old.diff(&new);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, ChangeKind::Changed);
        e.fingerprint = None;
        let older_daemon = mirror(1, &[e]);
        assert!(old.diff(&older_daemon).is_empty());
        assert!(older_daemon.diff(&old).is_empty());
    }

    fn source(label: &str, precedence: u32) -> SourceEntry {
        SourceEntry {
            label: label.parse().unwrap(),
            kind: vm_catalog_protocol::SourceKind::Directory,
            trust: vm_catalog_protocol::Trust::Untrusted,
            path: format!("/{label}"),
            device: None,
            partuuid: None,
            state: vm_catalog_protocol::SourceState::Ready,
            read_only: false,
            precedence,
            definitions: 1,
            diagnostics: vec![],
            revision: 1,
        }
    }

    /// Regression (issue 20): `x` of the first source unavailable and `x`
    /// of the next one active: the mirror gave the unavailable one (the
    /// first not shadowed, by label), where the daemon means the active one.
    #[test]
    fn get_follows_the_claimant_rule_in_precedence_order() {
        let of = |label: &str, state| VmEntry {
            source: label.parse().unwrap(),
            ..vm("x", state, &format!("/{label}/x"))
        };
        let with = |vms: &[VmEntry], sources: [SourceEntry; 2]| {
            let mut m = mirror(1, vms);
            m.sources = sources.into_iter().map(|s| (s.label.clone(), s)).collect();
            m
        };
        let sources = || [source("a", 0), source("b", 1)];
        let m = with(
            &[of("a", VmState::Unavailable), of("b", VmState::Active)],
            sources(),
        );
        assert_eq!(m.get("x").unwrap().source.as_str(), "b", "the active one");
        let m = with(
            &[of("a", VmState::Unavailable), of("b", VmState::Unavailable)],
            sources(),
        );
        assert_eq!(
            m.get("x").unwrap().source.as_str(),
            "a",
            "none claims: the first"
        );
        // Precedence, not the labels' order: `b` comes first here, and a
        // rejected definition claims its name.
        let m = with(
            &[of("a", VmState::Shadowed), of("b", VmState::Rejected)],
            [source("a", 1), source("b", 0)],
        );
        assert_eq!(m.get("x").unwrap().source.as_str(), "b");
        assert!(m.get("y").is_none());
    }

    /// Regression: after a daemon restart every revision differs (they count
    /// generations of the new epoch); that alone reported every entry as
    /// state-changed.
    #[test]
    fn diff_ignores_revisions() {
        let old = mirror(9, &[vm("a", VmState::Active, "/a")]);
        let mut e = vm("a", VmState::Active, "/a");
        e.revision = 7;
        let new = mirror(1, &[e]);
        assert!(old.diff(&new).is_empty(), "{:?}", old.diff(&new));
    }
}
