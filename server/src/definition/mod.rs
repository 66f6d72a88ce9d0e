//! VM definitions: scanning `<root>/<vm>/` directories safely.
//!
//! [`scan_source`] reads one [`SourceSpec`] into a [`SourceScan`]: the
//! source's state and diagnostics, and one [`Definition`] per
//! valid-named definition directory, valid or not. Nothing here panics or
//! stops on a bad definition: every problem is a [`Diagnostic`] with a stable
//! code and the offending path.
//!
//! Untrusted sources are walked without following any symlink (see
//! `fs.rs`); a symlink is data, accepted only when it points under a trusted
//! prefix (see `target.rs`). The layout (`vmlinux`, `blk/*.img`,
//! `providers/net/NAME`, `fs/`) is read in `parse.rs`.

mod diag;
mod entries;
mod files;
mod fingerprint;
mod fs;
mod parse;
mod scan;
mod target;
pub mod watch_targets;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use vm_catalog_protocol::{Diagnostic, Provider, SourceState, VmName};

use crate::source::SourceSpec;

pub use diag::{display_bytes, display_path, has_error};
pub use entries::{Entries, EntryScan, rescan_entries};
pub use fingerprint::{Fnv1a, fingerprint_of};
pub use scan::{DirCheck, scan_definition_dir, scan_source};
pub use target::is_valid_prefix;

/// The trusted prefix by default: where the image keeps VM kernels and disks.
pub const DEFAULT_TRUSTED_PREFIX: &str = "/usr/img/";

/// How sources are scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// A symlink in an untrusted source is accepted only when its target is
    /// under one of these (absolute paths without `.` or `..`; others never
    /// match). Default: `/usr/img/`.
    pub trusted_prefixes: Vec<PathBuf>,
    /// Most entries read from a source root; past it the source is `failed`
    /// with `too-many-entries` (nothing of a partial listing is used).
    pub max_source_entries: usize,
    /// Most entries read from a directory inside a definition (the
    /// definition directory, `blk/`, `providers/`, `providers/net/`); past
    /// it the definition is rejected with `too-many-entries`.
    pub max_dir_entries: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            trusted_prefixes: vec![PathBuf::from(DEFAULT_TRUSTED_PREFIX)],
            max_source_entries: 4096,
            max_dir_entries: 1024,
        }
    }
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: i64,
}

/// A validated file of a definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileRef {
    /// Its entry name in the definition (`vmlinux`, `root.img`, `netvm`, `fs`).
    pub name: OsString,
    /// Its validated final path: what the view links to.
    pub path: PathBuf,
    /// Its identity when it was checked.
    pub id: FileId,
}

/// A provider named by `providers/<kind>/<name>`, and that file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderFile {
    /// The provider.
    pub provider: Provider,
    /// The file that names it.
    pub file: FileRef,
}

/// One definition directory, as scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The VM name (the directory's name).
    pub name: VmName,
    /// The definition directory.
    pub dir: PathBuf,
    /// `vmlinux`, if it is valid.
    pub kernel: Option<FileRef>,
    /// The valid `blk/*.img`, sorted by name.
    pub disks: Vec<FileRef>,
    /// The valid `providers/*/*`, sorted by kind and name.
    pub providers: Vec<ProviderFile>,
    /// `fs/`, if present and valid.
    pub fs: Option<FileRef>,
    /// Errors and warnings, sorted by path; any error rejects the definition.
    pub diagnostics: Vec<Diagnostic>,
    /// Changes whenever anything the VMM would see changes (see
    /// [`fingerprint_of`]); stable across builds.
    pub fingerprint: u64,
}

impl Definition {
    /// Whether the definition has no error (warnings are fine).
    pub fn is_valid(&self) -> bool {
        !has_error(&self.diagnostics)
    }

    /// Its providers.
    pub fn provider_list(&self) -> Vec<Provider> {
        self.providers.iter().map(|p| p.provider.clone()).collect()
    }
}

/// One source, scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceScan {
    /// The source.
    pub spec: SourceSpec,
    /// `ready`, `missing`, `unavailable` (gone) or `failed`.
    pub state: SourceState,
    /// The spec's diagnostics, then the scan's: source-level problems and
    /// entries of the root that are not definitions (invalid names, …).
    pub diagnostics: Vec<Diagnostic>,
    /// One per valid-named definition directory, sorted by name.
    pub definitions: Vec<Arc<Definition>>,
    /// The scan ran out of file descriptors or memory: the result says
    /// nothing about the source, and the rescan must not use it.
    pub exhausted: bool,
    /// What each entry of its root gave, when the source is ready: what a
    /// rescan of some entries only starts from ([`rescan_entries`]).
    pub entries: Option<Entries>,
}
