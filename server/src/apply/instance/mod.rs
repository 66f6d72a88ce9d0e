//! The `s6-instance` applier, Spectrum's way today: each active VM is an
//! instance of one templated s6 service (made with `s6-instance-maker`,
//! e.g. `/run/service/vmm`), created with `s6-instance-create` and deleted
//! with `s6-instance-delete`: one call per change, whatever the number of
//! VMs.
//!
//! Every apply runs the stages in turn, each returning a value:
//! - **look**: is the templated service supervised, and which instances
//!   exist (`s6-instance-list`); instances whose create never succeeded
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
//! [`InstanceRun`]: crate::apply::outcome::InstanceRun

pub mod config;
pub mod name;
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
pub use tools::{Commands, Instances};

use super::outcome::{Cause, InstanceAction, InstanceFailure, Outcome};
use super::{Applier, ApplyReport, ApplyRequest, LeftOut};
use state::{State, StateFile};

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
    state: State,
    state_file: PathBuf,
    /// The instances not made by the daemon at the last look (logged when
    /// they change).
    foreign: Vec<InstanceName>,
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
        let state = match State::load(&state_file) {
            Ok(s) => s.unwrap_or_else(State::new),
            Err(e) => {
                let aside = state_file.with_extension("json.unreadable");
                let _ = std::fs::rename(&state_file, &aside);
                tracing::warn!(
                    error = %e,
                    aside = %aside.display(),
                    "cannot read the s6-instance state: no instance counts as made by the \
                     daemon, existing ones are left alone"
                );
                State::new()
            }
        };
        Ok(InstanceApplier {
            config,
            tools,
            state,
            state_file,
            foreign: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    /// What the applier remembers (as in `state.json`).
    pub fn state(&self) -> &State {
        &self.state
    }

    fn save(&self) {
        self.state.save_or_warn(&self.state_file);
    }

    /// The stages, in order: the outcome and the VMs left out.
    fn stages(&mut self, request: &ApplyRequest) -> (Outcome, Vec<LeftOut>) {
        let service = self.config.service.clone();
        if !self.tools.supervised(&service) {
            let scandir = service.join("instance");
            return (
                Outcome::FailedBeforeSwitch(Cause::NoScanner { scandir }),
                Vec::new(),
            );
        }
        let mut listed = match self.tools.list(&service) {
            Ok(l) => l.into_iter().collect::<BTreeSet<_>>(),
            Err(e) => return (Outcome::FailedBeforeSwitch(Cause::Program(e)), Vec::new()),
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
        (Outcome::Instances(run), planned.left_out)
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
        if self.state != before {
            self.save();
        }
        failed
    }
}

impl<T: Instances> Applier for InstanceApplier<T> {
    fn name(&self) -> &'static str {
        "s6-instance"
    }

    fn apply(&mut self, request: &ApplyRequest) -> ApplyReport {
        let t0 = Instant::now();
        let (outcome, left_out) = self.stages(request);
        report::report(
            request,
            outcome,
            left_out,
            &self.state,
            &self.config,
            t0.elapsed(),
        )
    }
}
