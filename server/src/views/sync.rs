//! [`sync`]: making `<vm-dir>` match the active set.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, RenameFlags};
use rustix::io::Errno;
use vm_catalog_protocol::VmName;

use super::build::{io_err, open_dir, read_view, write_view};
use super::{MARKER, SyncReport, ViewError, ViewSpec};
use crate::definition::Definition;

const CONFIG: &str = "config";
const NEW: &str = ".config.new";

enum Done {
    Created,
    Replaced,
    Unchanged,
}

/// Makes `<vm_dir>/<name>/config` right for every definition in `active`
/// (the active VMs), and removes the views of every other VM. Never panics:
/// failures are in the report. Every view is read back from disk and
/// compared; [`Views`] remembers what it wrote instead.
pub fn sync<'a>(vm_dir: &Path, active: impl IntoIterator<Item = &'a Definition>) -> SyncReport {
    sync_with(vm_dir, active, &mut BTreeMap::new())
}

/// The views of one VM directory, remembering what was written there so
/// that an unchanged view costs nothing to check. (The daemon owns
/// `<vm-dir>`; a view changed behind its back is repaired by [`sync`], or
/// after [`Views::forget`].)
#[derive(Debug, Clone)]
pub struct Views {
    vm_dir: PathBuf,
    written: BTreeMap<VmName, BTreeMap<PathBuf, PathBuf>>,
}

impl Views {
    /// Views under `vm_dir`; the first [`Views::sync`] reads every view.
    pub fn new(vm_dir: impl Into<PathBuf>) -> Views {
        Views {
            vm_dir: vm_dir.into(),
            written: BTreeMap::new(),
        }
    }

    /// The VM directory.
    pub fn vm_dir(&self) -> &Path {
        &self.vm_dir
    }

    /// Like [`sync`], but a view equal to the one this made last is not
    /// read back from disk.
    pub fn sync<'a>(&mut self, active: impl IntoIterator<Item = &'a Definition>) -> SyncReport {
        sync_with(&self.vm_dir, active, &mut self.written)
    }

    /// Forgets what was written: the next sync reads every view again.
    pub fn forget(&mut self) {
        self.written.clear();
    }
}

fn sync_with<'a>(
    vm_dir: &Path,
    active: impl IntoIterator<Item = &'a Definition>,
    written: &mut BTreeMap<VmName, BTreeMap<PathBuf, PathBuf>>,
) -> SyncReport {
    let mut report = SyncReport::default();
    let fail = |what, e| ViewError {
        name: None,
        what,
        path: vm_dir.to_path_buf(),
        source: e,
    };
    if let Err(e) = std::fs::create_dir_all(vm_dir) {
        report
            .errors
            .push(fail("cannot create the VM directory", e));
        return report;
    }
    let root = match rustix::fs::open(
        vm_dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            report
                .errors
                .push(fail("cannot open the VM directory", io_err(e)));
            return report;
        }
    };
    let mut wanted = BTreeSet::new();
    for def in active {
        wanted.insert(def.name.clone());
        let spec = ViewSpec::of(def);
        if written.get(&spec.name) == Some(&spec.links) {
            report.unchanged.push(spec.name);
            continue;
        }
        written.remove(&spec.name);
        match sync_one(&root, vm_dir, &spec) {
            Ok(done) => {
                match done {
                    Done::Created => report.created.push(spec.name.clone()),
                    Done::Replaced => report.replaced.push(spec.name.clone()),
                    Done::Unchanged => report.unchanged.push(spec.name.clone()),
                }
                written.insert(spec.name, spec.links);
            }
            Err(e) => report.errors.push(e),
        }
    }
    written.retain(|name, _| wanted.contains(name));
    remove_stale(&root, vm_dir, &wanted, &mut report);
    report
}

fn sync_one(root: &OwnedFd, vm_dir: &Path, spec: &ViewSpec) -> Result<Done, ViewError> {
    let name = OsStr::new(spec.name.as_str());
    let vm_path = vm_dir.join(name);
    let fail = |what, path: &Path, source| ViewError {
        name: Some(spec.name.clone()),
        what,
        path: path.to_path_buf(),
        source,
    };
    match rustix::fs::mkdirat(root, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(fail("cannot create", &vm_path, io_err(e))),
    }
    let vm = open_dir(root, name).map_err(|e| fail("cannot open", &vm_path, e))?;
    if read_view(&vm, OsStr::new(CONFIG)).as_ref() == Some(&spec.links) {
        return Ok(Done::Unchanged);
    }
    let new_path = vm_path.join(NEW);
    remove_entry(&vm, &new_path, NEW)
        .map_err(|e| fail("cannot remove the leftover", &new_path, e))?;
    if let Err(e) = write_view(&vm, OsStr::new(NEW), spec) {
        let _ = remove_entry(&vm, &new_path, NEW);
        return Err(fail("cannot build the view", &new_path, e));
    }
    let config_path = vm_path.join(CONFIG);
    let exists = match rustix::fs::statat(&vm, CONFIG, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => true,
        Err(Errno::NOENT) => false,
        Err(e) => return Err(fail("cannot stat", &config_path, io_err(e))),
    };
    let flags = if exists {
        RenameFlags::EXCHANGE
    } else {
        RenameFlags::NOREPLACE
    };
    if let Err(e) = rustix::fs::renameat_with(&vm, NEW, &vm, CONFIG, flags) {
        let _ = remove_entry(&vm, &new_path, NEW);
        return Err(fail("cannot swap in the view", &config_path, io_err(e)));
    }
    if exists {
        // The old view is now at NEW.
        remove_entry(&vm, &new_path, NEW)
            .map_err(|e| fail("cannot remove the old view", &new_path, e))?;
        Ok(Done::Replaced)
    } else {
        Ok(Done::Created)
    }
}

/// Removes `dir/name` (`path`), whatever it is, without following symlinks.
fn remove_entry(dir: impl AsFd, path: &Path, name: &str) -> io::Result<()> {
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err(e)),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            std::fs::remove_dir_all(path)
        }
        Ok(_) => rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(io_err),
    }
}

fn is_marked_view(vm: impl AsFd, name: &str) -> bool {
    open_dir(vm, OsStr::new(name))
        .is_ok_and(|d| rustix::fs::statat(&d, MARKER, AtFlags::SYMLINK_NOFOLLOW).is_ok())
}

/// Removes the marked views of VMs not in `wanted`, and their directory
/// when nothing else is left in it.
fn remove_stale(root: &OwnedFd, vm_dir: &Path, wanted: &BTreeSet<VmName>, report: &mut SyncReport) {
    let entries = match std::fs::read_dir(vm_dir) {
        Ok(e) => e,
        Err(e) => {
            report.errors.push(ViewError {
                name: None,
                what: "cannot list the VM directory",
                path: vm_dir.to_path_buf(),
                source: e,
            });
            return;
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
    for name in stale {
        let Ok(vm) = open_dir(root, OsStr::new(name.as_str())) else {
            continue;
        };
        if !is_marked_view(&vm, CONFIG) {
            continue;
        }
        let vm_path = vm_dir.join(name.as_str());
        let mut result = remove_entry(&vm, &vm_path.join(CONFIG), CONFIG);
        if result.is_ok() && is_marked_view(&vm, NEW) {
            result = remove_entry(&vm, &vm_path.join(NEW), NEW);
        }
        match result {
            Ok(()) => {
                // Keep the directory if something else lives there.
                let _ = rustix::fs::unlinkat(root, name.as_str(), AtFlags::REMOVEDIR);
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
}
