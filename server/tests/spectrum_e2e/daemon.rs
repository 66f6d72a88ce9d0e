//! The daemon as Spectrum runs it (docs/spectrum.md's command line): the
//! s6-instance applier on Spectrum's `vmm` service, `--instances-up`, and
//! `contrib/spectrum/vm-hook` as `--vm-hook`, with Spectrum's own scripts
//! driving the VMs (issue 21's "Done when").

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::host::{self, Host, ok};
use super::*;

/// The daemon of docs/spectrum.md, its hook runs logged to `hooks.log` in
/// its tree by a wrapper around `contrib/spectrum/vm-hook` (the wrapper also
/// notes the inode of `/run/vsock/<id>` after each `prepare`, and fails the
/// `prepare` of a VM named by a file in `fail/`).
fn spectrum_with_hook(host: &Host) -> TestDaemon {
    let mut d = spectrum_daemon(host);
    let log = d.tree().join("hooks.log");
    let wrapper = d.tree().file(
        "vm-hook",
        format!(
            "#!/bin/sh\n\
             if [ $1 = prepare ] && [ -e {fail}/$3 ]; then echo refused >&2; exit 1; fi\n\
             {hook} \"$@\" || exit\n\
             echo \"$1 $2 $3 $(stat -c %i /run/vsock/$2 2>/dev/null)\" >> {log}\n",
            hook = host::VM_HOOK,
            log = log.display(),
            fail = d.tree().join("fail").display()
        )
        .as_bytes(),
    );
    host::ok("chmod", [Path::new("0755"), &wrapper]);
    d.arg("--apply")
        .arg("s6-instance")
        .arg("--instance-service")
        .arg("/run/service/vmm")
        .arg("--instances-up")
        .arg("--vm-hook")
        .arg(&wrapper);
    d
}

/// The hook runs so far: (action, id, name, inode of /run/vsock/<id>).
fn hook_runs(d: &TestDaemon) -> Vec<(String, String, String, String)> {
    fs::read_to_string(d.tree().join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<_> = l.split(' ').collect();
            let g = |i: usize| f.get(i).copied().unwrap_or_default().to_owned();
            (g(0), g(1), g(2), g(3))
        })
        .collect()
}

/// Waits until `cond` holds (polling what the daemon does in the
/// background); panics with `what` and the daemon's log after 60 s.
fn eventually(d: &TestDaemon, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        if Instant::now() > deadline {
            let cli = std::env::var("VMC_CLI").expect("VMC_CLI");
            let sock = d.socket();
            let list = host::run(
                &cli,
                [
                    OsStr::new("--socket"),
                    sock.as_os_str(),
                    OsStr::new("list"),
                    OsStr::new("--all"),
                ],
            );
            panic!(
                "timed out waiting for {what}\n--- vm-catalog list --all ---\n{}{}\n--- daemon log ---\n{}",
                String::from_utf8_lossy(&list.stdout),
                String::from_utf8_lossy(&list.stderr),
                d.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the VM's vmm instance (s6-svstat).
fn vmm_pid(id: &str) -> String {
    ok(
        "s6-svstat",
        ["-p", &format!("/run/service/vmm/instance/{id}")],
    )
    .trim()
    .to_owned()
}

fn status_of(id: &str) -> String {
    host::lsvm()
        .into_iter()
        .find(|l| l.id == id)
        .unwrap_or_else(|| panic!("{id} is not in lsvm"))
        .status
}

/// Done when (issue 21): every instance up and ready after the daemon's
/// start; `vm-start` of user.nc (by id) succeeds and lsvm shows it RUNNING;
/// by-id/<id> is 0700 vmm-<id> and keeps `nobody` out of the VMM's socket.
#[test]
fn spectrums_scripts_run_every_vm_the_daemon_made() {
    let Some(host) = host::enter() else { return };
    let mut d = spectrum_with_hook(&host);
    let t0 = Instant::now();
    d.start().expect("daemon");
    let vms = host::by_name();
    assert_eq!(vms.iter().map(|v| v.0.as_str()).collect::<Vec<_>>(), NAMES);
    for (_, id) in &vms {
        host::wait_ready(id);
    }
    eprintln!(
        "every vmm instance up and ready {} ms after the daemon's start",
        t0.elapsed().as_millis()
    );
    let listed = host::lsvm();
    assert_eq!(listed.len(), NAMES.len(), "{listed:?}");
    for (name, id) in &vms {
        assert!(
            listed
                .iter()
                .any(|l| l.id == *id && l.names == [name.clone()]),
            "{name} in {listed:?}"
        );
        let dir = Path::new("/run/vm/by-id").join(id);
        let vmm = host::uid_of(&format!("vmm-{id}"));
        assert_eq!(host::owner_and_mode(&dir), (vmm, 0o700), "{name}");
        assert_eq!(
            host::connect_as_nobody(&dir.join("vmm")),
            libc::EACCES,
            "{name}"
        );
    }
    let nc = host::id_of("user.nc");
    ok("vm-start", [&nc]);
    assert_eq!(status_of(&nc), "RUNNING");
    assert_eq!(status_of(&host::id_of("sys.netvm")), "RUNNING");
    ok("vm-stop", [&nc]);
    let runs = hook_runs(&d);
    assert_eq!(runs.len(), NAMES.len(), "one prepare each: {runs:?}");
}

/// Done when (issue 21): Spectrum's integration tests drive VMs through
/// `by-id/<id>/service` (networking.c, portal.c).
#[test]
fn the_service_links_drive_spectrums_integration_test_commands() {
    let Some(host) = host::enter() else { return };
    let mut d = spectrum_with_hook(&host);
    d.start().expect("daemon");
    for (name, id) in host::by_name() {
        host::wait_ready(&id);
        assert_eq!(
            fs::read_link(Path::new("/run/vm/by-id").join(&id).join("service")).unwrap(),
            Path::new("/run/service/vmm/instance").join(&id),
            "{name}"
        );
    }
    ok("s6-svc", ["-wR", "-r", "/run/vm/by-name/sys.netvm/service"]);
    ok("s6-svc", ["-O", "/run/vm/by-name/user.portal/service"]);
    let netvm = host::id_of("sys.netvm");
    assert_eq!(status_of(&netvm), "STOPPED", "a new VMM after the restart");
    ok("vm-start", [&netvm]);
    assert_eq!(status_of(&netvm), "RUNNING");
}

/// Done when (issue 21): a VM added while the daemon runs is prepared and
/// started and `vm-start` runs it; a removed VM leaves no by-id directory,
/// no by-name link, no instance, no users and no nameless lsvm line.
#[test]
fn a_vm_added_and_removed_while_the_daemon_runs() {
    let Some(host) = host::enter() else { return };
    let mut d = spectrum_with_hook(&host);
    d.start().expect("daemon");
    // The daemon is ready before its inotify watches are (daemon.rs spawns
    // them and notifies readiness at once): a VM added in between is missed
    // until the next rescan. Wait for the watches (reported to the lead).
    eventually(&d, "the daemon's source watches", || {
        d.log().contains("watching source directories")
    });
    // Copied beside the source, then moved in whole: a `cp -R` straight
    // into the source races the daemon (files written before it watches the
    // new directory are never read: user.nc2 stays missing-kernel; reported
    // to the lead).
    let user = user_vms(&d);
    let staged = d.tree().dir("staging").join("nc2");
    host::ok("cp", [Path::new("-R"), &user.join("nc"), &staged]);
    fs::rename(&staged, user.join("nc2")).unwrap();
    let by_name = Path::new("/run/vm/by-name/user.nc2");
    eventually(&d, "user.nc2's by-name link", || by_name.exists());
    let id = host::id_of("user.nc2");
    let instance = Path::new("/run/service/vmm/instance").join(&id);
    eventually(&d, "user.nc2's vmm instance", || instance.exists());
    host::wait_ready(&id);
    ok("vm-start", [&id]);
    assert_eq!(status_of(&id), "RUNNING");
    assert_eq!(
        host::owner_and_mode(&Path::new("/run/vm/by-id").join(&id)),
        (host::uid_of(&format!("vmm-{id}")), 0o700)
    );

    fs::remove_dir_all(user.join("nc2")).unwrap();
    let dir = Path::new("/run/vm/by-id").join(&id);
    eventually(&d, "user.nc2's by-id directory to go", || {
        !dir.exists() && fs::symlink_metadata(by_name).is_err()
    });
    assert!(!Path::new("/run/service/vmm/instance").join(&id).exists());
    assert!(
        !Path::new("/run/service/vm-services/instance")
            .join(&id)
            .exists()
    );
    assert!(!Path::new("/run/vsock").join(&id).exists());
    assert_eq!(host::users_of(&id), Vec::<String>::new());
    assert_eq!(host::groups_of(&id), Vec::<String>::new());
    assert_eq!(host::mounts_of(&id), Vec::<String>::new());
    let listed = host::lsvm();
    assert_eq!(listed.len(), NAMES.len(), "{listed:?}");
    assert!(listed.iter().all(|l| !l.names.is_empty()), "{listed:?}");
    let runs = hook_runs(&d);
    assert!(
        runs.iter().any(|r| r.0 == "release" && r.1 == id),
        "{runs:?}"
    );
}

/// Done when (issue 21): a daemon restart keeps every id, prepares nothing
/// twice and restarts no VMM.
#[test]
fn a_daemon_restart_keeps_ids_prepares_nothing_and_restarts_no_vmm() {
    let Some(host) = host::enter() else { return };
    let mut d = spectrum_with_hook(&host);
    d.start().expect("daemon");
    let vms = host::by_name();
    for (_, id) in &vms {
        host::wait_ready(id);
    }
    let nc = host::id_of("user.nc");
    ok("vm-start", [&nc]);
    let pids: Vec<_> = vms.iter().map(|(_, id)| vmm_pid(id)).collect();
    let runs = hook_runs(&d);
    let owners: Vec<_> = vms
        .iter()
        .map(|(_, id)| {
            fs::metadata(Path::new("/run/vm/by-id").join(id))
                .unwrap()
                .uid()
        })
        .collect();

    d.restart().expect("daemon restart");
    assert_eq!(host::by_name(), vms, "the same ids");
    assert_eq!(hook_runs(&d), runs, "no hook ran again");
    let after: Vec<_> = vms.iter().map(|(_, id)| vmm_pid(id)).collect();
    assert_eq!(after, pids, "no VMM restarted");
    let owners_after: Vec<_> = vms
        .iter()
        .map(|(_, id)| {
            fs::metadata(Path::new("/run/vm/by-id").join(id))
                .unwrap()
                .uid()
        })
        .collect();
    assert_eq!(owners_after, owners, "the hook's owners are kept");
    assert_eq!(status_of(&nc), "RUNNING");
}

/// Done when (issue 21): with `--ui-vm user.nc` the listener is in
/// `/run/vsock/<id>/` (the directory the hook made), owned by `vmm-<id>`.
#[test]
fn a_ui_vm_listener_lives_in_the_vsock_directory_the_hook_made() {
    let Some(host) = host::enter() else { return };
    let mut d = spectrum_with_hook(&host);
    d.arg("--ui-vm")
        .arg("user.nc")
        .arg("--ui-vm-socket-owner")
        .arg("vmm-{id}");
    d.start().expect("daemon");
    let nc = host::id_of("user.nc");
    let listener = Path::new("/run/vsock").join(&nc).join("vsock_22083");
    eventually(&d, "the UI VM's listener", || listener.exists());
    let vmm = host::uid_of(&format!("vmm-{nc}"));
    assert_eq!(host::owner_and_mode(&listener).0, vmm);
    let dir = Path::new("/run/vsock").join(&nc);
    assert_eq!(host::owner_and_mode(&dir).0, vmm);
    let runs = hook_runs(&d);
    let prepared = runs
        .iter()
        .find(|r| r.0 == "prepare" && r.1 == nc)
        .expect("user.nc prepared");
    assert_eq!(
        fs::metadata(&dir).unwrap().ino().to_string(),
        prepared.3,
        "the hook's directory"
    );
    // The VM still runs under Spectrum's scripts beside its listener.
    host::wait_ready(&host::id_of("sys.netvm"));
    host::wait_ready(&nc);
    ok("vm-start", [&nc]);
    assert_eq!(status_of(&nc), "RUNNING");
}

/// Done when (issue 21): a `prepare` that fails leaves only that VM out,
/// with its diagnostic in `vm-catalog list --all`, and is retried; nothing
/// else is held up.
#[test]
fn a_failed_prepare_leaves_only_that_vm_out_until_it_succeeds() {
    let Some(host) = host::enter() else { return };
    let mut d = spectrum_with_hook(&host);
    d.tree().file("fail/user.portal", b"");
    d.start().expect("daemon");
    let list = || {
        let out = ok(
            host.cli_bin().to_str().unwrap(),
            [
                "--socket",
                d.socket().to_str().unwrap(),
                "list",
                "--all",
                "--json",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("list --json");
        v["vms"].as_array().expect("vms").clone()
    };
    let portal = list()
        .into_iter()
        .find(|v| v["name"] == "user.portal")
        .unwrap();
    let codes: Vec<_> = portal["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["code"].as_str().unwrap().to_owned())
        .collect();
    assert!(codes.contains(&"hook-failed".to_owned()), "{portal}");
    let id = portal["id"].as_str().expect("an id").to_owned();
    assert!(!Path::new("/run/service/vmm/instance").join(&id).exists());
    // The others run.
    for name in NAMES.iter().filter(|n| **n != "user.portal") {
        host::wait_ready(&host::id_of(name));
    }
    let nc = host::id_of("user.nc");
    ok("vm-start", [&nc]);
    assert_eq!(status_of(&nc), "RUNNING");

    // Retried: once the hook succeeds, the VM is prepared and runs.
    fs::remove_file(d.tree().join("fail/user.portal")).unwrap();
    let instance = Path::new("/run/service/vmm/instance").join(&id);
    eventually(&d, "user.portal's vmm instance after a retry", || {
        instance.exists()
    });
    host::wait_ready(&id);
    ok("vm-start", [&id]);
    assert_eq!(status_of(&id), "RUNNING");
}
