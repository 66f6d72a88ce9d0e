//! Reading one definition directory, `<root>/<vm>/`: `vmlinux`, `blk/*.img`,
//! `providers/net/NAME`, `fs/`. Every problem becomes a diagnostic; only a
//! failing device ([`Fatal`]) stops the scan.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::FileType;
use vm_catalog_protocol::{DiagCode, Diagnostic, Provider, ProviderKind, VmName};

use super::diag::{self, error, warning};
use super::files::{Ctx, Fatal, check_leaf, io_diag};
use super::fingerprint::fingerprint_of;
use super::fs::{Entry, ListError, OpenDir, OpenError, type_name};
use super::{Definition, FileRef, ProviderFile};

/// What one definition directory holds, while it is being read.
#[derive(Debug, Default)]
struct Found {
    kernel: Option<FileRef>,
    kernel_seen: bool,
    disks: Vec<FileRef>,
    blk_failed: bool,
    providers: Vec<ProviderFile>,
    fs: Option<FileRef>,
    diagnostics: Vec<Diagnostic>,
}

/// Lists `dir` within the per-directory cap; a problem becomes a diagnostic
/// (and an empty list).
fn list(
    dir: &mut OpenDir,
    ctx: &Ctx<'_>,
    out: &mut Vec<Diagnostic>,
) -> Result<Option<Vec<Entry>>, Fatal> {
    match dir.list(ctx.opts.max_dir_entries) {
        Ok(mut entries) => {
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Some(entries))
        }
        Err(ListError::TooMany) => {
            out.push(error(
                DiagCode::TooManyEntries,
                dir.path(),
                format!("more than {} entries", ctx.opts.max_dir_entries),
            ));
            Ok(None)
        }
        Err(ListError::Io(e)) => {
            out.push(io_diag(e, dir.path(), "read the directory")?);
            Ok(None)
        }
    }
}

/// Opens a required subdirectory (`blk`, `providers`, `providers/net`).
fn subdir(
    parent: &OpenDir,
    name: &str,
    ctx: &Ctx<'_>,
    out: &mut Vec<Diagnostic>,
) -> Result<Option<OpenDir>, Fatal> {
    let name = OsStr::new(name);
    let path = parent.child_path(name);
    match parent.open_child(name, ctx.walk) {
        Ok(d) => Ok(Some(d)),
        Err(OpenError::NotFound) => Ok(None),
        Err(OpenError::Symlink) => {
            out.push(error(
                DiagCode::UnsafeSymlink,
                &path,
                "a symlinked directory is not followed in an untrusted source",
            ));
            Ok(None)
        }
        Err(OpenError::NotDirectory(t)) => {
            out.push(error(
                DiagCode::NotDirectory,
                &path,
                format!("expected a directory, found {}", type_name(t)),
            ));
            Ok(None)
        }
        Err(OpenError::Io(e)) => {
            out.push(io_diag(e, &path, "open the directory")?);
            Ok(None)
        }
    }
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_bytes().first() == Some(&b'.')
}

fn skipped(dir: &OpenDir, name: &OsStr, out: &mut Vec<Diagnostic>) {
    let path = dir.child_path(name);
    if is_hidden(name) {
        out.push(warning(
            DiagCode::HiddenEntry,
            &path,
            "hidden entry skipped",
        ));
    } else {
        out.push(warning(
            DiagCode::UnknownEntry,
            &path,
            "unknown entry ignored",
        ));
    }
}

/// Why a disk image's name or path cannot be given to the VMM.
fn bad_disk_path(name: &OsStr, final_path: &Path) -> Option<String> {
    let bytes = name.as_bytes();
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some("the name is not UTF-8".into());
    };
    if text.chars().any(char::is_control) {
        return Some("the name contains a control character".into());
    }
    if bytes.contains(&b',') || final_path.as_os_str().as_bytes().contains(&b',') {
        return Some("the path contains ',', which the VMM's option syntax cannot take".into());
    }
    None
}

fn read_blk(def: &OpenDir, ctx: &Ctx<'_>, found: &mut Found) -> Result<(), Fatal> {
    // A `blk` that cannot be read counts as a reported failure only when
    // it was reported: one that went away since the listing, or a dangling
    // link in a trusted source, is found by nobody, and then the
    // definition has no disk (`no-disk`).
    let reported = found.diagnostics.len();
    let Some(mut blk) = subdir(def, "blk", ctx, &mut found.diagnostics)? else {
        found.blk_failed = found.diagnostics.len() > reported;
        return Ok(());
    };
    let Some(entries) = list(&mut blk, ctx, &mut found.diagnostics)? else {
        found.blk_failed = found.diagnostics.len() > reported;
        return Ok(());
    };
    for e in entries {
        let name = e.name.as_os_str();
        if is_hidden(name) || !name.as_bytes().ends_with(b".img") {
            skipped(&blk, name, &mut found.diagnostics);
            continue;
        }
        match check_leaf(&blk, name, FileType::RegularFile, ctx)? {
            Ok(f) => match bad_disk_path(name, &f.path) {
                Some(why) => {
                    found.blk_failed = true;
                    found.diagnostics.push(error(
                        DiagCode::InvalidPath,
                        &blk.child_path(name),
                        why,
                    ));
                }
                None => found.disks.push(f),
            },
            Err(d) => {
                found.blk_failed = true;
                found.diagnostics.push(d);
            }
        }
    }
    Ok(())
}

fn read_net_providers(providers: &OpenDir, ctx: &Ctx<'_>, found: &mut Found) -> Result<(), Fatal> {
    let Some(mut net) = subdir(providers, "net", ctx, &mut found.diagnostics)? else {
        return Ok(());
    };
    let Some(entries) = list(&mut net, ctx, &mut found.diagnostics)? else {
        return Ok(());
    };
    for e in entries {
        let name = e.name.as_os_str();
        if is_hidden(name) {
            skipped(&net, name, &mut found.diagnostics);
            continue;
        }
        let vm = match VmName::try_from(name.as_bytes()) {
            Ok(vm) => vm,
            Err(why) => {
                found.diagnostics.push(error(
                    DiagCode::InvalidName,
                    &net.child_path(name),
                    format!("invalid provider name: {why}"),
                ));
                continue;
            }
        };
        match check_leaf(&net, name, FileType::RegularFile, ctx)? {
            Ok(file) => found.providers.push(ProviderFile {
                provider: Provider {
                    kind: ProviderKind::Net,
                    name: vm,
                },
                file,
            }),
            Err(d) => found.diagnostics.push(d),
        }
    }
    Ok(())
}

fn read_providers(def: &OpenDir, ctx: &Ctx<'_>, found: &mut Found) -> Result<(), Fatal> {
    let Some(mut providers) = subdir(def, "providers", ctx, &mut found.diagnostics)? else {
        return Ok(());
    };
    let Some(entries) = list(&mut providers, ctx, &mut found.diagnostics)? else {
        return Ok(());
    };
    for e in entries {
        match e.name.as_bytes() {
            b"net" => read_net_providers(&providers, ctx, found)?,
            _ => skipped(&providers, &e.name, &mut found.diagnostics),
        }
    }
    Ok(())
}

/// Reads the definition directory `def` of the VM `name`.
pub(crate) fn read_definition(
    mut def: OpenDir,
    name: VmName,
    ctx: &Ctx<'_>,
) -> Result<Definition, Fatal> {
    let mut found = Found::default();
    if let Some(entries) = list(&mut def, ctx, &mut found.diagnostics)? {
        for e in entries {
            let entry = e.name.as_os_str();
            match entry.as_bytes() {
                b"vmlinux" => {
                    found.kernel_seen = true;
                    match check_leaf(&def, entry, FileType::RegularFile, ctx)? {
                        Ok(f) => found.kernel = Some(f),
                        Err(d) => found.diagnostics.push(d),
                    }
                }
                b"blk" => read_blk(&def, ctx, &mut found)?,
                b"providers" => read_providers(&def, ctx, &mut found)?,
                b"fs" => match check_leaf(&def, entry, FileType::Directory, ctx)? {
                    Ok(f) => found.fs = Some(f),
                    Err(d) => found.diagnostics.push(d),
                },
                _ => skipped(&def, entry, &mut found.diagnostics),
            }
        }
        if !found.kernel_seen {
            found.diagnostics.push(error(
                DiagCode::MissingKernel,
                &def.child_path(OsStr::new("vmlinux")),
                "no vmlinux",
            ));
        }
        if found.disks.is_empty() && !found.blk_failed {
            found.diagnostics.push(error(
                DiagCode::NoDisk,
                &def.child_path(OsStr::new("blk")),
                "no disk image (blk/*.img)",
            ));
        }
    }
    Ok(finish(name, def.path(), found))
}

/// A definition that could not be read at all (its directory could not be
/// opened): it still claims its name, with the reason.
pub(crate) fn unreadable(name: VmName, dir: &Path, diagnostic: Diagnostic) -> Definition {
    let found = Found {
        diagnostics: vec![diagnostic],
        ..Found::default()
    };
    finish(name, dir, found)
}

fn finish(name: VmName, dir: &Path, mut found: Found) -> Definition {
    diag::sort(&mut found.diagnostics);
    found.disks.sort_by(|a, b| a.name.cmp(&b.name));
    found.providers.sort_by(|a, b| a.provider.cmp(&b.provider));
    let mut def = Definition {
        name,
        dir: dir.to_path_buf(),
        kernel: found.kernel,
        disks: found.disks,
        providers: found.providers,
        fs: found.fs,
        diagnostics: found.diagnostics,
        fingerprint: 0,
    };
    def.fingerprint = fingerprint_of(&def);
    def
}
