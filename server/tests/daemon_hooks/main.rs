//! Per-VM hooks (`--vm-hook`, issue 21) through the real `vm-catalogd`
//! binary: `prepare` once a VM's view exists and before its service,
//! `release` after its service is gone and before its directory goes, with
//! the VM's facts in the environment; a failed or hung `prepare` leaves out
//! only its VM (with `hook-failed` in `vm-catalog list --all`) and is
//! retried on the retry schedule; a restart prepares nothing twice; a dry
//! run runs no hook. `instances.rs` and `s6rc.rs`: the same with the
//! s6-instance applier and with the s6-rc applier on a real `s6-svscan`.

mod instances;
mod s6rc;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vm_catalog_tests::daemon::{TestDaemon, workspace_bin};

fn daemon() -> TestDaemon {
    TestDaemon::new(env!("CARGO_BIN_EXE_vm-catalogd"))
}

/// Writes the hook `dir/hook`: it appends `ACTION ID NAME` and its
/// environment to `dir/log` (one line), checks that the VM's view exists
/// (`prepare`) and its directory too (`release`), then runs `body`.
fn hook(dir: &Path, body: &str) -> PathBuf {
    let program = dir.join("hook");
    let log = dir.join("log");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\n\
             echo \"$1 $2 $3 | VM_ID=$VM_ID VM_NAME=$VM_NAME VM_SOURCE=$VM_SOURCE \
             VM_SOURCE_ROOT=$VM_SOURCE_ROOT VM_PATH=$VM_PATH VM_DIR=$VM_DIR VM_VIEW=$VM_VIEW\" >> {log}\n\
             [ \"$1\" = prepare ] && ! [ -e \"$VM_VIEW/vmlinux\" ] && {{ echo no view >&2; exit 9; }}\n\
             [ \"$1\" = release ] && ! [ -d \"$VM_DIR\" ] && {{ echo no dir >&2; exit 9; }}\n\
             {body}\n\
             exit 0\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program
}

/// The hook's log: `ACTION ID NAME` of each call, in order.
fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(" | ").next().unwrap().to_owned())
        .collect()
}

/// `vm-catalog ARGS --json`, parsed.
fn cli_json(d: &TestDaemon, args: &[&str]) -> serde_json::Value {
    let out = Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Vm {
    id: String,
    state: String,
    service: Option<String>,
    codes: Vec<String>,
}

/// `vm-catalog list --all --json`: name → what the tests look at.
fn list(d: &TestDaemon) -> BTreeMap<String, Vm> {
    let v = cli_json(d, &["list", "--all"]);
    v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                Vm {
                    id: e["id"].as_str().unwrap_or_default().to_owned(),
                    state: e["state"].as_str().unwrap().to_owned(),
                    service: e["service"].as_str().map(str::to_owned),
                    codes: e["diagnostics"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d["code"].as_str().unwrap().to_owned())
                        .collect(),
                },
            )
        })
        .collect()
}

fn rescan(d: &TestDaemon, dry: bool) {
    let mut c = Command::new(workspace_bin("vm-catalog"));
    c.arg("--socket").arg(d.socket()).arg("rescan");
    if dry {
        c.arg("--dry-run");
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Waits until `cond` holds, at most 60 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn prepare_and_release_run_once_per_vm_with_its_facts_and_a_restart_prepares_nothing_twice() {
    let hooks = tempfile::tempdir().unwrap();
    let mut d = daemon();
    d.builtin_vm("netvm");
    d.user_vm("app");
    d.user_vm("gone");
    d.arg("--vm-layout").arg("spectrum").arg("--no-watch");
    d.arg("--vm-hook").arg(hook(hooks.path(), ""));
    d.start().unwrap();
    let vms = list(&d);
    let id = |n: &str| vms[n].id.clone();
    let mut got = calls(hooks.path());
    got.sort();
    let mut want: Vec<String> = ["app", "gone", "netvm"]
        .iter()
        .map(|n| format!("prepare {} {n}", id(n)))
        .collect();
    want.sort();
    assert_eq!(got, want);
    for v in vms.values() {
        assert_eq!(v.state, "active");
        assert!(v.codes.is_empty(), "{vms:?}");
    }
    let log = std::fs::read_to_string(hooks.path().join("log")).unwrap();
    let app_dir = d.vm_dir().join("by-id").join(id("app"));
    assert!(
        log.contains(&format!(
            "prepare {app} app | VM_ID={app} VM_NAME=app VM_SOURCE=user VM_SOURCE_ROOT={root} \
             VM_PATH={root}/app VM_DIR={dir} VM_VIEW={dir}/config",
            app = id("app"),
            root = d.user().display(),
            dir = app_dir.display(),
        )),
        "{log}"
    );
    // A dry run runs no hook, even for a new VM.
    d.user_vm("later");
    rescan(&d, true);
    assert_eq!(calls(hooks.path()).len(), 3);
    // A rescan prepares the new VM only; a VM that left is released, and
    // its directory goes after.
    let gone_dir = d.vm_dir().join("by-id").join(id("gone"));
    std::fs::remove_dir_all(d.user().join("gone")).unwrap();
    rescan(&d, false);
    let later = list(&d)["later"].id.clone();
    assert_eq!(
        calls(hooks.path())[3..],
        [
            format!("prepare {later} later"),
            format!("release {} gone", id("gone"))
        ]
    );
    assert!(!gone_dir.exists());
    // A restart prepares nothing again.
    d.restart().unwrap();
    rescan(&d, false);
    assert_eq!(calls(hooks.path()).len(), 5, "{:?}", calls(hooks.path()));
    assert!(list(&d).values().all(|v| v.codes.is_empty()));
    // A VM that left while the daemon was down is released at its start.
    d.stop();
    std::fs::remove_dir_all(d.user().join("later")).unwrap();
    d.start().unwrap();
    assert_eq!(calls(hooks.path())[5..], [format!("release {later} later")]);
    assert!(!d.vm_dir().join("by-id").join(&later).exists());
}

#[test]
fn a_failed_or_hung_prepare_leaves_only_its_vm_out_and_is_retried() {
    let hooks = tempfile::tempdir().unwrap();
    let fail = hooks.path().join("fail");
    let hang = hooks.path().join("hang");
    std::fs::write(&fail, b"").unwrap();
    std::fs::write(&hang, b"").unwrap();
    let body = format!(
        "[ \"$1 $3\" = 'prepare bad' ] && [ -e {fail} ] && {{ echo no users for you >&2; exit 1; }}\n\
         [ \"$1 $3\" = 'prepare slow' ] && [ -e {hang} ] && exec sleep 1000",
        fail = fail.display(),
        hang = hang.display()
    );
    let mut d = daemon();
    d.user_vm("bad");
    d.user_vm("slow");
    d.user_vm("good");
    d.user_vm("dependant");
    d.tree().provider("user", "dependant", "bad");
    d.arg("--no-watch");
    d.arg("--vm-hook")
        .arg(hook(hooks.path(), &body))
        .arg("--vm-hook-timeout")
        .arg("1");
    d.start().unwrap();
    let vms = list(&d);
    assert_eq!(vms["good"].codes, Vec::<String>::new(), "{vms:?}");
    assert_eq!(vms["bad"].codes, ["hook-failed"], "{vms:?}");
    assert_eq!(vms["slow"].codes, ["hook-failed"], "{vms:?}");
    assert_eq!(vms["dependant"].codes, ["provider-unavailable"], "{vms:?}");
    for v in vms.values() {
        assert_eq!(v.state, "active", "left out, not rejected: {vms:?}");
    }
    // The message says why, as `vm-catalog list --all` shows it.
    let out = Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .args(["show", "slow"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("did not finish within 1 s"), "{text}");
    let out = Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .args(["list", "--all"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hook-failed"), "{text}");
    // Retried by the daemon itself (no watch, no request): once the hook
    // works, every VM is prepared, and nothing is prepared twice.
    std::fs::remove_file(&fail).unwrap();
    std::fs::remove_file(&hang).unwrap();
    eventually("the retry", || {
        list(&d).values().all(|v| v.codes.is_empty())
    });
    let prepared: Vec<String> = calls(hooks.path())
        .into_iter()
        .filter(|c| c.starts_with("prepare"))
        .map(|c| c.rsplit(' ').next().unwrap().to_owned())
        .collect();
    for (name, times) in [("good", 1), ("dependant", 1)] {
        assert_eq!(
            prepared.iter().filter(|n| *n == name).count(),
            times,
            "{prepared:?}"
        );
    }
    assert!(prepared.iter().filter(|n| *n == "bad").count() >= 2);
}

#[test]
fn a_vm_hook_that_is_not_an_executable_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon();
    d.arg("--vm-hook").arg(dir.path().join("nothing"));
    assert!(d.start().is_err());
}

/// The by-id directory protects the VMM's API socket: made `0700`; the
/// owner and mode a hook gives it are kept across rescans, rebuilt views
/// and restarts (the view stays readable); a VM that goes takes its
/// directory with it, Spectrum's leftover `vmm` and `vmm.lock` sockets
/// included, but nothing a link in it points at.
#[test]
fn the_by_id_directory_is_private_keeps_what_the_hook_set_and_goes_whole() {
    use std::os::unix::fs::MetadataExt;
    let hooks = tempfile::tempdir().unwrap();
    let body = "[ \"$1\" = prepare ] && [ \"$3\" = app ] && chown 65534 \"$VM_DIR\" && chmod 0750 \"$VM_DIR\"";
    let mut d = daemon();
    d.user_vm("app");
    d.user_vm("other");
    d.arg("--vm-layout").arg("spectrum").arg("--no-watch");
    d.arg("--vm-hook").arg(hook(hooks.path(), body));
    d.start().unwrap();
    let vms = list(&d);
    let vm_dir = d.vm_dir();
    let dir = |n: &str| vm_dir.join("by-id").join(&vms[n].id);
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&dir("other")), 0o700, "made private");
    let owned = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.mode() & 0o7777)
    };
    if !vm_catalog_tests::is_root() {
        vm_catalog_tests::skip("chown in the hook needs root");
        return;
    }
    assert_eq!(owned(&dir("app")), (65534, 0o750));
    // The view changes (a new disk): rebuilt, the directory untouched.
    std::fs::write(d.user().join("app/blk/extra.img"), b"x").unwrap();
    rescan(&d, false);
    let config = dir("app").join("config");
    assert!(std::fs::read_link(config.join("blk/extra.img")).is_ok());
    assert_eq!(owned(&dir("app")), (65534, 0o750));
    assert_eq!(mode(&config), 0o755, "the view stays readable");
    d.restart().unwrap();
    assert_eq!(owned(&dir("app")), (65534, 0o750));
    // What Spectrum leaves in it: the VMM's sockets, and more.
    let app_dir = dir("app");
    let _vmm = std::os::unix::net::UnixListener::bind(app_dir.join("vmm")).unwrap();
    std::fs::write(app_dir.join("vmm.lock"), b"").unwrap();
    std::fs::create_dir_all(app_dir.join("ns/deep")).unwrap();
    let outside = hooks.path().join("precious");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("file"), b"keep").unwrap();
    std::os::unix::fs::symlink(&outside, app_dir.join("ns/escape")).unwrap();
    std::fs::remove_dir_all(d.user().join("app")).unwrap();
    rescan(&d, false);
    assert!(!app_dir.exists(), "the by-id directory went whole");
    assert!(
        outside.join("file").exists(),
        "nothing outside it was touched"
    );
    assert!(dir("other").exists());
}

/// A `release` that fails keeps the VM's directory, and is tried again by
/// the daemon itself until it succeeds; then the directory goes.
#[test]
fn a_failed_release_keeps_the_directory_until_a_retry_succeeds() {
    let hooks = tempfile::tempdir().unwrap();
    let fail = hooks.path().join("fail");
    let body = format!(
        "[ \"$1\" = release ] && [ -e {} ] && {{ echo busy >&2; exit 1; }}",
        fail.display()
    );
    let mut d = daemon();
    d.user_vm("app");
    d.arg("--vm-layout").arg("spectrum").arg("--no-watch");
    d.arg("--vm-hook").arg(hook(hooks.path(), &body));
    d.start().unwrap();
    let id = list(&d)["app"].id.clone();
    let dir = d.vm_dir().join("by-id").join(&id);
    std::fs::write(&fail, b"").unwrap();
    std::fs::remove_dir_all(d.user().join("app")).unwrap();
    rescan(&d, false);
    assert!(list(&d).is_empty());
    assert!(dir.exists(), "kept while its release fails");
    assert!(
        d.log().contains("release hook failed") || d.log().contains("release hook exited"),
        "{}",
        d.log()
    );
    std::fs::remove_file(&fail).unwrap();
    eventually("the retried release", || !dir.exists());
    let releases = calls(hooks.path())
        .into_iter()
        .filter(|c| c.starts_with("release"))
        .count();
    assert!(releases >= 2, "{:?}", calls(hooks.path()));
}
