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
