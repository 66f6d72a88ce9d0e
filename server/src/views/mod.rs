//! Views: for every active VM, a `config/` directory holding `vmlinux`,
//! `blk/*.img`, `providers/net/*` and `fs` as symlinks to the validated final
//! paths. This is what the VMM reads; it never looks at a source directly.
//! Where the view goes is the [`Layout`]'s: `<vm-dir>/<name>/config`, or
//! (Spectrum's) `<vm-dir>/by-id/<id>/config` with `<vm-dir>/by-name/<name>`
//! linking to `<vm-dir>/by-id/<id>` (`names.rs`).
//!
//! [`sync`] brings `<vm-dir>` in line with an active set: a view that differs
//! is built beside the old one (`.config.new`) and swapped in with
//! `renameat2(RENAME_EXCHANGE)` (or `RENAME_NOREPLACE` the first time), so a
//! reader sees the old view or the new one, never a mix; a by-name link is
//! replaced by `rename`, after its view is built; views and links of VMs that
//! left are removed (those of the other layout too, so that switching
//! layouts leaves nothing behind) by [`Views::remove_left`], after the
//! apply and the release hooks (`Views::build` makes the rest); what
//! already matches is not touched. A by-id directory is made `0700` and
//! goes whole; an existing one keeps its owner and mode. With the
//! s6-instance applier, `by-id/<id>/service` links to the VM's instance. A
//! view carries a marker file (`.vm-catalogd-view`), and only marked views
//! (and by-name links into `by-id/`) are ever replaced or removed.

mod build;
mod names;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vm_catalog_protocol::{DiagCode, Diagnostic, Severity, VmId, VmName};

use crate::catalog::{Candidate, Layout};
use crate::definition::display_path;

pub use sync::{Views, sync};

/// The marker file in every view the daemon made.
pub const MARKER: &str = ".vm-catalogd-view";

/// What a view holds, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSpec {
    /// The VM's catalog name.
    pub name: VmName,
    /// Its id.
    pub id: VmId,
    /// The directory holding the view's `config`, relative to the VM
    /// directory (`<name>`, or `by-id/<id>`).
    pub slot: PathBuf,
    /// `vmlinux`, `blk/NAME.img`, `providers/net/NAME`, `fs` → final path.
    /// A provider is named by the catalog name its reference resolved to,
    /// so that the VMM finds it (Spectrum's `start-vmm` looks
    /// `providers/net/<name>` up in `by-name/`).
    pub links: BTreeMap<PathBuf, PathBuf>,
}

impl ViewSpec {
    /// The view of an active candidate, placed as `layout` says.
    pub fn of(c: &Candidate, layout: Layout) -> ViewSpec {
        let def = &c.definition;
        let mut links = BTreeMap::new();
        if let Some(k) = &def.kernel {
            links.insert(PathBuf::from("vmlinux"), k.path.clone());
        }
        for d in &def.disks {
            links.insert(Path::new("blk").join(&d.name), d.path.clone());
        }
        for (p, file) in c.provider_links() {
            let rel = Path::new("providers")
                .join(p.kind.as_str())
                .join(p.name.as_str());
            links.insert(rel, file.path.clone());
        }
        if let Some(fs) = &def.fs {
            links.insert(PathBuf::from("fs"), fs.path.clone());
        }
        ViewSpec {
            name: c.entry.name.clone(),
            id: c.id.clone(),
            slot: layout.slot(&c.entry.name, &c.id),
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
    /// Views of VMs that left, removed (by the name of their directory:
    /// the VM's name, or its id in the Spectrum layout).
    pub removed: Vec<VmName>,
    /// By-name links made or replaced (Spectrum layout).
    pub linked: Vec<VmName>,
    /// By-name links of VMs that left, removed.
    pub unlinked: Vec<VmName>,
    /// Failures; a VM whose view failed keeps its previous view, if any.
    pub errors: Vec<ViewError>,
}

impl SyncReport {
    /// Adds what `other` did to this report.
    pub fn absorb(&mut self, other: SyncReport) {
        self.created.extend(other.created);
        self.replaced.extend(other.replaced);
        self.unchanged.extend(other.unchanged);
        self.removed.extend(other.removed);
        self.linked.extend(other.linked);
        self.unlinked.extend(other.unlinked);
        self.errors.extend(other.errors);
    }
}
