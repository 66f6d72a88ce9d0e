//! Spectrum's own programs on what the daemon and `contrib/spectrum/vm-hook`
//! make (issue 21): Spectrum c9726df's unmodified `lsvm`, `start-vmm`,
//! `run-vmm` (the `vmm` template), `vm-start`, `vm-stop`,
//! `create-vm-dependencies` and `vmm`/`vm-services` services, run as on a
//! Spectrum host, in a private namespace per test (`host.rs`). Stand-ins
//! only for cloud-hypervisor, ch-remote, bwrap, udevadm, s6-softlimit and
//! newuidmap/newgidmap (`standins/`), and a shim for util-linux 2.38's
//! `unshare`.
//!
//! Needs root, `SPECTRUM_DIR=$(.ci/build-spectrum)` and
//! `EXECLINE_BINDIR=$(../shared/tools/build-execline)`; skips loudly
//! without them (fails under `CI=true`).

mod daemon;
mod hook;
mod host;

use std::path::PathBuf;
use std::process::Command;

use vm_catalog_tests::daemon::TestDaemon;

const UUID: &str = "a7834806-2f82-4faf-8ac4-4f8fd8a474ca";
const MAKE_TREE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../contrib/examples/spectrum/make-tree"
);

/// A daemon (not started) on a fresh `make-tree` fixture, laid out as on
/// Spectrum: the built-in VMs as `sys`, the user partition's `vms/` as
/// `user`, qualified names, the views in `/run/vm`.
fn spectrum_daemon(host: &host::Host) -> TestDaemon {
    let mut d = TestDaemon::new(host.daemon_bin());
    let root = d.tree().join("spectrum");
    let status = Command::new("sh")
        .arg(MAKE_TREE)
        .arg(&root)
        .status()
        .expect("run make-tree");
    assert!(status.success(), "make-tree failed");
    d.set(
        "--builtin",
        format!("sys={}", root.join("usr/lib/spectrum/vm").display()),
    );
    d.without_user_source();
    let user = user_vms(&d);
    d.arg("--source").arg(format!("user={}", user.display()));
    for trusted in ["usr/lib/spectrum/img/", "nix/store/"] {
        d.arg("--trusted-target")
            .arg(format!("{}/{trusted}", root.display()));
    }
    d.set("--vm-dir", "/run/vm");
    d.arg("--names")
        .arg("qualified")
        .arg("--vm-layout")
        .arg("spectrum");
    d
}

/// The user source's directory of a [`spectrum_daemon`].
fn user_vms(d: &TestDaemon) -> PathBuf {
    d.tree().join(format!("spectrum/media/{UUID}/vms"))
}

/// The VM names Spectrum's make-tree fixture has, sorted.
const NAMES: [&str; 5] = [
    "sys.appvm-firefox",
    "sys.appvm-foot",
    "sys.netvm",
    "user.nc",
    "user.portal",
];
