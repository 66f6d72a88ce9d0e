//! The listening socket: created with its final mode before anyone can reach
//! it, replacing a stale socket only under a lock, or taken from an inherited
//! file descriptor.
//!
//! The socket is bound inside a fresh private (0700) directory next to its
//! final path, given its mode (and group) there, then renamed into place:
//! there is no moment at which it exists at its public path with the wrong
//! mode, and a stale socket is replaced atomically. A `<path>.lock` file,
//! `flock`ed for the daemon's lifetime, makes sure a second daemon refuses to
//! start instead of stealing the socket of a running one.
//!
//! The socket's directory must be one that only root (or the daemon's
//! user) can write, and so must every directory above it unless it is
//! sticky: anyone else who could write there could plant `socket.lock` (a
//! symbolic link the daemon would open, or a file it would lock in vain) or
//! swap the directory. Such a directory is refused at start, and the lock
//! file is opened with `O_NOFOLLOW` in any case.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use tokio_seqpacket::UnixSeqpacketListener;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The lock file could not be opened.
    #[error("cannot open lock file {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("another vm-catalogd holds {0}")]
    InUse(PathBuf),
    /// The lock file is not a regular file of ours (a symbolic link, say).
    #[error("lock file {0} is not a regular file owned by the daemon's user")]
    LockNotOurs(PathBuf),
    /// Someone else may write the socket's directory or one above it.
    #[error("socket directory {path} is unsafe: {why}")]
    UnsafeDirectory {
        path: PathBuf,
        /// Who else may write it.
        why: String,
    },
    /// The socket directory could not be prepared.
    #[error("cannot prepare socket directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Binding, setting the mode or moving the socket into place failed.
    #[error("cannot create socket {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The inherited descriptor is not a usable listening socket.
    #[error("file descriptor {fd} is not a listening SOCK_SEQPACKET socket")]
    Inherited {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
}

/// Where and how to create the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// The socket path.
    pub path: PathBuf,
    /// Its mode (`0o666`: anyone may connect; calls are authorized per peer).
    pub mode: u32,
    /// Its group, if it should be changed.
    pub group: Option<u32>,
}

/// A bound socket; dropping it removes the socket path (if it is still ours)
/// and releases the lock.
#[derive(Debug)]
pub struct BoundSocket {
    path: Option<PathBuf>,
    ino: u64,
    _lock: Option<File>,
}

impl BoundSocket {
    /// The socket path, unless the socket was inherited.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Removes the socket path now (idempotent).
    pub fn remove(&mut self) {
        if let Some(path) = self.path.take() {
            // Only unlink what is still our socket: a daemon started after us
            // may own the path now.
            if fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == self.ino) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Creates the listening socket at `opts.path`. Must be called from within a
/// tokio runtime.
pub fn bind(opts: &SocketOptions) -> Result<(UnixSeqpacketListener, BoundSocket), ListenerError> {
    let path = &opts.path;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| ListenerError::Directory {
                path: dir.to_owned(),
                source,
            })?;
    }
    check_directory(dir)?;
    let lock_path = lock_path(path);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => ListenerError::LockNotOurs(lock_path.clone()),
            _ => ListenerError::Lock {
                path: lock_path.clone(),
                source,
            },
        })?;
    let meta = lock.metadata().map_err(|source| ListenerError::Lock {
        path: lock_path.clone(),
        source,
    })?;
    if !meta.is_file() || meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(ListenerError::LockNotOurs(lock_path));
    }
    flock(&lock, FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| ListenerError::InUse(lock_path.clone()))?;

    let bind_err = |source| ListenerError::Bind {
        path: path.clone(),
        source,
    };
    let private = private_dir(dir).map_err(|source| ListenerError::Directory {
        path: dir.to_owned(),
        source,
    })?;
    let staged = private.join("socket");
    let result = (|| {
        let listener = UnixSeqpacketListener::bind(&staged)?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(opts.mode))?;
        if let Some(gid) = opts.group {
            std::os::unix::fs::lchown(&staged, None, Some(gid))?;
        }
        fs::rename(&staged, path)?;
        let ino = fs::symlink_metadata(path)?.ino();
        Ok((listener, ino))
    })();
    let _ = fs::remove_file(&staged);
    let _ = fs::remove_dir(&private);
    let (listener, ino) = result.map_err(bind_err)?;
    Ok((
        listener,
        BoundSocket {
            path: Some(path.clone()),
            ino,
            _lock: Some(lock),
        },
    ))
}

/// Takes a listening socket inherited as file descriptor `fd` (socket
/// activation). Must be called from within a tokio runtime.
pub fn from_fd(fd: RawFd) -> Result<(UnixSeqpacketListener, BoundSocket), ListenerError> {
    let err = |source| ListenerError::Inherited { fd, source };
    let ty = rustix::net::sockopt::socket_type(
        // SAFETY: only borrowed for the duration of the call; `fd` is checked below.
        unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) },
    )
    .map_err(|e| err(e.into()))?;
    if ty != rustix::net::SocketType::SEQPACKET {
        return Err(err(std::io::Error::other("not SOCK_SEQPACKET")));
    }
    // SAFETY: the caller hands the descriptor over to us (`--socket-fd`); it
    // is an open socket (checked above) that nothing else in the process uses.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::ioctl_fionbio(&owned, true).map_err(|e| err(e.into()))?;
    let listener = UnixSeqpacketListener::try_from(owned).map_err(err)?;
    Ok((
        listener,
        BoundSocket {
            path: None,
            ino: 0,
            _lock: None,
        },
    ))
}

/// Refuses a socket directory that anyone but root and the daemon's user
/// may write, or that sits below such a directory that is not sticky (its
/// entries could be renamed).
fn check_directory(dir: &Path) -> Result<(), ListenerError> {
    let unsafe_dir = |path: &Path, why: String| ListenerError::UnsafeDirectory {
        path: path.to_owned(),
        why,
    };
    let canonical = fs::canonicalize(dir).map_err(|source| ListenerError::Directory {
        path: dir.to_owned(),
        source,
    })?;
    let me = rustix::process::geteuid().as_raw();
    let mut at = Some(canonical.as_path());
    let mut innermost = true;
    while let Some(d) = at {
        let m = fs::metadata(d).map_err(|source| ListenerError::Directory {
            path: d.to_owned(),
            source,
        })?;
        let mode = m.mode() & 0o7777;
        if m.uid() != 0 && m.uid() != me {
            return Err(unsafe_dir(d, format!("owned by uid {}", m.uid())));
        }
        let others = mode & 0o002 != 0;
        let group = mode & 0o020 != 0 && m.gid() != 0;
        let sticky = mode & 0o1000 != 0;
        if (others || group) && (innermost || !sticky) {
            let who = if others { "anyone" } else { "group" };
            let what = if group && !others {
                format!("{who} {} may write it (mode {mode:04o})", m.gid())
            } else {
                format!("{who} may write it (mode {mode:04o})")
            };
            return Err(unsafe_dir(d, what));
        }
        innermost = false;
        at = d.parent();
    }
    Ok(())
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

pub(crate) fn private_dir(parent: &Path) -> std::io::Result<PathBuf> {
    for _ in 0..16 {
        let mut rnd = [0u8; 6];
        getrandom::fill(&mut rnd).map_err(std::io::Error::other)?;
        let name: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let dir = parent.join(format!(".vm-catalogd-bind-{name}"));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot create a private directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> SocketOptions {
        SocketOptions {
            path: dir.join("run/socket"),
            mode: 0o666,
            group: None,
        }
    }

    #[tokio::test]
    async fn binds_with_the_final_mode_and_removes_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        let (_l, bound) = bind(&o).unwrap();
        let meta = fs::symlink_metadata(&o.path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o666);
        // No staging directory is left behind.
        let left: Vec<_> = fs::read_dir(o.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        drop(bound);
        assert!(!o.path.exists());
    }

    #[tokio::test]
    async fn a_second_daemon_is_refused_while_the_first_holds_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        let (_l, _bound) = bind(&o).unwrap();
        assert!(matches!(bind(&o), Err(ListenerError::InUse(_))));
    }

    /// Regression: `socket.lock` was opened through a
    /// symbolic link planted in the socket's directory.
    #[tokio::test]
    async fn a_lock_file_that_is_a_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        fs::create_dir_all(o.path.parent().unwrap()).unwrap();
        let target = tmp.path().join("shadow");
        std::os::unix::fs::symlink(&target, lock_path(&o.path)).unwrap();
        let e = bind(&o).unwrap_err();
        assert!(matches!(e, ListenerError::LockNotOurs(_)), "{e}");
        assert!(
            e.to_string()
                .ends_with("is not a regular file owned by the daemon's user"),
            "{e}"
        );
        assert!(!target.exists(), "nothing was created through the link");
        assert!(!o.path.exists());
    }

    /// Regression: a socket directory that others can
    /// write (world-writable, sticky or not; group-writable) was used.
    #[tokio::test]
    async fn a_socket_directory_others_can_write_is_refused() {
        let Some(()) = vm_catalog_tests::require_root("giving a directory to other users") else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        let dir = o.path.parent().unwrap();
        fs::create_dir_all(dir).unwrap();
        for mode in [0o777, 0o1777, 0o775, 0o722] {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
            if mode == 0o775 {
                std::os::unix::fs::chown(dir, None, Some(4242)).unwrap();
            }
            let e = bind(&o).unwrap_err();
            assert!(
                matches!(e, ListenerError::UnsafeDirectory { .. }),
                "{mode:o}: {e}"
            );
            assert!(e.to_string().contains("may write it"), "{e}");
            assert!(!lock_path(&o.path).exists(), "{mode:o}: nothing created");
        }
        // Group-writable by root's group, or sticky above: fine (temp dirs
        // sit in a sticky /tmp).
        std::os::unix::fs::chown(dir, None, Some(0)).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o775)).unwrap();
        let (_l, bound) = bind(&o).unwrap();
        drop(bound);
        // A directory owned by another user.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(dir, Some(4242), None).unwrap();
        let e = bind(&o).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "socket directory {} is unsafe: owned by uid 4242",
                fs::canonicalize(dir).unwrap().display()
            )
        );
        // Above it, a directory others may write and rename entries in.
        std::os::unix::fs::chown(dir, Some(0), None).unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            bind(&o),
            Err(ListenerError::UnsafeDirectory { .. })
        ));
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        fs::create_dir_all(o.path.parent().unwrap()).unwrap();
        // A crashed daemon leaves its socket file behind (and no lock).
        drop(std::os::unix::net::UnixListener::bind(&o.path).unwrap());
        let stale = fs::symlink_metadata(&o.path).unwrap().ino();
        let (_l, _bound) = bind(&o).unwrap();
        assert_ne!(fs::symlink_metadata(&o.path).unwrap().ino(), stale);
        tokio_seqpacket::UnixSeqpacket::connect(&o.path)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_inherited_socket_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("activated");
        let fd = UnixSeqpacketListener::bind(&path).unwrap().into_raw_fd();
        let (mut l, bound) = from_fd(fd).unwrap();
        assert_eq!(
            bound.path(),
            None,
            "an inherited socket's path is not ours to remove"
        );
        let (accepted, connected) =
            tokio::join!(l.accept(), tokio_seqpacket::UnixSeqpacket::connect(&path));
        accepted.unwrap();
        connected.unwrap();
    }

    #[tokio::test]
    async fn an_inherited_fd_that_is_not_a_seqpacket_socket_is_refused() {
        use std::os::fd::IntoRawFd;
        let f = File::open("/dev/null").unwrap().into_raw_fd();
        assert!(matches!(from_fd(f), Err(ListenerError::Inherited { .. })));
        let tmp = tempfile::tempdir().unwrap();
        let stream = std::os::unix::net::UnixListener::bind(tmp.path().join("s")).unwrap();
        assert!(matches!(
            from_fd(stream.into_raw_fd()),
            Err(ListenerError::Inherited { .. })
        ));
    }
}
