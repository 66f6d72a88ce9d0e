//! The plan stage of the s6-instance applier: what is wanted (one instance
//! per active VM, named as configured), what is there (`s6-instance-list`
//! against the instances the daemon made), and the [`Delta`] between them.
//! Pure: the listing is an input.

use std::collections::{BTreeMap, BTreeSet};

use vm_catalog_protocol::DiagCode;

use super::config::Naming;
use super::name::{InstanceName, instance_name};
use super::state::InstanceState;
use crate::apply::applier::{ActiveVm, ApplyRequest, LeftOut};
use crate::apply::fingerprint::{Fingerprint, Hasher};
use crate::apply::plan::Delta;

/// What one apply works from.
#[derive(Debug)]
pub struct Planned<'a> {
    /// The active VMs that get an instance, by instance name, with the
    /// definition each instance is made for.
    pub wanted: BTreeMap<InstanceName, (&'a ActiveVm, Fingerprint)>,
    /// Active VMs that get none, and why.
    pub left_out: Vec<LeftOut>,
    /// Listed instances the daemon did not make: left alone.
    pub foreign: Vec<InstanceName>,
    /// What changes.
    pub plan: Delta<InstanceName>,
}

/// The definition an instance starts with: everything of the VM its
/// template's run script may read.
pub fn definition(vm: &ActiveVm) -> Fingerprint {
    let mut h = Hasher::new("vm-catalog s6-instance definition v1");
    h.bytes(vm.name.as_str().as_bytes())
        .bytes(vm.view.as_os_str().as_encoded_bytes())
        .u64(vm.fingerprint)
        .u64(vm.providers.len() as u64);
    for p in &vm.providers {
        h.bytes(p.as_str().as_bytes());
    }
    h.finish()
}

/// The plan of `request` against `listed` (what `s6-instance-list` says)
/// and `state` (what the daemon made; its unconfirmed entries are cleaned
/// up before this runs, and any left are in no set).
pub fn plan<'a>(
    request: &'a ApplyRequest,
    naming: Naming,
    listed: &BTreeSet<InstanceName>,
    state: &InstanceState,
) -> Planned<'a> {
    let mut left_out = Vec::new();
    let mut wanted = BTreeMap::new();
    let foreign: Vec<InstanceName> = listed
        .iter()
        .filter(|n| !state.made.contains_key(*n))
        .cloned()
        .collect();
    for vm in &request.vms {
        let name = match instance_name(vm, naming) {
            Ok(n) => n,
            Err(l) => {
                left_out.push(l);
                continue;
            }
        };
        if foreign.contains(&name) {
            left_out.push(LeftOut {
                vm: vm.name.clone(),
                code: DiagCode::ServiceConflict,
                message: format!(
                    "instance {name} exists and was not made by vm-catalogd; it is left alone"
                ),
            });
            continue;
        }
        if state.made.get(&name).is_some_and(|m| !m.confirmed) {
            // Its cleanup failed this time (reported): made again later.
            continue;
        }
        wanted.insert(name, (vm, definition(vm)));
    }
    let live: BTreeMap<InstanceName, Option<Fingerprint>> = state
        .made
        .iter()
        .filter(|(n, m)| m.confirmed && listed.contains(*n))
        .map(|(n, m)| (n.clone(), Some(m.definition)))
        .collect();
    let defs: BTreeMap<InstanceName, Fingerprint> =
        wanted.iter().map(|(n, (_, d))| (n.clone(), *d)).collect();
    Planned {
        plan: Delta::between(&live, &defs),
        wanted,
        left_out,
        foreign,
    }
}

/// The order in which `added` instances are created: providers first, so
/// that with `--instances-up` a VM's network is up before it starts.
pub fn creation_order(planned: &Planned<'_>) -> Vec<InstanceName> {
    let by_vm: BTreeMap<_, _> = planned
        .wanted
        .iter()
        .map(|(n, (vm, _))| (&vm.name, n))
        .collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<(&InstanceName, bool)> = planned
        .plan
        .added
        .iter()
        .rev()
        .map(|n| (n, false))
        .collect();
    while let Some((name, expanded)) = stack.pop() {
        if expanded {
            out.push(name.clone());
            continue;
        }
        if !seen.insert(name) {
            continue;
        }
        stack.push((name, true));
        let (vm, _) = &planned.wanted[name];
        for p in vm.providers.iter().rev() {
            if let Some(pn) = by_vm.get(p).filter(|pn| planned.plan.added.contains(**pn)) {
                stack.push((pn, false));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::instance::state::Made;

    fn vm(name: &str, id: &str, providers: &[&str]) -> ActiveVm {
        ActiveVm {
            name: name.parse().unwrap(),
            view: format!("/run/vm/by-id/{id}/config").into(),
            providers: providers.iter().map(|p| p.parse().unwrap()).collect(),
            fingerprint: 1,
            id: id.parse().unwrap(),
        }
    }

    fn n(s: &str) -> InstanceName {
        InstanceName::new(s).unwrap()
    }

    #[test]
    fn instances_are_planned_against_what_the_daemon_made_and_what_is_listed() {
        let request = ApplyRequest {
            generation: 1,
            vms: vec![
                vm("app", "AAAAAA", &["net"]),
                vm("net", "NNNNNN", &[]),
                vm("taken", "TTTTTT", &[]),
                vm("kept", "KKKKKK", &[]),
            ],
        };
        let mut state = InstanceState::new();
        let made = |v: &ActiveVm| Made {
            vm: v.name.clone(),
            definition: definition(v),
            confirmed: true,
        };
        state.made.insert(n("KKKKKK"), made(&request.vms[3]));
        state
            .made
            .insert(n("GGGGGG"), made(&vm("gone", "GGGGGG", &[])));
        let mut gone_by_hand = made(&vm("app", "AAAAAA", &["net"]));
        gone_by_hand.definition = definition(&vm("old", "AAAAAA", &[]));
        state.made.insert(n("AAAAAA"), gone_by_hand);
        let listed = [n("KKKKKK"), n("GGGGGG"), n("TTTTTT"), n("other")].into();
        let p = plan(&request, Naming::Id, &listed, &state);
        assert_eq!(p.foreign, [n("TTTTTT"), n("other")]);
        assert_eq!(p.left_out.len(), 1);
        assert_eq!(p.left_out[0].code, DiagCode::ServiceConflict);
        assert_eq!(p.left_out[0].vm.as_str(), "taken");
        // AAAAAA was made but is no longer listed: made again.
        assert_eq!(p.plan.added, [n("AAAAAA"), n("NNNNNN")].into());
        assert_eq!(p.plan.removed, [n("GGGGGG")].into());
        assert_eq!(p.plan.kept, [n("KKKKKK")].into());
        assert!(p.plan.changed.is_empty());
        assert_eq!(
            creation_order(&p),
            [n("NNNNNN"), n("AAAAAA")],
            "providers first"
        );
        let by_name = plan(
            &request,
            Naming::Name,
            &BTreeSet::new(),
            &InstanceState::new(),
        );
        assert_eq!(
            by_name.plan.added,
            [n("app"), n("kept"), n("net"), n("taken")].into()
        );
    }

    #[test]
    fn a_changed_definition_is_a_change_not_a_new_instance() {
        let old = vm("a", "AAAAAA", &[]);
        let mut new = old.clone();
        new.fingerprint = 2;
        let mut state = InstanceState::new();
        state.made.insert(
            n("AAAAAA"),
            Made {
                vm: old.name.clone(),
                definition: definition(&old),
                confirmed: true,
            },
        );
        let request = ApplyRequest {
            generation: 2,
            vms: vec![new],
        };
        let p = plan(&request, Naming::Id, &[n("AAAAAA")].into(), &state);
        assert_eq!(p.plan.changed, [n("AAAAAA")].into());
        assert!(p.plan.added.is_empty() && p.plan.removed.is_empty());
    }
}
