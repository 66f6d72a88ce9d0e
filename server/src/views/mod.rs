//! Views: for every active VM, `<vm-dir>/<name>/config/` holding `vmlinux`,
//! `blk/*.img`, `providers/net/*` and `fs` as symlinks to the validated final
//! paths. This is what the VMM reads; it never looks at a source directly.
//!
//! [`sync`] brings `<vm-dir>` in line with an active set: a view that differs
//! is built beside the old one (`<name>/.config.new`) and swapped in with
//! `renameat2(RENAME_EXCHANGE)` (or `RENAME_NOREPLACE` the first time), so a
//! reader sees the old view or the new one, never a mix; views of VMs that
//! left are removed; views that already match are not touched. A view
//! carries a marker file (`.vm-catalogd-view`), and only marked views are
//! ever replaced or removed.

mod build;
mod sync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vm_catalog_protocol::{DiagCode, Diagnostic, Severity, VmName};

use crate::definition::{Definition, display_path};

pub use sync::{Views, sync};

/// The marker file in every view the daemon made.
pub const MARKER: &str = ".vm-catalogd-view";

/// What a view holds: relative path → symlink target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSpec {
    /// The VM.
    pub name: VmName,
    /// `vmlinux`, `blk/NAME.img`, `providers/net/NAME`, `fs` → final path.
    pub links: BTreeMap<PathBuf, PathBuf>,
}

impl ViewSpec {
    /// The view of a definition.
    pub fn of(def: &Definition) -> ViewSpec {
        let mut links = BTreeMap::new();
        if let Some(k) = &def.kernel {
            links.insert(PathBuf::from("vmlinux"), k.path.clone());
        }
        for d in &def.disks {
            links.insert(Path::new("blk").join(&d.name), d.path.clone());
        }
        for p in &def.providers {
            let rel = Path::new("providers")
                .join(p.provider.kind.as_str())
                .join(p.provider.name.as_str());
            links.insert(rel, p.file.path.clone());
        }
        if let Some(fs) = &def.fs {
            links.insert(PathBuf::from("fs"), fs.path.clone());
        }
        ViewSpec {
            name: def.name.clone(),
            links,
        }
    }
}

/// A view that could not be made or removed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}", display_path(path))]
pub struct ViewError {
    /// The VM, when the failure is about one VM's view.
    pub name: Option<VmName>,
    /// What failed.
    pub what: &'static str,
    /// Where.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl ViewError {
    /// The failure as an `io-error` diagnostic about the view's path.
    pub fn to_diagnostic(&self) -> Diagnostic {
        Diagnostic {
            code: DiagCode::IoError,
            severity: Severity::Error,
            path: display_path(&self.path),
            message: format!("{}: {}", self.what, self.source),
        }
    }
}

/// What [`sync`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Views made where there was none.
    pub created: Vec<VmName>,
    /// Views swapped for a new one.
    pub replaced: Vec<VmName>,
    /// Views already right, left untouched.
    pub unchanged: Vec<VmName>,
    /// Views of VMs that left, removed.
    pub removed: Vec<VmName>,
    /// Failures; a VM whose view failed keeps its previous view, if any.
    pub errors: Vec<ViewError>,
}
