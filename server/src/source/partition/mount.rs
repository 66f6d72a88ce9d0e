//! Mounting one partition: verify the device, refuse what is already
//! mounted, check the file-system type against the allowlist, prepare the
//! mount point, optionally `fsck -p`, then mount through the host. Every
//! failure becomes one diagnostic.

use std::path::Path;

use vm_catalog_protocol::{DiagCode, Diagnostic, Severity};

use super::config::PartitionConfig;
use super::discover::{Candidate, diag, error_chain};
use super::host::{FsckOutcome, Host, MountEntry, MountError, MountRequest};
use super::mountpoint::{prepare_target, remove_target};
use super::superblock::probe;

/// Mounts `c` on `target`. `Ok` also when it is already mounted there by
/// an earlier run of the daemon, with our options (it is adopted).
pub fn mount_candidate<H: Host>(
    host: &H,
    config: &PartitionConfig,
    c: &Candidate,
    target: &Path,
    mounts: &[MountEntry],
) -> Result<(), Diagnostic> {
    let node = config.dev_root.join(&c.devname);
    let path = node.display().to_string();
    let fail = |code: DiagCode, msg: String| diag(code, Severity::Error, path.clone(), msg);

    let dev = host
        .open_block(&c.devname, c.dev, c.diskseq)
        .map_err(|e| fail(DiagCode::MountFailed, error_chain(&e)))?;

    let elsewhere: Vec<&MountEntry> = mounts.iter().filter(|m| m.dev == c.dev).collect();
    if let [m] = elsewhere.as_slice() {
        if m.mount_point == target && m.is_hardened() {
            tracing::info!(target = %target.display(), "already mounted here by an earlier run: adopted");
            return Ok(());
        }
    }
    if !elsewhere.is_empty() {
        let at: Vec<String> = elsewhere
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .collect();
        return Err(fail(
            DiagCode::AlreadyMounted,
            format!("already mounted at {}: not mounted again", at.join(", ")),
        ));
    }

    let fstype = match probe(&dev) {
        Ok(Some(t)) if config.filesystems.contains(&t) => t,
        Ok(Some(t)) => {
            return Err(fail(
                DiagCode::UnsupportedFilesystem,
                format!("{t} is not allowed"),
            ));
        }
        Ok(None) => {
            return Err(fail(
                DiagCode::UnsupportedFilesystem,
                "no supported file system found (ext4 expected)".into(),
            ));
        }
        Err(e) => {
            return Err(fail(
                DiagCode::MountFailed,
                format!("cannot read the device: {e}"),
            ));
        }
    };

    prepare_target(target).map_err(|e| fail(DiagCode::MountFailed, format!("mount point: {e}")))?;
    let undo = |d: Diagnostic| {
        if let Err(e) = remove_target(target) {
            tracing::warn!(target = %target.display(), error = %e, "cannot remove the mount point");
        }
        d
    };

    if config.fsck && !c.read_only {
        match host.fsck(&config.fsck_program, &dev) {
            Ok(FsckOutcome::Clean) => {}
            Ok(FsckOutcome::Corrected) => tracing::info!(device = path, "fsck corrected errors"),
            Ok(FsckOutcome::Failed { code, output }) => {
                let code = code.map_or_else(|| "killed".to_owned(), |c| format!("exit {c}"));
                return Err(undo(fail(
                    DiagCode::FsckFailed,
                    format!("fsck left errors ({code}): {}", output.trim()),
                )));
            }
            Err(e) => {
                return Err(undo(fail(
                    DiagCode::FsckFailed,
                    format!("cannot run {}: {e}", config.fsck_program.display()),
                )));
            }
        }
    }

    let req = MountRequest {
        fstype,
        read_only: c.read_only,
    };
    host.mount(&dev, target, &req).map_err(|e| {
        undo(match e {
            MountError::AlreadyMounted => fail(
                DiagCode::AlreadyMounted,
                "the file system is already mounted (possibly in another namespace): not mounted again".into(),
            ),
            e => fail(DiagCode::MountFailed, error_chain(&e)),
        })
    })
}
