//! `contrib/guest/s6-rc`, the UI VM's service that runs `vm-catalog --vsock
//! PORT watch --json`: it compiles with the real s6-rc-compile, and its run
//! script, under the real execline and s6-envdir, runs `vm-catalog` with
//! the port of its `env/`. `vm-catalog` is a stand-in that prints its
//! arguments: nothing may connect to this machine's vsock.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use vm_catalog_protocol::stream::DEFAULT_VSOCK_PORT;
use vm_catalog_tests::{require_s6rc, require_tool};

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/guest/s6-rc")
}

#[test]
fn the_guest_service_compiles_with_its_logger() {
    let Some(bindir) = require_s6rc() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("compiled");
    let o = Command::new(bindir.join("s6-rc-compile"))
        .arg(&db)
        .arg(source())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let o = Command::new(bindir.join("s6-rc-db"))
        .args(["-c"])
        .arg(&db)
        .args(["all-dependencies", "vm-catalog-watch"])
        .output()
        .unwrap();
    let deps = String::from_utf8(o.stdout).unwrap();
    assert!(deps.lines().any(|l| l == "vm-catalog-watch-log"), "{deps}");
}

/// What the run script of a copy of the service, with `port` in its
/// `env/` (or none), passes to `vm-catalog`.
fn run_script_args(port: Option<&str>) -> Option<String> {
    require_tool("execlineb")?;
    require_tool("s6-envdir")?;
    let tmp = tempfile::tempdir().unwrap();
    let svc = tmp.path().join("vm-catalog-watch");
    fs::create_dir_all(svc.join("env")).unwrap();
    fs::copy(source().join("vm-catalog-watch/run"), svc.join("run")).unwrap();
    if let Some(port) = port {
        fs::write(svc.join("env/VM_CATALOG_VSOCK_PORT"), port).unwrap();
    }
    let bin = tmp.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let stub = bin.join("vm-catalog");
    fs::write(&stub, "#!/bin/sh\necho \"$@\"\n").unwrap();
    fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = Command::new(svc.join("run"))
        .current_dir(&svc)
        .env("PATH", path)
        .env_remove("VM_CATALOG_VSOCK_PORT")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    Some(String::from_utf8(o.stdout).unwrap())
}

#[test]
fn the_guest_service_watches_over_vsock_on_the_port_of_its_env() {
    let shipped =
        fs::read_to_string(source().join("vm-catalog-watch/env/VM_CATALOG_VSOCK_PORT")).unwrap();
    assert_eq!(shipped.trim(), DEFAULT_VSOCK_PORT.to_string());
    let Some(args) = run_script_args(Some(&shipped)) else {
        return;
    };
    assert_eq!(args, format!("--vsock {DEFAULT_VSOCK_PORT} watch --json\n"));
    let Some(args) = run_script_args(Some("5000\n")) else {
        return;
    };
    assert_eq!(args, "--vsock 5000 watch --json\n");
    let Some(args) = run_script_args(None) else {
        return;
    };
    assert_eq!(
        args,
        format!("--vsock {DEFAULT_VSOCK_PORT} watch --json\n"),
        "the default"
    );
}
