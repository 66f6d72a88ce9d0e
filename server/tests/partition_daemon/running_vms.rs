//! A removed partition whose VM runs: the VM stops before the unmount (real
//! s6-rc, and real s6 instances).

use super::*;

/// A VM that runs from a partition is stopped by the database update
/// before the partition is unmounted: the unmount finds nothing busy.
#[test]
fn daemon_stops_a_removed_partitions_running_vm_before_unmounting() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    let Some(bindir) = vm_catalog_tests::require_s6rc() else {
        return;
    };
    if !in_private_mount_ns(
        "running_vms::daemon_stops_a_removed_partitions_running_vm_before_unmounting",
    ) {
        return;
    }
    let disk = disk_with(&[&["vm-a"], &["vm-b"], &["vm-c"]]);
    let work = tempfile::tempdir().unwrap();
    let scandir = work.path().join("scan");
    std::fs::create_dir(&scandir).unwrap();
    let svscan = vm_catalog_tests::s6::Svscan::start(&scandir, 100).unwrap();
    let live = work.path().join("live");
    let vmm = work.path().join("start-vmm");
    std::fs::write(&vmm, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&vmm, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (b, l, sc, v) = (
        bindir.display().to_string(),
        live.display().to_string(),
        scandir.display().to_string(),
        vmm.display().to_string(),
    );
    let mut d = DiskDaemon::start_with(
        &disk,
        "",
        &[
            "--apply",
            "s6-rc",
            "--s6rc-bindir",
            &b,
            "--live",
            &l,
            "--scandir",
            &sc,
            "--start-command",
            &v,
        ],
    );
    hold_its_disk(&vmm, &d);
    let up = std::process::Command::new(bindir.join("s6-rc"))
        .arg("-l")
        .arg(&live)
        .args(["-u", "change", "vm-b"])
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}\n{}", d.log());
    let pid = vm_catalog_tests::s6::svstat_pid(&scandir.join("vm-vm-b")).expect("vm-b runs");
    remove_its_partition(&disk, &mut d, pid);
    let list = std::process::Command::new(bindir.join("s6-rc"))
        .arg("-l")
        .arg(&live)
        .args(["-a", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout)
            .lines()
            .any(|l| l == "vm-b"),
        "{list:?}"
    );
    assert_nothing_held(&d);
    d.stop();
    drop(svscan);
}

/// With `--apply s6-instance`: a removed partition's running VM has its
/// instance deleted (its VMM stopped) before the partition is unmounted.
#[test]
fn daemon_deletes_a_removed_partitions_running_instance_before_unmounting() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    for tool in ["s6-svscan", "s6-instance-maker", "s6-instance-create"] {
        if vm_catalog_tests::require_tool(tool).is_none() {
            return;
        }
    }
    if !in_private_mount_ns(
        "running_vms::daemon_deletes_a_removed_partitions_running_instance_before_unmounting",
    ) {
        return;
    }
    let disk = disk_with(&[&["vm-a"], &["vm-b"], &["vm-c"]]);
    let work = tempfile::tempdir().unwrap();
    let scandir = work.path().join("scan");
    std::fs::create_dir(&scandir).unwrap();
    let vmm = work.path().join("start-vmm");
    std::fs::write(&vmm, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&vmm, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let service = scandir.join("vmm");
    vm_catalog_tests::s6::make_instance_service(&service, &vmm).unwrap();
    let svscan = vm_catalog_tests::s6::Svscan::start(&scandir, 100).unwrap();
    assert!(vm_catalog_tests::s6::wait_for(
        std::time::Duration::from_secs(60),
        || vm_catalog_tests::s6::scanner_listens(&service.join("instance"))
    ));
    let s = service.display().to_string();
    let mut d = DiskDaemon::start_with(
        &disk,
        "",
        &["--apply", "s6-instance", "--instance-service", &s],
    );
    hold_its_disk(&vmm, &d);
    let up = std::process::Command::new("s6-instance-control")
        .args(["-wU", "-T", "10000", "-u", "--"])
        .arg(&service)
        .arg("vm-b")
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}\n{}", d.log());
    let pid = vm_catalog_tests::s6::instance_pid(&service, "vm-b").expect("vm-b runs");
    remove_its_partition(&disk, &mut d, pid);
    assert!(
        !vm_catalog_tests::s6::instances(&service).contains(&"vm-b".to_owned()),
        "its instance is gone"
    );
    assert_nothing_held(&d);
    d.stop();
    drop(svscan);
}

/// Makes the stand-in VMM `vmm` hold its disk image open, as a real one
/// would (ready at once, then sleeps).
fn hold_its_disk(vmm: &std::path::Path, d: &DiskDaemon) {
    std::fs::write(
        vmm,
        format!(
            "#!/bin/sh\nexec 4<\"{}/$1/config/blk/root.img\" || exit 1\necho >&3\nexec 3>&-\nexec sleep 2147483647\n",
            d.vm_dir().display()
        ),
    )
    .unwrap();
}

/// Checks that `pid` (vm-b's VMM) holds its disk on partition 2 open,
/// removes that partition, waits for the daemon to unmount it, and checks
/// that the VMM was stopped.
fn remove_its_partition(disk: &LoopDisk, d: &mut DiskDaemon, pid: u32) {
    let target = d.mount_point(&puuid(2));
    let held = std::fs::read_link(format!("/proc/{pid}/fd/4")).unwrap();
    assert!(
        held.starts_with(&target),
        "the VM holds {} open",
        held.display()
    );

    let node = disk.path().to_str().unwrap();
    disk.sfdisk_behind_kernel(&["--delete", node, "2"], None)
        .unwrap();
    disk.synth_uevent(Some(2), "remove").unwrap();
    d.wait_for("the removed partition's VM unavailable", |m| {
        state(m, "vm-b") == Some(VmState::Unavailable)
    });
    d.wait_until("the removed partition unmounted", || {
        mountinfo(&target).is_none()
    });
    assert!(!vm_catalog_tests::s6::alive(pid), "the VM was stopped");
}

/// The VM stopped before the unmount, so nothing held the partition.
fn assert_nothing_held(d: &DiskDaemon) {
    assert!(
        !d.log().contains("detached lazily"),
        "stopped before the unmount, so nothing held the partition\n{}",
        d.log()
    );
}
