//! The live directory and the scan directory, as the file system shows them.
//!
//! The only truth about which database is live is `readlink LIVE/compiled`
//! (s6rc.md §3.4). `LIVE` itself is a symlink to `LIVE:s6-rc-init:XXXXXX` or
//! `LIVE:s6-rc-update:XXXXXX` next to it; s6-rc links each service into the
//! scan directory as `SCANDIR/<prefix><name> -> LIVE/servicedirs/<name>`.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The live directory of the VM database and the scan directory it uses.
#[derive(Debug, Clone)]
pub struct Live {
    path: PathBuf,
    scandir: PathBuf,
    prefix: String,
}

/// What `LIVE` is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveState {
    /// Nothing: s6-rc-init has not run (since boot).
    Absent,
    /// A symlink to a directory with `compiled` pointing at this database.
    Present(PathBuf),
    /// Something else; the string says what.
    Broken(String),
}

impl Live {
    /// The live directory `path`, linking services into `scandir` as
    /// `<prefix><name>`.
    pub fn new(path: &Path, scandir: &Path, prefix: &str) -> Live {
        Live {
            path: path.to_owned(),
            scandir: scandir.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    /// The live directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The scan directory.
    pub fn scandir(&self) -> &Path {
        &self.scandir
    }

    /// What `LIVE` is.
    pub fn state(&self) -> LiveState {
        match fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => LiveState::Absent,
            Err(e) => LiveState::Broken(format!("cannot stat it: {e}")),
            Ok(m) if !m.file_type().is_symlink() => {
                LiveState::Broken("it is not a symlink made by s6-rc-init".into())
            }
            Ok(_) => match fs::read_link(self.path.join("compiled")) {
                Ok(db) => LiveState::Present(db),
                Err(e) => LiveState::Broken(format!("cannot read its compiled link: {e}")),
            },
        }
    }

    /// `readlink LIVE/compiled`, if it can be read.
    pub fn compiled(&self) -> Option<PathBuf> {
        fs::read_link(self.path.join("compiled")).ok()
    }

    /// The prefix recorded in `LIVE/prefix`.
    pub fn recorded_prefix(&self) -> io::Result<String> {
        let bytes = fs::read(self.path.join("prefix"))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `SCANDIR/<prefix><name>`.
    pub fn link(&self, name: &str) -> PathBuf {
        let mut file = self.prefix.clone();
        file.push_str(name);
        self.scandir.join(file)
    }

    /// What s6-rc makes `SCANDIR/<prefix><name>` point to.
    fn link_target(&self, name: &str) -> PathBuf {
        self.path.join("servicedirs").join(name)
    }

    /// Whether `SCANDIR/<prefix><name>` is this live directory's link.
    pub fn owns_link(&self, name: &str) -> bool {
        fs::read_link(self.link(name)).is_ok_and(|t| t == self.link_target(name))
    }

    /// What else holds `SCANDIR/<prefix><name>`, if anything does.
    pub fn conflict(&self, name: &str) -> Option<String> {
        let link = self.link(name);
        match fs::symlink_metadata(&link) {
            Err(_) => None,
            Ok(_) if self.owns_link(name) => None,
            Ok(m) if m.file_type().is_symlink() => match fs::read_link(&link) {
                Ok(t) => Some(format!("a link to {}", t.display())),
                Err(_) => Some("a symlink".into()),
            },
            Ok(m) if m.is_dir() => Some("a service directory".into()),
            Ok(_) => Some("a file".into()),
        }
    }

    /// The services among `names` whose scan-directory link is missing.
    pub fn missing_links<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !self.owns_link(n))
            .map(str::to_owned)
            .collect()
    }

    /// The `LIVE:s6-rc-init:*` and `LIVE:s6-rc-update:*` directories next
    /// to `LIVE`, except the one `LIVE` points to.
    pub fn stale_dirs(&self) -> Vec<PathBuf> {
        let current = fs::canonicalize(&self.path).ok();
        self.siblings()
            .into_iter()
            .filter(|d| current.as_ref() != Some(d))
            .collect()
    }

    /// Every `LIVE:s6-rc-init:*` and `LIVE:s6-rc-update:*` next to `LIVE`
    /// (canonical paths).
    pub fn siblings(&self) -> Vec<PathBuf> {
        let (Some(parent), Some(base)) = (self.path.parent(), self.path.file_name()) else {
            return Vec::new();
        };
        let Ok(parent) = fs::canonicalize(parent) else {
            return Vec::new();
        };
        let mut init = base.as_bytes().to_vec();
        init.extend_from_slice(b":s6-rc-init:");
        let mut update = base.as_bytes().to_vec();
        update.extend_from_slice(b":s6-rc-update:");
        let Ok(dir) = fs::read_dir(&parent) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = dir
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.as_bytes();
                (n.starts_with(&init) || n.starts_with(&update))
                    && e.file_type().is_ok_and(|t| t.is_dir())
            })
            .map(|e| e.path())
            .collect();
        out.sort();
        out
    }

    /// Points `LIVE` at `dir` (one of [`Live::siblings`]) with a relative
    /// symlink, atomically, as s6-rc does.
    pub fn relink(&self, dir: &Path) -> io::Result<()> {
        let name = dir
            .file_name()
            .ok_or_else(|| io::Error::other("no file name"))?;
        let parent = self
            .path
            .parent()
            .ok_or_else(|| io::Error::other("no parent"))?;
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".vm-catalogd-relink");
        let tmp = parent.join(tmp_name);
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(name, &tmp)?;
        fs::rename(&tmp, &self.path)
    }
}

/// An exclusive lock on `LIVE/lock`, held until dropped.
///
/// s6-rc takes POSIX `fcntl` locks on that file; an open-file-description
/// lock conflicts with them (a `flock` would not, s6rc.md §2.9), so no s6-rc
/// program changes the live directory while this is held.
#[derive(Debug)]
pub struct LiveLock {
    _file: fs::File,
}

/// What [`Live::try_lock`] found.
#[derive(Debug)]
pub enum Lock {
    /// Taken: held until dropped.
    Taken(LiveLock),
    /// Someone holds it.
    Held,
    /// `LIVE/lock` cannot be opened: there is no usable live directory.
    NoLiveDir,
}

impl Live {
    fn lock_file(&self) -> Option<fs::File> {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path.join("lock"))
            .ok()
    }

    /// Takes [`LiveLock`] if no one holds a lock on `LIVE/lock` now.
    pub fn try_lock(&self) -> Lock {
        use std::os::fd::AsRawFd;
        let Some(file) = self.lock_file() else {
            return Lock::NoLiveDir;
        };
        let mut fl = write_lock();
        // SAFETY: the fd is open for the duration of the call and `fl` is a
        // valid flock that outlives it.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
        if r == 0 {
            Lock::Taken(LiveLock { _file: file })
        } else {
            Lock::Held
        }
    }

    /// Who holds a lock on `LIVE/lock`: `None` when nobody does (or there is
    /// no live directory), `Some(Some(pid))` for an s6-rc program's lock,
    /// `Some(None)` for an open-file-description lock (whose owner the
    /// kernel does not say).
    pub fn lock_holder(&self) -> Option<Option<u32>> {
        use std::os::fd::AsRawFd;
        let file = self.lock_file()?;
        let mut fl = write_lock();
        // SAFETY: as in `try_lock`; F_OFD_GETLK only writes into `fl`.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        if r != 0 || fl.l_type == libc::F_UNLCK as libc::c_short {
            return None;
        }
        Some(u32::try_from(fl.l_pid).ok().filter(|&p| p > 0))
    }
}

/// A write lock on the whole file.
fn write_lock() -> libc::flock {
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Live) {
        let d = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(d.path()).unwrap();
        fs::create_dir(root.join("scan")).unwrap();
        let live = Live::new(&root.join("live"), &root.join("scan"), "vm-");
        (d, live)
    }

    #[test]
    fn state_follows_the_compiled_link() {
        let (_d, live) = setup();
        assert_eq!(live.state(), LiveState::Absent);
        let dir = live.path().with_file_name("live:s6-rc-init:abc");
        fs::create_dir(&dir).unwrap();
        symlink("/db/1", dir.join("compiled")).unwrap();
        live.relink(&dir).unwrap();
        assert_eq!(
            fs::read_link(live.path()).unwrap(),
            Path::new("live:s6-rc-init:abc")
        );
        assert_eq!(live.state(), LiveState::Present("/db/1".into()));
        assert!(live.stale_dirs().is_empty());
        let old = live.path().with_file_name("live:s6-rc-update:old");
        fs::create_dir(&old).unwrap();
        fs::create_dir(live.path().with_file_name("unrelated:s6-rc-update:x")).unwrap();
        assert_eq!(live.stale_dirs(), [old]);
        fs::remove_file(dir.join("compiled")).unwrap();
        assert!(matches!(live.state(), LiveState::Broken(_)));
    }

    #[test]
    fn a_plain_directory_is_not_a_live_dir() {
        let (_d, live) = setup();
        fs::create_dir(live.path()).unwrap();
        assert_eq!(
            live.state(),
            LiveState::Broken("it is not a symlink made by s6-rc-init".into())
        );
    }

    #[test]
    fn links_are_ours_only_when_they_point_into_live() {
        let (_d, live) = setup();
        assert_eq!(live.conflict("a"), None);
        symlink(live.path().join("servicedirs/a"), live.link("a")).unwrap();
        assert!(live.owns_link("a"));
        assert_eq!(live.conflict("a"), None);
        symlink("/elsewhere/b", live.link("b")).unwrap();
        assert_eq!(live.conflict("b"), Some("a link to /elsewhere/b".into()));
        fs::create_dir(live.link("c")).unwrap();
        assert_eq!(live.conflict("c"), Some("a service directory".into()));
        assert_eq!(live.missing_links(["a", "b", "c", "d"]), ["b", "c", "d"]);
    }

    #[test]
    fn the_live_lock_is_exclusive() {
        let (_d, live) = setup();
        let dir = live.path().with_file_name("live:s6-rc-init:abc");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("lock"), "").unwrap();
        assert!(matches!(live.try_lock(), Lock::NoLiveDir));
        live.relink(&dir).unwrap();
        assert_eq!(live.lock_holder(), None);
        let Lock::Taken(held) = live.try_lock() else {
            panic!("the lock is free");
        };
        assert!(
            matches!(live.try_lock(), Lock::Held),
            "a second description cannot take it"
        );
        assert_eq!(
            live.lock_holder(),
            Some(None),
            "an OFD lock has no owner pid"
        );
        drop(held);
        assert!(matches!(live.try_lock(), Lock::Taken(_)));
    }

    #[test]
    fn a_posix_lock_names_its_process() {
        let (_d, live) = setup();
        let dir = live.path().with_file_name("live:s6-rc-init:abc");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("lock"), "").unwrap();
        live.relink(&dir).unwrap();
        // s6-rc's kind of lock (skalibs' fd_lock, as s6-setlock takes it),
        // from another process: this process's own POSIX lock would not
        // conflict with its query.
        let Some(setlock) = vm_catalog_tests::require_tool("s6-setlock") else {
            return;
        };
        let mut child = std::process::Command::new(setlock)
            .arg(dir.join("lock"))
            .args(["sleep", "1000"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let held = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            live.lock_holder().is_some()
        });
        let holder = live.lock_holder();
        let taken = matches!(live.try_lock(), Lock::Held);
        let _ = child.kill();
        let _ = child.wait();
        assert!(held && taken, "s6-setlock's lock is seen");
        assert_eq!(holder, Some(Some(pid)));
    }
}
