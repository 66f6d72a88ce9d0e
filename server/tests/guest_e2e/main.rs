//! The whole mission in real VMs (issue 23): a Debian kernel and a busybox
//! initramfs (`contrib/guest/make-initramfs`) booted by QEMU under TCG
//! through the shipped VMM adapter (`contrib/vmm/qemu`), as s6 instances of
//! the real daemon (`--apply s6-instance`); the UI VM's guest runs the
//! shipped guest service and reaches the daemon over vsock, served on the
//! host by the project's vhost-user vsock device, `vm-catalog-vsock-relay`
//! (`contrib/vsock-relay`: hybrid vsock, Unix sockets only); a user
//! partition on a loop disk found and mounted by the daemon.
//!
//! Every host process the test starts runs under `strace -f -e
//! trace=socket`: no `AF_VSOCK` socket is ever opened on the host. Runs as
//! root in a private mount namespace; skips loudly (fails under CI) without
//! the tools or the kernel (`contrib/guest/fetch-kernel`).

#[path = "../partition_common/mod.rs"]
mod partition_common;
mod rig;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use partition_common::daemon::mounts_under;
use partition_common::{USER, puuid};
use rig::*;
use vm_catalog_tests::daemon::{TestDaemon, workspace_bin};
use vm_catalog_tests::loopdev::{LoopDisk, in_private_mount_ns, require_loop};
use vm_catalog_tests::s6::{Svscan, alive, descendants_of, instance_pid, scanner_listens};

/// One user partition, big enough for a kernel and two images.
fn disk_layout() -> String {
    format!(
        "label: gpt\nstart=2048, size=163840, type={USER}, uuid={}, name=\"user-a\"\n",
        puuid(1)
    )
}

/// What a failure prints: the consoles and the daemon's log (also printed
/// when the test panics anywhere).
struct Report {
    vm_dir: PathBuf,
    log: PathBuf,
}

impl Report {
    fn text(&self) -> String {
        let mut s = String::new();
        for vm in ["ui", "app", "appx"] {
            let c = self.vm_dir.join(vm).join("console");
            s.push_str(&format!("--- console of {vm} ---\n{}\n", read_or_say(&c)));
        }
        s.push_str(&format!("--- daemon log ---\n{}\n", read_or_say(&self.log)));
        s
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.text());
        }
    }
}

/// Undoes the daemon's mounts under its directory on drop (the daemon
/// leaves partitions mounted when it stops), so that the disk detaches.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for m in mounts_under(&self.0).iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
    }
}

/// The guest's service log (`vm-catalog watch --json`, kept by its logger).
fn guest_stream(shell: &mut Shell) -> Vec<serde_json::Value> {
    events(&shell.ok("cat /run/vm-catalog-watch/current 2>/dev/null || true"))
}

fn names(list: &serde_json::Value) -> BTreeSet<String> {
    list["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_real_ui_vm_follows_the_catalog_and_real_guests_boot_from_a_user_partition() {
    let Some(()) = require_loop("real guests with a user partition") else {
        return;
    };
    for tool in [
        "qemu-system-x86_64",
        "strace",
        "busybox",
        "s6-svscan",
        "s6-instance-maker",
        "s6-instance-create",
        "s6-instance-control",
        "execlineb",
    ] {
        if vm_catalog_tests::require_tool(tool).is_none() {
            return;
        }
    }
    let Some((vmlinuz, modules)) = kernel() else {
        vm_catalog_tests::skip(&format!(
            "real guests need a kernel: contrib/guest/fetch-kernel {}/kernels",
            cache().display()
        ));
        return;
    };
    if !in_private_mount_ns(
        "a_real_ui_vm_follows_the_catalog_and_real_guests_boot_from_a_user_partition",
    ) {
        return;
    }

    let traces = Traces::new();
    let client = workspace_bin("vm-catalog");
    let relay = workspace_bin("vm-catalog-vsock-relay");
    let images = tempfile::tempdir().unwrap();
    let ui_image = images.path().join("ui.img");
    let app_image = images.path().join("app.img");
    make_initramfs(&traces, &ui_image, &modules, Some(&client));
    make_initramfs(&traces, &app_image, &modules, None);

    // The user partition, empty but for its definitions directory.
    let content = tempfile::tempdir().unwrap();
    fs::create_dir_all(content.path().join("svc/data")).unwrap();
    let disk = LoopDisk::launched(traces.launcher("disk"), 96, &disk_layout()).unwrap();
    disk.mkfs_ext4(1, "vmc-user", Some(content.path())).unwrap();
    // Dropped after the daemon (declared before it), before the disk.
    let state = tempfile::tempdir().unwrap();
    let _unmount = Unmount(state.path().join("mnt"));

    // The daemon, traced: a built-in UI VM and app VM.
    let mut d = TestDaemon::new(
        traces.wrapper("vm-catalogd", Path::new(env!("CARGO_BIN_EXE_vm-catalogd"))),
    );
    write_vm(&d.builtin().join("ui"), &vmlinuz, &ui_image);
    write_vm(&d.builtin().join("app"), &vmlinuz, &app_image);
    d.without_user_source();
    d.set("--state-dir", state.path());
    let cmdline = d.tree().file("cmdline", b"");
    let work = tempfile::tempdir().unwrap();
    let scandir = work.path().join("scan");
    fs::create_dir(&scandir).unwrap();
    let service = scandir.join("vmm");
    check(
        "s6-instance-maker",
        traces
            .command("s6-instance-maker", "s6-instance-maker")
            .arg(format!("{CONTRIB}/vmm/qemu/template"))
            .arg(&service)
            .output(),
    );
    d.arg("--partition-disk")
        .arg(disk.name())
        .arg("--cmdline")
        .arg(&cmdline)
        .arg("--apply")
        .arg("s6-instance")
        .arg("--instance-service")
        .arg(&service)
        .arg("--ui-vm")
        .arg("ui");
    let vm_dir = d.vm_dir();
    let mount = state.path().join("mnt").join(puuid(1));

    // The supervision tree, traced: s6-svscan (through a wrapper first in
    // its PATH) and below it every VMM.
    let bin = work.path().join("bin");
    fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(
        traces.wrapper("s6-svscan", &vm_catalog_tests::which("s6-svscan").unwrap()),
        bin.join("s6-svscan"),
    )
    .unwrap();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        client.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let qemu_vm = PathBuf::from(format!("{CONTRIB}/vmm/qemu/qemu-vm"));
    let svscan = Svscan::start_with_env(
        &scandir,
        100,
        &[
            ("PATH", Path::new(&path)),
            ("VM_DIR", &vm_dir),
            ("VMM_ACCEL", Path::new("tcg")),
            ("VMM_SHELL", Path::new("1")),
            ("VM_QEMU_VM", &qemu_vm),
            ("VSOCK_RELAY", &relay),
        ],
    )
    .unwrap();
    wait("the instances' scanner", String::new, || {
        scanner_listens(&service.join("instance"))
    });
    d.start().unwrap_or_else(|e| panic!("{e}"));
    let report = Report {
        vm_dir: vm_dir.clone(),
        log: d.tree().join("daemon.log"),
    };
    let say = || report.text();
    let socket = d.socket();

    let vm_start = |name: &str| {
        let o = traces
            .command("vm-start", &format!("{CONTRIB}/bin/vm-start"))
            .arg(name)
            .env("PATH", &path)
            .env("VM_CATALOG_SOCKET", &socket)
            .env("VM_CATALOG_INSTANCES", &service)
            .env("VM_START_TIMEOUT", "120000")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "vm-start {name}: {}\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            say()
        );
    };
    let host_list = || -> serde_json::Value {
        let out = check(
            "vm-catalog list --json",
            traces
                .command("vm-catalog", client.to_str().unwrap())
                .arg("--socket")
                .arg(&socket)
                .args(["list", "--json"])
                .output(),
        );
        serde_json::from_str(out.trim()).unwrap()
    };

    // 1. vm-start ui boots the UI VM; its guest subscribes over vsock.
    assert!(
        vm_dir.join("ui/vsock_22083").exists(),
        "the daemon listens for its UI VM\n{}",
        say()
    );
    vm_start("ui");
    let ui_pid = instance_pid(&service, "ui").expect("ui runs");
    // Its shell reads once /init says it is up.
    wait("the UI VM's /init", say, || {
        read_or_say(&vm_dir.join("ui/console")).contains("vm-catalog-guest: up")
    });
    let mut shell = Shell::connect(&vm_dir.join("ui/shell"));
    wait("the UI VM's first event", say, || {
        has_event(&guest_stream(&mut shell), "added", "ui")
    });
    let console = read_or_say(&vm_dir.join("ui/console"));
    assert!(console.contains("Linux version"), "{console}");
    assert!(
        console.contains("starting the vm-catalog-watch service"),
        "{console}"
    );

    // What the guest lists is what the host lists, and no host path.
    let host = host_list();
    let guest_text = shell.ok("vm-catalog --vsock 2:22083 list --json");
    let guest: serde_json::Value = serde_json::from_str(guest_text.trim()).unwrap();
    assert_eq!(names(&guest), names(&host));
    assert_eq!(names(&guest), BTreeSet::from(["app".into(), "ui".into()]));
    for v in guest["vms"].as_array().unwrap() {
        // Redacted: no definition path (empty), no view.
        assert_eq!(v["path"].as_str().unwrap_or(""), "", "{v}");
        assert!(v["view"].is_null(), "{v}");
    }
    // The guest's rescan is refused (exit 4: permission denied).
    let (out, code) = shell.run("vm-catalog --vsock 2:22083 rescan");
    assert_eq!(code, 4, "{out}");

    // 2. A VM copied onto the partition appears in the guest's stream.
    let staging = mount.join("staging");
    write_vm(&staging.join("appx"), &vmlinuz, &app_image);
    fs::rename(staging.join("appx"), mount.join("svc/data/appx")).unwrap();
    wait("appx in the guest's stream", say, || {
        has_event(&guest_stream(&mut shell), "added", "appx")
    });

    // 3. vm-start boots it: its console shows the guest's kernel.
    vm_start("appx");
    let appx_console = vm_dir.join("appx/console");
    wait("appx's guest kernel", say, || {
        let c = read_or_say(&appx_console);
        c.contains("Linux version") && c.contains("vm-catalog-guest: up")
    });
    let appx_pid = instance_pid(&service, "appx").expect("appx runs");
    let mut appx_tree = descendants_of(appx_pid);
    appx_tree.insert(appx_pid);
    assert!(
        appx_tree.len() >= 2,
        "its VMM runs QEMU: {appx_tree:?}\n{}",
        say()
    );

    // 4. Removing it stops its VMM, and the guest sees it go.
    fs::remove_dir_all(mount.join("svc/data/appx")).unwrap();
    wait("appx's VMM stopped", say, || all_gone(&appx_tree));
    wait("appx removed in the guest's stream", say, || {
        has_event(&guest_stream(&mut shell), "removed", "appx")
    });

    // 5. Again, then the partition goes: its running VMM is stopped before
    // the unmount, and the guest sees the VM and the source go.
    write_vm(&staging.join("appx"), &vmlinuz, &app_image);
    let before = guest_stream(&mut shell).len();
    fs::rename(staging.join("appx"), mount.join("svc/data/appx")).unwrap();
    wait("appx back in the guest's stream", say, || {
        guest_stream(&mut shell)[before..]
            .iter()
            .any(|e| e["event"] == "added" && e["name"] == "appx")
    });
    vm_start("appx");
    let appx_pid = instance_pid(&service, "appx").expect("appx runs again");
    let mut appx_tree = descendants_of(appx_pid);
    appx_tree.insert(appx_pid);
    let before = guest_stream(&mut shell).len();
    let node = disk.path().to_str().unwrap().to_owned();
    disk.sfdisk_behind_kernel(&["--delete", &node, "1"], None)
        .unwrap();
    disk.synth_uevent(Some(1), "remove").unwrap();
    wait("appx's VMM stopped with its partition", say, || {
        all_gone(&appx_tree)
    });
    wait("the partition unmounted", say, || {
        mounts_under(&mount).is_empty()
    });
    assert!(
        !d.log().contains("detached lazily"),
        "stopped before the unmount\n{}",
        say()
    );
    wait("appx gone in the guest's stream", say, || {
        guest_stream(&mut shell)[before..].iter().any(|e| {
            e["name"] == "appx"
                && (e["event"] == "removed"
                    || (e["event"] == "state-changed" && e["vm"]["state"] != "active"))
        })
    });

    // 6. The daemon restarts: the UI VM keeps running, its guest
    // reconnects and resets to the new epoch. (What the guest printed is
    // counted before the stop: it may reconnect and print its reset before
    // the test looks again.)
    let before = guest_stream(&mut shell).len();
    let status = d.stop();
    assert!(status.success(), "{status}\n{}", d.log());
    d.start().unwrap_or_else(|e| panic!("{e}"));
    wait("the guest's reset to the new epoch", say, || {
        let ev = guest_stream(&mut shell);
        ev[before.min(ev.len())..]
            .iter()
            .any(|e| e["event"] == "reset" && e["reason"] == "new-epoch")
    });
    let all = guest_stream(&mut shell);
    assert!(
        all.iter().any(|e| e["event"] == "disconnected"),
        "the guest saw the daemon go\n{}",
        shell.transcript
    );
    assert_eq!(instance_pid(&service, "ui"), Some(ui_pid), "adopted");
    let guest_again = shell.ok("vm-catalog --vsock 2:22083 list --json");
    let again: serde_json::Value = serde_json::from_str(guest_again.trim()).unwrap();
    assert_eq!(names(&again), names(&host_list()));

    // No host path ever reached the guest.
    let seen = format!(
        "{}\n{}\n{}",
        shell.ok("cat /run/vm-catalog-watch/current"),
        guest_text,
        guest_again
    );
    let tree = d.tree().path().to_string_lossy().into_owned();
    assert!(!seen.contains(&tree), "a host path in the guest:\n{seen}");
    assert!(!seen.contains(&*vm_dir.to_string_lossy()), "{seen}");

    // Every process ended by pid: the supervision tree (the VMMs with it),
    // the daemon; then the tracers end with their tracees.
    drop(shell);
    let mut tree_pids = svscan.descendants();
    tree_pids.insert(svscan.pid());
    drop(svscan);
    assert!(all_gone(&tree_pids), "{tree_pids:?}");
    let status = d.stop();
    assert!(status.success(), "{status}\n{}", d.log());
    assert!(!alive(ui_pid));

    let t = traces.finish();
    eprintln!(
        "strace: {} traces, {} socket calls, {} programs, none AF_VSOCK",
        t.files,
        t.socket_calls,
        t.programs.len()
    );
    // The daemon twice, s6-svscan (with every VMM), vm-start three times,
    // the host's list twice, make-initramfs twice, s6-instance-maker, the
    // loop disk's sfdisk, losetup, partx and mkfs.ext4.
    assert!(t.files >= 11, "traces of every process: {t:?}");
    assert!(t.socket_calls > 0, "the traces saw the Unix sockets");
    for p in [
        "vm-catalogd",
        "s6-supervise",
        "qemu-vm",
        "qemu-system-x86_64",
        "vm-catalog-vsock-relay",
        "vm-catalog",
        "sfdisk",
        "losetup",
        "partx",
        "mkfs.ext4",
    ] {
        assert!(t.programs.contains(p), "{p} ran traced: {:?}", t.programs);
    }
    assert!(
        t.vsock.is_empty(),
        "AF_VSOCK on the host:\n{}",
        t.vsock.join("\n")
    );
    drop(report);
}

/// The shipped s6-rc template of the QEMU adapter loads as the daemon
/// loads `--service-template`, and its run script boots the VM by name.
#[test]
fn the_qemu_s6rc_template_loads_and_runs_qemu_vm_with_the_name() {
    use vm_catalogd::apply::s6rc::template::{Node, Template, Values};
    let t = Template::load(Path::new(&format!("{CONTRIB}/vmm/qemu/s6-rc"))).unwrap();
    let run = t
        .entries()
        .iter()
        .find(|(p, _)| p == Path::new("run"))
        .expect("a run script");
    let Node::File {
        contents,
        executable,
    } = &run.1
    else {
        panic!("{run:?}")
    };
    assert!(executable);
    let text = String::from_utf8(contents.render(&Values {
        name: "ui",
        view: "/run/vm/ui/config",
        start: "/bin/start-vmm",
    }))
    .unwrap();
    assert!(text.ends_with("qemu-vm ui\n"), "{text}");
}
