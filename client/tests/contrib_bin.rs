//! `contrib/bin`'s `vm-start`, `vm-stop` and `lsvm` against the real daemon,
//! under a real s6-svscan, with either applier.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{cli, daemon, run, stdout};

/// `contrib/bin/vm-start` resolves the VM through the catalog and brings up
/// its service (its provider first) with s6-rc, under a real s6-svscan.
#[test]
fn vm_start_brings_a_vm_service_up() {
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib");
    let Some(_) = vm_catalog_tests::require_tool("s6-svscan") else {
        return;
    };
    let mut d = daemon();
    let path_with = |extra: &Path| {
        let bin_dir = cli().parent().unwrap().to_owned();
        std::env::join_paths(
            [bin_dir, extra.to_owned()]
                .into_iter()
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap()
    };
    // Without s6-rc: vm-start still refuses an unknown VM before s6-rc runs.
    let Some(s6rc) = vm_catalog_tests::s6rc_bindir() else {
        d.start().unwrap();
        let o = Command::new(contrib.join("bin/vm-start"))
            .arg("nosuch")
            .env("VM_CATALOG_SOCKET", d.socket())
            .env("PATH", path_with(Path::new("/nonexistent")))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "{o:?}");
        vm_catalog_tests::skip("s6-rc not installed: vm-start checked only for an unknown VM");
        return;
    };
    let scandir = d.tree().dir("scan");
    let svscan = vm_catalog_tests::s6::Svscan::start(&scandir, 100).unwrap();
    let live = d.tree().join("live");
    d.arg("--apply")
        .arg("s6-rc")
        .arg("--s6rc-bindir")
        .arg(&s6rc);
    d.arg("--live")
        .arg(&live)
        .arg("--scandir")
        .arg(svscan.scandir());
    d.arg("--start-command")
        .arg(contrib.join("examples/start-vmm"));
    d.start().unwrap();
    let vm_start = |name: &str| {
        Command::new(contrib.join("bin/vm-start"))
            .arg(name)
            .env("VM_CATALOG_SOCKET", d.socket())
            .env("VM_CATALOG_LIVE", &live)
            .env("PATH", path_with(&s6rc))
            .output()
            .unwrap()
    };
    let o = vm_start("appvm");
    assert!(o.status.success(), "{o:?}\n{}", d.log());
    // appvm is up, and its provider netvm came up first.
    let up = Command::new(s6rc.join("s6-rc"))
        .arg("-l")
        .arg(&live)
        .args(["-a", "list"])
        .output()
        .unwrap();
    let up = stdout(&up);
    assert!(
        up.lines().any(|l| l == "appvm") && up.lines().any(|l| l == "netvm"),
        "{up}"
    );
    let status = Command::new("s6-svstat")
        .arg(scandir.join("vm-appvm"))
        .output()
        .unwrap();
    assert!(stdout(&status).starts_with("up"), "{status:?}");
    // Unknown and rejected VMs: exit 3 with the reason.
    let o = vm_start("nosuch");
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let o = vm_start("broken");
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing-kernel"),
        "{o:?}"
    );
    // vm-stop takes it down again.
    let o = Command::new(contrib.join("bin/vm-stop"))
        .arg("appvm")
        .env("VM_CATALOG_LIVE", &live)
        .env("PATH", path_with(&s6rc))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let status = Command::new("s6-svstat")
        .arg(scandir.join("vm-appvm"))
        .output()
        .unwrap();
    assert!(stdout(&status).starts_with("down"), "{status:?}");
    drop(d);
    drop(svscan);
}

#[test]
fn lsvm_lists_through_the_cli() {
    let Some(_) = vm_catalog_tests::require_tool("execlineb") else {
        return;
    };
    let mut d = daemon();
    d.start().unwrap();
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib");
    let bin_dir = cli().parent().unwrap().to_owned();
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let o = Command::new(contrib.join("bin/lsvm"))
        .arg("--all")
        .env("VM_CATALOG_SOCKET", d.socket())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("broken"), "{o:?}");
}

/// `contrib/bin/vm-start` and `vm-stop` with `--apply s6-instance`: the VM
/// and its provider are instances (named by id in the spectrum layout),
/// started providers first and stopped again, under a real s6-svscan.
#[test]
fn vm_start_and_vm_stop_work_with_s6_instances() {
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib");
    for tool in ["s6-svscan", "s6-instance-maker", "s6-instance-control"] {
        let Some(_) = vm_catalog_tests::require_tool(tool) else {
            return;
        };
    }
    let mut d = daemon();
    let scandir = d.tree().dir("scan");
    let service = scandir.join("vmm");
    let made = Command::new("s6-instance-maker")
        .arg(contrib.join("examples/vmm/template"))
        .arg(&service)
        .status()
        .unwrap();
    assert!(made.success());
    // The instances' run scripts read VM_START_COMMAND.
    let start_vmm = contrib.join("examples/start-vmm");
    let svscan = vm_catalog_tests::s6::Svscan::start_with_env(
        &scandir,
        100,
        &[("VM_START_COMMAND", &start_vmm)],
    )
    .unwrap();
    assert!(vm_catalog_tests::s6::wait_for(
        Duration::from_secs(60),
        || { vm_catalog_tests::s6::scanner_listens(&service.join("instance")) }
    ));
    d.arg("--apply")
        .arg("s6-instance")
        .arg("--instance-service")
        .arg(&service)
        .arg("--vm-layout")
        .arg("spectrum");
    d.start().unwrap();
    let path = std::env::join_paths(
        std::iter::once(cli().parent().unwrap().to_owned())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let script = |name: &str, arg: &str| {
        Command::new(contrib.join("bin").join(name))
            .arg(arg)
            .env("VM_CATALOG_SOCKET", d.socket())
            .env("VM_CATALOG_INSTANCES", &service)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let ids = |name: &str| stdout(&run(&d, &["resolve", name])).trim().to_owned();
    let (app, net) = (ids("appvm"), ids("netvm"));
    assert_eq!(
        stdout(&run(&d, &["resolve", "--with-providers", "appvm"])),
        format!("{net}\n{app}\n"),
        "the provider first"
    );
    let pid = |id: &str| vm_catalog_tests::s6::instance_pid(&service, id);
    assert_eq!((pid(&app), pid(&net)), (None, None), "created down");
    let o = script("vm-start", "appvm");
    assert!(o.status.success(), "{o:?}\n{}", d.log());
    assert!(pid(&app).is_some() && pid(&net).is_some(), "both up");
    let o = script("vm-stop", "appvm");
    assert!(o.status.success(), "{o:?}");
    assert!(vm_catalog_tests::s6::wait_for(
        Duration::from_secs(60),
        || pid(&app).is_none()
    ));
    assert!(pid(&net).is_some(), "its provider keeps running");
    let o = script("vm-start", "broken");
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let lsvm = script("lsvm", "--json");
    assert!(
        stdout(&lsvm).contains(&format!("\"service\":\"{app}\"")),
        "{lsvm:?}"
    );
    drop(svscan);
    drop(d);
}
