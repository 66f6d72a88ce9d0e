//! The plan stage, shared by the appliers: which VMs an apply adds, removes,
//! changes and keeps, from what is live and what is wanted. Pure: no I/O.
//!
//! An applier renders what it wants (for s6-rc, a source tree with one
//! definition fingerprint per service), and compares it with the record of
//! what is live. Its switch stage then carries the plan out through its own
//! tools, and the report counts it ([`Changes`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use vm_catalog_protocol::VmName;

use super::fingerprint::Fingerprint;

/// What an apply changes, by service key: the VM's name for s6-rc, the
/// instance name for s6 instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta<K: Ord = VmName> {
    /// VMs that get a service.
    pub added: BTreeSet<K>,
    /// VMs whose service goes.
    pub removed: BTreeSet<K>,
    /// VMs that keep their service with another definition, or one whose
    /// live definition is not known.
    pub changed: BTreeSet<K>,
    /// VMs that keep their service as it is.
    pub kept: BTreeSet<K>,
}

impl<K: Ord> Default for Delta<K> {
    fn default() -> Self {
        Delta {
            added: BTreeSet::new(),
            removed: BTreeSet::new(),
            changed: BTreeSet::new(),
            kept: BTreeSet::new(),
        }
    }
}

/// How many VMs a plan adds, removes and changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// VMs added.
    pub added: usize,
    /// VMs removed.
    pub removed: usize,
    /// VMs changed.
    pub changed: usize,
}

impl<K: Ord + Clone> Delta<K> {
    /// From `live` (service → its live definition, `None` when unknown) to
    /// `wanted`.
    pub fn between(
        live: &BTreeMap<K, Option<Fingerprint>>,
        wanted: &BTreeMap<K, Fingerprint>,
    ) -> Delta<K> {
        let mut plan = Delta::default();
        for (name, def) in wanted {
            match live.get(name) {
                None => plan.added.insert(name.clone()),
                Some(Some(old)) if old == def => plan.kept.insert(name.clone()),
                Some(_) => plan.changed.insert(name.clone()),
            };
        }
        plan.removed = live
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        plan
    }

    /// The counts.
    pub fn changes(&self) -> Changes {
        Changes {
            added: self.added.len(),
            removed: self.removed.len(),
            changed: self.changed.len(),
        }
    }

    /// Whether nothing is added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for Changes {
    /// `+added -removed ~changed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{} -{} ~{}", self.added, self.removed, self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fingerprint::Hasher;

    fn fp(d: u8) -> Fingerprint {
        let mut h = Hasher::new("t");
        h.u64(u64::from(d));
        h.finish()
    }

    fn n(s: &str) -> VmName {
        s.parse().unwrap()
    }

    #[test]
    fn a_plan_sorts_vms_into_added_removed_changed_kept() {
        let live = [
            (n("a"), Some(fp(1))),
            (n("b"), Some(fp(1))),
            (n("c"), Some(fp(1))),
            (n("u"), None),
        ]
        .into();
        let wanted = [
            (n("a"), fp(1)),
            (n("b"), fp(2)),
            (n("d"), fp(1)),
            (n("u"), fp(1)),
        ]
        .into();
        let p: Delta = Delta::between(&live, &wanted);
        fn names(s: &BTreeSet<VmName>) -> Vec<&str> {
            s.iter().map(VmName::as_str).collect()
        }
        assert_eq!(names(&p.added), ["d"]);
        assert_eq!(names(&p.removed), ["c"]);
        assert_eq!(
            names(&p.changed),
            ["b", "u"],
            "an unknown definition counts as changed"
        );
        assert_eq!(names(&p.kept), ["a"]);
        assert_eq!(
            p.changes(),
            Changes {
                added: 1,
                removed: 1,
                changed: 2
            }
        );
        assert_eq!(p.changes().to_string(), "+1 -1 ~2");
        assert!(!p.is_empty());
        let same: Delta =
            Delta::between(&[(n("a"), Some(fp(1)))].into(), &[(n("a"), fp(1))].into());
        assert!(same.is_empty());
    }
}
