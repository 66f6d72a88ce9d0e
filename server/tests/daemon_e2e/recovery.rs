//! Sources that failed, or were missing, recover by themselves once fixed:
//! they stay watched, without a `Rescan` call (issue 12, item 4).

use super::*;

/// The state of the source `label`, and its definitions.
async fn source(c: &Client, label: &str) -> Option<(SourceState, u32)> {
    c.sources()
        .await
        .unwrap()
        .sources
        .into_iter()
        .find(|s| s.label.as_str() == label)
        .map(|s| (s.state, s.definitions))
}

async fn state_of(c: &Client, name: &str) -> Option<VmState> {
    c.list_vms(true, None)
        .await
        .unwrap()
        .vms
        .into_iter()
        .find(|e| e.name.as_str() == name)
        .map(|e| e.state)
}

/// Regression (issue 12, item 4): a source made `failed` by
/// `too-many-entries` was no longer watched; once the entries were removed,
/// nothing noticed until a manual rescan.
#[tokio::test]
async fn a_source_failed_with_too_many_entries_recovers_when_they_are_removed() {
    let mut d = daemon();
    d.arg("--debounce-ms").arg("50");
    d.user_vm("vm1");
    let junk = d.user().join("junk");
    // 4096 entries besides vm1: one more than a source root may hold.
    for i in 0..4096 {
        std::fs::write(d.user().join(format!("junk{i}")), b"").unwrap();
    }
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    assert_eq!(source(&c, "user").await.unwrap().0, SourceState::Failed);
    assert_eq!(state_of(&c, "vm1").await, None);
    for i in 0..4096 {
        std::fs::remove_file(format!("{}{i}", junk.display())).unwrap();
    }
    eventually("the user source ready again", async || {
        source(&c, "user").await == Some((SourceState::Ready, 1))
    })
    .await;
    assert_eq!(state_of(&c, "vm1").await, Some(VmState::Active));
    assert!(d.log().contains("trigger=\"watch\""), "{}", d.log());
}

/// Regression (issue 12, item 4): a source that failed at start-up (its
/// root was not a directory) was never watched.
#[tokio::test]
async fn a_source_failed_at_start_up_recovers_when_fixed() {
    let mut d = daemon();
    d.arg("--debounce-ms").arg("50");
    std::fs::remove_dir(d.user()).unwrap();
    std::fs::write(d.user(), b"not a directory").unwrap();
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    assert_eq!(source(&c, "user").await.unwrap().0, SourceState::Failed);
    std::fs::remove_file(d.user()).unwrap();
    let staged = d.tree().join("staged");
    d.tree().vm("staged", "vm1");
    std::fs::rename(&staged, d.user()).unwrap();
    eventually("vm1 active", async || {
        state_of(&c, "vm1").await == Some(VmState::Active)
    })
    .await;
    assert_eq!(
        source(&c, "user").await,
        Some((SourceState::Ready, 1)),
        "{}",
        d.log()
    );
}

/// Regression (issue 12, item 4): a source whose directory and its parent
/// were both missing at start-up was never watched (only the parent would
/// have been, and it could not be).
#[tokio::test]
async fn a_source_missing_with_its_parents_at_start_up_recovers_when_made() {
    let mut d = daemon();
    d.arg("--debounce-ms").arg("50");
    d.without_user_source();
    let root = d.tree().join("media/disk/vms");
    d.arg("--source").arg(format!("user={}", root.display()));
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    assert_eq!(source(&c, "user").await.unwrap().0, SourceState::Missing);
    // Made from the top, one level at a time, as a mount and a copy would.
    std::fs::create_dir(d.tree().join("media")).unwrap();
    std::fs::create_dir(d.tree().join("media/disk")).unwrap();
    d.tree().vm("staged", "vm1");
    std::fs::rename(d.tree().join("staged"), &root).unwrap();
    eventually("vm1 active", async || {
        state_of(&c, "vm1").await == Some(VmState::Active)
    })
    .await;
}
