//! Applying the catalog: an [`Applier`] makes the set of active VMs real.
//!
//! The rescan worker calls [`Applier::apply`] once per rescan that reaches
//! the apply stage, always from the same thread: every s6-rc call is
//! serialized there.
//!
//! Three appliers exist, each in its own folder with its configuration,
//! its stages and its own account of an apply ([`outcome::Detail`]):
//! [`none::NoneApplier`] (catalog only), [`s6rc::S6rcApplier`] (one s6-rc
//! database of VM services, swapped atomically; see `docs/s6-rc.md`) and
//! [`instance::InstanceApplier`] (each VM an instance of one templated s6
//! service; see `docs/s6-instance.md`). [`open`] is the one table from a
//! configuration to an applier: adding one is a folder and a row there
//! (and its flags in `cli.rs`/`config.rs`).
//!
//! An apply runs in stages, each returning a value: plan (pure: what is
//! added, removed, changed, kept: [`plan`]) → switch (through the applier's
//! tools) → verify, or repair → report (an [`outcome::ApplyResult`], from
//! which the wire outcome and its message are derived). What the appliers
//! share is small: this module's request and report, the plan's
//! [`plan::Delta`], the restart-pending bookkeeping ([`restart`]), the log
//! line ([`report`]), the state files ([`state_file`]), what s6's
//! supervision files say ([`supervise`]), and [`process`], which runs their
//! programs with deadlines.

mod applier;
pub mod fingerprint;
pub mod instance;
pub mod none;
pub mod outcome;
pub mod plan;
pub mod process;
pub mod report;
pub mod restart;
pub mod s6rc;
pub mod state_file;
pub mod supervise;

pub use applier::{
    ActiveVm, Applier, ApplyReport, ApplyRequest, BadServiceName, LeftOut, ServiceName,
};
pub use outcome::ApplyResult;

/// How the catalog is applied: which applier, configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyConfig {
    /// Catalog only (`--apply none`).
    None,
    /// One s6-rc database of VM services (boxed: it is large).
    S6rc(Box<s6rc::S6rcConfig>),
    /// One instance of a templated s6 service per VM.
    Instance(Box<instance::InstanceConfig>),
}

/// An applier could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The s6-rc applier (bad configuration, no programs, an unusable live
    /// directory).
    #[error("cannot set up the s6-rc applier")]
    S6rc(#[source] s6rc::OpenError),
    /// The s6-instance applier (bad configuration, no programs, no state
    /// directory).
    #[error("cannot set up the s6-instance applier")]
    Instance(#[source] instance::OpenError),
}

/// Opens the applier `config` names: one row per applier.
pub fn open(config: &ApplyConfig) -> Result<Box<dyn Applier>, OpenError> {
    Ok(match config {
        ApplyConfig::None => Box::new(none::NoneApplier::new()),
        ApplyConfig::S6rc(c) => {
            Box::new(s6rc::S6rcApplier::open((**c).clone()).map_err(OpenError::S6rc)?)
        }
        ApplyConfig::Instance(c) => {
            Box::new(instance::InstanceApplier::open((**c).clone()).map_err(OpenError::Instance)?)
        }
    })
}
