//! A UI VM's listening socket on disk: created with its final mode and
//! owner before anyone can reach it, and removed only while it is still
//! ours.
//!
//! The socket is bound (and listens) inside a fresh private (0700)
//! directory beside its final path, where only the daemon can reach it; it
//! is given its mode and owner there, then renamed into place, which also
//! replaces a stale socket atomically. So there is no moment at which it
//! can be connected to with the wrong mode or owner.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Who may connect to a UI VM's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Its mode.
    pub mode: u32,
    /// Its owner, if it should be changed.
    pub owner: Option<u32>,
    /// Its group, if it should be changed.
    pub group: Option<u32>,
}

/// A listening socket at a path; [`Bound::remove`] takes it away.
#[derive(Debug)]
pub struct Bound {
    /// Where it is.
    pub path: PathBuf,
    ino: u64,
}

/// Creates a listening stream socket at `path` with `access` (and the
/// directory above it, 0755, if missing).
pub fn bind(path: &Path, access: Access) -> std::io::Result<(UnixListener, Bound)> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no directory"))?;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    let private = crate::rpc::listener::private_dir(dir)?;
    let staged = private.join("socket");
    let result = (|| -> std::io::Result<(UnixListener, u64)> {
        let listener = UnixListener::bind(&staged)?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(access.mode))?;
        if access.owner.is_some() || access.group.is_some() {
            std::os::unix::fs::lchown(&staged, access.owner, access.group)?;
        }
        fs::rename(&staged, path)?;
        let ino = fs::symlink_metadata(path)?.ino();
        listener.set_nonblocking(true)?;
        Ok((listener, ino))
    })();
    let _ = fs::remove_file(&staged);
    let _ = fs::remove_dir(&private);
    let (listener, ino) = result?;
    Ok((
        listener,
        Bound {
            path: path.to_owned(),
            ino,
        },
    ))
}

impl Bound {
    /// Removes the socket if it is still ours (someone may have replaced
    /// it), and its directory if nothing else is left in it.
    pub fn remove(&self) {
        if fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = fs::remove_file(&self.path);
        }
        if let Some(dir) = self.path.parent() {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;

    use super::*;

    #[test]
    fn the_socket_appears_with_its_mode_replacing_a_stale_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ui/vsock_22083");
        let access = Access {
            mode: 0o660,
            owner: None,
            group: None,
        };
        let (_l1, first) = bind(&path, access).unwrap();
        // A stale socket (a daemon killed earlier) is replaced.
        let (_l2, second) = bind(&path, access).unwrap();
        let m = fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o777, 0o660);
        assert_eq!(
            fs::read_dir(tmp.path().join("ui")).unwrap().count(),
            1,
            "no leftovers"
        );
        first.remove();
        assert!(path.exists(), "not the first one's any more");
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        second.remove();
        assert!(!path.exists());
        assert!(
            !tmp.path().join("ui").exists(),
            "its empty directory goes too"
        );
    }
}
