//! Generations and change batches between real rescans.

mod catalog_common;

use catalog_common::{opts, scan, untrusted};
use vm_catalog_protocol::{Change, ChangeItem, ChangeKind, Epoch, VmState};
use vm_catalog_tests::Tree;
use vm_catalogd::catalog::{Catalog, merge};
use vm_catalogd::definition::SourceScan;

fn scans(t: &Tree, dirs: &[&str]) -> Vec<SourceScan> {
    dirs.iter()
        .map(|d| scan(untrusted(t, d), opts(t)))
        .collect()
}

/// A change in words: `kind vm name@source state` or `kind source label`.
fn show(c: &Change) -> String {
    match &c.item {
        ChangeItem::Vm(e) => format!(
            "{} vm {}@{} {}",
            c.kind.as_str(),
            e.name,
            e.source,
            e.state.as_str()
        ),
        ChangeItem::Source(s) => format!(
            "{} source {} {}",
            c.kind.as_str(),
            s.label,
            s.state.as_str()
        ),
    }
}

fn rescan(t: &Tree, prev: &Catalog, dirs: &[&str]) -> Option<(Catalog, Vec<Change>)> {
    prev.successor(merge(prev, scans(t, dirs), &t.join("vm")))
}

#[test]
fn diff_first_generation_adds_sources_then_vms_in_order() {
    let t = Tree::new();
    t.vm("a", "zeta");
    t.vm("a", "alpha");
    t.vm("b", "alpha");
    let empty = Catalog::empty(Epoch(7));
    let (c, changes) = rescan(&t, &empty, &["a", "b"]).unwrap();
    assert_eq!(c.cursor().epoch, Epoch(7));
    assert_eq!(c.generation(), 1);
    let shown: Vec<String> = changes.iter().map(show).collect();
    assert_eq!(
        shown,
        [
            "added source a ready",
            "added source b ready",
            "added vm alpha@a active",
            "added vm alpha@b shadowed",
            "added vm zeta@a active",
        ]
    );
    assert!(changes.iter().all(|c| c.generation == 1));
    assert!(c.entries().all(|e| e.revision == 1));
    assert!(c.sources().iter().all(|s| s.revision == 1));
    assert_eq!(empty.generation(), 0, "the previous snapshot is untouched");
}

#[test]
fn diff_unchanged_rescan_keeps_the_generation() {
    let t = Tree::new();
    t.vm("a", "x");
    t.provider("a", "x", "y");
    t.vm("a", "y");
    t.vm("b", "x");
    let (c, _) = rescan(&t, &Catalog::empty(Epoch(1)), &["a", "b"]).unwrap();
    assert!(rescan(&t, &c, &["a", "b"]).is_none());
    assert!(
        rescan(&t, &c, &["a", "b"]).is_none(),
        "still nothing, still generation 1"
    );
}

#[test]
fn diff_reports_added_removed_changed_and_state_changed() {
    let t = Tree::new();
    t.vm("a", "keep");
    t.vm("a", "edit");
    t.vm("a", "drop");
    t.vm("a", "cover");
    t.vm("b", "cover");
    let (g1, _) = rescan(&t, &Catalog::empty(Epoch(1)), &["a", "b"]).unwrap();

    // edit: an image replaced; drop: deleted; cover@a deleted so cover@b
    // becomes active; new: added.
    let img = t.join("a/edit/blk/root.img");
    std::fs::remove_file(&img).unwrap();
    std::fs::write(&img, b"new disk").unwrap();
    std::fs::remove_dir_all(t.join("a/drop")).unwrap();
    std::fs::remove_dir_all(t.join("a/cover")).unwrap();
    t.vm("a", "new");
    let (g2, changes) = rescan(&t, &g1, &["a", "b"]).unwrap();
    assert_eq!(g2.generation(), 2);
    let shown: Vec<String> = changes.iter().map(show).collect();
    assert_eq!(
        shown,
        [
            "changed source a ready",
            "removed vm cover@a active",
            "state-changed vm cover@b active",
            "removed vm drop@a active",
            "changed vm edit@a active",
            "added vm new@a active",
        ]
    );
    assert!(changes.iter().all(|c| c.generation == 2));
    let rev = |name: &str| {
        g2.entries()
            .find(|e| e.name.as_str() == name)
            .unwrap()
            .revision
    };
    assert_eq!(rev("keep"), 1, "unchanged entries keep their revision");
    assert_eq!(rev("edit"), 2);
    assert_eq!(rev("new"), 2);
    let cover = g2.candidates_of("cover");
    assert_eq!(cover.len(), 1);
    assert_eq!(cover[0].entry.shadowed_by, None);
}

#[test]
fn diff_a_source_leaving_removes_it_last() {
    let t = Tree::new();
    t.vm("a", "x");
    t.vm("b", "y");
    let (g1, _) = rescan(&t, &Catalog::empty(Epoch(1)), &["a", "b"]).unwrap();
    let (g2, changes) = rescan(&t, &g1, &["b"]).unwrap();
    let shown: Vec<String> = changes.iter().map(show).collect();
    assert_eq!(
        shown,
        [
            "changed source b ready",
            "removed vm x@a active",
            "removed source a ready"
        ]
    );
    assert_eq!(g2.sources().len(), 1);
    assert_eq!(g2.sources()[0].precedence, 0, "b moved up");
}

#[test]
fn diff_a_vanishing_source_makes_state_changes_not_removals() {
    let t = Tree::new();
    t.vm("a", "x");
    let (g1, _) = rescan(&t, &Catalog::empty(Epoch(1)), &["a"]).unwrap();
    let mut spec = untrusted(&t, "a");
    spec.presence = vm_catalogd::source::Presence::Gone;
    let d = merge(&g1, vec![scan(spec, opts(&t))], &t.join("vm"));
    let (g2, changes) = g1.successor(d).unwrap();
    let shown: Vec<String> = changes.iter().map(show).collect();
    assert_eq!(
        shown,
        [
            "state-changed source a unavailable",
            "state-changed vm x@a unavailable"
        ]
    );
    assert_eq!(g2.entries().next().unwrap().state, VmState::Unavailable);
    assert_eq!(g2.active().count(), 0);
}

#[test]
fn diff_annotations_from_the_applier_are_changes() {
    let t = Tree::new();
    t.vm("a", "x");
    let (g1, _) = rescan(&t, &Catalog::empty(Epoch(1)), &["a"]).unwrap();
    let mut d = merge(&g1, scans(&t, &["a"]), &t.join("vm"));
    let mut notes = vm_catalogd::catalog::Annotations::default();
    notes
        .services
        .insert("x".parse().unwrap(), "vm-x".to_string());
    d.annotate(notes);
    let (g2, changes) = g1.successor(d).unwrap();
    assert_eq!(
        changes.iter().map(show).collect::<Vec<_>>(),
        ["changed vm x@a active"]
    );
    match &changes[0].item {
        ChangeItem::Vm(e) => assert_eq!(e.service.as_deref(), Some("vm-x")),
        ChangeItem::Source(_) => unreachable!(),
    }
    assert_eq!(changes[0].kind, ChangeKind::Changed);
    assert_eq!(g2.lookup("x").unwrap().0.revision, 2);
}

#[test]
fn diff_is_deterministic() {
    let t = Tree::new();
    for i in 0..50 {
        t.vm(if i % 3 == 0 { "b" } else { "a" }, &format!("vm{}", i % 17));
    }
    let empty = Catalog::empty(Epoch(1));
    let one = rescan(&t, &empty, &["a", "b"]).unwrap();
    let two = rescan(&t, &empty, &["a", "b"]).unwrap();
    assert_eq!(one, two);
}
