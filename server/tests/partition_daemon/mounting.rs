//! Mounting at start-up: the partitions on the disk, hardened, and a restarted daemon adopting its own mounts.

use super::*;

#[test]
fn daemon_mounts_user_partitions_hardened_and_lists_their_vms() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("mounting::daemon_mounts_user_partitions_hardened_and_lists_their_vms")
    {
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
fn daemon_restart_adopts_its_own_mounts() {
    let Some(()) = require_loop("vm-catalogd on a loop disk") else {
        return;
    };
    if !in_private_mount_ns("mounting::daemon_restart_adopts_its_own_mounts") {
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
