//! Mounting one partition: verify the device, refuse what is already
//! mounted, check the file-system type against the allowlist, prepare the
//! mount point, optionally `fsck -p`, then mount through the host. Each
//! check returns a typed [`MountRefusal`]; [`MountRefusal::diagnostic`]
//! turns it into the one diagnostic the partition's source carries.

use std::path::{Path, PathBuf};

use vm_catalog_protocol::{DiagCode, Diagnostic, Severity};

use super::config::PartitionConfig;
use super::discover::{Candidate, diag, error_chain};
use super::gpt::ReadAt;
use super::host::{BlockHost, FsckOutcome, MountEntry, MountError, MountRequest, OpenError};
use super::mountpoint::{prepare_target, remove_target};
use super::superblock::{FsType, probe};

/// Why a partition was not mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountRefusal {
    /// The device node could not be opened or is not the device sysfs names.
    #[error(transparent)]
    Open(OpenError),
    /// Mounted somewhere else (or not hardened), by someone else.
    #[error("already mounted at {}: not mounted again", join(.0))]
    MountedElsewhere(Vec<PathBuf>),
    /// The kernel already has the file system's superblock (another namespace).
    #[error(
        "the file system is already mounted (possibly in another namespace): not mounted again"
    )]
    SuperblockBusy,
    /// A file system that the allowlist does not name.
    #[error("{0} is not allowed")]
    FsNotAllowed(FsType),
    /// No file system that the daemon knows.
    #[error("no supported file system found (ext4 expected)")]
    NoFs,
    /// Reading the superblock failed.
    #[error("cannot read the device: {0}")]
    Unreadable(std::io::Error),
    /// The mount point could not be made.
    #[error("mount point: {0}")]
    MountPoint(std::io::Error),
    /// `fsck -p` left errors (`None`: killed by a signal).
    #[error("fsck left errors ({}): {}", exit(.code), .output.trim())]
    FsckLeftErrors {
        /// Its exit code.
        code: Option<i32>,
        /// The end of its output.
        output: String,
    },
    /// `fsck` could not be run.
    #[error("cannot run {}: {source}", .program.display())]
    FsckNotRun {
        program: PathBuf,
        /// What running it said.
        source: std::io::Error,
    },
    /// `mount(2)` failed.
    #[error("{}", error_chain(.0))]
    Mount(MountError),
}

fn join(paths: &[PathBuf]) -> String {
    let at: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    at.join(", ")
}

fn exit(code: &Option<i32>) -> String {
    code.map_or_else(|| "killed".to_owned(), |c| format!("exit {c}"))
}

impl MountRefusal {
    /// The diagnostic code of this refusal (one exhaustive match).
    pub fn code(&self) -> DiagCode {
        match self {
            MountRefusal::Open(_)
            | MountRefusal::Unreadable(_)
            | MountRefusal::MountPoint(_)
            | MountRefusal::Mount(_) => DiagCode::MountFailed,
            MountRefusal::MountedElsewhere(_) | MountRefusal::SuperblockBusy => {
                DiagCode::AlreadyMounted
            }
            MountRefusal::FsNotAllowed(_) | MountRefusal::NoFs => DiagCode::UnsupportedFilesystem,
            MountRefusal::FsckLeftErrors { .. } | MountRefusal::FsckNotRun { .. } => {
                DiagCode::FsckFailed
            }
        }
    }

    /// The partition source's diagnostic, on the device node `path`.
    pub fn diagnostic(&self, path: &Path) -> Diagnostic {
        let message = match self {
            MountRefusal::Open(e) => error_chain(e),
            other => other.to_string(),
        };
        diag(
            self.code(),
            Severity::Error,
            path.display().to_string(),
            message,
        )
    }
}

/// Mounts `c` on `target`. `Ok` also when it is already mounted there by
/// an earlier run of the daemon, with our options (it is adopted).
pub fn mount_candidate<H: BlockHost>(
    host: &H,
    config: &PartitionConfig,
    c: &Candidate,
    target: &Path,
    mounts: &[MountEntry],
) -> Result<(), Diagnostic> {
    let node = config.dev_root.join(&c.devname);
    mount_checked(host, config, c, target, mounts).map_err(|r| r.diagnostic(&node))
}

fn mount_checked<H: BlockHost>(
    host: &H,
    config: &PartitionConfig,
    c: &Candidate,
    target: &Path,
    mounts: &[MountEntry],
) -> Result<(), MountRefusal> {
    let dev = host
        .open_block(&c.devname, c.dev, c.diskseq)
        .map_err(MountRefusal::Open)?;
    if adopted(c, target, mounts)? {
        tracing::info!(target = %target.display(), "already mounted here by an earlier run: adopted");
        return Ok(());
    }
    let fstype = allowed_fs(config, &dev)?;
    prepare_target(target).map_err(MountRefusal::MountPoint)?;
    let undo = |r: MountRefusal| {
        if let Err(e) = remove_target(target) {
            tracing::warn!(target = %target.display(), error = %e, "cannot remove the mount point");
        }
        r
    };
    if config.fsck && !c.read_only {
        check_fs(host, config, &dev, &c.devname).map_err(undo)?;
    }
    let req = MountRequest {
        fstype,
        read_only: c.read_only,
    };
    host.mount(&dev, target, &req).map_err(|e| {
        undo(match e {
            MountError::AlreadyMounted => MountRefusal::SuperblockBusy,
            e => MountRefusal::Mount(e),
        })
    })
}

/// `Ok(true)` when `c` is mounted at `target` already, hardened (by an
/// earlier run of the daemon); refused when it is mounted anywhere else.
fn adopted(c: &Candidate, target: &Path, mounts: &[MountEntry]) -> Result<bool, MountRefusal> {
    let elsewhere: Vec<&MountEntry> = mounts.iter().filter(|m| m.dev == c.dev).collect();
    match elsewhere.as_slice() {
        [] => Ok(false),
        [m] if m.mount_point == target && m.is_hardened() => Ok(true),
        many => Err(MountRefusal::MountedElsewhere(
            many.iter().map(|m| m.mount_point.clone()).collect(),
        )),
    }
}

/// The device's file system, when the allowlist names it.
fn allowed_fs<D: ReadAt>(config: &PartitionConfig, dev: &D) -> Result<FsType, MountRefusal> {
    match probe(dev) {
        Ok(Some(t)) if config.filesystems.contains(&t) => Ok(t),
        Ok(Some(t)) => Err(MountRefusal::FsNotAllowed(t)),
        Ok(None) => Err(MountRefusal::NoFs),
        Err(e) => Err(MountRefusal::Unreadable(e)),
    }
}

/// `fsck -p`: clean or corrected goes on, anything else is refused.
fn check_fs<H: BlockHost>(
    host: &H,
    config: &PartitionConfig,
    dev: &H::Device,
    devname: &str,
) -> Result<(), MountRefusal> {
    match host.fsck(&config.fsck_program, dev) {
        Ok(FsckOutcome::Clean) => Ok(()),
        Ok(FsckOutcome::Corrected) => {
            tracing::info!(device = devname, "fsck corrected errors");
            Ok(())
        }
        Ok(FsckOutcome::Failed { code, output }) => {
            Err(MountRefusal::FsckLeftErrors { code, output })
        }
        Err(source) => Err(MountRefusal::FsckNotRun {
            program: config.fsck_program.clone(),
            source,
        }),
    }
}
