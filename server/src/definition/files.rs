//! Checking one leaf of a definition (`vmlinux`, a disk image, a provider
//! file, `fs`): what it is, whether it may be used, and its final path and
//! identity.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Stat};
use rustix::io::Errno;
use vm_catalog_protocol::{DiagCode, Diagnostic};

use super::diag::{display_bytes, error};
use super::fs::{OpenDir, Walk, is_fatal, type_name};
use super::target::{TargetError, TrustedPrefixes};
use super::{FileId, FileRef};

/// The scan of a source was abandoned: its device failed or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fatal {
    /// The error.
    pub errno: Errno,
    /// Where it happened.
    pub path: PathBuf,
}

/// What a scan needs besides the tree: the walk rules and the trusted
/// prefixes (opened once per scan).
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub walk: Walk,
    pub opts: &'a super::ScanOptions,
    pub prefixes: TrustedPrefixes,
}

impl<'a> Ctx<'a> {
    /// A context for one scan.
    pub fn new(walk: Walk, opts: &'a super::ScanOptions) -> Self {
        Ctx {
            walk,
            opts,
            prefixes: TrustedPrefixes::new(&opts.trusted_prefixes),
        }
    }
}

/// An I/O error as a diagnostic, or as [`Fatal`] when it means the device
/// went away.
pub(crate) fn io_diag(errno: Errno, path: &Path, what: &str) -> Result<Diagnostic, Fatal> {
    if is_fatal(errno) {
        return Err(Fatal {
            errno,
            path: path.to_path_buf(),
        });
    }
    Ok(error(
        DiagCode::IoError,
        path,
        format!("cannot {what}: {errno}"),
    ))
}

impl From<&Stat> for FileId {
    fn from(st: &Stat) -> Self {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as i64,
        }
    }
}

fn wrong_type(want: FileType, path: &Path, found: &str) -> Diagnostic {
    match want {
        FileType::Directory => error(
            DiagCode::NotDirectory,
            path,
            format!("expected a directory, found {found}"),
        ),
        _ => error(
            DiagCode::NotRegularFile,
            path,
            format!("expected a regular file, found {found}"),
        ),
    }
}

/// Checks `dir/name`, which must be of type `want` (a regular file, or a
/// directory for `fs`). Returns the file, or the diagnostic that refuses it.
pub(crate) fn check_leaf(
    dir: &OpenDir,
    name: &OsStr,
    want: FileType,
    ctx: &Ctx<'_>,
) -> Result<Result<FileRef, Diagnostic>, Fatal> {
    let path = dir.child_path(name);
    let st = match ctx.walk {
        Walk::Untrusted => dir.lstat(name),
        Walk::Trusted => dir.stat_follow(name),
    };
    let st = match st {
        Ok(st) => st,
        Err(Errno::NOENT) if ctx.walk == Walk::Trusted => {
            return Ok(Err(error(DiagCode::IoError, &path, "dangling symlink")));
        }
        Err(e) => return io_diag(e, &path, "stat").map(Err),
    };
    let file = |final_path: PathBuf, st: &Stat| FileRef {
        name: name.to_os_string(),
        path: final_path,
        id: FileId::from(st),
    };
    match FileType::from_raw_mode(st.st_mode) {
        t if t == want => {
            let final_path = match dir.final_child_path(name, ctx.walk) {
                Ok(p) => p,
                Err(e) => return io_diag(e, &path, "resolve").map(Err),
            };
            Ok(Ok(file(final_path, &st)))
        }
        FileType::Symlink => {
            let target = match dir.readlink(name) {
                Ok(t) => t,
                Err(e) => return io_diag(e, &path, "read the symlink").map(Err),
            };
            match ctx.prefixes.resolve(&target, want) {
                Ok((final_path, st)) => Ok(Ok(file(final_path, &st))),
                Err(e) => {
                    let msg = format!("symlink target {:?} {e}", display_bytes(&target));
                    let code = match (e.innermost(), e.is_hop()) {
                        (TargetError::WrongType(t), hop) => {
                            let found = match hop {
                                false => format!("a symlink to {}", type_name(*t)),
                                true => format!("a chain of symlinks to {}", type_name(*t)),
                            };
                            return Ok(Err(wrong_type(want, &path, &found)));
                        }
                        (TargetError::Io(_), _) | (TargetError::NotFound, false) => {
                            DiagCode::IoError
                        }
                        // A dangling hop is as unsafe as any other bad hop:
                        // the chain does not end where it may.
                        (TargetError::NotFound, true)
                        | (TargetError::Relative, _)
                        | (TargetError::NotNormalized, _)
                        | (TargetError::Outside, _)
                        | (TargetError::ThroughSymlink, _)
                        | (TargetError::Loop(_), _)
                        | (TargetError::TooManyHops(_), _)
                        | (TargetError::Hop { .. }, _) => DiagCode::UnsafeSymlink,
                    };
                    Ok(Err(error(code, &path, msg)))
                }
            }
        }
        t => Ok(Err(wrong_type(want, &path, type_name(t)))),
    }
}
