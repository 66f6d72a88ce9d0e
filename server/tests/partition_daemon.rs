//! User partitions end to end, through the real `vm-catalogd` binary, as
//! root: each test builds a GPT loop disk, puts VM definitions on it, runs
//! in its own private mount namespace (`loopdev::in_private_mount_ns`),
//! starts the daemon there restricted to that disk (`--partition-disk`),
//! and looks only through the client library (`ListVms`, `ListSources`,
//! `GetInfo`, a `Watch`) and at `/proc/self/mountinfo`. Nothing here asks
//! for a rescan: what changes at run time is noticed through uevents.
//! Skips loudly without root, loop devices or the partition tools.

mod partition_common;

use partition_common::daemon::{BUILTIN_VM, DiskDaemon, mounts_under, source_state, state};
use partition_common::*;
use vm_catalog::Mirror;
use vm_catalog::protocol::{
    DiagCode, RescanTrigger, SourceKind, SourceState, Trust, VmEntry, VmState,
};
use vm_catalog_tests::loopdev::{LoopDisk, in_private_mount_ns, require_loop};

/// 48 MiB: 1 user (the primary), 2 user, 3 user read-only (attribute 60),
/// 4 user no-auto (attribute 63), 5 Linux data.
fn disk_layout() -> String {
    format!(
        "label: gpt\n\
         start=2048, size=16384, type={USER}, uuid={}, name=\"user-a\"\n\
         start=18432, size=16384, type={USER}, uuid={}, name=\"user-b\"\n\
         start=34816, size=16384, type={USER}, uuid={}, name=\"user-c\", attrs=\"GUID:60\"\n\
         start=51200, size=16384, type={USER}, uuid={}, name=\"user-d\", attrs=\"GUID:63\"\n\
         start=67584, size=8192, type={LINUX}, uuid={}, name=\"other\"\n",
        puuid(1),
        puuid(2),
        puuid(3),
        puuid(4),
        puuid(5)
    )
}

/// The disk, with an ext4 file system holding `vms[n - 1]` on partition `n`.
fn disk_with(vms: &[&[&str]]) -> LoopDisk {
    let disk = LoopDisk::new(48, &disk_layout()).unwrap();
    for (i, names) in vms.iter().enumerate() {
        let n = i as u32 + 1;
        let defs = definitions(names);
        disk.mkfs_ext4(n, &format!("vmc-{n}"), Some(defs.path()))
            .unwrap();
    }
    disk
}

fn entry<'a>(vms: &'a [VmEntry], name: &str, source: &str) -> &'a VmEntry {
    vms.iter()
        .find(|v| v.name.as_str() == name && v.source.as_str() == source)
        .unwrap_or_else(|| panic!("no {name} from {source} in {vms:#?}"))
}

fn has_opts(opts: &str, want: &[&str]) -> bool {
    want.iter().all(|o| opts.split(',').any(|x| x == *o))
}

const HARDENED: [&str; 4] = ["nosuid", "nodev", "noexec", "nosymfollow"];

#[test]
fn daemon_mounts_user_partitions_hardened_and_lists_their_vms() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("daemon_mounts_user_partitions_hardened_and_lists_their_vms") {
        return;
    }
    let disk = disk_with(&[
        &["vm-a", "vm-shared", BUILTIN_VM],
        &["vm-b", "vm-shared"],
        &["vm-c"],
        &["vm-d"],
        &["vm-e"],
    ]);
    let mut d = DiskDaemon::start_with(&disk, "", &["--fsck"]);

    // Sources, in precedence order: built-in, the primary, then by PARTUUID;
    // not the no-auto partition (4), not the Linux one (5).
    let sources = d.sources();
    let labels: Vec<&str> = sources.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        ["builtin", "user", &puuid(2), &puuid(3)],
        "{sources:#?}"
    );
    for (s, n, ro) in [
        (&sources[1], 1, false),
        (&sources[2], 2, false),
        (&sources[3], 3, true),
    ] {
        let what = s.label.as_str();
        assert_eq!(s.state, SourceState::Ready, "{what}: {:?}", s.diagnostics);
        assert_eq!(s.kind, SourceKind::Partition, "{what}");
        assert_eq!(s.trust, Trust::Untrusted, "{what}");
        assert_eq!(
            s.device.as_deref(),
            disk.part_path(n).to_str(),
            "{what}: device"
        );
        assert_eq!(s.partuuid.as_deref(), Some(puuid(n).as_str()), "{what}");
        assert_eq!(s.read_only, ro, "{what}");
        let target = d.mount_point(&puuid(n));
        assert_eq!(s.path, target.join("svc/data").to_str().unwrap(), "{what}");

        // Mounted there, hardened, read back from the mount table.
        let (opts, sup) = mountinfo(&target).unwrap_or_else(|| panic!("{what} not mounted"));
        assert!(has_opts(&opts, &HARDENED), "{what}: {opts}");
        assert!(has_opts(&sup, &["errors=remount-ro"]), "{what}: {sup}");
        if ro {
            assert!(has_opts(&opts, &["ro"]), "{what}: {opts}");
            assert!(has_opts(&sup, &["ro", "norecovery"]), "{what}: {sup}");
        } else {
            assert!(has_opts(&opts, &["rw"]), "{what}: {opts}");
        }
    }
    assert_eq!(sources[1].definitions, 3);
    assert_eq!(
        mounts_under(&d.mount_base()).len(),
        3,
        "attribute 63 and the Linux partition are not mounted"
    );
    assert!(mountinfo(&d.mount_point(&puuid(4))).is_none());

    // The catalog: every partition's VMs, precedence applied, nothing from 4 or 5.
    let mut active = d.active_names();
    active.sort();
    assert_eq!(active, ["vm-a", "vm-b", BUILTIN_VM, "vm-c", "vm-shared"]);
    let all = d.vms(true);
    assert!(
        !all.iter()
            .any(|v| v.name.as_str() == "vm-d" || v.name.as_str() == "vm-e"),
        "{all:#?}"
    );
    assert_eq!(entry(&all, "vm-a", "user").state, VmState::Active);
    assert_eq!(entry(&all, "vm-b", &puuid(2)).state, VmState::Active);
    assert_eq!(entry(&all, "vm-c", &puuid(3)).state, VmState::Active);
    let shadowed = entry(&all, "vm-shared", &puuid(2));
    assert_eq!(shadowed.state, VmState::Shadowed);
    assert_eq!(
        shadowed.shadowed_by.as_ref().map(|l| l.as_str()),
        Some("user")
    );
    let shadowed = entry(&all, BUILTIN_VM, "user");
    assert_eq!(shadowed.state, VmState::Shadowed, "built-in wins");

    d.stop();
}

#[test]
fn daemon_mounts_a_partition_added_at_runtime_without_a_request() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("daemon_mounts_a_partition_added_at_runtime_without_a_request") {
        return;
    }
    let disk = disk_with(&[&["vm-a"], &["vm-b"], &["vm-c"]]);
    disk.partx_delete(3).unwrap();
    let mut d = DiskDaemon::start(&disk);
    assert_eq!(d.source("user").state, SourceState::Ready);
    assert!(!d.sources().iter().any(|s| s.label.as_str() == puuid(3)));
    assert!(!d.active_names().iter().any(|n| n == "vm-c"));

    // The kernel learns about partition 3: an add uevent, and nothing else.
    disk.partx_add(3).unwrap();
    d.wait_for("the added partition's VM active", |m| {
        state(m, "vm-c") == Some(VmState::Active)
            && source_state(m, &puuid(3)) == Some(SourceState::Ready)
    });
    let info = d.info();
    assert_eq!(
        info.last_rescan.as_ref().map(|r| r.trigger),
        Some(RescanTrigger::Hotplug),
        "{info:#?}"
    );
    let c = d.source(&puuid(3));
    assert_eq!(c.device.as_deref(), disk.part_path(3).to_str());
    assert!(c.read_only);
    let (opts, sup) = mountinfo(&d.mount_point(&puuid(3))).expect("mounted");
    assert!(
        has_opts(&opts, &HARDENED) && has_opts(&opts, &["ro"]),
        "{opts}"
    );
    assert!(has_opts(&sup, &["norecovery"]), "{sup}");
    let vms = d.vms(false);
    assert_eq!(entry(&vms, "vm-c", &puuid(3)).state, VmState::Active);
    assert_eq!(entry(&vms, "vm-a", "user").state, VmState::Active);

    d.stop();
}

#[test]
fn daemon_releases_a_partition_removed_at_runtime() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("daemon_releases_a_partition_removed_at_runtime") {
        return;
    }
    let disk = disk_with(&[&["vm-a"], &["vm-b"], &["vm-c"]]);
    let mut d = DiskDaemon::start(&disk);
    let target = d.mount_point(&puuid(2));
    assert!(mountinfo(&target).is_some());
    assert!(d.active_names().iter().any(|n| n == "vm-b"));

    // Partition 2 goes away while mounted, and while a file on it is open
    // (as a running VM would hold its disk image). The kernel refuses to
    // forget a busy partition (`partx -d` fails with EBUSY), so its entry is
    // deleted from the table behind the kernel's back and a remove uevent sent.
    let busy = std::fs::File::open(target.join("svc/data/vm-b/blk/root.img")).unwrap();
    let node = disk.path().to_str().unwrap();
    disk.sfdisk_behind_kernel(&["--delete", node, "2"], None)
        .unwrap();
    disk.synth_uevent(Some(2), "remove").unwrap();
    d.wait_for("the removed partition's VM unavailable", |m| {
        state(m, "vm-b") == Some(VmState::Unavailable)
            && source_state(m, &puuid(2)) == Some(SourceState::Unavailable)
    });
    assert!(!d.active_names().iter().any(|n| n == "vm-b"));
    let all = d.vms(true);
    assert_eq!(entry(&all, "vm-b", &puuid(2)).state, VmState::Unavailable);
    assert_eq!(entry(&all, "vm-a", "user").state, VmState::Active);
    assert_eq!(d.source("user").state, SourceState::Ready);

    // Then it is unmounted (lazily: it is busy) and its mount point
    // removed; the others stay.
    d.wait_until("the removed partition unmounted", || {
        mountinfo(&target).is_none() && !target.exists()
    });
    assert!(mountinfo(&d.mount_point(&puuid(1))).is_some());
    assert!(mountinfo(&d.mount_point(&puuid(3))).is_some());
    // Once the file is closed, nothing holds the device: the kernel lets
    // it go (a real remove uevent), and the daemon keeps serving.
    drop(busy);
    disk.partx_delete(2).unwrap();

    // Plugged in again: mounted again.
    disk.sfdisk_behind_kernel(&["--force", node], Some(&disk_layout()))
        .unwrap();
    disk.partx_add(2).unwrap();
    d.wait_for("the partition plugged in again active", |m| {
        state(m, "vm-b") == Some(VmState::Active)
            && source_state(m, &puuid(2)) == Some(SourceState::Ready)
    });
    assert!(mountinfo(&target).is_some());

    d.stop();
}

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
    if !in_private_mount_ns("daemon_stops_a_removed_partitions_running_vm_before_unmounting") {
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
    // The stand-in VMM holds its disk image open, as a real one would.
    std::fs::write(
        &vmm,
        format!(
            "#!/bin/sh\nexec 4<\"{}/$1/config/blk/root.img\" || exit 1\necho >&3\nexec 3>&-\nexec sleep 2147483647\n",
            d.vm_dir().display()
        ),
    )
    .unwrap();
    let up = std::process::Command::new(bindir.join("s6-rc"))
        .arg("-l")
        .arg(&live)
        .args(["-u", "change", "vm-b"])
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}\n{}", d.log());
    let pid = vm_catalog_tests::s6::svstat_pid(&scandir.join("vm-vm-b")).expect("vm-b runs");
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
    assert!(
        !d.log().contains("detached lazily"),
        "stopped before the unmount, so nothing held the partition\n{}",
        d.log()
    );
    d.stop();
    drop(svscan);
}

#[test]
fn daemon_releases_a_partition_marked_no_auto_at_runtime() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("daemon_releases_a_partition_marked_no_auto_at_runtime") {
        return;
    }
    let disk = disk_with(&[&["vm-a"], &["vm-b"], &["vm-c"]]);
    let mut d = DiskDaemon::start(&disk);
    let target = d.mount_point(&puuid(2));
    assert!(mountinfo(&target).is_some());

    // Attribute 63 set on partition 2 in the table, then a change uevent.
    let node = disk.path().to_str().unwrap();
    disk.sfdisk_behind_kernel(&["--part-attrs", node, "2", "GUID:63"], None)
        .unwrap();
    disk.synth_uevent(None, "change").unwrap();
    d.wait_for("the no-auto partition's VM unavailable", |m| {
        state(m, "vm-b") == Some(VmState::Unavailable)
    });
    d.wait_until("the no-auto partition unmounted", || {
        mountinfo(&target).is_none()
    });
    assert_eq!(d.source(&puuid(2)).state, SourceState::Unavailable);

    // Cleared again: mounted again.
    disk.sfdisk_behind_kernel(&["--part-attrs", node, "2", ""], None)
        .unwrap();
    disk.synth_uevent(None, "change").unwrap();
    d.wait_for("the partition active again", |m| {
        state(m, "vm-b") == Some(VmState::Active)
    });
    assert!(mountinfo(&target).is_some());
    d.stop();
}

// Regression: when the primary went away, the next user partition was
// relabelled `user` while the removed one still held that label; the
// catalog ignored the second `user` source, so a partition that was still
// there lost its VMs for good.
#[test]
fn daemon_removed_primary_does_not_hide_the_next_partition() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("daemon_removed_primary_does_not_hide_the_next_partition") {
        return;
    }
    let disk = disk_with(&[&["vm-a"], &["vm-b"], &["vm-c"]]);
    let mut d = DiskDaemon::start(&disk);
    let node = disk.path().to_str().unwrap();
    disk.sfdisk_behind_kernel(&["--delete", node, "1"], None)
        .unwrap();
    disk.synth_uevent(Some(1), "remove").unwrap();

    // First the primary's VMs become unavailable; the others stay.
    let from = |m: &Mirror, name: &str| m.get(name).map(|e| (e.source.to_string(), e.state));
    d.wait_for(
        "the removed primary's VM unavailable, the others still listed",
        |m| {
            state(m, "vm-a") == Some(VmState::Unavailable)
                && from(m, "vm-b") == Some((puuid(2), VmState::Active))
        },
    );
    // Once the old primary is released, partition 2 is the primary.
    d.wait_for("partition 2 the primary", |m| {
        from(m, "vm-b") == Some(("user".into(), VmState::Active))
    });
    let user = d.source("user");
    assert_eq!(user.state, SourceState::Ready, "{user:#?}");
    assert_eq!(user.partuuid.as_deref(), Some(puuid(2).as_str()));
    let labels: Vec<String> = d.sources().iter().map(|s| s.label.to_string()).collect();
    assert_eq!(labels, ["builtin", "user", &puuid(3)]);
    let mut active = d.active_names();
    active.sort();
    assert_eq!(active, ["vm-b", BUILTIN_VM, "vm-c"]);
    assert!(mountinfo(&d.mount_point(&puuid(1))).is_none());
    assert!(
        mountinfo(&d.mount_point(&puuid(2))).is_some(),
        "not remounted"
    );
    d.stop();
}

#[test]
fn daemon_restart_adopts_its_own_mounts() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("daemon_restart_adopts_its_own_mounts") {
        return;
    }
    let disk = disk_with(&[&["vm-a"], &["vm-b"], &["vm-c"]]);
    let mut d = DiskDaemon::start(&disk);
    let before = mounts_under(&d.mount_base());
    assert_eq!(before.len(), 3);
    d.stop();
    assert_eq!(
        mounts_under(&d.mount_base()),
        before,
        "partitions stay mounted"
    );

    d.start_again();
    for label in ["user".to_owned(), puuid(2), puuid(3)] {
        let s = d.source(&label);
        assert_eq!(s.state, SourceState::Ready, "{label}: {:?}", s.diagnostics);
    }
    assert_eq!(mounts_under(&d.mount_base()), before, "not mounted twice");
    let mut active = d.active_names();
    active.sort();
    assert_eq!(active, ["vm-a", "vm-b", BUILTIN_VM, "vm-c"]);
    d.stop();
}

#[test]
fn daemon_refuses_ext_matching_two_devices_and_keeps_serving() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("daemon_refuses_ext_matching_two_devices_and_keeps_serving") {
        return;
    }
    let disk = disk_with(&[&["vm-a"], &["vm-b"], &["vm-c"]]);
    // A label no other device on this machine has: partitions 1 and 3 carry it.
    let label = format!("vmc{}", std::process::id());
    let defs = definitions(&["vm-a"]);
    disk.mkfs_ext4(1, &label, Some(defs.path())).unwrap();
    let defs = definitions(&["vm-c"]);
    disk.mkfs_ext4(3, &label, Some(defs.path())).unwrap();
    let cmdline = format!("BOOT_IMAGE=/vmlinuz ro ext=LABEL={label} quiet\n");
    let mut d = DiskDaemon::start_with(&disk, &cmdline, &[]);

    let user = d.source("user");
    assert_eq!(user.state, SourceState::Failed, "{user:#?}");
    assert_eq!(
        user.diagnostics[0].code,
        DiagCode::AmbiguousExt,
        "{user:#?}"
    );
    let msg = &user.diagnostics[0].message;
    assert!(msg.contains("matches 2 devices"), "{msg}");
    for n in [1, 3] {
        assert!(msg.contains(disk.part_path(n).to_str().unwrap()), "{msg}");
    }
    assert_eq!(user.definitions, 0);

    // Nothing is the primary; the partitions are still found by type.
    let vms = d.vms(false);
    assert_eq!(entry(&vms, "vm-a", &puuid(1)).state, VmState::Active);
    assert_eq!(entry(&vms, "vm-c", &puuid(3)).state, VmState::Active);
    assert_eq!(entry(&vms, BUILTIN_VM, "builtin").state, VmState::Active);

    // A hotplug rescan refuses it again, and the daemon keeps serving.
    disk.synth_uevent(None, "change").unwrap();
    d.wait_until("a hotplug rescan", || {
        d.info().last_rescan.map(|r| r.trigger) == Some(RescanTrigger::Hotplug)
    });
    assert_eq!(d.source("user").diagnostics[0].code, DiagCode::AmbiguousExt);
    assert!(d.running());
    d.stop();
}

#[test]
fn daemon_reports_hostile_partition_tables_and_keeps_serving() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("daemon_reports_hostile_partition_tables_and_keeps_serving") {
        return;
    }
    for (what, img) in hostile_tables() {
        let disk = LoopDisk::with_image(16, |p| {
            img.write_to(&std::fs::OpenOptions::new().write(true).open(p)?)
        })
        .unwrap();
        let mut d = DiskDaemon::start(&disk);
        let check = |d: &DiskDaemon| {
            let sources = d.sources();
            let labels: Vec<&str> = sources.iter().map(|s| s.label.as_str()).collect();
            let bad = format!("disk-{}", disk.name());
            assert_eq!(labels, ["builtin", bad.as_str()], "{what}: {sources:#?}");
            let s = &sources[1];
            assert_eq!(s.state, SourceState::Failed, "{what}");
            assert_eq!(s.diagnostics[0].code, DiagCode::BadPartitionTable, "{what}");
            assert!(
                s.diagnostics[0].message.contains("entry array geometry"),
                "{what}: {}",
                s.diagnostics[0].message
            );
            assert_eq!(d.active_names(), [BUILTIN_VM], "{what}");
        };
        check(&d);
        assert!(mounts_under(&d.mount_base()).is_empty(), "{what}");

        // The table is read again on a hotplug event: still no crash.
        disk.synth_uevent(None, "change").unwrap();
        d.wait_until("a hotplug rescan", || {
            d.info().last_rescan.map(|r| r.trigger) == Some(RescanTrigger::Hotplug)
        });
        check(&d);
        assert!(d.running(), "{what}");
        d.stop();
    }
}
