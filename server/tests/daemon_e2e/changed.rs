//! Watch events name what changed: the rescan they ask for is told which
//! definitions (or source entries) the events marked, and records it in its
//! `rescan` span.

use super::*;

#[tokio::test]
async fn a_rescan_after_watch_events_is_told_which_definitions_changed() {
    let mut d = daemon();
    d.user_vm("kept");
    // A directory changed less than the clock's slack before the scan
    // started is caught up as changed when its watch is added: let "kept"
    // age past that, so that only "added" is named.
    std::thread::sleep(Duration::from_millis(100));
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    // Before its watch is in place, a new entry is caught up as a change
    // of the whole source, not named: wait for the watch.
    eventually("the daemon to watch the user source", async || {
        d.watches(&d.user())
    })
    .await;
    d.user_vm("added");
    eventually("the watch to add it", async || {
        let all = c.list_vms(true, None).await.unwrap();
        names(&all).contains(&"added@user:active".to_string())
    })
    .await;
    eventually("the rescan's span in the log", async || {
        d.log().contains("changed=user/added")
    })
    .await;
    let log = d.log();
    assert!(!log.contains("changed=user/kept"), "{log}");
    // A requested rescan (like the start-up one) reads everything.
    let whole = |log: &str| log.matches("changed=whole").count();
    let before = whole(&log);
    assert!(before >= 1, "the start-up rescan: {log}");
    c.rescan(false).await.unwrap();
    eventually("the requested rescan's span", async || {
        whole(&d.log()) > before
    })
    .await;
}

/// Regression: a definition's directory renamed away kept its watches (a
/// watch follows its directory, not its path), so a directory made under
/// the old name was never watched and its changes never seen; the renamed
/// one's watches answered for both names.
#[tokio::test]
async fn a_directory_made_where_a_watched_one_was_renamed_from_is_watched() {
    let mut d = daemon();
    d.user_vm("a");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    eventually("the daemon to watch a/blk", async || {
        d.watches(&d.user().join("a/blk"))
    })
    .await;
    std::fs::rename(d.user().join("a"), d.user().join("moved")).unwrap();
    d.user_vm("a");
    eventually("both definitions", async || {
        let all = names(&c.list_vms(true, None).await.unwrap());
        all.contains(&"a@user:active".to_string()) && all.contains(&"moved@user:active".to_string())
    })
    .await;
    for dir in ["a", "a/blk", "moved", "moved/blk"] {
        eventually(dir, async || d.watches(&d.user().join(dir))).await;
    }
    let before = c
        .get_vm(&"a".parse().unwrap())
        .await
        .unwrap()
        .vm
        .fingerprint;
    std::fs::write(d.user().join("a/blk/root.img"), b"a longer disk").unwrap();
    eventually("the new a's disk change seen", async || {
        c.get_vm(&"a".parse().unwrap())
            .await
            .unwrap()
            .vm
            .fingerprint
            != before
    })
    .await;
}
