//! Discovery over the fake machine of `testing_world`.

use vm_catalog_protocol::{DiagCode, Severity};

use super::*;
use crate::source::partition::config::DiskPolicy;
use crate::source::partition::gpt_image::GptImage;
use crate::source::partition::testing::ext_image;
use crate::source::partition::testing_world::{DISK, World, pdev, std_entry, uuid};

fn run(w: &World, ext: Option<&str>) -> Discovery {
    let snap = sysfs::snapshot(w.sysfs.root()).unwrap();
    let ext = ext.map(|e| e.parse::<ExtSpec>());
    discover(&w.host, &w.config, &snap, ext.as_ref())
}

fn keys(d: &Discovery) -> Vec<(String, bool, bool)> {
    d.candidates
        .iter()
        .map(|c| (c.name.clone(), c.primary, c.read_only))
        .collect()
}

#[test]
fn finds_user_partitions_honours_attributes_and_picks_the_first_as_primary() {
    let w = World::new();
    let d = run(&w, None);
    assert_eq!(
        keys(&d),
        vec![
            ("loop1p1".into(), true, false),
            ("loop1p3".into(), false, true)
        ],
        "p2 is another type, p4 is no-auto"
    );
    assert!(d.refusals.is_empty(), "{:?}", d.refusals);
    let c = &d.candidates[0];
    assert_eq!(c.label().as_str(), "user");
    assert_eq!(d.candidates[1].label().as_str(), uuid(3).to_string());
    assert_eq!(
        (c.dev, c.diskseq, c.partuuid),
        (pdev(1), Some(5), Some(uuid(1)))
    );
    assert_eq!(c.key, uuid(1).to_string());
}

#[test]
fn geometry_mismatch_is_refused() {
    let w = World::new();
    // The kernel thinks p3 starts one sector later than the table says.
    w.sysfs.remove_partition("loop1p3", pdev(3));
    w.sysfs.partition("loop1", "loop1p3", 3, pdev(3), 301, 50);
    let d = run(&w, None);
    assert_eq!(keys(&d), vec![("loop1p1".into(), true, false)]);
    assert_eq!(d.refusals.len(), 1);
    let r = &d.refusals[0];
    assert_eq!(r.diagnostic.code, DiagCode::GeometryMismatch);
    assert_eq!(r.label.as_str(), uuid(3).to_string());
    assert_eq!(
        r.device.as_deref(),
        Some(std::path::Path::new("/dev/loop1p3"))
    );
}

#[test]
fn geometry_is_scaled_by_the_sector_size() {
    let e = std_entry(1); // LBAs 100..=149
    let p = |start, size| sysfs::Partition {
        name: "x".into(),
        devname: "x".into(),
        dev: pdev(1),
        disk: "d".into(),
        number: 1,
        start,
        size,
    };
    assert!(geometry_matches(&e, &p(100, 50), 512));
    assert!(geometry_matches(&e, &p(800, 400), 4096));
    assert!(!geometry_matches(&e, &p(100, 50), 4096));
    let mut huge = e.clone();
    huge.first_lba = u64::MAX / 2;
    huge.last_lba = u64::MAX;
    assert!(!geometry_matches(&huge, &p(0, 0), 4096));
}

#[test]
fn a_hostile_table_is_a_disk_level_refusal() {
    let w = World::empty();
    let mut img = GptImage::new(512, 2048).with_entry(std_entry(1));
    img.entry_size = 256;
    w.add_disk("loop1", DISK, None, img.to_bytes());
    let d = run(&w, None);
    assert!(d.candidates.is_empty());
    assert_eq!(d.refusals.len(), 1);
    assert_eq!(d.refusals[0].label.as_str(), "disk-loop1");
    assert_eq!(d.refusals[0].diagnostic.code, DiagCode::BadPartitionTable);
    assert!(
        d.refusals[0]
            .diagnostic
            .message
            .contains("entry array geometry")
    );
}

#[test]
fn a_disk_without_gpt_is_silently_ignored() {
    let w = World::empty();
    w.add_disk("loop1", DISK, None, vec![0; 2048 * 512]);
    assert_eq!(run(&w, None), Discovery::default());
}

#[test]
fn a_replaced_disk_node_is_refused() {
    let w = World::new();
    // The node now is another device than sysfs says.
    w.host.devices.borrow_mut().get_mut("loop1").unwrap().0 = DevId { major: 7, minor: 9 };
    let d = run(&w, None);
    assert!(d.candidates.is_empty());
    assert!(
        d.refusals[0].diagnostic.message.contains("sysfs says 7:1"),
        "{:?}",
        d.refusals
    );
}

#[test]
fn the_backup_table_is_used_with_a_warning() {
    let w = World::empty();
    let img = GptImage::new(512, 2048).with_entry(std_entry(1));
    let mut bytes = img.to_bytes();
    bytes[512..1024].fill(0);
    w.add_disk("loop1", DISK, None, bytes);
    w.add_partition("loop1", 1, pdev(1), 100, 50, ext_image([1; 16], b""));
    let d = run(&w, None);
    assert_eq!(d.candidates.len(), 1);
    let warn = &d.candidates[0].warnings[0];
    assert_eq!(
        (warn.code, warn.severity),
        (DiagCode::BadPartitionTable, Severity::Warning)
    );
}

#[test]
fn partitions_the_kernel_does_not_know_yet_are_skipped() {
    let w = World::new();
    w.remove_partition(1);
    let d = run(&w, None);
    assert_eq!(keys(&d), vec![("loop1p3".into(), true, true)]);
    assert!(d.refusals.is_empty());
}

#[test]
fn ext_partuuid_names_the_primary() {
    let w = World::new();
    let d = run(&w, Some(&format!("PARTUUID={}", uuid(3))));
    assert_eq!(
        keys(&d),
        vec![
            ("loop1p3".into(), true, true),
            ("loop1p1".into(), false, false)
        ]
    );
    assert_eq!(d.candidates[1].label().as_str(), uuid(1).to_string());
}

#[test]
fn ext_overrides_no_auto() {
    let w = World::new();
    let d = run(&w, Some("/dev/loop1p4"));
    assert_eq!(d.candidates[0].name, "loop1p4");
    assert!(d.candidates[0].primary);
}

#[test]
fn ext_that_matches_two_devices_is_refused() {
    let w = World::new();
    // Every partition's file system has the label "fs".
    let d = run(&w, Some("LABEL=fs"));
    assert!(d.candidates.iter().all(|c| !c.primary));
    let r = d
        .refusals
        .iter()
        .find(|r| r.label.as_str() == "user")
        .unwrap();
    assert_eq!(r.diagnostic.code, DiagCode::AmbiguousExt);
    assert!(
        r.diagnostic.message.contains("matches 4 devices"),
        "{}",
        r.diagnostic.message
    );
    assert!(r.diagnostic.message.contains("/dev/loop1p1"));
}

#[test]
fn ext_by_fs_uuid_and_by_name() {
    let w = World::new();
    let d = run(&w, Some("UUID=03030303-0303-0303-0303-030303030303"));
    assert_eq!(d.candidates[0].name, "loop1p3");
    let d = run(&w, Some("loop1p1"));
    assert_eq!(d.candidates[0].name, "loop1p1");
    assert!(d.candidates[0].primary);
}

#[test]
fn ext_that_matches_nothing_or_is_malformed_is_refused() {
    let w = World::new();
    for ext in ["vdz", "UUID=nope"] {
        let d = run(&w, Some(ext));
        let r = d
            .refusals
            .iter()
            .find(|r| r.label.as_str() == "user")
            .unwrap();
        assert_eq!(r.diagnostic.code, DiagCode::AmbiguousExt, "{ext}");
        assert!(d.candidates.iter().all(|c| !c.primary));
    }
}

#[test]
fn ext_on_a_whole_disk_without_gpt_is_keyed_by_the_fs_uuid() {
    let w = World::new();
    w.add_disk(
        "vdb",
        DevId {
            major: 254,
            minor: 16,
        },
        None,
        ext_image([0x42; 16], b"data"),
    );
    let d = run(&w, Some("/dev/vdb"));
    let c = &d.candidates[0];
    assert_eq!(
        (c.name.as_str(), c.primary, c.partuuid),
        ("vdb", true, None)
    );
    assert_eq!(c.key, "fs-42424242-4242-4242-4242-424242424242");
    assert_eq!(c.label().as_str(), "user");
}

#[test]
fn ext_on_a_device_without_ext4_is_unsupported() {
    let w = World::new();
    w.add_disk(
        "vdb",
        DevId {
            major: 254,
            minor: 16,
        },
        None,
        vec![0; 8192],
    );
    let d = run(&w, Some("vdb"));
    let r = d
        .refusals
        .iter()
        .find(|r| r.label.as_str() == "user")
        .unwrap();
    assert_eq!(r.diagnostic.code, DiagCode::UnsupportedFilesystem);
}

#[test]
fn duplicate_partuuids_on_two_disks_are_refused() {
    let mut w = World::new();
    let img = GptImage::new(512, 2048).with_entry(std_entry(3));
    w.add_disk(
        "loop2",
        DevId { major: 7, minor: 2 },
        Some(6),
        img.to_bytes(),
    );
    w.add_partition(
        "loop2",
        3,
        DevId {
            major: 259,
            minor: 23,
        },
        300,
        50,
        ext_image([9; 16], b""),
    );
    w.config.disks = DiskPolicy::Named(vec!["loop1".into(), "loop2".into()]);
    let d = run(&w, None);
    assert_eq!(keys(&d), vec![("loop1p1".into(), true, false)]);
    let r = &d.refusals[0];
    assert_eq!(r.diagnostic.code, DiagCode::DuplicatePartuuid);
    assert_eq!(r.label.as_str(), uuid(3).to_string());
    assert!(
        r.diagnostic.path.contains("/dev/loop1p3") && r.diagnostic.path.contains("/dev/loop2p3")
    );
}

#[test]
fn root_disk_policy_searches_only_the_disk_under_root() {
    let mut w = World::new();
    let mut e = std_entry(1);
    e.part_guid = uuid(7);
    let img = GptImage::new(512, 2048)
        .with_entry(e)
        .with_entry(std_entry(3));
    // vda holds / on its partition 9; of its user partitions only 1 is known to the kernel.
    let vda = DevId {
        major: 254,
        minor: 0,
    };
    w.add_disk("vda", vda, None, img.to_bytes());
    w.add_partition(
        "vda",
        1,
        DevId {
            major: 254,
            minor: 1,
        },
        100,
        50,
        ext_image([7; 16], b""),
    );
    w.add_partition(
        "vda",
        9,
        DevId {
            major: 254,
            minor: 9,
        },
        1000,
        10,
        vec![],
    );
    w.host.root.set(Some(DevId {
        major: 254,
        minor: 9,
    }));
    w.config.disks = DiskPolicy::RootDisk;
    let d = run(&w, None);
    assert_eq!(keys(&d), vec![("vdap1".into(), true, false)]);

    // All disks: the root disk's first user partition is the primary.
    w.config.disks = DiskPolicy::All;
    let d = run(&w, None);
    assert_eq!(
        keys(&d),
        vec![
            ("vdap1".into(), true, false),
            ("loop1p1".into(), false, false),
            ("loop1p3".into(), false, true),
        ]
    );

    // No disk under /: nothing is searched.
    w.host.root.set(Some(DevId {
        major: 0,
        minor: 33,
    }));
    w.config.disks = DiskPolicy::RootDisk;
    assert_eq!(run(&w, None), Discovery::default());
}
