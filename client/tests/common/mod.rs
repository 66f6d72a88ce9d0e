//! What the CLI tests share: the binary, a daemon with a few VMs, running
//! a command against it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use vm_catalog_tests::daemon::{TestDaemon, workspace_bin};

pub(crate) fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vm-catalog"))
}

/// A daemon with: built-in netvm; user appvm (provider netvm), a shadowed
/// netvm and a rejected `broken`.
pub(crate) fn daemon() -> TestDaemon {
    let d = TestDaemon::new(workspace_bin("vm-catalogd"));
    d.builtin_vm("netvm");
    d.user_vm("netvm");
    d.user_vm("appvm");
    d.tree().provider("user", "appvm", "netvm");
    // Rejected: a disk but no kernel.
    d.tree().file("user/broken/blk/root.img", b"disk");
    d
}

pub(crate) fn run(d: &TestDaemon, args: &[&str]) -> Output {
    Command::new(cli())
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .output()
        .unwrap()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}
