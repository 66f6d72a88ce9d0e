//! Directory access for the scanner: every directory is opened relative to
//! an already-open parent, with the rules of its source's trust.
//!
//! Untrusted sources: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC |
//! O_DIRECTORY` for directories; leaf files are never opened at all, only
//! `fstatat(AT_SYMLINK_NOFOLLOW)`'d by name relative to their directory's fd
//! (nothing is opened, so a FIFO cannot block and a device node sees no
//! `open`). Names always come from `getdents` of that directory and are a
//! single path component (never `.` or `..`).
//!
//! Trusted sources follow symlinks; the final path of anything reached
//! through one is its canonical path.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use vm_catalog_protocol::SourceKind;

/// How a source's tree is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Symlinks are followed.
    Trusted,
    /// Nothing is followed.
    Untrusted,
}

/// Errors that mean the source's device went away (or is failing): the
/// whole scan of the source is abandoned, so that nothing is started from a
/// partial result.
pub(crate) fn is_fatal(e: Errno) -> bool {
    is_resource_exhaustion(e)
        || matches!(
            e,
            Errno::IO
                | Errno::NXIO
                | Errno::NODEV
                | Errno::STALE
                | Errno::NOTCONN
                | Errno::SHUTDOWN
        )
}

/// Errors that say nothing about the source: the daemon ran out of file
/// descriptors or memory. The scan is abandoned and the whole rescan is
/// retried later; no definition is rejected because of them.
pub(crate) fn is_resource_exhaustion(e: Errno) -> bool {
    matches!(e, Errno::MFILE | Errno::NFILE | Errno::NOMEM)
}

/// A directory entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// One path component, never `.` or `..`.
    pub name: OsString,
}

/// Why a directory could not be listed completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListError {
    /// More than the cap: nothing of it is used.
    TooMany,
    /// `getdents` failed.
    Io(Errno),
}

/// Why a child directory could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// No such entry.
    NotFound,
    /// The entry is a symlink (untrusted walk).
    Symlink,
    /// The entry is something else than a directory.
    NotDirectory(FileType),
    Io(Errno),
}

/// Why a source root could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootError {
    /// It does not exist.
    Missing,
    /// It is not a directory.
    NotDirectory,
    /// Its path goes through a symlink, where none is allowed.
    Symlink,
    Io(Errno),
}

/// An open directory and its final path.
#[derive(Debug)]
pub(crate) struct OpenDir {
    dir: Dir,
    path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

pub(crate) const RESOLVE_UNTRUSTED: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn from_io(e: &std::io::Error) -> Errno {
    e.raw_os_error()
        .map(Errno::from_raw_os_error)
        .unwrap_or(Errno::IO)
}

impl OpenDir {
    /// Opens a source root.
    ///
    /// A trusted root, and the root of an untrusted directory source (a path
    /// the administrator chose), is canonicalized first; the final paths of
    /// everything below are built from it. A partition's root (a mount point
    /// and `svc/data` inside the partition) must not go through any symlink.
    pub(super) fn open_root(
        root: &Path,
        kind: SourceKind,
        walk: Walk,
    ) -> Result<OpenDir, RootError> {
        let path = if kind == SourceKind::Partition && walk == Walk::Untrusted {
            root.to_path_buf()
        } else {
            std::fs::canonicalize(root).map_err(|e| match from_io(&e) {
                Errno::NOENT => RootError::Missing,
                Errno::NOTDIR => RootError::NotDirectory,
                e => RootError::Io(e),
            })?
        };
        let fd = match walk {
            Walk::Trusted => rustix::fs::open(&path, DIR_FLAGS, Mode::empty()),
            Walk::Untrusted => rustix::fs::openat2(
                CWD,
                &path,
                DIR_FLAGS,
                Mode::empty(),
                ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ),
        };
        let fd = fd.map_err(|e| match e {
            Errno::NOENT => RootError::Missing,
            Errno::LOOP => RootError::Symlink,
            Errno::NOTDIR => match rustix::fs::lstat(&path) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    RootError::Symlink
                }
                _ => RootError::NotDirectory,
            },
            e => RootError::Io(e),
        })?;
        Ok(OpenDir {
            dir: Dir::new(fd).map_err(RootError::Io)?,
            path,
        })
    }

    /// The directory's final path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The path of a child entry.
    pub(super) fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Reads every entry (but `.` and `..`), failing with
    /// [`ListError::TooMany`] past `cap` entries. Memory stays bounded by
    /// `cap` names of at most `NAME_MAX` bytes.
    pub(super) fn list(&mut self, cap: usize) -> Result<Vec<Entry>, ListError> {
        let mut out = Vec::new();
        while let Some(e) = self.dir.read() {
            let e = e.map_err(ListError::Io)?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if out.len() == cap {
                return Err(ListError::TooMany);
            }
            out.push(Entry {
                name: OsStr::from_bytes(name).to_os_string(),
            });
        }
        Ok(out)
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // `Dir::fd` cannot fail on Linux.
        self.dir.fd().expect("a Dir always has its fd")
    }

    /// `fstatat(AT_SYMLINK_NOFOLLOW)` of a child.
    pub(super) fn lstat(&self, name: &OsStr) -> Result<Stat, Errno> {
        rustix::fs::statat(self.fd(), name, AtFlags::SYMLINK_NOFOLLOW)
    }

    /// `fstatat` of a child, following symlinks (trusted walks only).
    pub(super) fn stat_follow(&self, name: &OsStr) -> Result<Stat, Errno> {
        rustix::fs::statat(self.fd(), name, AtFlags::empty())
    }

    /// Reads a child symlink's target, as data.
    pub(super) fn readlink(&self, name: &OsStr) -> Result<Vec<u8>, Errno> {
        rustix::fs::readlinkat(self.fd(), name, Vec::new()).map(|c| c.into_bytes())
    }

    /// The final path of a child reached with `walk`: its canonical path
    /// when a trusted walk goes through a symlink, else `path()/name`.
    pub(super) fn final_child_path(&self, name: &OsStr, walk: Walk) -> Result<PathBuf, Errno> {
        let joined = self.child_path(name);
        if walk == Walk::Trusted
            && FileType::from_raw_mode(self.lstat(name)?.st_mode) == FileType::Symlink
        {
            return std::fs::canonicalize(&joined).map_err(|e| from_io(&e));
        }
        Ok(joined)
    }

    /// Opens a child directory.
    pub(super) fn open_child(&self, name: &OsStr, walk: Walk) -> Result<OpenDir, OpenError> {
        let opened = match walk {
            Walk::Untrusted => {
                rustix::fs::openat2(self.fd(), name, DIR_FLAGS, Mode::empty(), RESOLVE_UNTRUSTED)
            }
            Walk::Trusted => rustix::fs::openat(
                self.fd(),
                name,
                DIR_FLAGS.difference(OFlags::NOFOLLOW),
                Mode::empty(),
            ),
        };
        let fd = opened.map_err(|e| match e {
            Errno::NOENT => OpenError::NotFound,
            Errno::LOOP | Errno::NOTDIR => match self.lstat(name) {
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Symlink if walk == Walk::Untrusted => OpenError::Symlink,
                    t => OpenError::NotDirectory(t),
                },
                Err(Errno::NOENT) => OpenError::NotFound,
                Err(e) => OpenError::Io(e),
            },
            e => OpenError::Io(e),
        })?;
        let path = self.final_child_path(name, walk).map_err(OpenError::Io)?;
        Ok(OpenDir {
            dir: Dir::new(fd).map_err(OpenError::Io)?,
            path,
        })
    }
}

impl AsFd for OpenDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd()
    }
}

/// A file type in words, for messages.
pub(crate) fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of unknown type",
    }
}
