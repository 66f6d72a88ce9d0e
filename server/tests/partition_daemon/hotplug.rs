//! Partitions added, removed or marked no-auto while the daemon runs, noticed through uevents alone.

use super::*;

#[test]
fn daemon_mounts_a_partition_added_at_runtime_without_a_request() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("hotplug::daemon_mounts_a_partition_added_at_runtime_without_a_request")
    {
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
    if !in_private_mount_ns("hotplug::daemon_releases_a_partition_removed_at_runtime") {
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

#[test]
fn daemon_releases_a_partition_marked_no_auto_at_runtime() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("hotplug::daemon_releases_a_partition_marked_no_auto_at_runtime") {
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
    if !in_private_mount_ns("hotplug::daemon_removed_primary_does_not_hide_the_next_partition") {
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
