//! Per-VM lifecycle hooks, libvirt's way: what a host must prepare for a VM
//! that the daemon cannot know (Spectrum's per-VM users, `/run/vsock/<id>`,
//! `create-vm-dependencies`, storage) is done by the administrator's
//! program (`--vm-hook`), run as
//!
//! - `PROGRAM prepare <id> <name>` once the VM's directory and view exist
//!   and before its service is created (so before its VMM can start), and
//! - `PROGRAM release <id> <name>` after its service is deleted (its VMM
//!   stopped) and before its directory goes,
//!
//! with the VM's facts in its environment ([`VmFacts::env`]) and a deadline
//! (its process group is killed at the deadline).
//!
//! The stage sits between the views and the apply, and after the apply
//! (see `commit.rs`). Hooks run only for what changed: a VM is prepared
//! once, and remembered as prepared in `<state-dir>/vm-hooks.json`
//! ([`record`]), so an unchanged rescan runs no hook and a daemon restart
//! prepares nothing twice. The hooks of one rescan run side by side
//! ([`run`]), so a rescan waits at most one deadline for all of them.
//!
//! A failed or timed-out `prepare` leaves that VM out of the apply with a
//! `hook-failed` diagnostic (and the VMs it provides for, transitively, with
//! `provider-unavailable`); the others are applied. A failed `release`
//! keeps the VM's directory. Either is tried again at the next rescan, and
//! [`Hooks::needs_retry`] asks the rescan worker for one on its retry
//! schedule.

pub mod record;
pub mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vm_catalog_protocol::{DiagCode, SourceLabel, VmId, VmName};

use crate::apply::{ApplyReport, ApplyRequest, LeftOut};
use crate::catalog::Draft;

/// How long a hook may run when `--vm-hook-timeout` does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The hook program and its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// The program (`--vm-hook`).
    pub program: PathBuf,
    /// How long one run may take (`--vm-hook-timeout`).
    pub timeout: Duration,
    /// The record of prepared VMs (`<state-dir>/vm-hooks.json`).
    pub record: PathBuf,
}

/// What a hook is run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Before the VM's service is created.
    Prepare,
    /// After the VM's service is deleted.
    Release,
}

impl Action {
    /// The hook's first argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Prepare => "prepare",
            Action::Release => "release",
        }
    }

    /// The program's name in errors ("prepare hook exited with code 1").
    fn label(self) -> &'static str {
        match self {
            Action::Prepare => "prepare hook",
            Action::Release => "release hook",
        }
    }
}

/// A VM's facts, given to its hook and kept in the record (a VM released
/// after it left the catalog is released with the facts it was prepared
/// with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmFacts {
    /// Its id (`VM_ID`).
    pub id: VmId,
    /// Its catalog name (`VM_NAME`).
    pub name: VmName,
    /// Its source's label (`VM_SOURCE`).
    pub source: SourceLabel,
    /// Its source's directory, as `vm-import`'s second argument
    /// (`VM_SOURCE_ROOT`; a partition's definitions directory).
    pub source_root: PathBuf,
    /// Its definition directory (`VM_PATH`).
    pub path: PathBuf,
    /// Its directory under `--vm-dir`: `by-id/<id>` in the spectrum layout
    /// (`VM_DIR`).
    pub dir: PathBuf,
    /// Its view, `<dir>/config` (`VM_VIEW`).
    pub view: PathBuf,
}

impl VmFacts {
    /// The environment variables a hook gets, besides the daemon's own.
    pub fn env(&self) -> [(&'static str, &std::ffi::OsStr); 7] {
        [
            ("VM_ID", self.id.as_str().as_ref()),
            ("VM_NAME", self.name.as_str().as_ref()),
            ("VM_SOURCE", self.source.as_str().as_ref()),
            ("VM_SOURCE_ROOT", self.source_root.as_os_str()),
            ("VM_PATH", self.path.as_os_str()),
            ("VM_DIR", self.dir.as_os_str()),
            ("VM_VIEW", self.view.as_os_str()),
        ]
    }

    /// The facts of the active VMs of `draft` named in `names` whose view
    /// is built.
    pub fn of_draft(draft: &Draft, names: &BTreeSet<VmName>) -> BTreeMap<VmName, VmFacts> {
        let roots: BTreeMap<&SourceLabel, &str> = draft
            .sources()
            .iter()
            .map(|s| (&s.label, s.path.as_str()))
            .collect();
        draft
            .active()
            .filter(|c| names.contains(&c.entry.name))
            .filter_map(|c| {
                let view = c.view.clone()?;
                let dir = view.parent()?.to_path_buf();
                Some((
                    c.entry.name.clone(),
                    VmFacts {
                        id: c.id.clone(),
                        name: c.entry.name.clone(),
                        source: c.entry.source.clone(),
                        source_root: PathBuf::from(
                            roots.get(&c.entry.source).copied().unwrap_or_default(),
                        ),
                        path: c.definition.dir.clone(),
                        dir,
                        view,
                    },
                ))
            })
            .collect()
    }
}

/// Called with each VM about to be released, before its hook runs: what
/// the daemon keeps in the VM's directories (a UI VM's listener in
/// `/run/vsock/<id>`) goes first. Set by the daemon's wiring, which knows
/// the RPC layer; the stage does not.
pub type BeforeRelease = Box<dyn Fn(&VmName) + Send>;

/// The hook stage, and what it keeps between rescans.
#[derive(Default)]
pub struct Hooks {
    config: Option<HookConfig>,
    /// The VMs prepared and not released, by id (as in the record).
    prepared: BTreeMap<VmId, VmFacts>,
    /// VMs whose last prepare failed.
    prepare_failed: BTreeSet<VmId>,
    /// VMs whose last release failed.
    release_failed: BTreeSet<VmId>,
    /// The ids of the last prepare's request, the VMs it left out
    /// included: those are not released.
    active: BTreeSet<VmId>,
    before_release: Option<BeforeRelease>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("config", &self.config)
            .field("prepared", &self.prepared.len())
            .field("prepare_failed", &self.prepare_failed)
            .field("release_failed", &self.release_failed)
            .finish()
    }
}

impl Hooks {
    /// No hook: every stage does nothing.
    pub fn none() -> Hooks {
        Hooks::default()
    }

    /// Hooks run as `config` says; the VMs already prepared are read from
    /// its record (leniently: what cannot be read is logged and skipped).
    pub fn open(config: HookConfig) -> Hooks {
        let prepared = record::load(&config.record);
        Hooks {
            config: Some(config),
            prepared,
            prepare_failed: BTreeSet::new(),
            release_failed: BTreeSet::new(),
            active: BTreeSet::new(),
            before_release: None,
        }
    }

    /// Calls `f` with each VM about to be released, before its hook runs.
    pub fn before_release(&mut self, f: BeforeRelease) {
        self.before_release = Some(f);
    }

    /// The configured hook, if any.
    pub fn config(&self) -> Option<&HookConfig> {
        self.config.as_ref()
    }

    /// Whether `id` is prepared (and not released).
    pub fn is_prepared(&self, id: &VmId) -> bool {
        self.prepared.contains_key(id)
    }

    /// Whether a hook failed at the last rescan, so that another is due
    /// even if nothing else asks for one.
    pub fn needs_retry(&self) -> bool {
        !self.prepare_failed.is_empty() || !self.release_failed.is_empty()
    }

    /// The prepare stage: runs `prepare` for every VM of `request` that is
    /// not prepared yet, side by side; `facts` gives the facts of the VMs
    /// it names (called only when there are some: an unchanged rescan
    /// costs a lookup per VM).
    /// A VM whose hook failed leaves `request`, and so does every VM it
    /// provides for, transitively; the returned list says why, for the
    /// report.
    pub fn prepare(
        &mut self,
        request: &mut ApplyRequest,
        facts: impl FnOnce(&BTreeSet<VmName>) -> BTreeMap<VmName, VmFacts>,
    ) -> Vec<LeftOut> {
        let Some(config) = &self.config else {
            return Vec::new();
        };
        self.active = request.vms.iter().map(|v| v.id.clone()).collect();
        let names: BTreeSet<VmName> = request
            .vms
            .iter()
            .filter(|v| !self.prepared.contains_key(&v.id))
            .map(|v| v.name.clone())
            .collect();
        self.prepare_failed.clear();
        if names.is_empty() {
            return Vec::new();
        }
        let facts = facts(&names);
        let todo: Vec<&VmFacts> = names.iter().filter_map(|n| facts.get(n)).collect();
        let results = run::run_all(config, Action::Prepare, &todo);
        let mut left_out = Vec::new();
        let mut failed = BTreeSet::new();
        for (vm, result) in todo.iter().zip(results) {
            match result {
                Ok(()) => {
                    self.prepared.insert(vm.id.clone(), (*vm).clone());
                }
                Err(e) => {
                    tracing::warn!(vm = %vm.name, id = %vm.id, error = %e, "the vm's prepare hook failed: it is left out, and tried again later");
                    self.prepare_failed.insert(vm.id.clone());
                    failed.insert(vm.name.clone());
                    left_out.push(LeftOut {
                        vm: vm.name.clone(),
                        code: DiagCode::HookFailed,
                        message: format!("{}: {e}", config.program.display()),
                    });
                }
            }
        }
        record::save_or_warn(&config.record, &self.prepared);
        left_out.extend(leave_out(request, failed));
        left_out
    }

    /// The release stage, after the apply: runs `release` for every
    /// prepared VM that is no longer active (not in the last prepare's
    /// request; its service deleted by the apply that made `report`; after
    /// a failed apply, nothing is released). Returns the directories that must stay (`VmFacts::dir`):
    /// those of the VMs not released yet.
    pub fn release(&mut self, report: &ApplyReport) -> BTreeSet<PathBuf> {
        let Some(config) = &self.config else {
            return BTreeSet::new();
        };
        let gone: Vec<&VmFacts> = self
            .prepared
            .values()
            .filter(|f| !self.active.contains(&f.id))
            .collect();
        if gone.is_empty() {
            self.release_failed.clear();
            return BTreeSet::new();
        }
        if report.outcome.status.is_failure() {
            // Their services may still be there: released after an apply
            // that succeeds. Retried as the failed apply is.
            return gone.iter().map(|f| f.dir.clone()).collect();
        }
        if let Some(f) = &self.before_release {
            for vm in &gone {
                f(&vm.name);
            }
        }
        let results = run::run_all(config, Action::Release, &gone);
        let mut keep = BTreeSet::new();
        let mut released = Vec::new();
        let mut failed = BTreeSet::new();
        for (vm, result) in gone.iter().zip(results) {
            match result {
                Ok(()) => released.push(vm.id.clone()),
                Err(e) => {
                    tracing::warn!(vm = %vm.name, id = %vm.id, error = %e, "the vm's release hook failed: its directory stays, and it is tried again later");
                    failed.insert(vm.id.clone());
                    keep.insert(vm.dir.clone());
                }
            }
        }
        self.release_failed = failed;
        for id in released {
            self.prepared.remove(&id);
        }
        record::save_or_warn(&config.record, &self.prepared);
        keep
    }
}

/// Takes the VMs `failed` out of `request`, and every VM that depends on
/// one of them, transitively; returns the dependants' reasons.
fn leave_out(request: &mut ApplyRequest, mut failed: BTreeSet<VmName>) -> Vec<LeftOut> {
    let mut out = Vec::new();
    loop {
        let mut more = Vec::new();
        for vm in &request.vms {
            if failed.contains(&vm.name) {
                continue;
            }
            if let Some(p) = vm.providers.iter().find(|p| failed.contains(*p)) {
                more.push(LeftOut {
                    vm: vm.name.clone(),
                    code: DiagCode::ProviderUnavailable,
                    message: format!("provider {p} is left out: its prepare hook failed"),
                });
            }
        }
        if more.is_empty() {
            break;
        }
        failed.extend(more.iter().map(|l| l.vm.clone()));
        out.extend(more);
    }
    request.vms.retain(|v| !failed.contains(&v.name));
    out
}

#[cfg(test)]
mod tests;
