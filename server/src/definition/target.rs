//! Symlinks in untrusted sources: a link is data, read with `readlinkat`,
//! and accepted only when its target is an absolute, normalized path under
//! a trusted prefix (default `/usr/img/`), reached from the prefix without
//! following any symlink on the way, and the right kind of file there.
//!
//! The target may itself be a symlink (Spectrum's app template files are
//! links into `/nix/store`): the chain is then followed hop by hop, each
//! hop's target read as data and held to the same rule (a relative target
//! is taken from the link's directory, then normalized), until a file of
//! the right kind, at most [`MAX_HOPS`] links in all. A loop, a dangling
//! hop or a hop out of the trusted prefixes refuses the whole chain, and
//! the error names the hop. The final path is the one used.

use std::cell::OnceCell;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::fs::RESOLVE_UNTRUSTED;

/// The most symlinks a chain may have, the definition's own link included.
pub(crate) const MAX_HOPS: usize = 8;

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
    /// The target is a symlink (under a trusted prefix) whose own target
    /// is refused: `link` is the hop, `target` what it points at.
    #[error("is a symlink under a trusted prefix, and its hop {} -> {:?} {error}", link.display(), String::from_utf8_lossy(target))]
    Hop {
        /// The symlink whose target is refused.
        link: PathBuf,
        /// Its target, as read.
        target: Vec<u8>,
        /// Why it is refused.
        error: Box<TargetError>,
    },
    /// The chain comes back to a link it went through.
    #[error("leads into a loop of symlinks at {}", .0.display())]
    Loop(PathBuf),
    /// More than [`MAX_HOPS`] links.
    #[error("leads through more than {MAX_HOPS} symlinks (last {})", .0.display())]
    TooManyHops(PathBuf),
}

impl TargetError {
    /// The error at the end of a chain of hops.
    pub fn innermost(&self) -> &TargetError {
        match self {
            TargetError::Hop { error, .. } => error.innermost(),
            e => e,
        }
    }

    /// Whether the chain was refused at a later hop (not the first link).
    pub fn is_hop(&self) -> bool {
        matches!(self, TargetError::Hop { .. })
    }
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

    /// Checks a symlink target, following a chain of links under trusted
    /// prefixes (see the module). On success returns the final path (no
    /// symlink on the way) and its `stat`, which is of type `want`.
    pub fn resolve(&self, target: &[u8], want: FileType) -> Result<(PathBuf, Stat), TargetError> {
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut current = target.to_vec();
        // The hop being followed: (link, its target as read).
        let mut hop: Option<(PathBuf, Vec<u8>)> = None;
        loop {
            let wrap = |e: TargetError, hop: &Option<(PathBuf, Vec<u8>)>| match hop {
                None => e,
                Some((link, target)) => TargetError::Hop {
                    link: link.clone(),
                    target: target.clone(),
                    error: Box::new(e),
                },
            };
            let (path, fd) = match self.open_one(&current) {
                Ok(x) => x,
                Err(e) => return Err(wrap(e, &hop)),
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| wrap(TargetError::Io(e), &hop))?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    if seen.contains(&path) {
                        return Err(TargetError::Loop(path));
                    }
                    seen.push(path.clone());
                    if seen.len() >= MAX_HOPS {
                        return Err(TargetError::TooManyHops(path));
                    }
                    let next = rustix::fs::readlinkat(&fd, "", Vec::new())
                        .map_err(|e| wrap(TargetError::Io(e), &hop))?
                        .into_bytes();
                    current = hop_target(&path, &next);
                    hop = Some((path, next));
                }
                t if t == want => return Ok((path, st)),
                t => return Err(wrap(TargetError::WrongType(t), &hop)),
            }
        }
    }

    /// Opens one absolute, normalized path under a trusted prefix, without
    /// following any symlink (the last component may be one: it is opened
    /// itself, `O_PATH`).
    fn open_one(&self, target: &[u8]) -> Result<(PathBuf, OwnedFd), TargetError> {
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
        Ok((PathBuf::from(OsStr::from_bytes(target)), fd))
    }
}

/// The path a hop leads to: an absolute target as it is, a relative one
/// from the link's directory, with `.` and `..` taken out lexically (every
/// directory on the way is then opened without following a symlink, so the
/// lexical path is the one walked). A result that is not normalized is
/// refused by the next [`TrustedPrefixes::open_one`].
fn hop_target(link: &Path, target: &[u8]) -> Vec<u8> {
    if target.starts_with(b"/") {
        return target.to_vec();
    }
    let mut parts: Vec<&[u8]> = link
        .parent()
        .map(|p| p.as_os_str().as_bytes())
        .unwrap_or(b"")
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if target.ends_with(b"/") || out.is_empty() {
        // A trailing '/' or the root: not a file, refused as not normalized.
        out.push(b'/');
    }
    out
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
        // A link under the prefix to a file under it is a chain of one hop.
        let link = root.join("img/k2");
        assert_eq!(p.resolve(link.as_os_str().as_bytes(), f).unwrap().0, good);
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

    /// `root/store/pkg/k` (a file), `root/img/k -> root/store/pkg/k` (as
    /// lndir makes them), prefixes `root/img` and `root/store`.
    fn store(root: &Path) -> TrustedPrefixes {
        std::fs::create_dir_all(root.join("store/pkg")).unwrap();
        std::fs::create_dir_all(root.join("img")).unwrap();
        std::fs::write(root.join("store/pkg/k"), b"kernel").unwrap();
        std::os::unix::fs::symlink(root.join("store/pkg/k"), root.join("img/k")).unwrap();
        TrustedPrefixes::new(&[root.join("img"), root.join("store")])
    }

    fn bytes(p: &Path) -> &[u8] {
        p.as_os_str().as_bytes()
    }

    #[test]
    fn a_chain_of_links_under_trusted_prefixes_resolves_to_its_final_file() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        let p = store(&root);
        let f = FileType::RegularFile;
        let (path, st) = p.resolve(bytes(&root.join("img/k")), f).unwrap();
        assert_eq!(path, root.join("store/pkg/k"));
        assert_eq!(st.st_size, 6);
        // A relative hop is taken from its link's directory.
        std::os::unix::fs::symlink("../store/pkg/k", root.join("img/rel")).unwrap();
        std::os::unix::fs::symlink(root.join("img/rel"), root.join("img/two")).unwrap();
        let (path, _) = p.resolve(bytes(&root.join("img/two")), f).unwrap();
        assert_eq!(path, root.join("store/pkg/k"));
    }

    #[test]
    fn a_hop_out_of_the_trusted_prefixes_is_refused_naming_the_hop() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        std::fs::write(root.join("secret"), b"s").unwrap();
        let p = store(&root);
        let f = FileType::RegularFile;
        std::os::unix::fs::symlink(root.join("secret"), root.join("store/pkg/out")).unwrap();
        std::os::unix::fs::symlink(root.join("store/pkg/out"), root.join("img/out")).unwrap();
        let e = p.resolve(bytes(&root.join("img/out")), f).unwrap_err();
        assert_eq!(e.innermost(), &TargetError::Outside);
        match &e {
            TargetError::Hop { link, target, .. } => {
                assert_eq!(link, &root.join("store/pkg/out"));
                assert_eq!(target.as_slice(), bytes(&root.join("secret")));
            }
            e => panic!("{e:?}"),
        }
        assert!(e.to_string().contains("store/pkg/out"), "{e}");
        // Out by `..`, and to a device.
        std::os::unix::fs::symlink("../../secret", root.join("store/pkg/up")).unwrap();
        let e = p.resolve(bytes(&root.join("store/pkg/up")), f).unwrap_err();
        assert_eq!(e.innermost(), &TargetError::Outside);
        std::os::unix::fs::symlink("/dev/sda", root.join("img/dev")).unwrap();
        let e = p.resolve(bytes(&root.join("img/dev")), f).unwrap_err();
        assert_eq!(e.innermost(), &TargetError::Outside);
    }

    #[test]
    fn loops_dangling_hops_and_long_chains_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        let p = store(&root);
        let f = FileType::RegularFile;
        std::os::unix::fs::symlink(root.join("img/b"), root.join("img/a")).unwrap();
        std::os::unix::fs::symlink(root.join("img/a"), root.join("img/b")).unwrap();
        let e = p.resolve(bytes(&root.join("img/a")), f).unwrap_err();
        assert_eq!(e, TargetError::Loop(root.join("img/a")));
        std::os::unix::fs::symlink(root.join("store/gone"), root.join("img/dangling")).unwrap();
        let e = p.resolve(bytes(&root.join("img/dangling")), f).unwrap_err();
        assert!(e.is_hop());
        assert_eq!(e.innermost(), &TargetError::NotFound);
        // A chain of MAX_HOPS links (the definition's own first) is fine;
        // one more is not.
        let mut last = root.join("store/pkg/k");
        for i in 0..MAX_HOPS {
            let link = root.join(format!("img/c{i}"));
            std::os::unix::fs::symlink(&last, &link).unwrap();
            last = link;
        }
        let chain = |i: usize| root.join(format!("img/c{i}"));
        assert!(p.resolve(bytes(&chain(MAX_HOPS - 2)), f).is_ok());
        let e = p.resolve(bytes(&chain(MAX_HOPS - 1)), f).unwrap_err();
        assert!(matches!(e, TargetError::TooManyHops(_)), "{e:?}");
    }

    #[test]
    fn a_hop_through_a_symlinked_directory_or_to_the_wrong_type_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        let p = store(&root);
        let f = FileType::RegularFile;
        std::os::unix::fs::symlink(root.join("store/pkg"), root.join("store/alias")).unwrap();
        std::os::unix::fs::symlink(root.join("store/alias/k"), root.join("img/via")).unwrap();
        let e = p.resolve(bytes(&root.join("img/via")), f).unwrap_err();
        assert_eq!(e.innermost(), &TargetError::ThroughSymlink);
        std::os::unix::fs::symlink(root.join("store/pkg"), root.join("img/dir")).unwrap();
        let e = p.resolve(bytes(&root.join("img/dir")), f).unwrap_err();
        assert_eq!(e.innermost(), &TargetError::WrongType(FileType::Directory));
        // ... which is what `fs` wants.
        let (path, _) = p
            .resolve(bytes(&root.join("img/dir")), FileType::Directory)
            .unwrap();
        assert_eq!(path, root.join("store/pkg"));
    }

    #[test]
    fn hop_targets_are_taken_from_the_links_directory() {
        let l = Path::new("/s/a/b/link");
        assert_eq!(hop_target(l, b"/x/y"), b"/x/y");
        assert_eq!(hop_target(l, b"k"), b"/s/a/b/k");
        assert_eq!(hop_target(l, b"../k"), b"/s/a/k");
        assert_eq!(hop_target(l, b"./../../../../../k"), b"/k");
        assert_eq!(hop_target(l, b"d/"), b"/s/a/b/d/");
    }
}
