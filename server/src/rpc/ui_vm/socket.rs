//! A UI VM's listening socket on disk, in a directory that another user
//! may write (the VMM's user must create its own `vsock` socket there; on
//! Spectrum `/run/vsock/<id>` is owned by `vmm-<id>`).
//!
//! Nothing here follows or trusts a name in such a directory:
//! - the directory is opened from `/` one component at a time, each with
//!   `O_NOFOLLOW | O_DIRECTORY`: a symbolic link at any step is refused
//!   ([`BindError::Symlink`]), never followed;
//! - every later step is relative to that directory's descriptor: the
//!   socket is bound (through `/proc/self/fd/<fd>`) inside a fresh private
//!   `0700` directory of the daemon's, opened without following links and
//!   checked to be the daemon's; its mode and owner are set there, by name
//!   in a directory only the daemon can write, then it is renamed into
//!   place (replacing a stale socket atomically);
//! - only what the daemon made is removed: the socket if it is still the
//!   one it bound (device and inode), the staging directory likewise, and
//!   a parent directory only if the daemon created it ([`Parent::Create`])
//!   and it is still that one and empty.
//!
//! So there is no moment at which the socket can be reached with the wrong
//! mode or owner, and nothing another user plants in the directory makes
//! the daemon touch any other file.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

/// The name of the socket inside the staging directory.
const STAGED: &str = "socket";

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub(super) enum BindError {
    /// A symbolic link where a directory (or the staging directory) was
    /// expected: refused, not followed.
    #[error("{0} is a symbolic link: refused, not followed")]
    Symlink(PathBuf),
    /// The directory is not there (yet): in the spectrum layout, the VM's
    /// hook makes it.
    #[error("{0} does not exist (yet)")]
    Missing(PathBuf),
    /// Something that is not a directory where one was expected.
    #[error("{0} is not a directory")]
    NotDirectory(PathBuf),
    /// The path has `..` in it or no file name.
    #[error("{0} is not a plain absolute path")]
    BadPath(PathBuf),
    /// The staging directory is not the one the daemon made.
    #[error("the staging directory in {0} was replaced: refused")]
    Tampered(PathBuf),
    /// Any other failure.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The mode, owner and group a listener is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub mode: u32,
    /// Its owner, if it should be changed.
    pub owner: Option<u32>,
    /// Its group, if it should be changed.
    pub group: Option<u32>,
}

/// What to do about a missing directory above the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// Create it (0755), and remove it again when the listener goes if it
    /// is still the one made and empty.
    Create,
    /// Wait for someone else to make it (the VM's hook): not bound yet.
    Existing,
}

/// A directory the daemon made, to be removed again if still the same.
#[derive(Debug)]
struct Made {
    parent: OwnedFd,
    name: OsString,
    id: (u64, u64),
}

/// A listening socket at a path; [`Bound::remove`] takes it away.
#[derive(Debug)]
pub(super) struct Bound {
    dir: OwnedFd,
    name: OsString,
    id: (u64, u64),
    made: Vec<Made>,
}

fn id_of(st: &Stat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> BindError + 'a {
    move |e| BindError::Io {
        what,
        path: path.to_owned(),
        source: e.into(),
    }
}

/// Opens `name` in `at` as a directory, following no link.
fn open_dir_at(at: impl AsFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    rfs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Why `name` in `at` could not be opened as a directory.
fn refusal(at: impl AsFd, name: &OsStr, path: &Path, e: Errno) -> BindError {
    let lstat = rfs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW);
    match lstat.map(|st| FileType::from_raw_mode(st.st_mode)) {
        Ok(FileType::Symlink) => BindError::Symlink(path.to_owned()),
        Ok(FileType::Directory) => io("cannot open", path)(e),
        Ok(_) => BindError::NotDirectory(path.to_owned()),
        Err(Errno::NOENT) => BindError::Missing(path.to_owned()),
        Err(e) => io("cannot open", path)(e),
    }
}

/// Opens the absolute directory `dir` from `/`, one component at a time,
/// following no symbolic link; with [`Parent::Create`], makes the missing
/// ones (recorded in `made`). Also gives the directory above it and its
/// name there.
fn open_dir(
    dir: &Path,
    parent: Parent,
    made: &mut Vec<Made>,
) -> Result<(OwnedFd, Option<(OwnedFd, OsString)>), BindError> {
    let bad = || BindError::BadPath(dir.to_owned());
    let mut at = open_dir_at(rfs::CWD, OsStr::new("/")).map_err(io("cannot open", dir))?;
    let mut above = None;
    let mut walked = PathBuf::from("/");
    for c in dir.components() {
        let name = match c {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(n) => n,
            Component::ParentDir | Component::Prefix(_) => return Err(bad()),
        };
        walked.push(name);
        let next = match open_dir_at(&at, name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if parent == Parent::Create => {
                match rfs::mkdirat(&at, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io("cannot create", &walked)(e)),
                }
                let fd = open_dir_at(&at, name).map_err(|e| refusal(&at, name, &walked, e))?;
                let st = rfs::fstat(&fd).map_err(io("cannot stat", &walked))?;
                made.push(Made {
                    parent: rustix::io::dup(&at).map_err(io("cannot open", &walked))?,
                    name: name.to_owned(),
                    id: id_of(&st),
                });
                fd
            }
            Err(e) => return Err(refusal(&at, name, &walked, e)),
        };
        above = Some((std::mem::replace(&mut at, next), name.to_owned()));
    }
    Ok((at, above))
}

/// With [`Parent::Create`], the listener's directory is the daemon's (the
/// default layout's `{vm-dir}/<name>`): when it is of the daemon's user,
/// it is removed with the listener if still the same and empty, as the
/// directories made for it are.
fn own_parent(
    dir: &OwnedFd,
    above: Option<(OwnedFd, OsString)>,
    parent: Parent,
    made: &mut Vec<Made>,
) {
    let (Parent::Create, Some((above, name)), Ok(st)) = (parent, above, rfs::fstat(dir)) else {
        return;
    };
    let ours = st.st_uid == rustix::process::geteuid().as_raw();
    if ours && made.last().is_none_or(|m| m.id != id_of(&st)) {
        made.push(Made {
            parent: above,
            name,
            id: id_of(&st),
        });
    }
}

/// A fresh private directory of the daemon's in `dir`.
struct Staging<'a> {
    dir: &'a OwnedFd,
    name: OsString,
    fd: OwnedFd,
    id: (u64, u64),
}

impl<'a> Staging<'a> {
    /// Makes it (0700) and opens it without following links; refuses it
    /// unless it is a directory of the daemon's user, 0700 and empty.
    fn new(dir: &'a OwnedFd, path: &Path) -> Result<Staging<'a>, BindError> {
        for _ in 0..16 {
            let mut rnd = [0u8; 6];
            getrandom::fill(&mut rnd).map_err(|e| BindError::Io {
                what: "no randomness for",
                path: path.to_owned(),
                source: std::io::Error::other(e),
            })?;
            let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
            let name = OsString::from(format!(".vm-catalogd-bind-{hex}"));
            match rfs::mkdirat(dir, &name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(io("cannot create a staging directory in", path)(e)),
            }
            let fd = open_dir_at(dir, &name).map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR | Errno::NOENT => BindError::Tampered(path.to_owned()),
                e => io("cannot open the staging directory in", path)(e),
            })?;
            let st = rfs::fstat(&fd).map_err(io("cannot stat the staging directory in", path))?;
            let me = rustix::process::geteuid().as_raw();
            if st.st_uid != me || st.st_mode & 0o7777 != 0o700 || st.st_nlink != 2 {
                return Err(BindError::Tampered(path.to_owned()));
            }
            return Ok(Staging {
                dir,
                name,
                fd,
                id: id_of(&st),
            });
        }
        Err(BindError::Io {
            what: "cannot create a staging directory in",
            path: path.to_owned(),
            source: std::io::ErrorKind::AlreadyExists.into(),
        })
    }

    /// Binds the socket inside, gives it `perms` there and renames it to
    /// `name` in the directory: the listener and the socket's identity.
    fn bind_into(
        &self,
        name: &OsStr,
        perms: Perms,
        path: &Path,
    ) -> Result<(UnixListener, (u64, u64)), BindError> {
        let inside = format!("/proc/self/fd/{}/{STAGED}", self.fd.as_raw_fd());
        let listener = UnixListener::bind(&inside).map_err(|source| BindError::Io {
            what: "cannot bind",
            path: path.to_owned(),
            source,
        })?;
        // By name, in a directory only the daemon can write: nobody else
        // can have put a link there.
        rfs::chmodat(
            &self.fd,
            STAGED,
            Mode::from_raw_mode(perms.mode),
            AtFlags::empty(),
        )
        .map_err(io("cannot set the mode of", path))?;
        if perms.owner.is_some() || perms.group.is_some() {
            rfs::chownat(
                &self.fd,
                STAGED,
                perms.owner.map(Uid::from_raw),
                perms.group.map(Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io("cannot set the owner of", path))?;
        }
        let st = rfs::statat(&self.fd, STAGED, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io("cannot stat", path))?;
        rfs::renameat(&self.fd, STAGED, self.dir, name)
            .map_err(io("cannot move into place", path))?;
        listener
            .set_nonblocking(true)
            .map_err(|source| BindError::Io {
                what: "cannot set up",
                path: path.to_owned(),
                source,
            })?;
        Ok((listener, id_of(&st)))
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        let _ = rfs::unlinkat(&self.fd, STAGED, AtFlags::empty());
        remove_if_same(self.dir, &self.name, self.id, AtFlags::REMOVEDIR);
    }
}

/// Removes `name` in `dir` if it is still the file `id`.
fn remove_if_same(dir: &OwnedFd, name: &OsStr, id: (u64, u64), flags: AtFlags) {
    let same = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| id_of(&st) == id);
    if same {
        let _ = rfs::unlinkat(dir, name, flags);
    }
}

/// Creates a listening stream socket at the absolute `path` with `perms`;
/// the directories above it are made when missing with [`Parent::Create`],
/// else it is [`BindError::Missing`].
pub(super) fn bind(
    path: &Path,
    perms: Perms,
    parent: Parent,
) -> Result<(UnixListener, Bound), BindError> {
    let bad = || BindError::BadPath(path.to_owned());
    let (dir_path, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) if path.is_absolute() => (d, n),
        _ => return Err(bad()),
    };
    let mut made = Vec::new();
    let dir = open_dir(dir_path, parent, &mut made);
    let (dir, above) = match dir {
        Ok(d) => d,
        Err(e) => {
            remove_made(&made);
            return Err(e);
        }
    };
    let bound = Staging::new(&dir, dir_path).and_then(|s| s.bind_into(name, perms, path));
    match bound {
        Ok((listener, id)) => {
            own_parent(&dir, above, parent, &mut made);
            Ok((
                listener,
                Bound {
                    dir,
                    name: name.to_owned(),
                    id,
                    made,
                },
            ))
        }
        Err(e) => {
            drop(dir);
            remove_made(&made);
            Err(e)
        }
    }
}

/// Removes the directories made, innermost first, while each is still the
/// one made (and empty).
fn remove_made(made: &[Made]) {
    for m in made.iter().rev() {
        remove_if_same(&m.parent, &m.name, m.id, AtFlags::REMOVEDIR);
    }
}

impl Bound {
    /// Removes the socket if it is still the one bound (someone may have
    /// replaced it), and the directories the daemon made for it if they
    /// are still those and empty; nothing else.
    pub(super) fn remove(&self) {
        remove_if_same(&self.dir, &self.name, self.id, AtFlags::empty());
        remove_made(&self.made);
    }
}

#[cfg(test)]
mod tests;
