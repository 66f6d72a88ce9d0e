//! The hardening of issue 12 against the real `vm-catalogd` binary over its
//! real socket: what hostile local users could do to it, what the CLI shows
//! of a trimmed definition, and where the daemon refuses to put its socket.
//! The in-process server's finer cases are in `rpc_inprocess`.

mod local_users;
mod socket_dir;
mod trimming;

use std::process::{Command, Output};

use vm_catalog_tests::daemon::{TestDaemon, workspace_bin};

fn daemon() -> TestDaemon {
    TestDaemon::new(env!("CARGO_BIN_EXE_vm-catalogd"))
}

/// Runs `vm-catalog --socket <d's socket> args…`.
fn cli(d: &TestDaemon, args: &[&str]) -> Output {
    Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .output()
        .expect("run vm-catalog")
}
