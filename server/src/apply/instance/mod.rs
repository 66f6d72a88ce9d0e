//! The `s6-instance` applier, Spectrum's way today: each active VM is an
//! instance of one templated s6 service (made with `s6-instance-maker`,
//! e.g. `/run/service/vmm`), created with `s6-instance-create` and deleted
//! with `s6-instance-delete`: one call per change, whatever the number of
//! VMs.
//!
//! Every apply runs the stages in turn, each returning a value:
//! - **look**: is the templated service supervised, and which instances
//!   exist (the entries of its `instance/`, as `s6-instance-list` prints
//!   them, read without running it); instances whose create never succeeded
//!   are deleted, made instances that are gone are forgotten;
//! - **plan** ([`plan`], pure): one instance per active VM, named by its
//!   id or its name ([`name`]), against the instances the daemon made
//!   ([`state`]): added, removed, changed, kept; instances the daemon did
//!   not make are left alone, and a VM whose instance name one of them
//!   holds is left out;
//! - **switch** (`switch.rs`): deletes first (so a VM's VMM is stopped
//!   before the rescan releases its partition), then the restart-pending
//!   bookkeeping of changed VMs ([`crate::apply::restart`]), then creates,
//!   providers first, through the [`Instances`] trait;
//! - **report** (`report.rs`): the typed [`InstanceRun`] and what is live
//!   become the [`ApplyReport`]. A failed call is reported and tried again
//!   at the next apply (the daemon's retry schedule runs one).
//!
//! What the daemon made survives restarts in `state.json`: after a restart
//! it adopts its instances as they are (no running one is restarted).
//! [`Commands`] runs the real programs; user documentation:
//! `docs/s6-instance.md`.
//!

pub mod config;
pub mod marker;
pub mod name;
pub mod outcome;
pub mod plan;
mod report;
pub mod state;
mod switch;
pub mod tools;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::apply::process::MissingProgram;
pub use config::{ConfigError, InstanceConfig, Naming};
pub use name::InstanceName;
pub use tools::{Commands, Instances, ListError};

use super::applier::{Applier, ApplyReport, ApplyRequest, LeftOut};
use super::fingerprint;
use outcome::{InstanceAction, InstanceFailure, InstanceOutcome};
use state::{InstanceState, StateFile};

/// The s6-instance applier could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is invalid.
    #[error("invalid s6-instance configuration")]
    Config(#[source] ConfigError),
    /// An `s6-instance-*` program is missing.
    #[error("the s6-instance programs are not usable")]
    Programs(#[source] MissingProgram),
    /// The state directory cannot be created.
    #[error("cannot use state directory {0}")]
    StateDir(PathBuf, #[source] io::Error),
}

/// Applies the catalog as instances of one templated s6 service.
///
/// Built once at start-up by [`InstanceApplier::open`]; then
/// [`Applier::apply`] is called from one worker thread.
#[derive(Debug)]
pub struct InstanceApplier<T: Instances = Commands> {
    config: InstanceConfig,
    tools: T,
    state: InstanceState,
    state_file: PathBuf,
    /// The instances not made by the daemon at the last look (logged when
    /// they change).
    foreign: Vec<InstanceName>,
    /// What reading the state found wrong, and what the first look adopted
    /// from the markers: said in the next report's message.
    note: Option<String>,
    /// Whether the instances the state names have been checked for their
    /// marker since the start (one written where it is missing).
    marks_checked: bool,
}

impl InstanceApplier<Commands> {
    /// Validates `config`, finds the programs and reads what the daemon
    /// made before. Nothing runs yet: the first apply looks at the
    /// instances (a templated service that is not supervised yet is a
    /// failed apply, retried, not a reason to stop).
    pub fn open(config: InstanceConfig) -> Result<InstanceApplier<Commands>, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let tools = Commands::find(config.bin_dir.as_deref())
            .map_err(OpenError::Programs)?
            .with_timeout(config.timeout);
        InstanceApplier::open_with(config, tools)
    }
}

impl<T: Instances> InstanceApplier<T> {
    /// [`InstanceApplier::open`] with other tools (a fake, in tests).
    pub fn open_with(config: InstanceConfig, tools: T) -> Result<InstanceApplier<T>, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|e| OpenError::StateDir(config.state_dir.clone(), e))?;
        let state_file = config.state_dir.join("state.json");
        let (state, note) = load_state(&state_file);
        Ok(InstanceApplier {
            config,
            tools,
            state,
            state_file,
            foreign: Vec::new(),
            note,
            marks_checked: false,
        })
    }

    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    /// What the applier remembers (as in `state.json`).
    pub fn state(&self) -> &InstanceState {
        &self.state
    }

    fn save(&self) {
        self.state.save_or_warn(&self.state_file);
    }

    /// The stages, in order: the outcome and the VMs left out.
    fn stages(&mut self, request: &ApplyRequest) -> (InstanceOutcome, Vec<LeftOut>) {
        let service = self.config.service.clone();
        if !self.tools.supervised(&service) {
            let scandir = service.join("instance");
            return (InstanceOutcome::NoScanner { scandir }, Vec::new());
        }
        let mut listed = match self.tools.list(&service) {
            Ok(l) => l.into_iter().collect::<BTreeSet<_>>(),
            Err(e) => return (InstanceOutcome::ListFailed(e), Vec::new()),
        };
        let mut failed = self.tidy(&service, &mut listed);
        let planned = plan::plan(request, self.config.naming, &listed, &self.state);
        if planned.foreign != self.foreign {
            if !planned.foreign.is_empty() {
                tracing::warn!(
                    service = %service.display(),
                    "instances not made by vm-catalogd, left alone: {}",
                    crate::apply::outcome::join(planned.foreign.iter())
                );
            }
            self.foreign = planned.foreign.clone();
        }
        let mut run = switch::switch(self, &service, &planned);
        failed.append(&mut run.failed);
        run.failed = failed;
        (InstanceOutcome::Ran(run), planned.left_out)
    }

    /// Before the plan: instances whose create never succeeded are deleted
    /// (they are made again), and made instances that are gone (deleted by
    /// hand) are forgotten. What is deleted leaves `listed`.
    fn tidy(
        &mut self,
        service: &Path,
        listed: &mut BTreeSet<InstanceName>,
    ) -> Vec<InstanceFailure> {
        let mut failed = Vec::new();
        let before = self.state.clone();
        let unconfirmed: Vec<_> = self
            .state
            .made
            .iter()
            .filter(|(_, m)| !m.confirmed)
            .map(|(n, m)| (n.clone(), m.vm.clone()))
            .collect();
        for (name, vm) in unconfirmed {
            match self.tools.delete(service, &name) {
                Ok(()) => {
                    self.state.made.remove(&name);
                    listed.remove(&name);
                }
                Err(error) => failed.push(InstanceFailure {
                    vm,
                    instance: name,
                    action: InstanceAction::Delete,
                    error,
                }),
            }
        }
        self.state.made.retain(|n, m| {
            let keep = !m.confirmed || listed.contains(n);
            if !keep {
                tracing::warn!(instance = %n, vm = %m.vm, "an instance the daemon made is gone: it is made again if its vm is active");
            }
            keep
        });
        let made = &self.state.made;
        self.state.running.retain(|n, _| made.contains_key(n));
        self.adopt_marked(service, listed);
        if self.state != before {
            self.save();
        }
        failed
    }
}

impl<T: Instances> InstanceApplier<T> {
    /// Adopts the listed instances that the state does not name but whose
    /// marker says the daemon made them (a lost or damaged `state.json`):
    /// as they are, nothing restarted. Once after a start, writes the
    /// marker of every made instance that has none (made by an older
    /// daemon, or its write failed).
    fn adopt_marked(&mut self, service: &Path, listed: &BTreeSet<InstanceName>) {
        let mut adopted = Vec::new();
        for name in listed {
            if let Some(made) = self.state.made.get(name) {
                if !self.marks_checked
                    && made.confirmed
                    && self.tools.marked(service, name).is_none()
                {
                    self.write_mark(service, name, &made.vm.clone(), made.definition);
                }
                continue;
            }
            if let Some(mark) = self.tools.marked(service, name) {
                self.state.made.insert(
                    name.clone(),
                    state::Made {
                        vm: mark.vm,
                        definition: mark.definition,
                        confirmed: true,
                    },
                );
                adopted.push(name);
            }
        }
        self.marks_checked = true;
        if !adopted.is_empty() {
            let line = format!(
                "{} instances adopted by their vm-catalogd marker: {}",
                adopted.len(),
                crate::apply::outcome::join(adopted.iter())
            );
            tracing::warn!(service = %service.display(), "{line}");
            self.note = Some(match self.note.take() {
                Some(n) => format!("{n}; {line}"),
                None => line,
            });
        }
    }

    /// Writes the marker of the instance `name`, logging a failure (the
    /// state file still records it).
    fn write_mark(
        &mut self,
        service: &Path,
        name: &InstanceName,
        vm: &vm_catalog_protocol::VmName,
        definition: fingerprint::Fingerprint,
    ) {
        let mark = marker::Mark {
            instance: name.clone(),
            vm: vm.clone(),
            definition,
        };
        if let Err(e) = self.tools.mark(service, &mark) {
            tracing::warn!(instance = %name, error = %e, "cannot write the instance's vm-catalogd marker");
        }
    }
}

/// The state in `path`, and what was wrong with it (for the next report).
/// A file that cannot be read at all is set aside: the first look then
/// adopts the instances by their markers.
fn load_state(path: &Path) -> (InstanceState, Option<String>) {
    match InstanceState::load(path) {
        Ok(None) => (InstanceState::new(), None),
        Ok(Some(l)) if l.skipped.is_empty() => (l.state, None),
        Ok(Some(l)) => {
            let note = format!(
                "{} unreadable records of {} skipped: {}",
                l.skipped.len(),
                path.display(),
                l.skipped.join(", ")
            );
            (l.state, Some(note))
        }
        Err(e) => {
            let aside = path.with_extension("json.unreadable");
            let _ = std::fs::rename(path, &aside);
            tracing::warn!(
                error = %e,
                aside = %aside.display(),
                "cannot read the s6-instance state: the instances are adopted by their markers"
            );
            (
                InstanceState::new(),
                Some(format!(
                    "{e}; set aside, the instances are adopted by their markers"
                )),
            )
        }
    }
}

impl<T: Instances> Applier for InstanceApplier<T> {
    fn name(&self) -> &'static str {
        "s6-instance"
    }

    fn apply(&mut self, request: &ApplyRequest) -> ApplyReport {
        let t0 = Instant::now();
        let (outcome, left_out) = self.stages(request);
        let note = self.note.take();
        report::report(
            request,
            outcome,
            left_out,
            &self.state,
            &self.config,
            note.as_deref(),
            t0.elapsed(),
        )
    }
}
