//! Scanning a source root: one definition per valid-named subdirectory;
//! everything else becomes a source-level diagnostic.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use vm_catalog_protocol::{DiagCode, Diagnostic, SourceState, VmName};

use super::diag::{error, warning};
use super::entries::{Entries, EntryScan, walk_of};
use super::files::{Ctx, Fatal, io_diag};
use super::fs::{
    ListError, OpenDir, OpenError, RootError, Walk, is_resource_exhaustion, type_name,
};
use super::parse::{read_definition, unreadable};
use super::{Definition, ScanOptions, SourceScan};
use crate::source::{Presence, SourceSpec};

/// Scans one source: blocking, never panics.
///
/// A source that is [`Presence::Gone`] or [`Presence::Failed`] is not read
/// (its state is `unavailable` or `failed`). A root that does not exist is
/// an empty source in state `missing`, with a `source-missing` warning. If
/// the device fails during the scan (`EIO`, `ENXIO`, `ENODEV`, `ESTALE`, …)
/// the source is `failed` and none of its definitions are returned: nothing
/// is started from a partial scan.
pub fn scan_source(spec: &SourceSpec, opts: &ScanOptions) -> SourceScan {
    let mut scan = SourceScan {
        spec: spec.clone(),
        state: SourceState::Ready,
        diagnostics: spec.diagnostics.clone(),
        definitions: Vec::new(),
        exhausted: false,
        entries: None,
    };
    match spec.presence {
        Presence::Gone => {
            scan.state = SourceState::Unavailable;
            return scan;
        }
        Presence::Failed => {
            scan.state = SourceState::Failed;
            return scan;
        }
        Presence::Present => {}
    }
    let walk = walk_of(spec.trust);
    let ctx = Ctx::new(walk, opts);
    let root = match OpenDir::open_root(&spec.root, spec.kind, walk) {
        Ok(root) => root,
        Err(e) => {
            scan.exhausted = matches!(e, RootError::Io(errno) if is_resource_exhaustion(errno));
            let (state, d) = root_failure(&spec.root, e);
            scan.state = state;
            scan.diagnostics.push(d);
            return scan;
        }
    };
    match read_root(root, &ctx, &mut scan.diagnostics) {
        Ok(Some(entries)) => {
            (scan.definitions, scan.diagnostics) = entries.assemble(spec);
            scan.entries = Some(entries);
        }
        Ok(None) => scan.state = SourceState::Failed,
        Err(Fatal { errno, path }) => {
            scan.exhausted = is_resource_exhaustion(errno);
            scan.state = SourceState::Failed;
            scan.definitions.clear();
            scan.diagnostics.push(error(
                DiagCode::IoError,
                &path,
                format!("the source failed during the scan, nothing of it is used: {errno}"),
            ));
        }
    }
    scan
}

fn root_failure(root: &Path, e: RootError) -> (SourceState, Diagnostic) {
    match e {
        RootError::Missing => (
            SourceState::Missing,
            warning(
                DiagCode::SourceMissing,
                root,
                "the source directory does not exist",
            ),
        ),
        RootError::NotDirectory => (
            SourceState::Failed,
            error(
                DiagCode::NotDirectory,
                root,
                "the source is not a directory",
            ),
        ),
        RootError::Symlink => (
            SourceState::Failed,
            error(
                DiagCode::UnsafeSymlink,
                root,
                "the path of this source goes through a symlink",
            ),
        ),
        RootError::Io(e) => (
            SourceState::Failed,
            error(
                DiagCode::IoError,
                root,
                format!("cannot open the source: {e}"),
            ),
        ),
    }
}

/// Reads the root's entries, each on its own; `Ok(None)` when the root
/// cannot be listed (the reason is in `diags`, where every entry's
/// diagnostics go too, for a scan that fails half-way).
fn read_root(
    mut root: OpenDir,
    ctx: &Ctx<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Result<Option<Entries>, Fatal> {
    let mut entries = match root.list(ctx.opts.max_source_entries) {
        Ok(entries) => entries,
        Err(ListError::TooMany) => {
            diags.push(error(
                DiagCode::TooManyEntries,
                root.path(),
                format!(
                    "more than {} entries: the source is not used",
                    ctx.opts.max_source_entries
                ),
            ));
            return Ok(None);
        }
        Err(ListError::Io(e)) => {
            diags.push(io_diag(e, root.path(), "read the source directory")?);
            return Ok(None);
        }
    };
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Entries {
        root: root.path().to_path_buf(),
        by_name: BTreeMap::new(),
    };
    for e in entries {
        let mut diagnostics = Vec::new();
        let definition = read_entry(&root, &e.name, ctx, &mut diagnostics)?;
        diags.extend(diagnostics.iter().cloned());
        let scanned = EntryScan {
            diagnostics,
            definition: definition.map(Arc::new),
        };
        out.by_name.insert(e.name, scanned);
    }
    Ok(Some(out))
}

/// One entry of the root: a definition, or a source-level diagnostic.
pub(super) fn read_entry(
    root: &OpenDir,
    entry: &OsStr,
    ctx: &Ctx<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Result<Option<Definition>, Fatal> {
    let path = root.child_path(entry);
    if entry.as_bytes().first() == Some(&b'.') {
        diags.push(warning(
            DiagCode::HiddenEntry,
            &path,
            "hidden entry skipped",
        ));
        return Ok(None);
    }
    let name = match VmName::try_from(entry.as_bytes()) {
        Ok(name) => name,
        Err(why) => {
            diags.push(error(
                DiagCode::InvalidName,
                &path,
                format!("not a valid VM name: {why}"),
            ));
            return Ok(None);
        }
    };
    match root.open_child(entry, ctx.walk) {
        Ok(dir) => read_definition(dir, name, ctx).map(Some),
        Err(OpenError::NotFound) => {
            // Gone since it was listed, or (trusted) a dangling symlink.
            if root.lstat(entry).is_ok() {
                diags.push(warning(
                    DiagCode::NotDirectory,
                    &path,
                    "dangling symlink ignored",
                ));
            }
            Ok(None)
        }
        Err(OpenError::Symlink) => {
            diags.push(error(
                DiagCode::UnsafeSymlink,
                &path,
                "a symlinked definition directory is not followed in an untrusted source",
            ));
            Ok(None)
        }
        Err(OpenError::NotDirectory(t)) => {
            diags.push(warning(
                DiagCode::NotDirectory,
                &path,
                format!("not a definition directory ({}), ignored", type_name(t)),
            ));
            Ok(None)
        }
        Err(OpenError::Io(e)) => {
            let d = io_diag(e, &path, "open the definition directory")?;
            Ok(Some(unreadable(name, &path, d)))
        }
    }
}

/// The result of checking one definition directory on its own.
#[derive(Debug, Clone)]
pub struct DirCheck {
    /// The definition, when the directory could be read as one.
    pub definition: Option<Definition>,
    /// Problems with the directory itself (its name, its type, …).
    pub diagnostics: Vec<Diagnostic>,
}

/// Checks one definition directory `<root>/<vm>` as an untrusted source
/// reads it (what `vm-catalogd check` does). `path` itself is the caller's
/// choice and may go through symlinks; nothing below it is followed.
pub fn scan_definition_dir(path: &Path, opts: &ScanOptions) -> DirCheck {
    let mut check = DirCheck {
        definition: None,
        diagnostics: Vec::new(),
    };
    let ctx = Ctx::new(Walk::Untrusted, opts);
    let canonical = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) => {
            check.diagnostics.push(error(
                DiagCode::IoError,
                path,
                format!("cannot resolve the path: {e}"),
            ));
            return check;
        }
    };
    let (Some(parent), Some(entry)) = (canonical.parent(), canonical.file_name()) else {
        check.diagnostics.push(error(
            DiagCode::InvalidName,
            path,
            "the root directory is not a definition",
        ));
        return check;
    };
    let root = match OpenDir::open_root(
        parent,
        vm_catalog_protocol::SourceKind::Directory,
        Walk::Untrusted,
    ) {
        Ok(r) => r,
        Err(e) => {
            check.diagnostics.push(root_failure(parent, e).1);
            return check;
        }
    };
    match read_entry(&root, entry, &ctx, &mut check.diagnostics) {
        Ok(def) => check.definition = def,
        Err(Fatal { errno, path }) => {
            check.diagnostics.push(error(
                DiagCode::IoError,
                &path,
                format!("read failed: {errno}"),
            ));
        }
    }
    check
}
