//! The `s6-rc` applier: one compiled database of VM services, swapped
//! atomically.
//!
//! Every apply renders the source tree in memory ([`render`]) from the
//! service template ([`template`]) and fingerprints it. When the tree equals
//! the live one, nothing else happens ([`ApplyStatus::Unchanged`]). Otherwise
//! the tree is written under the state directory ([`store`], [`source`]),
//! compiled into a fresh versioned database, and switched in — the first
//! time with `s6-rc-init`, then with `s6-rc-update` ([`switch`]). After
//! every outcome `LIVE/compiled` says what is live ([`live`]); a failure
//! after the switch is repaired, and every database except the live one is
//! deleted. What is live and which VMs run an older definition survive
//! daemon restarts in `state.json` ([`state`], [`restart`]); at start-up the
//! applier adopts an existing live directory without re-running s6-rc-init
//! ([`adopt`]).
//!
//! The s6-rc programs sit behind the [`tools::S6rc`] trait: [`Commands`]
//! runs the real ones. Facts and measurements: `shared/reference/s6rc.md`;
//! user documentation: `docs/s6-rc.md`.

mod adopt;
pub mod commands;
pub mod config;
pub mod fingerprint;
pub mod live;
pub mod render;
mod repair;
mod report;
pub mod restart;
pub mod source;
pub mod state;
pub mod store;
mod switch;
pub mod template;
pub mod tools;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vm_catalog_protocol::{ApplyStatus, VmName};

pub use commands::{Commands, MissingProgram};
pub use config::{ConfigError, S6rcConfig};
pub use template::TemplateError;

use super::{Applier, ApplyReport, ApplyRequest};
use live::Live;
use render::{Rendered, Renderer};
use state::State;
use store::Store;
use template::Template;
use tools::S6rc;

/// Where an apply spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Rendering and fingerprinting the tree in memory.
    pub render: Duration,
    /// Writing the source directory.
    pub write: Duration,
    /// `s6-rc-compile`.
    pub compile: Duration,
    /// `s6-rc-init` or `s6-rc-update`.
    pub switch: Duration,
    /// Repairing a failure after the switch.
    pub repair: Duration,
    /// Deleting old databases and saving the state.
    pub cleanup: Duration,
    /// The whole apply.
    pub total: Duration,
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
        reason: String,
    },
}

/// Applies the catalog as one s6-rc database of VM services.
///
/// Built once at start-up by [`S6rcApplier::open`]; then
/// [`Applier::apply`] is called from one worker thread.
#[derive(Debug)]
pub struct S6rcApplier<T: S6rc = Commands> {
    config: S6rcConfig,
    renderer: Renderer,
    tools: T,
    live: Live,
    store: Store,
    state: State,
    /// Why the next apply must switch even if the tree is unchanged.
    force: Option<String>,
    timings: Timings,
}

impl S6rcApplier<Commands> {
    /// Validates `config`, finds the s6-rc programs, loads the template,
    /// adopts the live directory if there is one (never re-running
    /// s6-rc-init over it), removes stray work directories and databases
    /// that are not live, and reconciles the state file with what is live.
    pub fn open(config: S6rcConfig) -> Result<S6rcApplier<Commands>, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let tools = Commands::find(config.bin_dir.as_deref()).map_err(OpenError::Programs)?;
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
        let state = match State::load(&store.state_file()) {
            Ok(s) => s.unwrap_or_else(State::new),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the state file; what is live is read again");
                State::new()
            }
        };
        let live = Live::new(&config.live_dir, &config.scandir, &config.prefix);
        let mut applier = S6rcApplier {
            config,
            renderer,
            tools,
            live,
            store,
            state,
            force: None,
            timings: Timings::default(),
        };
        applier.adopt()?;
        Ok(applier)
    }

    /// The configuration.
    pub fn config(&self) -> &S6rcConfig {
        &self.config
    }

    /// Where the last apply spent its time.
    pub fn last_timings(&self) -> Timings {
        self.timings
    }

    /// The live compiled database, as `LIVE/compiled` says.
    pub fn live_database(&self) -> Option<PathBuf> {
        self.live.compiled()
    }

    /// The state directory (canonical).
    pub fn state_dir(&self) -> &std::path::Path {
        self.store.root()
    }

    /// Renders `request` in memory, checking scan-directory names against
    /// the live directory; nothing is written.
    pub fn render(&self, request: &ApplyRequest) -> Result<Rendered, render::RenderError> {
        let live_set: BTreeSet<&VmName> = self.state.live_services().collect();
        let live = &self.live;
        let mut conflict = |n: &VmName| {
            if live_set.contains(n) {
                None
            } else {
                live.conflict(n)
            }
        };
        self.renderer.render(&request.vms, &mut conflict)
    }

    /// Whether `rendered` is what is live.
    fn is_live(&self, rendered: &Rendered) -> bool {
        let Some(rec) = &self.state.live else {
            return false;
        };
        rec.tree == Some(rendered.tree.fingerprint)
            && self.live.compiled().as_deref() == Some(rec.database.as_path())
    }

    /// The no-op path: the tree is live. Only restart-pending can change,
    /// for VMs whose own fingerprint changed or that were pending — unless
    /// `restart_changed` is set and such a VM runs: then it is restarted by
    /// an update to the same tree with a conversion file.
    fn unchanged(
        &mut self,
        request: &ApplyRequest,
        rendered: Rendered,
        t0: Instant,
    ) -> ApplyReport {
        let new = rendered.tree.definitions();
        let Self {
            state, tools, live, ..
        } = self;
        let Some(rec) = state.live.as_mut() else {
            unreachable!("is_live checked that a database is live")
        };
        let names: Vec<&VmName> = new
            .iter()
            .filter(|(n, d)| {
                rec.services.get(*n) != Some(&Some(**d)) || state.running.contains_key(*n)
            })
            .map(|(n, _)| n)
            .collect();
        let mut pid_of = |n: &VmName| tools.pid(live.path(), n.as_str());
        let probes = restart::probes(names, &rec.services, &state.running, &new, &mut pid_of);
        if self.config.restart_changed && !probes.is_empty() {
            // Restarting goes through s6-rc-update's conversion file, so an
            // update to the same tree it is.
            return self.switch(request, rendered, t0);
        }
        let running: BTreeMap<_, _> = probes
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    state::Running {
                        definition: p.running,
                        pid: p.pid,
                    },
                )
            })
            .collect();
        let services: BTreeMap<_, _> = new.into_iter().map(|(n, d)| (n, Some(d))).collect();
        if rec.services != services || state.running != running {
            rec.services = services;
            state.running = running;
            self.save_state();
        }
        let message = format!(
            "the rendered database equals the live one ({} services): nothing to do{}",
            rendered.tree.services.len(),
            report::pending_note(&self.state.running),
        );
        self.finish(request, ApplyStatus::Unchanged, message, &rendered, t0)
    }

    fn save_state(&mut self) {
        if let Err(e) = self.state.save(&self.store.state_file()) {
            tracing::warn!(error = %e, "cannot save the applier state");
        }
    }
}

impl<T: S6rc> Applier for S6rcApplier<T> {
    fn name(&self) -> &'static str {
        "s6-rc"
    }

    fn apply(&mut self, request: &ApplyRequest) -> ApplyReport {
        let t0 = Instant::now();
        self.timings = Timings::default();
        let rendered = match self.render(request) {
            Ok(r) => r,
            Err(e) => {
                self.timings.render = t0.elapsed();
                return self.refuse(request, &e, t0);
            }
        };
        self.timings.render = t0.elapsed();
        if self.force.is_none() && self.is_live(&rendered) {
            return self.unchanged(request, rendered, t0);
        }
        self.switch(request, rendered, t0)
    }
}
