use std::path::PathBuf;

use inotify::Inotify;
use proptest::prelude::*;
use vm_catalog_protocol::VmName;

use super::*;

fn label() -> SourceLabel {
    SourceLabel::try_from("user").unwrap()
}

fn scope(vm: &str) -> Scope {
    Scope::Definition(label(), VmName::try_from(vm).unwrap())
}

/// `rel` below `root`, as a directory of the definition `vm`.
fn target(root: &Path, vm: &str, rel: &str) -> Target {
    Target::below(root, rel).of(scope(vm))
}

fn set(targets: Vec<Target>) -> WatchSet {
    WatchSet {
        targets: Arc::new(targets),
        // No directory counts as changed before its watch.
        scan_started_unix_ms: u64::MAX,
    }
}

#[test]
fn a_missing_directory_is_tried_again_once_an_event_names_its_definition() {
    let dir = tempfile::tempdir().unwrap();
    for vm in ["a", "b"] {
        std::fs::create_dir(dir.path().join(vm)).unwrap();
    }
    let inotify = Inotify::init().unwrap();
    let mut watches = inotify.watches();
    let mut table = Table::default();
    let wanted = set(["a", "b"]
        .into_iter()
        .flat_map(|vm| {
            [
                target(dir.path(), vm, vm),
                target(dir.path(), vm, &format!("{vm}/blk")),
            ]
        })
        .collect());
    let first = table.sync(&mut watches, &wanted);
    assert_eq!((first.tried, table.len()), (4, 2));
    // Made after the sync: no event about it reached the table yet.
    for vm in ["a", "b"] {
        std::fs::create_dir(dir.path().join(vm).join("blk")).unwrap();
    }
    let again = table.sync(&mut watches, &wanted);
    assert_eq!((again.tried, table.len()), (0, 2), "nothing named them");
    // An event in `a` (its directory saw `blk` made) names `a` only.
    table.touch(Some(&scope("a")), Some("blk".as_ref()));
    let named = table.sync(&mut watches, &wanted);
    assert_eq!((named.tried, table.len()), (1, 3));
    assert!(table.watched().contains(&target(dir.path(), "a", "a/blk")));
    // An event that marks everything tries every missing directory.
    table.touch(None, None);
    let whole = table.sync(&mut watches, &wanted);
    assert_eq!((whole.tried, table.len()), (1, 4));
}

#[test]
fn a_directory_two_targets_share_keeps_its_watch_until_neither_wants_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("vm")).unwrap();
    let inotify = Inotify::init().unwrap();
    let mut watches = inotify.watches();
    let mut table = Table::default();
    let mine = target(dir.path(), "vm", "vm");
    let other = Target::below(dir.path(), "vm").of(Scope::Source(label()));
    table.sync(&mut watches, &set(vec![mine.clone(), other.clone()]));
    assert_eq!(table.len(), 1, "one inode, one watch");
    let wd = table.by_wd.keys().next().unwrap().clone();
    assert_eq!(
        table.scope(&wd),
        Some(Scope::Whole),
        "two scopes: everything"
    );
    table.sync(&mut watches, &set(vec![other.clone()]));
    assert_eq!(table.scope(&wd), Some(Scope::Source(label())));
    table.sync(&mut watches, &set(vec![]));
    assert_eq!(table.len(), 0);
    assert!(table.targets.is_empty());
}

#[test]
fn a_directory_dropped_by_the_kernel_is_tried_again_at_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("vm")).unwrap();
    let inotify = Inotify::init().unwrap();
    let mut watches = inotify.watches();
    let mut table = Table::default();
    let wanted = set(vec![target(dir.path(), "vm", "vm")]);
    table.sync(&mut watches, &wanted);
    let wd = table.by_wd.keys().next().unwrap().clone();
    table.dropped(&wd);
    assert_eq!(table.len(), 0);
    let again = table.sync(&mut watches, &wanted);
    assert_eq!((again.tried, table.len()), (1, 1));
}

#[test]
fn a_moved_directory_and_those_below_it_are_watched_again_where_their_paths_are() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("vm/blk")).unwrap();
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let inotify = Inotify::init().unwrap();
    let mut watches = inotify.watches();
    let mut table = Table::default();
    let wanted = set(vec![
        target(dir.path(), "vm", "vm"),
        target(dir.path(), "vm", "vm/blk"),
        target(dir.path(), "other", "other"),
    ]);
    table.sync(&mut watches, &wanted);
    let vm = table
        .by_wd
        .iter()
        .find(|(_, ts)| ts[0].rel == Path::new("vm"))
        .map(|(wd, _)| wd.clone())
        .unwrap();
    table.moved(&mut watches, &vm);
    assert_eq!(
        table.watched(),
        vec![target(dir.path(), "other", "other")],
        "vm and vm/blk forgotten, other kept"
    );
    // Events the kernel queued on the removed watch still say what changed,
    // until it says the watch is gone.
    assert_eq!(table.scope(&vm), Some(scope("vm")));
    table.dropped(&vm);
    assert_eq!(table.scope(&vm), None);
    let again = table.sync(&mut watches, &wanted);
    assert_eq!((again.tried, table.len()), (2, 3));
}

/// A pool of targets: directories of four definitions, half of them
/// missing, and one directory named by two targets.
fn pool(root: &Path) -> Vec<Target> {
    let mut out = Vec::new();
    for vm in ["a", "b", "c", "d"] {
        std::fs::create_dir_all(root.join(vm).join("blk")).unwrap();
        out.push(target(root, vm, vm));
        out.push(target(root, vm, &format!("{vm}/blk")));
        out.push(target(root, vm, &format!("{vm}/providers")));
    }
    out.push(Target::below(root, "a").of(Scope::Source(label())));
    out.push(Target::root(root.to_path_buf()).of(Scope::Source(label())));
    out.push(Target::root(PathBuf::from("/nonexistent/vm-catalog")));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the lists (targets gained, lost, moved in the list, named
    /// twice), the table watches what a fresh one watches after a sync of
    /// the same list.
    #[test]
    fn a_table_synced_list_after_list_watches_what_a_fresh_table_would(
        lists in proptest::collection::vec(
            proptest::collection::vec(0usize..15, 0..20), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path());
        let inotify = Inotify::init().unwrap();
        let mut watches = inotify.watches();
        let mut table = Table::default();
        for list in lists {
            let wanted = set(list.iter().map(|&i| pool[i].clone()).collect());
            table.sync(&mut watches, &wanted);
            let fresh_inotify = Inotify::init().unwrap();
            let mut fresh = Table::default();
            fresh.sync(&mut fresh_inotify.watches(), &wanted);
            prop_assert_eq!(table.watched(), fresh.watched());
            let mut wanted_sorted: Vec<Target> = wanted.targets.to_vec();
            wanted_sorted.sort();
            wanted_sorted.dedup();
            let mut held: Vec<Target> = table.targets.keys().map(|t| (**t).clone()).collect();
            held.sort();
            prop_assert_eq!(held, wanted_sorted);
        }
        // An empty list leaves nothing held.
        let all = set(vec![]);
        table.sync(&mut watches, &all);
        prop_assert_eq!(table.len(), 0);
        prop_assert!(table.missing.is_empty() && table.retry.is_empty());
    }
}
