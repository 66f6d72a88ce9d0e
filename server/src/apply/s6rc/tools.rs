//! The privileged operations of the s6-rc applier, behind a trait: the
//! switch stage's only way to touch the host.
//!
//! [`Commands`](super::commands::Commands) runs the real s6-rc programs,
//! each with a deadline, and reads the process table; the tests also run
//! every scenario on a fake that emulates s6-rc on a temporary directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::apply::process::{Holder, ToolError};

/// The s6-rc operations the applier needs. Every path is absolute.
pub trait S6rc: Send {
    /// `s6-rc-compile DB SOURCE`. `db` must not exist.
    fn compile(&mut self, db: &Path, source: &Path) -> Result<(), ToolError>;

    /// `s6-rc-init -c DB -l LIVE -p PREFIX -t TIMEOUT SCANDIR`.
    fn init(&mut self, init: &Init<'_>) -> Result<(), ToolError>;

    /// `s6-rc-update -b -l LIVE [-f CONVERSIONS] DB`.
    fn update(
        &mut self,
        live: &Path,
        db: &Path,
        conversions: Option<&Path>,
    ) -> Result<(), ToolError>;

    /// The longruns of the live database (`s6-rc-db -l LIVE list longruns`),
    /// s6-rc's internal ones included.
    fn longruns(&mut self, live: &Path) -> Result<Vec<String>, ToolError>;

    /// The pid of `service`'s process if it is up, from its supervisor.
    fn pid(&mut self, live: &Path, service: &str) -> Option<u32>;

    /// Whether an s6-svscan reads `scandir`'s control FIFO.
    fn scanner_running(&mut self, scandir: &Path) -> bool;

    /// The s6-rc programs now running on `live` (named by `-l LIVE`) or on
    /// files under `state` (a compile into it): someone's `s6-rc`, or an
    /// update whose daemon was killed. The applier's own calls are over
    /// whenever it asks.
    fn programs_on(&mut self, live: &Path, state: &Path) -> Vec<Holder>;

    /// The `s6-supervise` processes whose service directory is inside a
    /// `LIVE:s6-rc-*` directory next to `live`.
    fn supervisors(&mut self, live: &Path) -> Vec<Supervisor>;

    /// Stops the supervisors `pids` (each stops its service, then exits) and
    /// has the s6-svscan of `scandir` forget them. Returns how many are gone.
    fn stop_supervisors(&mut self, scandir: &Path, pids: &[u32]) -> usize;
}

/// The arguments of `s6-rc-init`.
#[derive(Debug, Clone, Copy)]
pub struct Init<'a> {
    /// The compiled database.
    pub db: &'a Path,
    /// The live directory (created).
    pub live: &'a Path,
    /// The scan-directory prefix.
    pub prefix: &'a str,
    /// The scan directory.
    pub scandir: &'a Path,
    /// How long to wait for the supervisors.
    pub timeout: Duration,
}

/// An `s6-supervise` process and the service directory it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervisor {
    pub pid: u32,
    /// Its service directory (its working directory).
    pub dir: PathBuf,
    /// The directory was deleted: no s6-rc program can reach this
    /// supervisor any more, yet it counts against s6-svscan's limit.
    pub deleted: bool,
}
