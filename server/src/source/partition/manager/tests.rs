//! The manager's state machine over the fake machine of `testing_world`.

use vm_catalog_protocol::DiagCode;

use super::*;
use crate::source::partition::config::ExtSource;
use crate::source::partition::host::{FsckOutcome, MountEntry};
use crate::source::partition::testing::ext_image;
use crate::source::partition::testing_world::{World, pdev, uuid};

fn summary(specs: &[SourceSpec]) -> Vec<(String, Presence, bool)> {
    specs
        .iter()
        .map(|s| (s.label.to_string(), s.presence, s.read_only))
        .collect()
}

fn u(n: u8) -> String {
    uuid(n).to_string()
}

#[test]
fn reconcile_mounts_user_partitions_as_untrusted_sources() {
    let w = World::new();
    let mut m = w.manager();
    let specs = m.reconcile();
    assert_eq!(
        summary(&specs),
        vec![
            ("user".into(), Presence::Present, false),
            (u(3), Presence::Present, true),
        ]
    );
    let s = &specs[0];
    assert_eq!(s.kind, SourceKind::Partition);
    assert_eq!(s.trust, Trust::Untrusted);
    assert_eq!(s.root, w.target(1).join("svc/data"));
    assert_eq!(
        s.device.as_deref(),
        Some(std::path::Path::new("/dev/loop1p1"))
    );
    assert_eq!(s.partuuid, Some(u(1)));
    assert!(w.target(1).is_dir() && w.target(3).is_dir());
    assert_eq!(
        w.host.calls(),
        vec![
            format!("mount loop1p1 {} rw", w.target(1).display()),
            format!("mount loop1p3 {} ro", w.target(3).display()),
        ]
    );
    // Level-triggered: nothing changed, nothing done.
    assert_eq!(m.reconcile(), specs);
    assert_eq!(w.host.calls().len(), 2);
}

/// Regression: a table that could not be read for one round (rewritten in
/// place, a read error) made every mounted partition of its disk "removed",
/// which stops the VMs that run from them.
#[test]
fn an_unreadable_table_keeps_the_mounted_partitions_the_kernel_still_has() {
    let w = World::new();
    let mut m = w.manager();
    let before = m.reconcile();
    let good = w.host.devices.borrow()["loop1"].2.clone();
    let mut bad = good.clone();
    // Both headers' CRCs break: the table cannot be read at all.
    bad[512 + 16] ^= 0xff;
    let last = bad.len() - 512;
    bad[last + 16] ^= 0xff;
    w.host.devices.borrow_mut().get_mut("loop1").unwrap().2 = bad;
    let during = m.reconcile();
    let present: Vec<_> = summary(&during)
        .into_iter()
        .filter(|s| s.1 == Presence::Present)
        .collect();
    assert_eq!(present, summary(&before), "kept while unreadable");
    assert!(
        during.iter().any(|s| s.label.as_str() == "disk-loop1"
            && s.diagnostics
                .iter()
                .any(|d| d.code == DiagCode::BadPartitionTable)),
        "the bad table is reported: {during:?}"
    );
    assert!(!w.host.calls().iter().any(|c| c.starts_with("unmount")));
    assert!(!m.release_removed(), "nothing to release");
    // Readable again: as before.
    w.host.devices.borrow_mut().get_mut("loop1").unwrap().2 = good;
    assert_eq!(m.reconcile(), before);
    // A partition the kernel no longer has is still gone, table or not.
    let mut bad = w.host.devices.borrow()["loop1"].2.clone();
    bad[512 + 16] ^= 0xff;
    bad[last + 16] ^= 0xff;
    w.host.devices.borrow_mut().get_mut("loop1").unwrap().2 = bad;
    w.remove_partition(3);
    let specs = m.reconcile();
    assert!(
        specs
            .iter()
            .any(|s| s.partuuid == Some(u(3)) && s.presence == Presence::Gone),
        "{specs:?}"
    );
}

#[test]
fn a_removed_partition_is_gone_until_released_and_stays_listed() {
    let w = World::new();
    let mut m = w.manager();
    m.reconcile();
    w.remove_partition(3);
    let specs = m.reconcile();
    assert_eq!(summary(&specs)[1], (u(3), Presence::Gone, true));
    assert!(
        !w.host.calls().iter().any(|c| c.starts_with("unmount")),
        "not unmounted before release"
    );

    assert!(m.release_removed());
    assert_eq!(
        w.host.calls().last().unwrap(),
        &format!("unmount {}", w.target(3).display())
    );
    assert!(!w.target(3).exists(), "mount point removed");
    assert!(!m.release_removed(), "released once");

    let specs = m.reconcile();
    assert_eq!(
        summary(&specs)[1],
        (u(3), Presence::Gone, true),
        "still reported"
    );
    m.forget_released();
    assert_eq!(m.reconcile().len(), 1);
}

#[test]
fn a_partition_that_comes_back_is_mounted_again() {
    let w = World::new();
    let mut m = w.manager();
    m.reconcile();
    w.remove_partition(3);
    m.reconcile();
    m.release_removed();
    w.add_partition("loop1", 3, pdev(3), 300, 50, ext_image([3; 16], b"fs"));
    let specs = m.reconcile();
    assert_eq!(summary(&specs)[1], (u(3), Presence::Present, true));
    assert_eq!(
        w.host
            .calls()
            .iter()
            .filter(|c| c.starts_with("mount loop1p3"))
            .count(),
        2
    );
}

#[test]
fn back_before_release_keeps_its_mount() {
    let w = World::new();
    let mut m = w.manager();
    m.reconcile();
    w.remove_partition(3);
    assert_eq!(summary(&m.reconcile())[1].1, Presence::Gone);
    w.add_partition("loop1", 3, pdev(3), 300, 50, ext_image([3; 16], b"fs"));
    assert_eq!(summary(&m.reconcile())[1].1, Presence::Present);
    assert_eq!(w.host.calls().len(), 2, "no unmount, no second mount");
    assert!(!m.release_removed());
}

#[test]
fn a_replaced_disk_waits_for_the_old_mount_to_be_released() {
    let w = World::new();
    let mut m = w.manager();
    m.reconcile();
    // The same image attached again: same names and PARTUUIDs, new diskseq.
    for (name, dev) in w.host.devices.borrow_mut().iter_mut() {
        if name.starts_with("loop1") {
            dev.1 = Some(6);
        }
    }
    std::fs::write(
        w.sysfs.root().join("devices/virtual/block/loop1/diskseq"),
        "6\n",
    )
    .unwrap();
    let specs = m.reconcile();
    assert_eq!(summary(&specs)[0], ("user".into(), Presence::Gone, false));
    assert_eq!(
        w.host.calls().len(),
        2,
        "the new one is not mounted over the old"
    );
    m.release_removed();
    let specs = m.reconcile();
    assert_eq!(
        summary(&specs)[0],
        ("user".into(), Presence::Present, false)
    );
}

#[test]
fn busy_partitions_are_detached_and_released() {
    let w = World::new();
    let mut m = w.manager();
    m.reconcile();
    w.host.busy.borrow_mut().insert(w.target(1));
    w.remove_partition(1);
    m.reconcile();
    assert!(m.release_removed());
    assert!(!w.target(1).exists());
}

#[test]
fn already_mounted_elsewhere_is_reported_not_mounted_twice() {
    let w = World::new();
    w.host.mounts.borrow_mut().push(MountEntry {
        dev: pdev(1),
        mount_point: "/media/x".into(),
        options: vec!["rw".into()],
        fstype: "ext4".into(),
    });
    let mut m = w.manager();
    let specs = m.reconcile();
    assert_eq!(summary(&specs)[0], ("user".into(), Presence::Failed, false));
    assert_eq!(specs[0].diagnostics[0].code, DiagCode::AlreadyMounted);
    assert!(specs[0].diagnostics[0].message.contains("/media/x"));
    assert!(!w.host.calls().iter().any(|c| c.contains("loop1p1")));
    assert!(!w.target(1).exists());
}

#[test]
fn our_own_mount_from_an_earlier_run_is_adopted() {
    let w = World::new();
    std::fs::create_dir_all(w.target(1)).unwrap();
    w.host.mounts.borrow_mut().push(MountEntry {
        dev: pdev(1),
        mount_point: w.target(1),
        options: ["rw", "nosuid", "nodev", "noexec", "nosymfollow"]
            .map(String::from)
            .to_vec(),
        fstype: "ext4".into(),
    });
    let mut m = w.manager();
    assert_eq!(summary(&m.reconcile())[0].1, Presence::Present);
    assert!(!w.host.calls().iter().any(|c| c.contains("loop1p1")));
}

#[test]
fn fsck_failure_refuses_the_mount_and_is_retried() {
    let mut w = World::new();
    w.config.fsck = true;
    *w.host.fsck_outcome.borrow_mut() = Some(FsckOutcome::Failed {
        code: Some(4),
        output: "UNEXPECTED INCONSISTENCY".into(),
    });
    let mut m = w.manager();
    let specs = m.reconcile();
    assert_eq!(specs[0].presence, Presence::Failed);
    assert_eq!(specs[0].diagnostics[0].code, DiagCode::FsckFailed);
    assert!(specs[0].diagnostics[0].message.contains("exit 4"));
    assert!(!w.target(1).exists(), "mount point cleaned up");
    // The read-only partition is mounted without fsck.
    assert_eq!(specs[1].presence, Presence::Present);
    assert_eq!(
        w.host.calls(),
        vec![
            "fsck loop1p1".to_owned(),
            format!("mount loop1p3 {} ro", w.target(3).display())
        ]
    );
    *w.host.fsck_outcome.borrow_mut() = Some(FsckOutcome::Corrected);
    assert_eq!(m.reconcile()[0].presence, Presence::Present);
}

#[test]
fn a_non_ext4_partition_is_unsupported() {
    let w = World::new();
    w.host.devices.borrow_mut().get_mut("loop1p1").unwrap().2 = vec![0; 8192];
    let mut m = w.manager();
    let specs = m.reconcile();
    assert_eq!(
        specs[0].diagnostics[0].code,
        DiagCode::UnsupportedFilesystem
    );
    assert_eq!(specs[0].presence, Presence::Failed);
}

#[test]
fn a_mount_that_vanished_is_mounted_again() {
    let w = World::new();
    let mut m = w.manager();
    m.reconcile();
    w.host.mounts.borrow_mut().retain(|e| e.dev != pdev(3));
    assert_eq!(summary(&m.reconcile())[1].1, Presence::Present);
    assert_eq!(
        w.host
            .calls()
            .iter()
            .filter(|c| c.starts_with("mount loop1p3"))
            .count(),
        2
    );
}

#[test]
fn ext_from_a_cmdline_file_names_the_primary() {
    let mut w = World::new();
    let cmdline = w.tmp.path().join("cmdline");
    std::fs::write(&cmdline, format!("ro ext=PARTUUID={}\n", u(3))).unwrap();
    w.config.ext = ExtSource::Cmdline(cmdline);
    let mut m = w.manager();
    let specs = m.reconcile();
    assert_eq!(
        summary(&specs),
        vec![
            ("user".into(), Presence::Present, true),
            (u(1), Presence::Present, false),
        ]
    );
    assert_eq!(specs[0].partuuid, Some(u(3)));
}

#[test]
fn an_ambiguous_ext_is_a_failed_primary() {
    let mut w = World::new();
    w.config.ext = ExtSource::Value("LABEL=fs".into());
    let mut m = w.manager();
    let specs = m.reconcile();
    assert_eq!(specs[0].label.as_str(), "user");
    assert_eq!(specs[0].presence, Presence::Failed);
    assert_eq!(specs[0].diagnostics[0].code, DiagCode::AmbiguousExt);
    // The others are still discovered, by PARTUUID.
    assert_eq!(
        summary(&specs[1..]),
        vec![
            (u(1), Presence::Present, false),
            (u(3), Presence::Present, true)
        ]
    );
}

#[test]
fn a_bad_mount_base_is_a_diagnostic_not_a_crash() {
    let mut w = World::new();
    let file = w.tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    w.config.mount_base = file.join("mnt");
    let mut m = w.manager();
    let specs = m.reconcile();
    assert!(specs.iter().all(|s| s.presence == Presence::Failed));
    assert_eq!(specs[0].diagnostics[0].code, DiagCode::MountFailed);
}

#[test]
fn unmount_all_releases_everything() {
    let w = World::new();
    let mut m = w.manager();
    m.reconcile();
    m.unmount_all();
    assert!(w.host.mounts.borrow().is_empty());
    assert!(!w.target(1).exists() && !w.target(3).exists());
}

#[test]
fn toggling_read_only_remounts_after_release() {
    let w = World::new();
    let mut m = w.manager();
    m.reconcile();
    // Attribute 60 cleared on p3 in the table.
    let mut img = crate::source::partition::gpt_image::GptImage::new(512, 2048);
    for n in 1..=4 {
        let mut e = crate::source::partition::testing_world::std_entry(n);
        if n == 3 {
            e.attributes = 0;
        }
        img = img.with_entry(e);
    }
    w.host.devices.borrow_mut().get_mut("loop1").unwrap().2 = img.to_bytes();
    assert_eq!(summary(&m.reconcile())[1], (u(3), Presence::Gone, true));
    m.release_removed();
    assert_eq!(summary(&m.reconcile())[1], (u(3), Presence::Present, false));
    assert_eq!(
        w.host.calls().last().unwrap(),
        &format!("mount loop1p3 {} rw", w.target(3).display())
    );
}

#[test]
fn a_new_primary_takes_the_user_label_in_one_reconcile() {
    let w = World::new();
    w.remove_partition(1);
    let mut m = w.manager();
    assert_eq!(
        summary(&m.reconcile())[0],
        ("user".into(), Presence::Present, true)
    );
    w.add_partition("loop1", 1, pdev(1), 100, 50, ext_image([1; 16], b"fs"));
    let specs = m.reconcile();
    assert_eq!(
        summary(&specs),
        vec![
            ("user".into(), Presence::Present, false),
            (u(3), Presence::Present, true),
        ]
    );
    assert_eq!(specs[0].partuuid, Some(u(1)));
}

// Regression: the removed primary kept `user` (Gone) while the next user
// partition, still mounted, was relabelled `user` too; the catalog ignored
// the second source of that label, so the partition that was still there
// lost all its VMs, for good.
#[test]
fn removed_primary_does_not_hide_the_next_partition() {
    let w = World::new();
    let mut m = w.manager();
    m.reconcile();
    w.remove_partition(1);
    let specs = m.reconcile();
    assert_eq!(
        summary(&specs),
        vec![
            ("user".into(), Presence::Gone, false),
            (u(3), Presence::Present, true),
        ],
        "the removed primary keeps `user` until it is released"
    );
    assert_eq!(specs[1].partuuid, Some(u(3)));

    assert!(m.release_removed());
    let specs = m.reconcile();
    assert_eq!(
        summary(&specs),
        vec![("user".into(), Presence::Present, true)],
        "then the next partition is the primary"
    );
    assert_eq!(specs[0].partuuid, Some(u(3)));
    assert_eq!(m.reconcile(), specs);
    // Relabelled in place: neither unmounted nor mounted again.
    let calls = w.host.calls();
    assert_eq!(calls.iter().filter(|c| c.starts_with("mount")).count(), 2);
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("unmount")).count(),
        1,
        "{calls:?}"
    );
}
