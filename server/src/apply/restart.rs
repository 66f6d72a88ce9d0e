//! Restart-pending, shared by the appliers: which running VMs run a
//! definition other than the one they would start with now.
//!
//! Neither s6-rc-update (s6rc.md §1.4) nor an s6 instance restarts a VM
//! whose run script or view changed: the VM keeps running what it started
//! with. The applier
//! knows what each VM started with from two facts, checked at every apply:
//!
//! - between two applies the live set (database, instances) does not
//!   change, so a VM that (re)started since the last apply runs the live
//!   definition;
//! - a VM that runs an older definition is recorded with its pid; while the
//!   pid is the same, it still runs that definition.
//!
//! So before a switch the applier reads the pid of every VM that stays,
//! derives what each runs, and keeps those that differ from the new
//! definition as *probes*. After the switch a probe whose pid is unchanged
//! is restart-pending; one whose pid changed was restarted (by the
//! conversion file, or because a new provider made s6-rc-update restart it)
//! or stopped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vm_catalog_protocol::VmName;

use crate::apply::fingerprint::Fingerprint;

/// A VM that runs a definition other than the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// The definition it was started with.
    pub definition: Fingerprint,
    /// Its pid when this was recorded.
    pub pid: u32,
}

/// A running VM whose definition is about to differ from what it runs,
/// by its service key (its name for s6-rc, its instance name for s6
/// instances).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe<K = VmName> {
    /// The VM.
    pub name: K,
    /// The definition it runs.
    pub running: Fingerprint,
    pub pid: u32,
}

/// Reads a VM's pid (`None` when it is down).
pub type PidOf<'a, K = VmName> = dyn FnMut(&K) -> Option<u32> + 'a;

/// The VMs among `names` that run a definition other than `new`'s.
///
/// `live` holds the live definitions, `running` the pending records. A VM
/// whose live definition is unknown and that has no record is skipped: what
/// it runs cannot be known.
pub fn probes<'a, K: Ord + Clone + 'a>(
    names: impl IntoIterator<Item = &'a K>,
    live: &BTreeMap<K, Option<Fingerprint>>,
    running: &BTreeMap<K, Running>,
    new: &BTreeMap<K, Fingerprint>,
    pid_of: &mut PidOf<'_, K>,
) -> Vec<Probe<K>> {
    let mut out = Vec::new();
    for name in names {
        let Some(new_def) = new.get(name) else {
            continue;
        };
        let Some(pid) = pid_of(name) else { continue };
        let runs = match running.get(name) {
            Some(r) if r.pid == pid => Some(r.definition),
            _ => live.get(name).copied().flatten(),
        };
        if let Some(def) = runs.filter(|d| d != new_def) {
            out.push(Probe {
                name: name.clone(),
                running: def,
                pid,
            });
        }
    }
    out
}

/// After a switch: the probes still running with the same pid.
pub fn settle<K: Ord + Clone>(
    probes: &[Probe<K>],
    pid_of: &mut PidOf<'_, K>,
) -> BTreeMap<K, Running> {
    probes
        .iter()
        .filter(|p| pid_of(&p.name) == Some(p.pid))
        .map(|p| {
            (
                p.name.clone(),
                Running {
                    definition: p.running,
                    pid: p.pid,
                },
            )
        })
        .collect()
}

/// Without a switch: the records whose VM still runs with the same pid.
pub fn refresh<K: Ord + Clone>(
    running: &BTreeMap<K, Running>,
    pid_of: &mut PidOf<'_, K>,
) -> BTreeMap<K, Running> {
    running
        .iter()
        .filter(|(n, r)| pid_of(n) == Some(r.pid))
        .map(|(n, r)| (n.clone(), *r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fingerprint::Hasher;

    fn fp(s: &str) -> Fingerprint {
        let mut h = Hasher::new("t");
        h.bytes(s.as_bytes());
        h.finish()
    }

    fn n(s: &str) -> VmName {
        s.parse().unwrap()
    }

    #[test]
    fn a_running_vm_with_a_new_definition_is_probed_and_pending_while_its_pid_holds() {
        let live: BTreeMap<_, _> = [
            (n("a"), Some(fp("a1"))),
            (n("b"), Some(fp("b1"))),
            (n("c"), None),
        ]
        .into();
        let new = [(n("a"), fp("a2")), (n("b"), fp("b1")), (n("c"), fp("c2"))].into();
        let pids: BTreeMap<VmName, u32> = [(n("a"), 10), (n("b"), 11), (n("c"), 12)].into();
        let mut pid_of = |v: &VmName| pids.get(v).copied();
        let p = probes(live.keys(), &live, &BTreeMap::new(), &new, &mut pid_of);
        // b is unchanged; c's live definition is unknown.
        assert_eq!(
            p,
            [Probe {
                name: n("a"),
                running: fp("a1"),
                pid: 10
            }]
        );
        let pending = settle(&p, &mut pid_of);
        assert_eq!(
            pending[&n("a")],
            Running {
                definition: fp("a1"),
                pid: 10
            }
        );
        let mut restarted = |v: &VmName| (v.as_str() == "a").then_some(99);
        assert!(settle(&p, &mut restarted).is_empty());
    }

    #[test]
    fn a_pending_vm_that_restarted_runs_the_live_definition() {
        let live: BTreeMap<_, _> = [(n("a"), Some(fp("a2")))].into();
        let running = [(
            n("a"),
            Running {
                definition: fp("a1"),
                pid: 10,
            },
        )]
        .into();
        // The definition goes back to a1: with the same pid, a runs a1, so
        // nothing is pending any more.
        let back = [(n("a"), fp("a1"))].into();
        let mut same = |_: &VmName| Some(10);
        assert!(probes(live.keys(), &live, &running, &back, &mut same).is_empty());
        // With a new pid, a runs the live a2, which differs from a1.
        let mut new_pid = |_: &VmName| Some(11);
        let p = probes(live.keys(), &live, &running, &back, &mut new_pid);
        assert_eq!(
            p,
            [Probe {
                name: n("a"),
                running: fp("a2"),
                pid: 11
            }]
        );
        assert!(refresh(&running, &mut new_pid).is_empty());
        assert_eq!(refresh(&running, &mut same), running);
    }

    #[test]
    fn down_vms_are_never_pending() {
        let live: BTreeMap<_, _> = [(n("a"), Some(fp("a1")))].into();
        let new = [(n("a"), fp("a2"))].into();
        let mut down = |_: &VmName| None;
        assert!(probes(live.keys(), &live, &BTreeMap::new(), &new, &mut down).is_empty());
    }
}
