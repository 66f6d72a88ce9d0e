//! The `s6-rc` applier: one compiled database of VM services, swapped
//! atomically.
//!
//! Every apply runs the stages in turn, each returning a value:
//! - **plan** ([`plan`]): the source tree rendered in memory ([`render`])
//!   from the service template ([`template`]), fingerprinted, compared with
//!   the live record: added, removed, changed, kept. When the tree is the
//!   live one, nothing else happens but the restart-pending bookkeeping
//!   ([`crate::apply::restart`]): [`S6rcOutcome::Unchanged`].
//! - **switch** (`switch.rs`): the tree written under the state directory
//!   ([`store`], [`source`]), compiled into a fresh versioned database and
//!   switched in — the first time with `s6-rc-init`, then with
//!   `s6-rc-update` (`update.rs`) — through the [`tools::S6rc`] trait;
//!   `LIVE/compiled` and the scan-directory links say what happened
//!   ([`live`]). Building a database and recording it as live are
//!   `commit.rs`, shared with the repair.
//! - **verify or repair** (`repair.rs`): a failure after the switch is
//!   repaired at once, or rolled back.
//! - **report** (`report.rs`): the typed [`S6rcOutcome`] and what is live become
//!   the [`ApplyReport`].
//! - **tidy** ([`Applier::tidy`], after the reply): the sources and service
//!   directories that are no longer live go; the old databases were moved
//!   out at the end of the apply, and are deleted in the background
//!   (`cleanup.rs`).
//!
//! What is live and which VMs run an older definition survive daemon
//! restarts in `state.json` ([`state`]); at start-up the applier waits until
//! nobody works on the live directory, then adopts it without re-running
//! s6-rc-init (`adopt.rs`). Every s6-rc program runs with a deadline, and
//! nothing a running update may use is ever deleted (`cleanup.rs`).
//!
//! [`Commands`] runs the real s6-rc programs. Facts and measurements:
//! `shared/reference/s6rc.md`; user documentation: `docs/s6-rc.md`.

mod adopt;
mod cleanup;
pub mod commands;
mod commit;
pub mod config;
pub mod live;
pub mod outcome;
pub mod plan;
mod procs;
mod quiet;
pub mod render;
mod repair;
mod report;
pub mod source;
pub mod state;
pub mod store;
mod switch;
pub mod template;
pub mod tools;
mod update;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vm_catalog_protocol::VmName;

pub use crate::apply::process::MissingProgram;
pub use adopt::AdoptError;
pub use commands::Commands;
pub use config::{ConfigError, S6rcConfig};
pub use template::TemplateError;

use super::applier::{Applier, ApplyReport, ApplyRequest, LeftOut};
use super::restart;
use live::Live;
use outcome::{Cause, Forced, S6rcOutcome};
use plan::Planned;
use render::Renderer;
use state::{S6rcState, StateFile};
use store::Store;
use template::Template;
use tools::S6rc;

/// Where an apply (and the tidy after it) spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Rendering and fingerprinting the tree in memory.
    pub render: Duration,
    /// Writing the source directory: a symlink per service, and the
    /// service directories that are not in the store yet.
    pub write: Duration,
    /// How many service directories were written (the others were linked
    /// as they were).
    pub written: usize,
    /// `s6-rc-compile`.
    pub compile: Duration,
    /// `s6-rc-init` or `s6-rc-update`.
    pub switch: Duration,
    /// Repairing a failure after the switch.
    pub repair: Duration,
    /// Saving the state and moving the old databases out of the way (a
    /// rename each, under the live lock; they are deleted in the
    /// background).
    pub cleanup: Duration,
    /// The whole apply.
    pub total: Duration,
    /// The [`Applier::tidy`] after it (not part of `total`): moving the old
    /// sources and service directories out.
    pub tidy: Duration,
}

/// The s6-rc applier could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is invalid.
    #[error("invalid s6-rc configuration")]
    Config(#[source] ConfigError),
    /// An s6-rc program is missing.
    #[error("s6-rc is not usable")]
    Programs(#[source] MissingProgram),
    /// The service template is unusable.
    #[error("invalid service template")]
    Template(#[source] TemplateError),
    /// The state directory cannot be created or read.
    #[error("cannot use state directory {0}")]
    StateDir(PathBuf, #[source] io::Error),
    /// The live directory exists but cannot be adopted.
    #[error("cannot adopt live directory {live}: {reason}")]
    Live {
        /// The live directory.
        live: PathBuf,
        /// What is wrong and what to do.
        reason: AdoptError,
    },
}

/// What the stages act on: the s6-rc tools, the live directory and the
/// state directory.
#[derive(Debug)]
pub(crate) struct System<T> {
    tools: T,
    live: Live,
    store: Store,
}

impl<T: S6rc> System<T> {
    /// Reads a VM's pid from its supervisor.
    fn pid_of(&mut self) -> impl FnMut(&VmName) -> Option<u32> + '_ {
        let System { tools, live, .. } = self;
        move |n: &VmName| tools.pid(live.path(), n.as_str())
    }
}

/// What the applier keeps from one apply to the next.
#[derive(Debug)]
pub(crate) struct Memory {
    /// What is live, also in `state.json`.
    state: S6rcState,
    /// Why the next apply must switch even if the tree is unchanged.
    force: Option<Forced>,
    /// Set while s6-rc programs the applier did not start may still work on
    /// the live directory (they outlasted the wait at start-up): nothing is
    /// cleaned up and no apply runs until they are gone.
    unsettled: Option<outcome::Busy>,
    /// An apply left sources that are no longer live: the next tidy
    /// collects them.
    untidy: bool,
    /// Where the last apply (and tidy) spent its time.
    timings: Timings,
}

impl Memory {
    fn save(&self, store: &Store) {
        self.state.save_or_warn(&store.state_file());
    }
}

/// What the report shows besides the outcome: the services of the
/// rendered set and the VMs left out of it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shown {
    services: usize,
    left_out: Vec<LeftOut>,
}

impl From<&Planned> for Shown {
    fn from(p: &Planned) -> Shown {
        Shown {
            services: p.rendered.tree.services.len(),
            left_out: p.rendered.left_out.clone(),
        }
    }
}

/// A stage's result: the outcome and what the report shows with it.
pub(crate) type Step = (S6rcOutcome, Shown);

/// The set one apply wants live: what a repair renders again.
pub(crate) struct Wanted<'a> {
    /// The catalog generation (names the new database's slot).
    generation: u64,
    /// The active VMs.
    vms: &'a [crate::apply::applier::ActiveVm],
    /// How they are rendered.
    renderer: &'a Renderer,
}

/// Applies the catalog as one s6-rc database of VM services.
///
/// Built once at start-up by [`S6rcApplier::open`]; then
/// [`Applier::apply`] is called from one worker thread.
#[derive(Debug)]
pub struct S6rcApplier<T: S6rc = Commands> {
    config: S6rcConfig,
    renderer: Renderer,
    sys: System<T>,
    memory: Memory,
    /// What was wrong with `state.json` at the start: said in the first
    /// report.
    note: Option<String>,
}

impl S6rcApplier<Commands> {
    /// Validates `config`, finds the s6-rc programs, loads the template,
    /// waits until nobody works on the live directory, adopts it if there is
    /// one (never re-running s6-rc-init over it), removes what is not live,
    /// and reconciles the state file with what is live.
    pub fn open(config: S6rcConfig) -> Result<S6rcApplier<Commands>, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let tools = Commands::find(config.bin_dir.as_deref())
            .map_err(OpenError::Programs)?
            .with_timeout(config.timeout);
        S6rcApplier::open_with(config, tools)
    }
}

impl<T: S6rc> S6rcApplier<T> {
    /// [`S6rcApplier::open`] with other s6-rc tools (a fake, in tests).
    pub fn open_with(config: S6rcConfig, tools: T) -> Result<S6rcApplier<T>, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let template = match &config.template_dir {
            Some(d) => Template::load(d).map_err(OpenError::Template)?,
            None => Template::builtin(),
        };
        let start = config.start_command.to_str().unwrap_or_default();
        let renderer = Renderer::new(template, &config.prefix, start, config.max_services);
        let store = Store::open(&config.state_dir)
            .map_err(|e| OpenError::StateDir(config.state_dir.clone(), e))?;
        let (state, note) = match S6rcState::load(&store.state_file()) {
            Ok(None) => (S6rcState::new(), None),
            Ok(Some(l)) if l.skipped.is_empty() => (l.state, None),
            Ok(Some(l)) => {
                let note = format!(
                    "unreadable records of state.json skipped: {}",
                    l.skipped.join(", ")
                );
                (l.state, Some(note))
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the state file; what is live is read again");
                (
                    S6rcState::new(),
                    Some(format!("{e}; what is live was read again")),
                )
            }
        };
        let live = Live::new(&config.live_dir, &config.scandir, &config.prefix);
        let mut sys = System { tools, live, store };
        let mut memory = Memory {
            state,
            force: None,
            unsettled: None,
            untidy: false,
            timings: Timings::default(),
        };
        adopt::adopt(
            &mut sys,
            &mut memory,
            &config.prefix,
            config.timeout,
            "adopting it",
        )
        .map_err(|reason| OpenError::Live {
            live: config.live_dir.clone(),
            reason,
        })?;
        Ok(S6rcApplier {
            config,
            renderer,
            sys,
            memory,
            note,
        })
    }

    pub fn config(&self) -> &S6rcConfig {
        &self.config
    }

    /// Where the last apply spent its time.
    pub fn last_timings(&self) -> Timings {
        self.memory.timings
    }

    /// The live compiled database, as `LIVE/compiled` says.
    pub fn live_database(&self) -> Option<PathBuf> {
        self.sys.live.compiled()
    }

    /// The state directory (canonical).
    pub fn state_dir(&self) -> &Path {
        self.sys.store.root()
    }

    /// What the applier remembers (as in `state.json`).
    pub fn state(&self) -> &S6rcState {
        &self.memory.state
    }

    /// Waits until what the last tidies discarded is deleted (it is, in the
    /// background): for tests and benchmarks that look at the state
    /// directory, or time something else.
    pub fn settle(&self) {
        self.sys.store.settle();
    }

    /// The stages, in order.
    fn stages(&mut self, request: &ApplyRequest) -> Step {
        if self.memory.unsettled.is_some() {
            // Others still worked on the live directory when the start-up
            // wait ran out: look again (once: the rescan is not held up),
            // and adopt and clean up if they are gone.
            let adopted = adopt::adopt(
                &mut self.sys,
                &mut self.memory,
                &self.config.prefix,
                Duration::ZERO,
                "applying",
            );
            if let Some(busy) = &self.memory.unsettled {
                return (
                    S6rcOutcome::FailedBeforeSwitch(Cause::Busy(busy.clone())),
                    Shown::default(),
                );
            }
            if let Err(why) = adopted {
                let live = self.sys.live.path().to_owned();
                return (
                    S6rcOutcome::FailedBeforeSwitch(Cause::LiveBroken {
                        live,
                        why: why.to_string(),
                    }),
                    Shown::default(),
                );
            }
        }
        self.follow_live();
        let t = Instant::now();
        let live = &self.sys.live;
        let planned = plan::plan(
            &self.renderer,
            request,
            &self.memory.state,
            live.compiled().as_deref(),
            &mut |n| live.conflict(n),
        );
        self.memory.timings.render = t.elapsed();
        let planned = match planned {
            Ok(p) => p,
            Err(refusal) => {
                let shown = Shown {
                    services: match refusal {
                        outcome::Refusal::TooManyServices { count, .. } => count,
                    },
                    left_out: Vec::new(),
                };
                return (S6rcOutcome::Invalid(refusal), shown);
            }
        };
        let (sys, memory) = (&mut self.sys, &mut self.memory);
        if planned.live && memory.force.is_none() {
            if let Some(step) = unchanged(sys, memory, self.config.restart_changed, &planned) {
                return step;
            }
        }
        let wanted = Wanted {
            generation: request.generation,
            vms: &request.vms,
            renderer: &self.renderer,
        };
        switch::switch(sys, memory, &self.config, &wanted, &planned)
    }

    /// Someone switched the live directory behind the applier's back (an
    /// update by hand, one that finished after a restart): take what
    /// `LIVE/compiled` says as live.
    fn follow_live(&mut self) {
        let recorded = self.memory.state.live.as_ref().map(|r| r.database.clone());
        let compiled = self.sys.live.compiled();
        if compiled.is_some() && compiled != recorded {
            tracing::warn!(
                compiled = ?compiled,
                recorded = ?recorded,
                "the live database changed behind the applier's back: adopting it"
            );
            adopt::adopt_current(&mut self.sys, &mut self.memory);
            self.memory.save(&self.sys.store);
        }
    }
}

/// The tree is live. Only restart-pending can change, for VMs whose own
/// fingerprint changed or that were pending — unless `restart_changed` is
/// set and such a VM runs: then `None`, and the caller updates to the same
/// tree with a conversion file that restarts it.
fn unchanged<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    restart_changed: bool,
    planned: &Planned,
) -> Option<Step> {
    let new = planned.rendered.tree.definitions();
    let state = &mut memory.state;
    let rec = state.live.as_mut()?;
    let names: Vec<&VmName> = new
        .iter()
        .filter(|(n, d)| rec.services.get(*n) != Some(&Some(**d)) || state.running.contains_key(*n))
        .map(|(n, _)| n)
        .collect();
    let mut pid_of = sys.pid_of();
    let probes = restart::probes(names, &rec.services, &state.running, &new, &mut pid_of);
    drop(pid_of);
    if restart_changed && !probes.is_empty() {
        return None;
    }
    let running: BTreeMap<_, _> = probes
        .iter()
        .map(|p| {
            let r = state::Running {
                definition: p.running,
                pid: p.pid,
            };
            (p.name.clone(), r)
        })
        .collect();
    let services: BTreeMap<_, _> = new.into_iter().map(|(n, d)| (n, Some(d))).collect();
    if rec.services != services || state.running != running {
        rec.services = services;
        state.running = running;
        memory.save(&sys.store);
    }
    Some((S6rcOutcome::Unchanged, planned.into()))
}

impl<T: S6rc> Applier for S6rcApplier<T> {
    fn name(&self) -> &'static str {
        "s6-rc"
    }

    fn apply(&mut self, request: &ApplyRequest) -> ApplyReport {
        let t0 = Instant::now();
        self.memory.timings = Timings::default();
        let (outcome, shown) = self.stages(request);
        self.memory.timings.total = t0.elapsed();
        let database = self.sys.live.compiled();
        report::report(
            request,
            outcome,
            shown,
            &self.memory.state,
            database.as_deref(),
            self.note.take().as_deref(),
            t0.elapsed(),
        )
    }

    /// Moves out the sources and service directories the last applies
    /// left, unless others may still switch the live directory (to a
    /// database whose source must stay). Takes no lock.
    fn tidy(&mut self) {
        let memory = &mut self.memory;
        if !memory.untidy || memory.unsettled.is_some() {
            return;
        }
        let t = Instant::now();
        let next = memory.state.next.as_ref().map(|r| r.database.as_path());
        cleanup::discard_old_sources(&self.sys.live, &self.sys.store, next);
        memory.untidy = false;
        memory.timings.tidy = t.elapsed();
    }
}
