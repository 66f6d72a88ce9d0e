//! By-name links of the Spectrum layout: `<vm-dir>/by-name/<name>` →
//! `<vm-dir>/by-id/<id>` for every VM whose view is built, made after its
//! view and replaced atomically (a new link beside it, then `rename`).
//! Only symlinks that lead into `<vm-dir>/by-id/` are ever replaced or
//! removed: anything else in `by-name/` is left alone (and blocks that
//! name's link, as an error).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;
use vm_catalog_protocol::VmName;

use super::build::{io_err, open_dir};
use super::sync::make_dirs;
use super::{SyncReport, ViewError};
use crate::catalog::{BY_ID, BY_NAME};

/// What `by-name/<name>` is now.
enum Current {
    Missing,
    /// A symlink, and its target.
    Link(PathBuf),
    /// Something else: not ours.
    Other,
}

fn current(dir: &OwnedFd, name: &OsStr) -> Result<Current, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(Current::Missing),
        Err(e) => Err(e),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
            let t = rustix::fs::readlinkat(dir, name, Vec::new())?;
            Ok(Current::Link(PathBuf::from(OsStr::from_bytes(
                t.as_bytes(),
            ))))
        }
        Ok(_) => Ok(Current::Other),
    }
}

/// Makes `<vm_dir>/by-name` hold exactly the links of `wanted` (name →
/// slot, relative to `vm_dir`), remembering in `written` what is there.
/// With `wanted` empty and no `by-name/`, does nothing.
pub(super) fn sync(
    root: &OwnedFd,
    vm_dir: &Path,
    wanted: &BTreeMap<VmName, PathBuf>,
    written: &mut BTreeMap<VmName, PathBuf>,
    report: &mut SyncReport,
) {
    let dir_path = vm_dir.join(BY_NAME);
    let dir = if wanted.is_empty() {
        match open_dir(root, OsStr::new(BY_NAME)) {
            Ok(d) => d,
            Err(_) => return,
        }
    } else {
        match make_dirs(root, Path::new(BY_NAME)) {
            Ok(d) => d,
            Err(e) => {
                report.errors.push(ViewError {
                    name: None,
                    what: "cannot create",
                    path: dir_path,
                    source: e,
                });
                return;
            }
        }
    };
    written.retain(|name, slot| wanted.get(name) == Some(slot));
    for (name, slot) in wanted {
        if written.get(name) == Some(slot) {
            continue;
        }
        let target = vm_dir.join(slot);
        match link(&dir, name, &target) {
            Ok(changed) => {
                if changed {
                    report.linked.push(name.clone());
                }
                written.insert(name.clone(), slot.clone());
            }
            Err((what, e)) => report.errors.push(ViewError {
                name: Some(name.clone()),
                what,
                path: dir_path.join(name.as_str()),
                source: e,
            }),
        }
    }
    remove_stale(&dir, &dir_path, &vm_dir.join(BY_ID), wanted, report);
}

/// Points `dir/name` at `target`; returns whether it changed.
fn link(
    dir: &OwnedFd,
    name: &VmName,
    target: &Path,
) -> Result<bool, (&'static str, std::io::Error)> {
    let leaf = OsStr::new(name.as_str());
    match current(dir, leaf).map_err(|e| ("cannot read", io_err(e)))? {
        Current::Link(t) if t == target => return Ok(false),
        Current::Other => {
            return Err((
                "cannot replace",
                std::io::Error::other("something that is not a link is in the way"),
            ));
        }
        Current::Missing | Current::Link(_) => {}
    }
    // A name starting with '.' is never a VM's.
    let tmp = format!(".{name}.new");
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    rustix::fs::symlinkat(target.as_os_str(), dir, tmp.as_str())
        .map_err(|e| ("cannot make the link", io_err(e)))?;
    if let Err(e) = rustix::fs::renameat(dir, tmp.as_str(), dir, leaf) {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(("cannot swap in the link", io_err(e)));
    }
    Ok(true)
}

/// Removes the links into `by_id` whose name is not wanted, and links left
/// half made (`.<name>.new`).
fn remove_stale(
    dir: &OwnedFd,
    dir_path: &Path,
    by_id: &Path,
    wanted: &BTreeMap<VmName, PathBuf>,
    report: &mut SyncReport,
) {
    let Ok(entries) = std::fs::read_dir(dir_path) else {
        return;
    };
    let mut stale: Vec<std::ffi::OsString> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| {
            n.to_str()
                .and_then(|n| VmName::try_from(n).ok())
                .is_none_or(|n| !wanted.contains_key(&n))
        })
        .collect();
    stale.sort();
    for n in stale {
        let ours = matches!(current(dir, &n), Ok(Current::Link(t)) if t.starts_with(by_id));
        let half_made = n.as_bytes().starts_with(b".")
            && n.as_bytes().ends_with(b".new")
            && matches!(current(dir, &n), Ok(Current::Link(_)));
        if !(ours || half_made) {
            continue;
        }
        match rustix::fs::unlinkat(dir, &n, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {
                if let Some(name) = n.to_str().and_then(|n| VmName::try_from(n).ok()) {
                    report.unlinked.push(name);
                }
            }
            Err(e) => report.errors.push(ViewError {
                name: n.to_str().and_then(|n| VmName::try_from(n).ok()),
                what: "cannot remove the link",
                path: dir_path.join(&n),
                source: io_err(e),
            }),
        }
    }
}
