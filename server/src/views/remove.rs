//! Removing what VMs that left had: their views (and, in the spectrum
//! layout, their whole by-id directories, never past a mount or a symlink).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode};
use rustix::io::Errno;
use vm_catalog_protocol::VmName;

use super::build::{io_err, open_dir};
use super::sync::{CONFIG, NEW, is_marked_view, remove_entry};
use super::{SyncReport, ViewError};
use crate::catalog::BY_ID;

/// Removes the marked views in `<vm_dir>/<parent>` whose directory is not in
/// `wanted`, and their directory when nothing else is left in it; in
/// `by-id/`, the daemon's own, the whole directory ([`remove_tree`]).
pub(super) fn remove_stale(
    root: &OwnedFd,
    vm_dir: &Path,
    parent: &Path,
    wanted: &BTreeSet<VmName>,
    report: &mut SyncReport,
) {
    let dir_path = vm_dir.join(parent);
    let Some(dir) = open_parent(root, parent, &dir_path, report) else {
        return;
    };
    let Some(stale) = stale_names(&dir_path, wanted, report) else {
        return;
    };
    for name in stale {
        let Ok(vm) = open_dir(&dir, OsStr::new(name.as_str())) else {
            continue;
        };
        if !is_marked_view(&vm, CONFIG) {
            continue;
        }
        let vm_path = dir_path.join(name.as_str());
        if parent == Path::new(BY_ID) {
            drop(vm);
            remove_by_id(&dir, name, vm_path, report);
        } else {
            remove_view(&dir, &vm, name, vm_path, report);
        }
    }
}

/// Opens `<vm_dir>/<parent>` (`None`: it is not there, or cannot be
/// opened, which is reported).
fn open_parent(
    root: &OwnedFd,
    parent: &Path,
    dir_path: &Path,
    report: &mut SyncReport,
) -> Option<OwnedFd> {
    let dir = if parent.as_os_str().is_empty() {
        root.try_clone()
    } else {
        open_dir(root, parent.as_os_str())
    };
    match dir {
        Ok(d) => Some(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            report.errors.push(ViewError {
                name: None,
                what: "cannot open",
                path: dir_path.to_owned(),
                source: e,
            });
            None
        }
    }
}

/// The entries of `dir_path` named like VMs that `wanted` does not name,
/// sorted (`None`: it cannot be listed, which is reported).
fn stale_names(
    dir_path: &Path,
    wanted: &BTreeSet<VmName>,
    report: &mut SyncReport,
) -> Option<Vec<VmName>> {
    let entries = match std::fs::read_dir(dir_path) {
        Ok(e) => e,
        Err(e) => {
            report.errors.push(ViewError {
                name: None,
                what: "cannot list the VM directory",
                path: dir_path.to_owned(),
                source: e,
            });
            return None;
        }
    };
    let mut stale: Vec<VmName> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| VmName::try_from(n).ok())
        })
        .filter(|n| !wanted.contains(n))
        .collect();
    stale.sort();
    Some(stale)
}

/// A by-id directory, the daemon's own (made 0700 for the VM): it goes
/// with everything in it (Spectrum's run-vmm leaves its `vmm` and
/// `vmm.lock` sockets there), but never past a mount point or through a
/// symlink.
fn remove_by_id(dir: &OwnedFd, name: VmName, vm_path: PathBuf, report: &mut SyncReport) {
    match remove_tree(dir, OsStr::new(name.as_str())) {
        Ok(()) => report.removed.push(name),
        Err(e) => report.errors.push(ViewError {
            name: Some(name),
            what: "cannot remove the directory",
            path: vm_path,
            source: e,
        }),
    }
}

/// A view in a VM's directory of the plain layout: the view goes, and the
/// directory too when nothing else lives there.
fn remove_view(
    dir: &OwnedFd,
    vm: &OwnedFd,
    name: VmName,
    vm_path: PathBuf,
    report: &mut SyncReport,
) {
    let mut result = remove_entry(vm, &vm_path.join(CONFIG), CONFIG);
    if result.is_ok() && is_marked_view(vm, NEW) {
        result = remove_entry(vm, &vm_path.join(NEW), NEW);
    }
    match result {
        Ok(()) => {
            // Keep the directory if something else lives there.
            let _ = rustix::fs::unlinkat(dir, name.as_str(), AtFlags::REMOVEDIR);
            report.removed.push(name);
        }
        Err(e) => report.errors.push(ViewError {
            name: Some(name),
            what: "cannot remove the view",
            path: vm_path.join(CONFIG),
            source: e,
        }),
    }
}

/// How deep [`remove_tree`] goes.
const MAX_DEPTH: usize = 16;

/// Removes `parent/name`, a directory, and everything in it, without
/// following a symlink (a link is removed, not what it points at) and
/// without going into another mount (a mount point in it makes the removal
/// fail, leaving what is left): nothing outside the directory is touched.
pub(super) fn remove_tree(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let dir = open_dir(parent, name)?;
    let mount = mount_id(&dir)?;
    empty_dir(&dir, mount, 0)?;
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(io_err)
}

fn mount_id(fd: &OwnedFd) -> io::Result<u64> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID)
        .map_err(io_err)?;
    Ok(st.stx_mnt_id)
}

fn empty_dir(dir: &OwnedFd, mount: u64, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("too deep"));
    }
    let mut names = Vec::new();
    let mut d = rustix::fs::Dir::read_from(dir).map_err(io_err)?;
    while let Some(e) = d.read() {
        let e = e.map_err(io_err)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(e.file_name().to_owned());
        }
    }
    for n in names {
        match rustix::fs::unlinkat(dir, n.as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR) => {
                let sub = rustix::fs::openat(
                    dir,
                    n.as_c_str(),
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err)?;
                if mount_id(&sub)? != mount {
                    return Err(io::Error::other(format!(
                        "{} is a mount point",
                        n.to_string_lossy()
                    )));
                }
                empty_dir(&sub, mount, depth + 1)?;
                rustix::fs::unlinkat(dir, n.as_c_str(), AtFlags::REMOVEDIR).map_err(io_err)?;
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(())
}
