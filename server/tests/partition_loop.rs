//! User partitions on real loop disks, as root, each test in its own
//! private mount namespace (`loopdev::in_private_mount_ns`): discovery,
//! hardened mounts, the geometry cross-check, `ext=`, hostile tables.
//! Discovery is restricted to the test's own disk. Skips loudly without
//! root, loop devices or the partition tools.

mod partition_common;

use partition_common::*;
use vm_catalog_protocol::DiagCode;
use vm_catalog_tests::loopdev::{LoopDisk, in_private_mount_ns, require_loop, run};
use vm_catalogd::source::Presence;
use vm_catalogd::source::partition::FsType;
use vm_catalogd::source::partition::host::{BlockHost, MountError, MountRequest};
use vm_catalogd::source::partition::sysfs::DevId;
use vm_catalogd::source::partition::system::SystemHost;
use vm_catalogd::source::partition::{ExtSource, PartitionManager};

#[test]
fn discovers_and_mounts_hardened_with_definitions_visible() {
    let Some(()) = require_loop("partition discovery on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("discovers_and_mounts_hardened_with_definitions_visible") {
        return;
    }
    let disk = LoopDisk::new(32, &layout()).unwrap();
    let a = definitions(&["vm-a"]);
    let c = definitions(&["vm-c"]);
    disk.mkfs_ext4(1, "vmc-a", Some(a.path())).unwrap();
    disk.mkfs_ext4(3, "vmc-c", Some(c.path())).unwrap();
    disk.mkfs_ext4(4, "vmc-d", Some(a.path())).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(&disk, state.path());
    cfg.fsck = true;
    cfg.fsck_program = "/usr/sbin/fsck.ext4".into();
    let mut m = PartitionManager::new(cfg);

    let specs = m.reconcile();
    let labels: Vec<&str> = specs.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        vec!["user".to_owned(), puuid(3)],
        "p2 is not a user partition, p4 is no-auto"
    );

    let user = spec(&specs, "user");
    assert_eq!(user.presence, Presence::Present, "{:?}", user.diagnostics);
    assert_eq!(user.device.as_deref(), Some(disk.part_path(1).as_path()));
    assert_eq!(user.partuuid.as_deref(), Some(puuid(1).as_str()));
    assert!(!user.read_only);
    assert_eq!(mount_point(user), state.path().join("mnt").join(puuid(1)));
    let (opts, sup) = mountinfo(&mount_point(user)).expect("mounted");
    for o in ["rw", "nosuid", "nodev", "noexec", "nosymfollow"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing from {opts}");
    }
    assert!(sup.contains("errors=remount-ro"), "{sup}");

    let ro = spec(&specs, &puuid(3));
    assert_eq!(ro.presence, Presence::Present, "{:?}", ro.diagnostics);
    assert!(ro.read_only);
    let (opts, sup) = mountinfo(&mount_point(ro)).expect("mounted");
    assert!(
        opts.starts_with("ro,") && opts.contains("nosymfollow"),
        "{opts}"
    );
    assert!(
        sup.starts_with("ro,") && sup.split(',').any(|o| o == "norecovery"),
        "{sup}"
    );

    // The definitions are there, and a symlink out of the partition is not followed.
    assert!(user.root.join("vm-a/vmlinux").is_file());
    assert!(user.root.join("vm-a/blk/root.img").is_file());
    assert!(ro.root.join("vm-c/vmlinux").is_file());
    let err = std::fs::read(user.root.join("vm-a/escape")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "nosymfollow");
    assert!(mountinfo(&state.path().join("mnt").join(puuid(4))).is_none());

    // Level-triggered: a second reconcile changes nothing.
    assert_eq!(m.reconcile(), specs);

    m.unmount_all();
    assert!(mountinfo(&mount_point(user)).is_none());
    assert!(!mount_point(user).exists() && !mount_point(ro).exists());
}

#[test]
fn classic_mount_fallback_mounts_the_same_way() {
    let Some(()) = require_loop("mount(2) fallback on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("classic_mount_fallback_mounts_the_same_way") {
        return;
    }
    let disk = LoopDisk::new(32, &layout()).unwrap();
    disk.mkfs_ext4(1, "vmc-a", None).unwrap();
    disk.mkfs_ext4(3, "vmc-c", None).unwrap();
    let state = tempfile::tempdir().unwrap();
    let host = SystemHost::new("/dev".into()).classic_mount_only();
    let mut m = PartitionManager::with_host(config(&disk, state.path()), host);
    let specs = m.reconcile();
    for (label, rw) in [("user".to_owned(), "rw,"), (puuid(3), "ro,")] {
        let s = spec(&specs, &label);
        assert_eq!(s.presence, Presence::Present, "{:?}", s.diagnostics);
        let (opts, sup) = mountinfo(&mount_point(s)).expect("mounted");
        assert!(opts.starts_with(rw), "{opts}");
        for o in ["nosuid", "nodev", "noexec", "nosymfollow"] {
            assert!(opts.split(',').any(|x| x == o), "{o} missing from {opts}");
        }
        assert!(sup.contains("errors=remount-ro"), "{sup}");
    }
    m.unmount_all();
}

#[test]
fn already_mounted_is_reported_not_mounted_twice() {
    let Some(()) = require_loop("already-mounted check on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("already_mounted_is_reported_not_mounted_twice") {
        return;
    }
    let disk = LoopDisk::new(32, &layout()).unwrap();
    disk.mkfs_ext4(1, "vmc-a", None).unwrap();
    disk.mkfs_ext4(3, "vmc-c", None).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    run(
        "mount",
        &[
            "-t",
            "ext4",
            disk.part_path(1).to_str().unwrap(),
            elsewhere.path().to_str().unwrap(),
        ],
        None,
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut m = PartitionManager::new(config(&disk, state.path()));
    let specs = m.reconcile();
    let user = spec(&specs, "user");
    assert_eq!(user.presence, Presence::Failed);
    assert_eq!(user.diagnostics[0].code, DiagCode::AlreadyMounted);
    assert!(
        user.diagnostics[0]
            .message
            .contains(elsewhere.path().to_str().unwrap())
    );
    assert!(!state.path().join("mnt").join(puuid(1)).exists());
    assert_eq!(spec(&specs, &puuid(3)).presence, Presence::Present);

    // Below the mount-table check, the kernel refuses a second superblock
    // user too (FSCONFIG_CMD_CREATE_EXCL), e.g. for a mount in another namespace.
    let host = SystemHost::new("/dev".into());
    let sys =
        std::fs::read_to_string(format!("/sys/class/block/{}/dev", disk.part_name(1))).unwrap();
    let dev: DevId = sys.trim().parse().unwrap();
    let d = host.open_block(&disk.part_name(1), dev, None).unwrap();
    let target = tempfile::tempdir().unwrap();
    let req = MountRequest {
        fstype: FsType::Ext4,
        read_only: false,
    };
    let r = host.mount(&d, target.path(), &req);
    assert!(matches!(r, Err(MountError::AlreadyMounted)), "{r:?}");
    assert!(mountinfo(target.path()).is_none());

    run("umount", &[elsewhere.path().to_str().unwrap()], None).unwrap();
    m.unmount_all();
}

#[test]
fn rewritten_table_is_a_geometry_mismatch() {
    let Some(()) = require_loop("geometry cross-check on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("rewritten_table_is_a_geometry_mismatch") {
        return;
    }
    let disk = LoopDisk::new(32, &layout()).unwrap();
    disk.mkfs_ext4(1, "vmc-a", None).unwrap();
    disk.mkfs_ext4(3, "vmc-c", None).unwrap();
    // Move partition 3 on disk only.
    let moved = layout().replace("start=26624, size=16384", "start=26624, size=8192");
    disk.sfdisk_behind_kernel(&["--force", disk.path().to_str().unwrap()], Some(&moved))
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut m = PartitionManager::new(config(&disk, state.path()));
    let specs = m.reconcile();
    let c = spec(&specs, &puuid(3));
    assert_eq!(c.presence, Presence::Failed);
    assert_eq!(c.diagnostics[0].code, DiagCode::GeometryMismatch);
    assert!(!state.path().join("mnt").join(puuid(3)).exists());
    assert_eq!(spec(&specs, "user").presence, Presence::Present);
    m.unmount_all();
}

#[test]
fn ext_matching_two_devices_is_refused() {
    let Some(()) = require_loop("ext= on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("ext_matching_two_devices_is_refused") {
        return;
    }
    let disk = LoopDisk::new(32, &layout()).unwrap();
    // A label no other device on this machine has: two of ours carry it.
    let label = format!("vmc{}", std::process::id());
    disk.mkfs_ext4(1, &label, None).unwrap();
    disk.mkfs_ext4(3, &label, None).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(&disk, state.path());
    cfg.ext = ExtSource::Value(format!("LABEL={label}"));
    let mut m = PartitionManager::new(cfg);
    let specs = m.reconcile();
    let user = spec(&specs, "user");
    assert_eq!(user.presence, Presence::Failed);
    assert_eq!(user.diagnostics[0].code, DiagCode::AmbiguousExt);
    let msg = &user.diagnostics[0].message;
    assert!(msg.contains("matches 2 devices"), "{msg}");
    assert!(
        msg.contains(disk.part_path(1).to_str().unwrap())
            && msg.contains(disk.part_path(3).to_str().unwrap())
    );
    // Without ext=, both are still discovered by type: neither is primary now.
    assert_eq!(spec(&specs, &puuid(1)).presence, Presence::Present);

    // ext= naming one of them by PARTUUID makes it the primary.
    let mut cfg = config(&disk, state.path());
    cfg.ext = ExtSource::Value(format!("PARTUUID={}", puuid(3)));
    m.unmount_all();
    let mut m = PartitionManager::new(cfg);
    let specs = m.reconcile();
    assert_eq!(
        spec(&specs, "user").partuuid.as_deref(),
        Some(puuid(3).as_str())
    );
    m.unmount_all();
}

#[test]
fn hostile_tables_are_rejected_without_a_crash() {
    let Some(()) = require_loop("hostile GPT on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("hostile_tables_are_rejected_without_a_crash") {
        return;
    }
    for (what, img) in hostile_tables() {
        let disk = LoopDisk::with_image(16, |p| {
            img.write_to(&std::fs::OpenOptions::new().write(true).open(p)?)
        })
        .unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut m = PartitionManager::new(config(&disk, state.path()));
        let specs = m.reconcile();
        assert_eq!(specs.len(), 1, "{what}: {specs:#?}");
        let s = &specs[0];
        assert_eq!(s.label.as_str(), format!("disk-{}", disk.name()), "{what}");
        assert_eq!(s.presence, Presence::Failed);
        assert_eq!(s.diagnostics[0].code, DiagCode::BadPartitionTable, "{what}");
        assert!(
            s.diagnostics[0].message.contains("entry array geometry"),
            "{what}: {}",
            s.diagnostics[0].message
        );
    }
}
