//! [`sync`]: making `<vm-dir>` match the active set.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, RenameFlags};
use rustix::io::Errno;
use vm_catalog_protocol::VmName;

use super::build::{io_err, open_dir, read_view, write_view};
use super::names;
use super::remove::remove_stale;
use super::{MARKER, SyncReport, ViewError, ViewSpec};
use crate::catalog::{BY_ID, Candidate, Layout};

pub(super) const CONFIG: &str = "config";
pub(super) const NEW: &str = ".config.new";
const SERVICE: &str = "service";

enum Done {
    Created,
    Replaced,
    Unchanged,
}

/// Makes the view of every candidate in `active` (the active VMs) right,
/// in the plain layout, and removes the views of every other VM. Never
/// panics: failures are in the report. Every view is read back from disk
/// and compared; [`Views`] remembers what it wrote instead.
pub fn sync<'a>(vm_dir: &Path, active: impl IntoIterator<Item = &'a Arc<Candidate>>) -> SyncReport {
    Views::new(vm_dir).sync(active)
}

/// The views of one VM directory, remembering what was written there so
/// that an unchanged view costs nothing to check. (The daemon owns
/// `<vm-dir>`; a view changed behind its back is repaired by [`sync`], or
/// after [`Views::forget`].)
#[derive(Debug, Clone)]
pub struct Views {
    vm_dir: PathBuf,
    layout: Layout,
    /// Slot → links.
    written: BTreeMap<PathBuf, BTreeMap<PathBuf, PathBuf>>,
    /// By-name links written: name → slot.
    linked: BTreeMap<VmName, PathBuf>,
    /// The slots of the last build's views.
    wanted: BTreeSet<PathBuf>,
    /// The active candidates of the last build, sorted by name, and
    /// whether each one's view was built: a candidate that is the same
    /// (`Arc`) and was built is not looked at again.
    built: Vec<(Arc<Candidate>, bool)>,
    /// Whether a view may be left to remove: a slot left the wanted ones,
    /// or the last removal kept some or failed (and before the first).
    removal_due: bool,
    /// Whether the by-name links were made since this was made (or forgot).
    names_synced: bool,
    /// The templated service whose instance `by-id/<id>/service` links to
    /// (`<service>/instance/<id>`): the s6-instance applier's, in the
    /// spectrum layout.
    service: Option<PathBuf>,
}

impl Views {
    /// Views under `vm_dir`, in the plain layout; the first [`Views::sync`]
    /// reads every view.
    pub fn new(vm_dir: impl Into<PathBuf>) -> Views {
        Views::with_layout(vm_dir, Layout::Plain)
    }

    /// Views under `vm_dir`, placed as `layout` says.
    pub fn with_layout(vm_dir: impl Into<PathBuf>, layout: Layout) -> Views {
        Views {
            vm_dir: vm_dir.into(),
            layout,
            written: BTreeMap::new(),
            linked: BTreeMap::new(),
            wanted: BTreeSet::new(),
            built: Vec::new(),
            removal_due: true,
            names_synced: false,
            service: None,
        }
    }

    /// Makes `by-id/<id>/service` a link to `<service>/instance/<id>` in
    /// every VM's directory (the spectrum layout only), as `vm-import`
    /// does: the VM's s6 instance, for `s6-svc` and `s6-svwait`.
    pub fn with_service_links(mut self, service: impl Into<PathBuf>) -> Views {
        if self.layout == Layout::Spectrum {
            self.service = Some(service.into());
        }
        self
    }

    /// The VM directory.
    pub fn vm_dir(&self) -> &Path {
        &self.vm_dir
    }

    /// Makes every view of `active` right, and removes the others; a view
    /// equal to the one this made last is not read back from disk.
    pub fn sync<'a>(&mut self, active: impl IntoIterator<Item = &'a Arc<Candidate>>) -> SyncReport {
        let mut report = self.build(active);
        report.absorb(self.remove_left(&BTreeSet::new()));
        report
    }

    /// The first half of [`Views::sync`]: makes every view of `active`
    /// right (and the by-name links), and removes nothing but the by-name
    /// links of VMs that left. The directories of VMs that left stay until
    /// [`Views::remove_left`] (after their services are gone). A candidate
    /// of the last build (the same `Arc`) whose view was built is passed
    /// over: only what changed is looked at.
    pub fn build<'a>(
        &mut self,
        active: impl IntoIterator<Item = &'a Arc<Candidate>>,
    ) -> SyncReport {
        let mut report = SyncReport::default();
        let Some(root) = open_vm_dir(&self.vm_dir, &mut report) else {
            return report;
        };
        let old = std::mem::take(&mut self.built);
        let (built, names_changed) = self.rebuild(&root, old, active, &mut report);
        self.built = built;
        self.sync_names(&root, names_changed, &mut report);
        report
    }

    /// [`Views::build`] of the active candidates among `cands` (sorted by
    /// name), which are those of the last build but for the names
    /// `touched`: only those are looked at (and only they are in the
    /// report).
    pub fn build_names(
        &mut self,
        cands: &[Arc<Candidate>],
        touched: &BTreeSet<VmName>,
    ) -> SyncReport {
        let mut report = SyncReport::default();
        let Some(root) = open_vm_dir(&self.vm_dir, &mut report) else {
            return report;
        };
        let mut old = Vec::new();
        for name in touched {
            let at = self.built.partition_point(|(c, _)| c.entry.name < *name);
            let end = at + self.built[at..].partition_point(|(c, _)| c.entry.name == *name);
            old.extend(self.built.drain(at..end));
        }
        let active = touched.iter().flat_map(|name| {
            let start = cands.partition_point(|c| c.entry.name < *name);
            cands[start..]
                .iter()
                .take_while(move |c| c.entry.name == *name)
                .filter(|c| c.entry.state == vm_catalog_protocol::VmState::Active)
        });
        let (built, names_changed) = self.rebuild(&root, old, active, &mut report);
        for b in built {
            let at = self
                .built
                .partition_point(|(c, _)| c.entry.name < b.0.entry.name);
            self.built.insert(at, b);
        }
        self.sync_names(&root, names_changed, &mut report);
        report
    }

    /// Builds the views of `active` (sorted by name) that `old` (the last
    /// build's of the same names) does not have built already; returns
    /// what was built, and whether a view came, went or failed.
    fn rebuild<'a>(
        &mut self,
        root: &OwnedFd,
        old: Vec<(Arc<Candidate>, bool)>,
        active: impl IntoIterator<Item = &'a Arc<Candidate>>,
        report: &mut SyncReport,
    ) -> (Vec<(Arc<Candidate>, bool)>, bool) {
        let mut old = old.into_iter().peekable();
        let mut built = Vec::new();
        let mut todo = Vec::new();
        let mut gone = Vec::new();
        for c in active {
            while let Some((o, ok)) = old.next_if(|(o, _)| o.entry.name <= c.entry.name) {
                if ok && Arc::ptr_eq(&o, c) {
                    report.unchanged.push(c.entry.name.clone());
                    built.push((o, true));
                    break;
                }
                gone.push(o);
            }
            if built.last().is_none_or(|(b, _)| !Arc::ptr_eq(b, c)) {
                todo.push((built.len(), ViewSpec::of(c, self.layout)));
                built.push((c.clone(), false));
            }
        }
        gone.extend(old.map(|(o, _)| o));
        let mut names_changed = !gone.is_empty() || !todo.is_empty();
        let slots: BTreeSet<&PathBuf> = todo.iter().map(|(_, spec)| &spec.slot).collect();
        for o in &gone {
            let slot = self.layout.slot(&o.entry.name, &o.id);
            if !slots.contains(&slot) {
                self.wanted.remove(&slot);
                self.written.remove(&slot);
                self.removal_due = true;
            }
        }
        for slot in slots {
            self.wanted.insert(slot.clone());
        }
        for (k, spec) in &todo {
            if self.written.get(&spec.slot) == Some(&spec.links) {
                report.unchanged.push(spec.name.clone());
                built[*k].1 = true;
                continue;
            }
            self.written.remove(&spec.slot);
            match sync_one(root, &self.vm_dir, spec, self.service.as_deref()) {
                Ok(done) => {
                    match done {
                        Done::Created => report.created.push(spec.name.clone()),
                        Done::Replaced => report.replaced.push(spec.name.clone()),
                        Done::Unchanged => report.unchanged.push(spec.name.clone()),
                    }
                    self.written.insert(spec.slot.clone(), spec.links.clone());
                    built[*k].1 = true;
                }
                Err(e) => {
                    names_changed = true;
                    report.errors.push(e);
                }
            }
        }
        (built, names_changed)
    }

    /// Makes the by-name links those of the views built, when that may
    /// have changed.
    fn sync_names(&mut self, root: &OwnedFd, names_changed: bool, report: &mut SyncReport) {
        // The plain layout makes no by-name link: the first build removes
        // those of the other layout.
        if self.layout == Layout::Spectrum && names_changed || !self.names_synced {
            self.names_synced = true;
            let links: BTreeMap<VmName, PathBuf> = self
                .built
                .iter()
                .filter(|(_, ok)| *ok && self.layout == Layout::Spectrum)
                .map(|(c, _)| (c.entry.name.clone(), self.layout.slot(&c.entry.name, &c.id)))
                .collect();
            names::sync(root, &self.vm_dir, &links, &mut self.linked, report);
        }
    }

    /// The second half of [`Views::sync`]: removes the views (and the
    /// directories) of the VMs that are not in the last
    /// [`Views::build`], except those in `keep` (directories under the VM
    /// directory, as absolute paths: VMs whose release hook has not run).
    /// Nothing is looked at when nothing can have left since a removal
    /// that removed all it had to.
    pub fn remove_left(&mut self, keep: &BTreeSet<PathBuf>) -> SyncReport {
        let mut report = SyncReport::default();
        if !self.removal_due && keep.is_empty() {
            return report;
        }
        let root = match open_dir(rustix::fs::CWD, self.vm_dir.as_os_str()) {
            Ok(fd) => fd,
            // No VM directory (the build reported why): nothing to remove.
            Err(e)
                if e.raw_os_error() == Some(Errno::NOENT.raw_os_error())
                    || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                return report;
            }
            Err(e) => {
                report.errors.push(ViewError {
                    name: None,
                    what: "cannot open the VM directory",
                    path: self.vm_dir.clone(),
                    source: e,
                });
                return report;
            }
        };
        // The directories to keep (a name, or an id) in each layout's
        // parent: those of the wanted views, and those in `keep`.
        let slots: Vec<&Path> = self
            .wanted
            .iter()
            .map(PathBuf::as_path)
            .chain(
                keep.iter()
                    .filter_map(|k| k.strip_prefix(&self.vm_dir).ok()),
            )
            .collect();
        let in_parent = |parent: &str| -> BTreeSet<VmName> {
            slots
                .iter()
                .filter(|s| s.parent() == Some(Path::new(parent)))
                .filter_map(|s| s.file_name()?.to_str()?.parse().ok())
                .collect()
        };
        let (plain, by_id) = (in_parent(""), in_parent(BY_ID));
        remove_stale(&root, &self.vm_dir, Path::new(""), &plain, &mut report);
        remove_stale(&root, &self.vm_dir, Path::new(BY_ID), &by_id, &mut report);
        self.removal_due = !keep.is_empty() || !report.errors.is_empty();
        report
    }

    /// Forgets what was written: the next sync reads every view again.
    pub fn forget(&mut self) {
        self.written.clear();
        self.linked.clear();
        self.built.clear();
        self.removal_due = true;
        self.names_synced = false;
    }
}

fn open_vm_dir(vm_dir: &Path, report: &mut SyncReport) -> Option<OwnedFd> {
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
        return None;
    }
    match rustix::fs::open(
        vm_dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Some(fd),
        Err(e) => {
            report
                .errors
                .push(fail("cannot open the VM directory", io_err(e)));
            None
        }
    }
}

/// Opens `root/rel`, making each missing directory on the way.
pub(super) fn make_dirs(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let mut cur = root.try_clone()?;
    for c in rel.components() {
        let c = c.as_os_str();
        match rustix::fs::mkdirat(&cur, c, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io_err(e)),
        }
        cur = open_dir(&cur, c)?;
    }
    Ok(cur)
}

/// Opens the VM's directory `root/slot`, making what is missing: its
/// parents `0755`, and in the spectrum layout the VM's own directory
/// `by-id/<id>` `0700` (under the umask, so never wider, not even for an
/// instant): it holds the VMM's API socket, which only this mode protects.
/// An existing directory keeps its owner and mode (a hook may have set
/// them).
pub(super) fn make_vm_dir(root: &OwnedFd, slot: &Path) -> io::Result<OwnedFd> {
    let parent = slot.parent().unwrap_or(Path::new(""));
    let leaf = slot
        .file_name()
        .ok_or_else(|| io::Error::other("empty view slot"))?;
    let dir = if parent.as_os_str().is_empty() {
        root.try_clone()?
    } else {
        make_dirs(root, parent)?
    };
    let mode = if parent == Path::new(BY_ID) {
        0o700
    } else {
        0o755
    };
    match rustix::fs::mkdirat(&dir, leaf, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io_err(e)),
    }
    open_dir(&dir, leaf)
}

/// Makes `dir/name` a symlink to `target` unless it is one already
/// (replaced atomically: a new link beside it, then `rename`). Anything
/// else than a symlink there is not ours, and stays.
fn ensure_link(dir: &OwnedFd, name: &str, target: &Path) -> io::Result<()> {
    match rustix::fs::readlinkat(dir, name, Vec::new()) {
        Ok(t) if t.as_bytes() == target.as_os_str().as_encoded_bytes() => return Ok(()),
        Ok(_) | Err(Errno::NOENT) => {}
        Err(Errno::INVAL) => {
            return Err(io::Error::other(
                "something that is not a link is in the way",
            ));
        }
        Err(e) => return Err(io_err(e)),
    }
    let tmp = format!(".{name}.new");
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    rustix::fs::symlinkat(target.as_os_str(), dir, tmp.as_str()).map_err(io_err)?;
    if let Err(e) = rustix::fs::renameat(dir, tmp.as_str(), dir, name) {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(io_err(e));
    }
    Ok(())
}

fn sync_one(
    root: &OwnedFd,
    vm_dir: &Path,
    spec: &ViewSpec,
    service: Option<&Path>,
) -> Result<Done, ViewError> {
    let vm_path = vm_dir.join(&spec.slot);
    let fail = |what, path: &Path, source| ViewError {
        name: Some(spec.name.clone()),
        what,
        path: path.to_path_buf(),
        source,
    };
    let vm = make_vm_dir(root, &spec.slot).map_err(|e| fail("cannot create", &vm_path, e))?;
    if let Some(service) = service {
        let target = service.join("instance").join(spec.id.as_str());
        let link_path = vm_path.join(SERVICE);
        ensure_link(&vm, SERVICE, &target)
            .map_err(|e| fail("cannot make the service link", &link_path, e))?;
    }
    if read_view(&vm, OsStr::new(CONFIG)).as_ref() == Some(&spec.links) {
        return Ok(Done::Unchanged);
    }
    let config_path = vm_path.join(CONFIG);
    let exists = match rustix::fs::statat(&vm, CONFIG, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => true,
        Err(Errno::NOENT) => false,
        Err(e) => return Err(fail("cannot stat", &config_path, io_err(e))),
    };
    if exists && !is_marked_view(&vm, CONFIG) {
        // Someone else's (a link left by vm-import, a transient VM's): never
        // replaced.
        return Err(fail(
            "cannot replace",
            &config_path,
            io::Error::other("it is not a view the daemon made"),
        ));
    }
    let new_path = vm_path.join(NEW);
    remove_entry(&vm, &new_path, NEW)
        .map_err(|e| fail("cannot remove the leftover", &new_path, e))?;
    if let Err(e) = write_view(&vm, OsStr::new(NEW), spec) {
        let _ = remove_entry(&vm, &new_path, NEW);
        return Err(fail("cannot build the view", &new_path, e));
    }
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
pub(super) fn remove_entry(dir: impl AsFd, path: &Path, name: &str) -> io::Result<()> {
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err(e)),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            std::fs::remove_dir_all(path)
        }
        Ok(_) => rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(io_err),
    }
}

pub(super) fn is_marked_view(vm: impl AsFd, name: &str) -> bool {
    open_dir(vm, OsStr::new(name))
        .is_ok_and(|d| rustix::fs::statat(&d, MARKER, AtFlags::SYMLINK_NOFOLLOW).is_ok())
}
