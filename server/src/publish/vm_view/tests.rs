use vm_catalog_protocol::records::{self, RECORD_BUDGET};
use vm_catalog_protocol::{
    ApplyStatus, ChangeKind, Cursor, DiagCode, Epoch, RescanTrigger, Severity, SourceKind,
    SourceState, SourceSummary, Trust, VmState,
};

use super::*;

/// A host directory with a name nobody else has: no piece of it may reach
/// a VM.
const ROOT: &str = "/tmp/.tmpQz7Vx9/Jq4kPz/Wv8yXr-3";

fn diag(code: DiagCode, path: &str, message: &str) -> Diagnostic {
    Diagnostic {
        code,
        severity: Severity::Error,
        path: path.into(),
        message: message.into(),
    }
}

/// A tool's stderr, full of host paths, cut to its last `n` bytes (as the
/// applier keeps them): cut anywhere, even inside a path.
fn stderr_tail(n: usize) -> String {
    let full = format!(
        "s6-rc-compile: fatal: unable to read {ROOT}/source/vm-x/run: No such file \
         or directory\nwhile in {ROOT} (cwd ../../{ROOT}) -> relative ../.tmpQz7Vx9/db"
    );
    full[full.len() - n.min(full.len())..].to_owned()
}

/// Every piece of [`ROOT`] of 4 bytes or more, as it could appear cut.
fn pieces() -> Vec<&'static str> {
    let mut out = Vec::new();
    for part in ROOT.split('/').filter(|p| p.len() >= 4) {
        for start in 0..=part.len() - 4 {
            out.push(&part[start..start + 4]);
        }
    }
    out
}

fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for p in pieces() {
        assert!(
            !text.contains(p),
            "{what}: {p:?} reached the VM in {text:?}"
        );
    }
}

fn entry(message: &str) -> VmEntry {
    VmEntry {
        name: "appvm".parse().unwrap(),
        source: "user".parse().unwrap(),
        state: VmState::Rejected,
        path: format!("{ROOT}/appvm"),
        view: Some(format!("{ROOT}/run/appvm/config")),
        service: Some("vm-appvm".into()),
        providers: Vec::new(),
        diagnostics: vec![
            diag(
                DiagCode::UnsafeSymlink,
                &format!("{ROOT}/appvm/blk/root.img"),
                &format!("symlink target \"../../..{ROOT}\" {message}"),
            ),
            diag(
                DiagCode::ServiceConflict,
                &format!("{ROOT}/scan/vm-appvm"),
                message,
            ),
            diag(
                DiagCode::IoError,
                &format!("{ROOT}/appvm/../../etc"),
                message,
            ),
        ],
        restart_pending: false,
        shadowed_by: None,
        revision: 3,
        fingerprint: Some(9),
        id: None,
    }
}

fn apply_outcome(message: &str) -> ApplyOutcome {
    ApplyOutcome {
        status: ApplyStatus::FailedBeforeSwitch,
        generation: 4,
        database: Some(format!("{ROOT}/db")),
        services: 2,
        duration_us: 10,
        message: message.into(),
    }
}

/// Regression: a tool's stderr cut inside a path, and a relative link
/// target, reached a UI VM (only words starting with `/` were replaced).
#[test]
fn no_byte_of_a_host_path_reaches_a_vm_whatever_a_tool_prints() {
    for n in 0..=stderr_tail(usize::MAX).len() {
        let message = stderr_tail(n);
        let e = vm(&entry(&message));
        assert_clean("an entry", &records::encode_vm(&e, RECORD_BUDGET));
        let s = source(&SourceEntry {
            label: "user".parse().unwrap(),
            kind: SourceKind::Directory,
            trust: Trust::Untrusted,
            path: ROOT.into(),
            device: Some(format!("{ROOT}/dev")),
            partuuid: None,
            state: SourceState::Failed,
            read_only: false,
            precedence: 1,
            definitions: 0,
            diagnostics: vec![diag(DiagCode::IoError, ROOT, &message)],
            revision: 1,
        });
        assert_clean("a source", &records::encode_source(&s, RECORD_BUDGET));
        let c = change(&Change {
            generation: 3,
            kind: ChangeKind::Added,
            item: ChangeItem::Vm(entry(&message)),
        });
        for body in records::batch_bodies(3, &[c]) {
            assert_clean("a change", &body);
        }
        let i = info(&host_info(&message));
        assert_clean("GetInfo", &vm_catalog_protocol::codec::encode(&i).unwrap());
    }
}

#[test]
fn a_vm_reads_codes_and_the_paths_inside_its_definition() {
    let e = vm(&entry("anything"));
    assert_eq!((e.path.as_str(), e.view.as_deref()), ("", None));
    let seen: Vec<_> = e
        .diagnostics
        .iter()
        .map(|d| (d.code, d.path.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (DiagCode::UnsafeSymlink, "blk/root.img", "unsafe-symlink"),
            (DiagCode::ServiceConflict, "", "service-conflict"),
            (DiagCode::IoError, "", "io-error"),
        ]
    );
    assert_eq!(inside(ROOT, ROOT).as_deref(), Some("."));
    assert_eq!(inside(&format!("{ROOT}x/a"), ROOT), None);
    assert_eq!(inside("/elsewhere", ""), None);
    // Everything else is as the host sees it.
    let host = entry("anything");
    assert_eq!(
        (
            e.name,
            e.source,
            e.state,
            e.service,
            e.revision,
            e.fingerprint
        ),
        (
            host.name,
            host.source,
            host.state,
            host.service,
            host.revision,
            host.fingerprint
        )
    );
}

fn host_info(message: &str) -> Info {
    Info {
        server_version: "vm-catalogd 1".into(),
        protocol_version: 1,
        cursor: Cursor {
            epoch: Epoch(7),
            generation: 4,
        },
        applied_generation: 3,
        applier: "s6-rc".into(),
        active_vms: 2,
        definitions: 3,
        sources: vec![SourceSummary {
            label: "user".parse().unwrap(),
            kind: SourceKind::Directory,
            state: SourceState::Ready,
            definitions: 3,
            diagnostics: vec![DiagCode::IoError],
        }],
        last_rescan: Some(RescanOutcome {
            trigger: RescanTrigger::Watch,
            dry_run: false,
            generation_before: 3,
            generation: 4,
            changes: 1,
            started_unix_ms: 5,
            duration_us: 6,
            apply: apply_outcome(message),
        }),
        last_apply: Some(apply_outcome(message)),
        connections: 17,
        subscribers: 5,
        started_unix_ms: 1,
    }
}

/// Regression: `GetInfo` gave a UI VM the host's live connection and
/// subscriber counts.
#[test]
fn get_info_for_a_vm_has_the_catalog_and_no_host_activity() {
    let host = host_info("failed");
    let seen = info(&host);
    assert_eq!((seen.connections, seen.subscribers), (0, 0));
    let apply = seen.last_apply.as_ref().unwrap();
    assert_eq!(
        (apply.database.as_deref(), apply.message.as_str()),
        (None, "failed-before-switch")
    );
    assert_eq!(seen.last_rescan.unwrap().apply, *apply);
    assert_eq!(
        (seen.cursor, seen.active_vms, seen.sources),
        (host.cursor, host.active_vms, host.sources)
    );
}
