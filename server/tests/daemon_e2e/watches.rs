//! Directory watches: changes on disk become rescans without a request.

use super::*;

#[tokio::test]
async fn a_change_in_a_watched_directory_triggers_a_rescan() {
    let mut d = daemon();
    d.arg("--debounce-ms").arg("50");
    d.user_vm("one");
    d.start().unwrap();
    let mut w = Watch::new(d.socket());
    assert!(matches!(next(&mut w).await, WatchEvent::Reset { .. }));
    // A new definition directory in the source root.
    d.user_vm("two");
    match next(&mut w).await {
        WatchEvent::Changes { changes, .. } => {
            assert!(changes.iter().any(|c| c.kind == ChangeKind::Added
                && matches!(&c.item, ChangeItem::Vm(e) if e.name.as_str() == "two")));
        }
        e => panic!("{e:?}"),
    }
    // A change inside a definition (its disk removed): watched too.
    std::fs::remove_file(d.user().join("one/blk/root.img")).unwrap();
    match next(&mut w).await {
        WatchEvent::Changes { changes, .. } => {
            assert!(changes.iter().any(|c| matches!(&c.item,
                ChangeItem::Vm(e) if e.name.as_str() == "one" && e.state == VmState::Rejected)));
        }
        e => panic!("{e:?}"),
    }
    assert!(d.log().contains("trigger=\"watch\""), "{}", d.log());
}

/// Regression (review): a watch that could not be added (the directory did
/// not exist yet) or that the kernel dropped (the directory was removed)
/// was never tried again, so later changes there went unnoticed.
#[tokio::test]
async fn watches_follow_directories_created_later_and_recreated() {
    let mut d = daemon();
    d.arg("--debounce-ms").arg("50");
    // The `user` source root does not exist yet.
    std::fs::remove_dir(d.user()).unwrap();
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let state = async |c: &Client, name: &str| {
        c.list_vms(true, None)
            .await
            .unwrap()
            .vms
            .into_iter()
            .find(|e| e.name.as_str() == name)
            .map(|e| e.state)
    };
    // The source root appears: noticed through its parent.
    std::fs::create_dir(d.user()).unwrap();
    std::fs::create_dir(d.user().join("vm1")).unwrap();
    eventually("vm1 seen, rejected", async || {
        state(&c, "vm1").await == Some(VmState::Rejected)
    })
    .await;
    // A directory the daemon has just found is watched once the rescan
    // hands it over: each change below is made once the watch it is about
    // is in place (an event, not a time).
    let vm1 = d.user().join("vm1");
    eventually("the daemon watches vm1", async || d.watches(&vm1)).await;
    // blk/ created after the first scan saw vm1, then a disk in it.
    std::fs::write(vm1.join("vmlinux"), b"k").unwrap();
    std::fs::create_dir(vm1.join("blk")).unwrap();
    eventually("a rescan after vmlinux and blk/ appeared", async || {
        c.list_vms(true, None).await.unwrap().vms.iter().any(|e| {
            e.name.as_str() == "vm1"
                && e.diagnostics.iter().any(|x| x.code == DiagCode::NoDisk)
                && !e
                    .diagnostics
                    .iter()
                    .any(|x| x.code == DiagCode::MissingKernel)
        })
    })
    .await;
    eventually("the daemon watches vm1/blk", async || {
        d.watches(&vm1.join("blk"))
    })
    .await;
    std::fs::write(vm1.join("blk/root.img"), b"disk").unwrap();
    eventually("vm1 active once its disk exists", async || {
        state(&c, "vm1").await == Some(VmState::Active)
    })
    .await;
    // Removed and made again: the new directory is watched too.
    std::fs::remove_dir_all(&vm1).unwrap();
    eventually("vm1 gone", async || state(&c, "vm1").await.is_none()).await;
    std::fs::create_dir(&vm1).unwrap();
    eventually("vm1 back, rejected", async || {
        state(&c, "vm1").await == Some(VmState::Rejected)
    })
    .await;
    eventually("the daemon watches the new vm1", async || d.watches(&vm1)).await;
    // Its content in one step (blk/ made beside it and moved in), so that
    // no rescan can see blk/ before its disk.
    let staging = d.tree().join("staging-blk");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("root.img"), b"disk").unwrap();
    std::fs::write(vm1.join("vmlinux"), b"kernel").unwrap();
    std::fs::rename(&staging, vm1.join("blk")).unwrap();
    eventually("vm1 active again", async || {
        state(&c, "vm1").await == Some(VmState::Active)
    })
    .await;
}

/// Regression (issue 24's watch cost): past the inotify watch limit, a
/// definition without a watch sends no event, and once rescans read only
/// what events named, its changes were never read (a VM whose disk was
/// removed stayed active). Now a refused watch is a warning and makes
/// every rescan the events ask for read everything. The limit is lowered
/// only in a user namespace of the daemon's own (`unshare -U -r`, whose
/// `/proc/sys/user/max_inotify_watches` is its own), never the machine's.
#[tokio::test]
async fn a_definition_past_the_watch_limit_was_never_read_again() {
    const LIMIT: usize = 24;
    let limit = format!("echo {LIMIT} > /proc/sys/user/max_inotify_watches");
    let probe = Command::new("unshare")
        .args(["-U", "-r", "sh", "-c", &limit])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        vm_catalog_tests::skip("a user namespace with its own inotify watch limit (unshare -U -r)");
        return;
    }
    let limited = tempfile::tempdir().unwrap();
    let wrapper = limited.path().join("vm-catalogd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare -U -r sh -c '{limit} && exec \"$0\" \"$@\"' {} \"$@\"\n",
            env!("CARGO_BIN_EXE_vm-catalogd")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut d = TestDaemon::new(&wrapper);
    d.arg("--debounce-ms").arg("50");
    let vms: Vec<_> = (0..20).map(|i| d.user_vm(&format!("vm{i:02}"))).collect();
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    eventually("the warning that watches are refused", async || {
        d.log().contains("cannot watch every source directory")
    })
    .await;
    let watched = |p: &std::path::PathBuf| d.watches(p) && d.watches(&p.join("blk"));
    let seen = vms
        .iter()
        .find(|p| watched(p))
        .expect("a watched definition");
    let unseen = vms
        .iter()
        .find(|p| !d.watches(p) && !d.watches(&p.join("blk")))
        .expect("a definition past the limit");
    let name = unseen.file_name().unwrap().to_str().unwrap().to_owned();
    let whole = |log: &str| log.matches("changed=whole").count();
    let before = whole(&d.log());
    std::fs::remove_file(unseen.join("blk/root.img")).unwrap();
    // A change where a watch is: its rescan must read the other one too.
    std::fs::remove_file(seen.join("blk/root.img")).unwrap();
    eventually("the unwatched definition read again", async || {
        c.list_vms(true, None)
            .await
            .unwrap()
            .vms
            .iter()
            .any(|e| e.name.as_str() == name && e.state == VmState::Rejected)
    })
    .await;
    let log = d.log();
    assert!(
        whole(&log) > before,
        "the watch's rescan read everything: {log}"
    );
}
