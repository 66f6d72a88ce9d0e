//! Building directory trees for tests: definitions, symlinks, FIFOs,
//! sockets, device nodes, odd names.
//!
//! Every path is relative to the tree's root (a fresh temp dir, removed on
//! drop); parents are created as needed. Paths are `Path`s so that tests can
//! use names that are not UTF-8 (`OsStr::from_bytes`).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A temporary directory tree.
#[derive(Debug)]
pub struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

fn parent_of(p: &Path) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).expect("create parent directories");
    }
}

impl Tree {
    /// A new empty tree.
    pub fn new() -> Tree {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let root = fs::canonicalize(dir.path()).expect("canonicalize the temp dir");
        Tree { _dir: dir, root }
    }

    /// The tree's root (canonical).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `root/rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Creates the directory `rel` (and its parents).
    pub fn dir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.join(rel);
        fs::create_dir_all(&p).expect("create a directory");
        p
    }

    /// Writes the file `rel`.
    pub fn file(&self, rel: impl AsRef<Path>, contents: &[u8]) -> PathBuf {
        let p = self.join(rel);
        parent_of(&p);
        fs::write(&p, contents).expect("write a file");
        p
    }

    /// Creates the symlink `rel` pointing at `target` (taken as is).
    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> PathBuf {
        let p = self.join(rel);
        parent_of(&p);
        std::os::unix::fs::symlink(target, &p).expect("create a symlink");
        p
    }

    /// Creates the FIFO `rel`.
    pub fn fifo(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.join(rel);
        parent_of(&p);
        let c = CString::new(p.as_os_str().as_bytes()).expect("no NUL in path");
        // SAFETY: `c` is a valid NUL-terminated path.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
        assert_eq!(
            rc,
            0,
            "mkfifo {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        p
    }

    /// Creates the Unix socket `rel` (bound, then the listener is closed; the
    /// socket file stays).
    pub fn socket(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.join(rel);
        parent_of(&p);
        drop(std::os::unix::net::UnixListener::bind(&p).expect("bind a socket"));
        p
    }

    /// Creates a device node `rel` (character device if `char`, else block)
    /// with the given numbers. Needs root: returns `None` (and creates
    /// nothing) when `mknod` is not permitted.
    pub fn device(
        &self,
        rel: impl AsRef<Path>,
        char: bool,
        major: u32,
        minor: u32,
    ) -> Option<PathBuf> {
        let p = self.join(rel);
        parent_of(&p);
        let c = CString::new(p.as_os_str().as_bytes()).expect("no NUL in path");
        let kind = if char { libc::S_IFCHR } else { libc::S_IFBLK };
        // SAFETY: `c` is a valid NUL-terminated path; mknod has no other preconditions.
        let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, libc::makedev(major, minor)) };
        (rc == 0).then_some(p)
    }

    /// A valid definition `source/name`: `vmlinux` and `blk/root.img`.
    pub fn vm(&self, source: impl AsRef<Path>, name: &str) -> PathBuf {
        let d = self.join(source).join(name);
        fs::create_dir_all(d.join("blk")).expect("create blk/");
        fs::write(d.join("vmlinux"), b"kernel").expect("write vmlinux");
        fs::write(d.join("blk/root.img"), b"disk").expect("write root.img");
        d
    }

    /// Adds `providers/net/provider` to the definition `source/name`.
    pub fn provider(&self, source: impl AsRef<Path>, name: &str, provider: &str) -> PathBuf {
        let rel = source
            .as_ref()
            .join(name)
            .join("providers/net")
            .join(provider);
        self.file(rel, b"")
    }
}
