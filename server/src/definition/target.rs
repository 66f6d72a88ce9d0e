//! Symlinks in untrusted sources: a link is data, read with `readlinkat`,
//! and accepted only when its target is an absolute, normalized path under
//! a trusted prefix (default `/usr/img/`) and is the right kind of file
//! there, reached without following any further symlink.

use std::cell::OnceCell;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::fs::RESOLVE_UNTRUSTED;

/// Why a symlink target is refused. Its text completes "symlink target
/// X …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    /// Not an absolute path.
    #[error("is not an absolute path")]
    Relative,
    /// Contains `.`, `..`, an empty component or a trailing `/`.
    #[error("is not a normalized path (it has '.', '..', '//' or a trailing '/')")]
    NotNormalized,
    /// Not under any trusted prefix.
    #[error("is not under a trusted prefix")]
    Outside,
    /// The path to it goes through another symlink, or it is one.
    #[error("is, or goes through, another symlink")]
    ThroughSymlink,
    /// Nothing there.
    #[error("does not exist")]
    NotFound,
    /// Something else than what is needed.
    #[error("is {}", super::fs::type_name(*.0))]
    WrongType(FileType),
    /// The trusted prefix could not be opened, or another error.
    #[error("cannot be checked: {0}")]
    Io(Errno),
}

/// A trusted prefix, and its directory once opened.
#[derive(Debug)]
struct Prefix {
    parts: Vec<Vec<u8>>,
    path: PathBuf,
    fd: OnceCell<Result<OwnedFd, Errno>>,
}

/// The trusted prefixes of one scan, opened lazily (once each).
#[derive(Debug)]
pub(crate) struct TrustedPrefixes {
    prefixes: Vec<Prefix>,
}

/// Splits an absolute path into its components, or `None` if it is not
/// absolute and normalized (the exact bytes must be `/a/b/c`).
fn normalized_parts(bytes: &[u8]) -> Result<Vec<&[u8]>, TargetError> {
    let rest = bytes.strip_prefix(b"/").ok_or(TargetError::Relative)?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == b"." || *p == b"..")
    {
        return Err(TargetError::NotNormalized);
    }
    Ok(parts)
}

/// Whether `p` is usable as a trusted prefix: absolute, without `.` or
/// `..` (a trailing `/` and repeated `/` are fine).
pub fn is_valid_prefix(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

impl TrustedPrefixes {
    /// The usable prefixes among `prefixes` (see [`is_valid_prefix`]).
    pub fn new(prefixes: &[PathBuf]) -> Self {
        let prefixes = prefixes
            .iter()
            .filter(|p| is_valid_prefix(p))
            .map(|p| {
                let parts: Vec<Vec<u8>> = p
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.as_bytes().to_vec()),
                        _ => None,
                    })
                    .collect();
                let path = parts
                    .iter()
                    .fold(PathBuf::from("/"), |acc, p| acc.join(OsStr::from_bytes(p)));
                Prefix {
                    parts,
                    path,
                    fd: OnceCell::new(),
                }
            })
            .collect();
        TrustedPrefixes { prefixes }
    }

    /// Checks a symlink target. On success returns the target's path (its
    /// final path: no symlink on the way) and its `stat`, which is of type
    /// `want`.
    pub fn resolve(&self, target: &[u8], want: FileType) -> Result<(PathBuf, Stat), TargetError> {
        let parts = normalized_parts(target)?;
        let (prefix, rest) = self
            .prefixes
            .iter()
            .find_map(|p| {
                (parts.len() > p.parts.len()
                    && p.parts.iter().zip(&parts).all(|(a, b)| a.as_slice() == *b))
                .then(|| (p, &parts[p.parts.len()..]))
            })
            .ok_or(TargetError::Outside)?;
        let dir = prefix
            .fd
            .get_or_init(|| {
                rustix::fs::open(
                    &prefix.path,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            })
            .as_ref()
            .map_err(|e| TargetError::Io(*e))?;
        let rel = rest.join(&b'/');
        let fd = rustix::fs::openat2(
            dir,
            OsStr::from_bytes(&rel),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE_UNTRUSTED,
        )
        .map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR => TargetError::NotFound,
            Errno::LOOP | Errno::XDEV => TargetError::ThroughSymlink,
            e => TargetError::Io(e),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(TargetError::Io)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => Err(TargetError::ThroughSymlink),
            t if t == want => Ok((PathBuf::from(OsStr::from_bytes(target)), st)),
            t => Err(TargetError::WrongType(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_parts_refuses_relative_and_dot_paths() {
        assert_eq!(
            normalized_parts(b"/usr/img/x").unwrap(),
            vec![&b"usr"[..], b"img", b"x"]
        );
        for bad in [&b"usr/img"[..], b"../x", b""] {
            assert_eq!(normalized_parts(bad), Err(TargetError::Relative), "{bad:?}");
        }
        for bad in [
            &b"/usr/../etc"[..],
            b"/usr/./img",
            b"/usr//img",
            b"/usr/img/",
        ] {
            assert_eq!(
                normalized_parts(bad),
                Err(TargetError::NotNormalized),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn prefix_must_be_absolute_without_dots() {
        assert!(is_valid_prefix(Path::new("/usr/img/")));
        assert!(!is_valid_prefix(Path::new("usr/img")));
        assert!(!is_valid_prefix(Path::new("/usr/../img")));
    }

    #[test]
    fn target_outside_or_equal_to_prefix_is_refused() {
        let p = TrustedPrefixes::new(&[PathBuf::from("/usr/img/")]);
        let f = FileType::RegularFile;
        assert_eq!(
            p.resolve(b"/usr/imgx/a", f).unwrap_err(),
            TargetError::Outside
        );
        assert_eq!(p.resolve(b"/usr/img", f).unwrap_err(), TargetError::Outside);
        assert_eq!(p.resolve(b"/dev/sda", f).unwrap_err(), TargetError::Outside);
        assert_eq!(
            p.resolve(b"../../etc/shadow", f).unwrap_err(),
            TargetError::Relative
        );
    }

    #[test]
    fn target_resolves_without_following_links_under_prefix() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        std::fs::create_dir(root.join("img")).unwrap();
        std::fs::write(root.join("img/k"), b"k").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("img/etc")).unwrap();
        std::os::unix::fs::symlink("k", root.join("img/k2")).unwrap();
        let p = TrustedPrefixes::new(&[root.join("img")]);
        let f = FileType::RegularFile;
        let good = root.join("img/k");
        let (path, st) = p.resolve(good.as_os_str().as_bytes(), f).unwrap();
        assert_eq!(path, good);
        assert_eq!(st.st_size, 1);
        let via = root.join("img/etc/passwd");
        assert_eq!(
            p.resolve(via.as_os_str().as_bytes(), f).unwrap_err(),
            TargetError::ThroughSymlink
        );
        let link = root.join("img/k2");
        assert_eq!(
            p.resolve(link.as_os_str().as_bytes(), f).unwrap_err(),
            TargetError::ThroughSymlink
        );
        let missing = root.join("img/nope");
        assert_eq!(
            p.resolve(missing.as_os_str().as_bytes(), f).unwrap_err(),
            TargetError::NotFound
        );
        let dir = root.join("img");
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(
            p.resolve(sub.as_os_str().as_bytes(), f).unwrap_err(),
            TargetError::WrongType(FileType::Directory)
        );
    }
}
