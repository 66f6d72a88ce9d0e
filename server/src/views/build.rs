//! Reading an existing view, and building a new one beside it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

use super::{MARKER, ViewSpec};

/// The most entries read from one directory of an existing view; a view
/// with more is not one of ours as it should be, and is rebuilt.
const MAX_VIEW_ENTRIES: usize = 4096;

pub(super) fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

pub(super) fn open_dir(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)
}

/// Reads the links of the view `dir/name`; `None` if it is missing, is not
/// a marked view, or cannot be read (so it gets rebuilt).
pub(super) fn read_view(dir: impl AsFd, name: &OsStr) -> Option<BTreeMap<PathBuf, PathBuf>> {
    let fd = open_dir(dir, name).ok()?;
    let mut links = BTreeMap::new();
    let mut marked = false;
    read_links(fd, Path::new(""), 0, &mut links, &mut marked).ok()?;
    marked.then_some(links)
}

fn read_links(
    fd: OwnedFd,
    rel: &Path,
    depth: usize,
    links: &mut BTreeMap<PathBuf, PathBuf>,
    marked: &mut bool,
) -> Result<(), ()> {
    let mut dir = Dir::new(fd).map_err(drop)?;
    let mut names = Vec::new();
    while let Some(e) = dir.read() {
        let e = e.map_err(drop)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            if names.len() == MAX_VIEW_ENTRIES {
                return Err(());
            }
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    let fd = dir.fd().map_err(drop)?;
    for n in names {
        if depth == 0 && n == MARKER {
            *marked = true;
            continue;
        }
        let st = rustix::fs::statat(fd, &n, AtFlags::SYMLINK_NOFOLLOW).map_err(drop)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                let t = rustix::fs::readlinkat(fd, &n, Vec::new()).map_err(drop)?;
                links.insert(rel.join(&n), PathBuf::from(OsStr::from_bytes(t.as_bytes())));
            }
            // `blk`, `providers`, `providers/net`: at most two levels.
            FileType::Directory if depth < 2 => {
                let sub = open_dir(fd, &n).map_err(drop)?;
                read_links(sub, &rel.join(&n), depth + 1, links, marked)?;
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

/// Builds `spec` as a new directory `dir/name` (which must not exist).
pub(super) fn write_view(dir: impl AsFd, name: &OsStr, spec: &ViewSpec) -> io::Result<()> {
    let dir = dir.as_fd();
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)).map_err(io_err)?;
    let root = open_dir(dir, name)?;
    // Readable by whoever may enter the VM's directory (its owner, which a
    // hook may have made the VMM's user), whatever the daemon's umask.
    rustix::fs::fchmod(&root, Mode::from_raw_mode(0o755)).map_err(io_err)?;
    let marker = rustix::fs::openat(
        &root,
        MARKER,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(io_err)?;
    rustix::fs::fchmod(&marker, Mode::from_raw_mode(0o644)).map_err(io_err)?;
    drop(marker);
    for (rel, target) in &spec.links {
        let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
        let fd_holder;
        let at = match parent {
            Some(p) => {
                let mut cur = root.try_clone()?;
                for c in p.components() {
                    let c = c.as_os_str();
                    let made = match rustix::fs::mkdirat(&cur, c, Mode::from_raw_mode(0o755)) {
                        Ok(()) => true,
                        Err(rustix::io::Errno::EXIST) => false,
                        Err(e) => return Err(io_err(e)),
                    };
                    cur = open_dir(&cur, c)?;
                    if made {
                        rustix::fs::fchmod(&cur, Mode::from_raw_mode(0o755)).map_err(io_err)?;
                    }
                }
                fd_holder = cur;
                fd_holder.as_fd()
            }
            None => root.as_fd(),
        };
        let leaf = rel
            .file_name()
            .ok_or_else(|| io::Error::other("empty link name"))?;
        rustix::fs::symlinkat(target.as_os_str(), at, leaf).map_err(io_err)?;
    }
    Ok(())
}
