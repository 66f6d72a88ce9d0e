//! What a UI VM sees of the catalog: everything a host client sees, less
//! the host's paths. This is the one place where they are taken out; every
//! reply and event a VM peer gets is built from what it returns (the
//! records and batch bodies of [`super::Published`] and [`super::Batch`]
//! for the [`Audience::Vm`] are encoded from it once per generation).
//!
//! Taken out (`docs/protocol.md`, "What a VM sees"):
//! - a VM entry's definition `path` (sent empty) and `view` (none);
//! - a source's `path` (empty) and `device` (none);
//! - in every diagnostic, the `path`: relative to the definition (or
//!   source) directory when it is inside it (`blk/root.img`), else empty;
//!   and in its message every absolute path (a word that starts with `/`),
//!   the same way, or `[host path]`;
//! - in `GetInfo`, the applier's database path and the paths in its and
//!   the rescan's messages.
//!
//! Kept: names, ids, sources' labels, kinds and states, providers,
//! diagnostic codes, services, revisions, fingerprints, partition UUIDs.

use vm_catalog_protocol::{
    ApplyOutcome, Change, ChangeItem, Diagnostic, Info, RescanOutcome, SourceEntry, VmEntry,
};

/// Who a reply is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// A host client: everything.
    Host,
    /// A UI VM: no host path (this module).
    Vm,
}

/// What replaces an absolute path outside the entry's own directory.
pub const HOST_PATH: &str = "[host path]";

/// A VM entry as a VM sees it.
pub fn vm(e: &VmEntry) -> VmEntry {
    let mut out = e.clone();
    out.path = String::new();
    out.view = None;
    out.diagnostics = e
        .diagnostics
        .iter()
        .map(|d| diagnostic(d, &e.path))
        .collect();
    out
}

/// A source as a VM sees it.
pub fn source(s: &SourceEntry) -> SourceEntry {
    let mut out = s.clone();
    out.path = String::new();
    out.device = None;
    out.diagnostics = s
        .diagnostics
        .iter()
        .map(|d| diagnostic(d, &s.path))
        .collect();
    out
}

/// A change as a VM sees it.
pub fn change(c: &Change) -> Change {
    Change {
        generation: c.generation,
        kind: c.kind,
        item: match &c.item {
            ChangeItem::Vm(e) => ChangeItem::Vm(vm(e)),
            ChangeItem::Source(s) => ChangeItem::Source(source(s)),
        },
    }
}

/// `GetInfo`'s answer as a VM sees it.
pub fn info(i: &mut Info) {
    if let Some(r) = &mut i.last_rescan {
        rescan(r);
    }
    if let Some(a) = &mut i.last_apply {
        apply(a);
    }
}

fn rescan(r: &mut RescanOutcome) {
    apply(&mut r.apply);
}

fn apply(a: &mut ApplyOutcome) {
    a.database = None;
    a.message = text(&a.message, "");
}

/// A diagnostic about something under `base` as a VM sees it.
fn diagnostic(d: &Diagnostic, base: &str) -> Diagnostic {
    Diagnostic {
        code: d.code,
        severity: d.severity,
        path: relative(&d.path, base).unwrap_or_default(),
        message: text(&d.message, base),
    }
}

/// `path` relative to `base` when it is `base` or under it.
fn relative(path: &str, base: &str) -> Option<String> {
    if base.is_empty() {
        return None;
    }
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(".".into());
    }
    rest.strip_prefix('/').map(str::to_owned)
}

/// `message` with every word that starts with `/` (after an opening quote
/// or bracket, if any) made relative to `base`, or replaced by
/// [`HOST_PATH`]. Words are split at spaces: the part of a path after a
/// space in it is left as it is (`docs/security.md` says so).
fn text(message: &str, base: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let lead = word.len()
            - word
                .trim_start_matches(['"', '\'', '(', '[', '`', '='])
                .len();
        let (prefix, rest) = word.split_at(lead);
        match rest.strip_prefix('/') {
            None => out.push_str(word),
            Some(_) => {
                out.push_str(prefix);
                // The whole word is the path, less closing quotes,
                // brackets and punctuation at its end.
                let path = rest.trim_end_matches(['"', '\'', ')', ']', '`', ',', ';', ':', '.']);
                let tail = &rest[path.len()..];
                match relative(path, base) {
                    Some(r) => out.push_str(&r),
                    None => out.push_str(HOST_PATH),
                }
                out.push_str(tail);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use vm_catalog_protocol::{DiagCode, Severity, VmState};

    use super::*;

    fn diag(path: &str, message: &str) -> Diagnostic {
        Diagnostic {
            code: DiagCode::UnsafeSymlink,
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
        }
    }

    #[test]
    fn messages_lose_every_absolute_path() {
        let base = "/src/user/appvm";
        for (message, seen) in [
            ("plain words stay", "plain words stay"),
            (
                "blk/root.img links to /dev/sda, outside /usr/img/",
                "blk/root.img links to [host path], outside [host path]",
            ),
            (
                "cannot open /src/user/appvm/blk: permission denied",
                "cannot open blk: permission denied",
            ),
            ("\"/etc/shadow\" (x)", "\"[host path]\" (x)"),
            ("(/run/vm/x)", "([host path])"),
            ("at /src/user/appvm", "at ."),
            ("a/b is relative", "a/b is relative"),
        ] {
            assert_eq!(text(message, base), seen, "{message}");
        }
        assert_eq!(text("db /var/x/db-3 is live", ""), "db [host path] is live");
    }

    #[test]
    fn diagnostic_paths_become_relative_to_their_definition_or_go() {
        let base = "/src/user/appvm";
        assert_eq!(
            relative("/src/user/appvm/blk/a.img", base).as_deref(),
            Some("blk/a.img")
        );
        assert_eq!(relative("/src/user/appvmx/blk", base), None);
        assert_eq!(relative("/elsewhere", base), None);
        let d = diagnostic(&diag("/dev/sda", "links to /dev/sda"), base);
        assert_eq!(
            (d.path.as_str(), d.message.as_str()),
            ("", "links to [host path]")
        );
    }

    #[test]
    fn a_vm_entry_and_a_source_keep_no_host_path() {
        let e = VmEntry {
            name: "appvm".parse().unwrap(),
            source: "user".parse().unwrap(),
            state: VmState::Active,
            path: "/src/user/appvm".into(),
            view: Some("/run/vm/appvm/config".into()),
            service: Some("vm-appvm".into()),
            providers: Vec::new(),
            diagnostics: vec![diag("/src/user/appvm/blk/x", "x at /src/user/appvm/blk/x")],
            restart_pending: false,
            shadowed_by: None,
            revision: 3,
            fingerprint: Some(9),
            id: None,
        };
        let seen = vm(&e);
        assert_eq!(seen.path, "");
        assert_eq!(seen.view, None);
        assert_eq!(seen.service.as_deref(), Some("vm-appvm"));
        assert_eq!(seen.diagnostics[0].path, "blk/x");
        assert_eq!(seen.diagnostics[0].message, "x at blk/x");
        assert_eq!(
            (seen.name, seen.revision, seen.fingerprint),
            (e.name.clone(), 3, Some(9))
        );
        let encoded = format!(
            "{:?}",
            change(&Change {
                generation: 3,
                kind: vm_catalog_protocol::ChangeKind::Added,
                item: ChangeItem::Vm(e),
            })
        );
        assert!(
            !encoded.contains("/src") && !encoded.contains("/run"),
            "{encoded}"
        );
    }
}
