//! The real `vm-catalogd` binary with `--apply s6-instance` on a real
//! `s6-svscan` and a templated service made by `s6-instance-maker`:
//! instances appear (named by id in the spectrum layout, shown in `list
//! --json`'s `service`), are adopted after a daemon restart with their pids
//! unchanged, go when their VM goes; an unrelated running instance is never
//! restarted; a failed create is reported and retried by the daemon itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vm_catalog_tests::daemon::{TestDaemon, workspace_bin};
use vm_catalog_tests::s6::{self, InstanceScan, wait_for};

/// A scan directory with the templated service `vmm`, supervised, and a
/// `bin/` whose `s6-instance-create` the tests can make fail.
pub(crate) struct Host {
    pub(crate) service: PathBuf,
    bin: PathBuf,
    root: PathBuf,
    _scan: InstanceScan,
}

impl Host {
    pub(crate) fn new() -> Option<Host> {
        let scan = InstanceScan::start(|root| wrap_create(root, &root.join("bin")))?;
        Some(Host {
            service: scan.service.clone(),
            bin: scan.root.join("bin"),
            root: scan.root.clone(),
            _scan: scan,
        })
    }

    pub(crate) fn daemon(&self) -> TestDaemon {
        let mut d = TestDaemon::new(env!("CARGO_BIN_EXE_vm-catalogd"));
        d.arg("--no-partitions")
            .arg("--apply")
            .arg("s6-instance")
            .arg("--instance-service")
            .arg(&self.service)
            .arg("--instance-bindir")
            .arg(&self.bin)
            .arg("--vm-layout")
            .arg("spectrum");
        d
    }

    pub(crate) fn pid(&self, name: &str) -> Option<u32> {
        s6::instance_pid(&self.service, name)
    }

    fn tool(&self, program: &str, flags: &[&str], name: &str) {
        let out = Command::new(program)
            .args(flags)
            .arg(&self.service)
            .arg(name)
            .output()
            .unwrap();
        assert!(out.status.success(), "{program}: {out:?}");
    }
}

/// `BIN/s6-instance-*`: the real programs, but `s6-instance-create` fails
/// once with exit 111 while `ROOT/fail-create` exists (removing it).
fn wrap_create(root: &Path, bin: &Path) {
    std::fs::create_dir(bin).unwrap();
    for p in [
        "s6-instance-create",
        "s6-instance-delete",
        "s6-instance-list",
        "s6-instance-status",
        "s6-instance-control",
    ] {
        let real = vm_catalog_tests::which(p).unwrap();
        let fault = if p == "s6-instance-create" {
            format!(
                "if [ -e {r}/fail-create ]; then rm {r}/fail-create; echo '{p}: fatal: injected' >&2; exit 111; fi\n",
                r = root.display()
            )
        } else {
            String::new()
        };
        let path = bin.join(p);
        std::fs::write(
            &path,
            format!("#!/bin/sh\n{fault}exec {} \"$@\"\n", real.display()),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
}

/// `vm-catalog list --json`: VM name → (id, service).
pub(crate) fn services(d: &TestDaemon) -> BTreeMap<String, (String, Option<String>)> {
    let out = Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                (
                    e["id"].as_str().unwrap_or_default().to_owned(),
                    e["service"].as_str().map(str::to_owned),
                ),
            )
        })
        .collect()
}

fn rescan(d: &TestDaemon) -> String {
    let out = Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .arg("rescan")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn daemon_runs_vms_as_instances_adopts_them_and_deletes_them_with_their_vm() {
    let Some(h) = Host::new() else { return };
    h.tool("s6-instance-create", &[], "someone");
    assert!(wait_for(Duration::from_secs(10), || h
        .pid("someone")
        .is_some()));
    let other = h.pid("someone").unwrap();
    let mut d = h.daemon();
    d.builtin_vm("netvm");
    d.user_vm("app");
    d.start().unwrap();
    let s = services(&d);
    let (net_id, net_service) = &s["netvm"];
    let (app_id, app_service) = &s["app"];
    assert_eq!(net_service.as_deref(), Some(net_id.as_str()), "{s:?}");
    assert_eq!(app_service.as_deref(), Some(app_id.as_str()), "{s:?}");
    let mut want = vec![net_id.clone(), app_id.clone(), "someone".into()];
    want.sort();
    assert_eq!(s6::instances(&h.service), want);
    assert_eq!(h.pid(app_id), None, "created down");
    assert!(
        d.log()
            .contains("not made by vm-catalogd, left alone: someone"),
        "{}",
        d.log()
    );

    // A user starts app; the daemon restarts and adopts it.
    h.tool("s6-instance-control", &["-u"], app_id);
    assert!(wait_for(Duration::from_secs(10), || h
        .pid(app_id)
        .is_some()));
    let pid = h.pid(app_id).unwrap();
    d.restart().unwrap();
    assert_eq!(services(&d), s, "the same instances after the restart");
    assert_eq!(h.pid(app_id), Some(pid), "the running instance was adopted");

    // app goes: its instance is deleted and its VMM stopped.
    std::fs::remove_dir_all(d.user().join("app")).unwrap();
    rescan(&d);
    assert!(wait_for(Duration::from_secs(30), || !s6::instances(
        &h.service
    )
    .contains(app_id)));
    assert!(wait_for(Duration::from_secs(10), || !s6::alive(pid)));
    assert!(!services(&d).contains_key("app"));
    assert_eq!(h.pid("someone"), Some(other), "never restarted");
    assert!(s6::instances(&h.service).contains(&"someone".to_owned()));
    d.stop();
}

#[test]
fn daemon_reports_a_failed_create_and_retries_it() {
    let Some(h) = Host::new() else { return };
    let mut d = h.daemon();
    // No watches: only the rescan asked for below, then the retry schedule.
    d.arg("--no-watch");
    d.start().unwrap();
    std::fs::write(h.root.join("fail-create"), "").unwrap();
    d.user_vm("app");
    let out = rescan(&d);
    assert!(
        out.contains("failed-after-switch") || out.contains("failed-before-switch"),
        "{out}"
    );
    assert!(out.contains("creating instance"), "{out}");
    assert!(services(&d)["app"].1.is_none(), "no service yet");
    // The daemon's retry schedule tries again by itself.
    assert!(
        wait_for(Duration::from_secs(60), || services(&d)
            .get("app")
            .is_some_and(|(_, s)| s.is_some())),
        "{}",
        d.log()
    );
    let (id, _) = &services(&d)["app"];
    assert!(s6::instances(&h.service).contains(id));
    assert!(d.log().contains("injected"), "the failure was reported");
    d.stop();
}
