//! What the daemon refuses, and keeps serving: an ambiguous ext=, hostile partition tables.

use super::*;

#[test]
fn daemon_refuses_ext_matching_two_devices_and_keeps_serving() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("refusals::daemon_refuses_ext_matching_two_devices_and_keeps_serving") {
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
    if !in_private_mount_ns("refusals::daemon_reports_hostile_partition_tables_and_keeps_serving") {
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
