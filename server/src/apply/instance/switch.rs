//! The switch stage of the s6-instance applier: one call per instance.
//!
//! Deletes come first: the rescan releases a removed partition only after
//! the apply, so a VM's VMM is stopped before its disk goes. Then the VMs
//! whose definition changed: a running one keeps running what it started
//! with and is restart-pending (or, with `restart_changed`, is restarted).
//! Then creates, providers first. A create is recorded (unconfirmed)
//! before it runs; if it fails, the half-made instance is deleted at once,
//! or at the next apply if that fails too. A create refused with exit code
//! 100 (the name exists: someone made it since the listing) is forgotten
//! without a delete: that instance is not the daemon's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use vm_catalog_protocol::VmName;

use super::outcome::{InstanceAction, InstanceFailure, InstanceRun};
use super::plan::{Planned, creation_order};
use super::state::Made;
use super::{InstanceApplier, InstanceName, Instances};
use crate::apply::fingerprint::Fingerprint;
use crate::apply::plan::Changes;
use crate::apply::process::ToolError;
use crate::apply::restart;

/// What the steps of one switch collect.
struct Run {
    done: Changes,
    restarted: Vec<VmName>,
    failed: Vec<InstanceFailure>,
}

impl Run {
    fn fail(
        &mut self,
        vm: &VmName,
        instance: &InstanceName,
        action: InstanceAction,
        error: ToolError,
    ) {
        self.failed.push(InstanceFailure {
            vm: vm.clone(),
            instance: instance.clone(),
            action,
            error,
        });
    }
}

/// Carries `planned` out: deletes, then changes, then creates.
pub(super) fn switch<T: Instances>(
    a: &mut InstanceApplier<T>,
    service: &Path,
    planned: &Planned<'_>,
) -> InstanceRun {
    let mut run = Run {
        done: Changes::default(),
        restarted: Vec::new(),
        failed: Vec::new(),
    };
    delete(a, service, planned, &mut run);
    change(a, service, planned, &mut run);
    create(a, service, planned, &mut run);
    a.save();
    InstanceRun {
        service: service.to_owned(),
        instances: a.state.made.values().filter(|m| m.confirmed).count(),
        changes: run.done,
        restarted: run.restarted,
        failed: run.failed,
        foreign: planned.foreign.clone(),
    }
}

/// The removed instances, each deleted (its VMM stopped).
fn delete<T: Instances>(
    a: &mut InstanceApplier<T>,
    service: &Path,
    planned: &Planned<'_>,
    run: &mut Run,
) {
    for name in &planned.plan.removed {
        let vm = a.state.made[name].vm.clone();
        match a.tools.delete(service, name) {
            Ok(()) => {
                a.state.made.remove(name);
                a.state.running.remove(name);
                run.done.removed += 1;
                tracing::info!(instance = %name, vm = %vm, "instance deleted");
            }
            Err(e) => run.fail(&vm, name, InstanceAction::Delete, e),
        }
    }
}

/// The changed definitions, and the restart-pending records: a running VM
/// whose definition differs from what it started with is pending while its
/// pid holds, or restarted with `restart_changed`.
fn change<T: Instances>(
    a: &mut InstanceApplier<T>,
    service: &Path,
    planned: &Planned<'_>,
    run: &mut Run,
) {
    let new: BTreeMap<InstanceName, Fingerprint> = planned
        .wanted
        .iter()
        .map(|(n, (_, d))| (n.clone(), *d))
        .collect();
    let live: BTreeMap<InstanceName, Option<Fingerprint>> = a
        .state
        .made
        .iter()
        .map(|(n, m)| (n.clone(), Some(m.definition)))
        .collect();
    let names: BTreeSet<&InstanceName> = planned
        .plan
        .changed
        .iter()
        .chain(a.state.running.keys())
        .filter(|n| new.contains_key(*n))
        .collect();
    let tools = &mut a.tools;
    let mut pid_of = |n: &InstanceName| tools.pid(service, n);
    let mut probes = restart::probes(names, &live, &a.state.running, &new, &mut pid_of);
    if a.config.restart_changed {
        // A restarted VM runs its new definition (its old process may not
        // have exited yet: it is not probed again).
        probes.retain(|p| {
            let vm = planned.wanted[&p.name].0.name.clone();
            match a.tools.restart(service, &p.name) {
                Ok(()) => {
                    run.restarted.push(vm);
                    false
                }
                Err(e) => {
                    run.fail(&vm, &p.name, InstanceAction::Restart, e);
                    true
                }
            }
        });
    }
    for name in &planned.plan.changed {
        let (vm, def) = planned.wanted[name];
        if let Some(m) = a.state.made.get_mut(name) {
            m.vm = vm.name.clone();
            m.definition = def;
        }
        a.write_mark(service, name, &vm.name, def);
        run.done.changed += 1;
    }
    let tools = &mut a.tools;
    let mut pid_of = |n: &InstanceName| tools.pid(service, n);
    a.state.running = restart::settle(&probes, &mut pid_of);
}

/// The added instances, providers first; each recorded (unconfirmed)
/// before its create runs.
fn create<T: Instances>(
    a: &mut InstanceApplier<T>,
    service: &Path,
    planned: &Planned<'_>,
    run: &mut Run,
) {
    for name in creation_order(planned) {
        let (vm, definition) = planned.wanted[&name];
        a.state.made.insert(
            name.clone(),
            Made {
                vm: vm.name.clone(),
                definition,
                confirmed: false,
            },
        );
        a.save();
        match a.tools.create(service, &name, a.config.start) {
            Ok(()) => {
                if let Some(m) = a.state.made.get_mut(&name) {
                    m.confirmed = true;
                }
                a.write_mark(service, &name, &vm.name, definition);
                run.done.added += 1;
                tracing::info!(instance = %name, vm = %vm.name, up = a.config.start, "instance created");
            }
            Err(e) => {
                let not_ours = e.code() == Some(100);
                if not_ours || a.tools.delete(service, &name).is_ok() {
                    a.state.made.remove(&name);
                }
                run.fail(&vm.name, &name, InstanceAction::Create, e);
            }
        }
    }
}
