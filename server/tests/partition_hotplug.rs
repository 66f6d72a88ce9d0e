//! Hotplug on real loop disks, as root: partitions added and removed at
//! run time, uevent hints, forged senders, lost events. Skips loudly
//! without root, loop devices or the partition tools.

mod partition_common;

use partition_common::*;
use vm_catalog_tests::loopdev::{LoopDisk, in_private_mount_ns, require_loop};
use vm_catalogd::source::Presence;
use vm_catalogd::source::partition::{PartitionManager, UeventGroup, UeventListener};

#[test]
fn hotplug_add_then_remove_and_release() {
    let Some(()) = require_loop("partition hotplug on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("hotplug_add_then_remove_and_release") {
        return;
    }
    let disk = LoopDisk::new(32, &layout()).unwrap();
    let defs = definitions(&["vm-a"]);
    disk.mkfs_ext4(1, "vmc-a", Some(defs.path())).unwrap();
    disk.mkfs_ext4(3, "vmc-c", Some(defs.path())).unwrap();
    disk.partx_delete(3).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut m = PartitionManager::new(config(&disk, state.path()));
    let rt = runtime();
    let mut listener = rt
        .block_on(async { UeventListener::bind(UeventGroup::Kernel) })
        .unwrap();

    let specs = m.reconcile();
    assert_eq!(specs.len(), 1, "{specs:#?}");
    assert_eq!(specs[0].presence, Presence::Present);

    // Added at runtime: a hint, and the next reconcile mounts it.
    disk.partx_add(3).unwrap();
    assert!(hint(&rt, &mut listener).events >= 1);
    let specs = m.reconcile();
    let c = spec(&specs, &puuid(3));
    assert_eq!(c.presence, Presence::Present, "{:?}", c.diagnostics);
    let target = mount_point(c);
    assert!(mountinfo(&target).is_some());
    assert!(c.root.join("vm-a/vmlinux").is_file());

    // Removed at runtime (its entry deleted from the table; the kernel keeps
    // the busy partition), and a file on it still open.
    let busy = std::fs::File::open(c.root.join("vm-a/vmlinux")).unwrap();
    disk.sfdisk_behind_kernel(&["--delete", disk.path().to_str().unwrap(), "3"], None)
        .unwrap();
    disk.synth_uevent(Some(3), "change").unwrap();
    assert!(hint(&rt, &mut listener).events >= 1);
    let specs = m.reconcile();
    assert_eq!(spec(&specs, &puuid(3)).presence, Presence::Gone);
    assert_eq!(spec(&specs, "user").presence, Presence::Present);
    assert!(mountinfo(&target).is_some(), "still mounted until released");

    assert!(m.release_removed());
    assert!(mountinfo(&target).is_none(), "detached although busy");
    assert!(!target.exists());
    drop(busy);
    disk.partx_delete(3).unwrap(); // nothing holds it any more
    let specs = m.reconcile();
    assert_eq!(
        spec(&specs, &puuid(3)).presence,
        Presence::Gone,
        "still listed"
    );

    m.unmount_all();
}

#[test]
fn uevents_from_forged_senders_are_ignored_and_overflow_is_reported() {
    let Some(()) = require_loop("uevents on a loop disk") else {
        return;
    };
    let disk = LoopDisk::new(8, "label: gpt\n").unwrap();
    let rt = runtime();
    let mut listener = rt
        .block_on(async { UeventListener::bind(UeventGroup::Kernel) })
        .unwrap();

    // A root process may send to group 1, but not from port 0.
    let forger = rustix::net::socket(
        rustix::net::AddressFamily::NETLINK,
        rustix::net::SocketType::DGRAM,
        Some(rustix::net::netlink::KOBJECT_UEVENT),
    )
    .unwrap();
    let msg =
        b"add@/devices/virtual/block/evil\0ACTION=add\0SUBSYSTEM=block\0DEVNAME=../../etc/evil\0";
    rustix::net::sendto(
        &forger,
        msg,
        rustix::net::SendFlags::empty(),
        &rustix::net::netlink::SocketAddrNetlink::new(0, 1),
    )
    .unwrap();
    disk.synth_uevent(None, "change").unwrap();
    assert!(hint(&rt, &mut listener).events >= 1);
    assert!(
        listener.stats().rejected_sender >= 1,
        "{:?}",
        listener.stats()
    );

    // A tiny queue overflows: the hint says events were lost.
    listener.set_recv_buffer(1).unwrap();
    for _ in 0..200 {
        disk.synth_uevent(None, "change").unwrap();
    }
    let mut lost = false;
    for _ in 0..200 {
        if hint(&rt, &mut listener).lost {
            lost = true;
            break;
        }
    }
    assert!(lost, "{:?}", listener.stats());
}

/// Regression (issue 22, item 9): this test listened on group 3, the one
/// Spectrum's `mdevd -O4` rebroadcasts to, and counted exactly what it
/// received: any other sender to that group on the machine (an `mdevd`,
/// another copy of this suite) would have failed it. It now listens on a
/// group of its own process's choosing and counts at least its own
/// messages.
#[test]
fn rebroadcast_group_accepts_root_senders() {
    let Some(()) = vm_catalog_tests::require_root("uevents on a rebroadcast group") else {
        return;
    };
    let rt = runtime();
    // A group 4..=32 (not 3, mdevd's in Spectrum) that the kernel never
    // sends to, picked by pid so that copies of this suite rarely share it.
    let group = 4 + std::process::id() % 29;
    let mut listener = rt
        .block_on(async { UeventListener::bind(UeventGroup::Rebroadcast(group)) })
        .unwrap();
    let sender = rustix::net::socket(
        rustix::net::AddressFamily::NETLINK,
        rustix::net::SocketType::DGRAM,
        Some(rustix::net::netlink::KOBJECT_UEVENT),
    )
    .unwrap();
    let to = rustix::net::netlink::SocketAddrNetlink::new(0, 1 << (group - 1));
    let send = |m: &[u8]| {
        rustix::net::sendto(&sender, m, rustix::net::SendFlags::empty(), &to).unwrap();
    };
    send(b"change@/devices/virtual/net/lo\0ACTION=change\0SUBSYSTEM=net\0");
    send(b"libudev\0not a kernel message");
    send(b"change@/devices/virtual/block/loop0\0ACTION=change\0SUBSYSTEM=block\0");
    // All three are queued before the listener reads: one hint drains them.
    let h = hint(&rt, &mut listener);
    assert!(h.events >= 1, "{h:?}");
    let s = listener.stats();
    assert!(
        s.accepted >= 1 && s.other >= 1 && s.malformed >= 1 && s.rejected_sender == 0,
        "{s:?}"
    );
}
