//! Names and places: `--names qualified`, qualified references, VM ids,
//! and the views of `--vm-layout spectrum`.

mod catalog_common;

use std::path::Path;

use catalog_common::{label, opts, scan, trusted, untrusted};
use vm_catalog_protocol::{DiagCode, Epoch, VmEntry, VmState};
use vm_catalog_tests::Tree;
use vm_catalogd::catalog::{
    Catalog, Draft, Layout, MergeOptions, Names, VmIds, merge, merge_with, qualified,
};
use vm_catalogd::definition::SourceScan;
use vm_catalogd::views::Views;

fn scans(t: &Tree) -> Vec<SourceScan> {
    vec![
        scan(trusted(t, "sys"), opts(t)),
        scan(untrusted(t, "user"), opts(t)),
    ]
}

fn opts_of(t: &Tree, names: Names, layout: Layout) -> MergeOptions {
    MergeOptions {
        names,
        layout,
        vm_dir: t.join("vm"),
        cross_source_providers: false,
    }
}

fn entry<'a>(d: &'a Draft, name: &str) -> &'a VmEntry {
    d.entries()
        .find(|e| e.name.as_str() == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn states(d: &Draft) -> Vec<(String, VmState)> {
    d.entries().map(|e| (e.name.to_string(), e.state)).collect()
}

#[test]
fn a_reference_reads_as_qualified_at_the_leftmost_dot_whose_label_exists() {
    let read = |r: &str, labels: &[&str]| {
        qualified(r, |l| labels.contains(&l.as_str())).map(|(l, n)| (l.to_string(), n.to_string()))
    };
    assert_eq!(
        read("a.b.c", &["a", "a.b"]),
        Some(("a".into(), "b.c".into()))
    );
    assert_eq!(read("a.b.c", &["a.b"]), Some(("a.b".into(), "c".into())));
    assert_eq!(read("a.b.c", &["x"]), None, "no such label");
    assert_eq!(read("netvm", &["netvm"]), None);
    assert_eq!(
        read("sys.s6rc-x", &["sys"]),
        None,
        "not a valid name after the dot"
    );
}

#[test]
fn qualified_names_do_not_collide_and_nothing_is_shadowed() {
    let t = Tree::new();
    t.vm("sys", "netvm");
    t.vm("user", "netvm");
    t.vm("user", "nc");
    t.provider("user", "nc", "sys.netvm");
    let mut ids = VmIds::new(5);
    let o = opts_of(&t, Names::Qualified, Layout::Plain);
    let d = merge_with(&Catalog::empty(Epoch(1)), scans(&t), &o, &mut ids);
    assert_eq!(
        states(&d),
        [
            ("sys.netvm".into(), VmState::Active),
            ("user.nc".into(), VmState::Active),
            ("user.netvm".into(), VmState::Active),
        ]
    );
    assert_eq!(entry(&d, "user.nc").providers[0].name.as_str(), "sys.netvm");
    assert_eq!(
        entry(&d, "user.nc").view.as_deref(),
        Some(t.join("vm/user.nc/config").to_str().unwrap())
    );
    assert_eq!(ids.len(), 3, "every definition has an id");
}

#[test]
fn a_qualified_name_too_long_is_not_a_definition() {
    let t = Tree::new();
    let long = "x".repeat(60);
    t.vm("user", &long);
    t.vm("user", "ok");
    let o = opts_of(&t, Names::Qualified, Layout::Plain);
    let d = merge_with(&Catalog::empty(Epoch(1)), scans(&t), &o, &mut VmIds::new(1));
    assert_eq!(states(&d), [("user.ok".into(), VmState::Active)]);
    let user = &d.sources()[1];
    assert_eq!(user.definitions, 1);
    let why = user
        .diagnostics
        .iter()
        .find(|x| x.code == DiagCode::InvalidName)
        .unwrap();
    assert!(why.message.contains(&format!("user.{long}")), "{why:?}");
}

#[test]
fn plain_names_take_qualified_references_to_the_claimant_only() {
    let t = Tree::new();
    t.vm("sys", "netvm");
    t.vm("user", "netvm");
    for (vm, provider) in [("a", "sys.netvm"), ("b", "user.netvm"), ("c", "nope.netvm")] {
        t.vm("user", vm);
        t.provider("user", vm, provider);
    }
    let d = merge(&Catalog::empty(Epoch(1)), scans(&t), &t.join("vm"));
    let a = entry(&d, "a");
    assert_eq!(
        (a.state, a.providers[0].name.as_str()),
        (VmState::Active, "netvm")
    );
    let b = entry(&d, "b");
    assert_eq!(b.state, VmState::Rejected);
    assert_eq!(b.providers[0].name.as_str(), "user.netvm", "as written");
    let why = b
        .diagnostics
        .iter()
        .find(|x| x.code == DiagCode::ProviderUnavailable)
        .unwrap();
    assert!(
        why.message.contains("shadowed: source sys claims netvm"),
        "{why:?}"
    );
    let c = entry(&d, "c");
    assert!(
        c.diagnostics
            .iter()
            .any(|x| x.code == DiagCode::MissingProvider)
    );
    // A qualified cycle is a cycle.
    let t = Tree::new();
    t.vm("sys", "p");
    t.vm("sys", "q");
    t.provider("sys", "p", "sys.q");
    t.provider("sys", "q", "p");
    let d = merge(&Catalog::empty(Epoch(1)), scans(&t), &t.join("vm"));
    for vm in ["p", "q"] {
        assert!(
            entry(&d, vm)
                .diagnostics
                .iter()
                .any(|x| x.code == DiagCode::ProviderCycle),
            "{vm}"
        );
    }
}

/// Issue 22, item 2: under plain names a user directory `sys.netvm` was the
/// catalog name `sys.netvm`, and a catalog name won over a qualified
/// reference, so it became the provider of whoever named `sys.netvm`.
#[test]
fn a_user_directory_named_like_a_qualified_reference_impersonated_that_vm() {
    let t = Tree::new();
    t.vm("sys", "netvm");
    t.vm("user", "sys.netvm");
    t.vm("user", "user.x");
    t.vm("user", "other.x");
    t.vm("user", "app");
    t.provider("user", "app", "sys.netvm");
    t.vm("user", "odd");
    t.provider("user", "odd", "user.sys.netvm");
    let g0 = Catalog::empty(Epoch(1));
    let (g1, _) = g0.successor(merge(&g0, scans(&t), &t.join("vm"))).unwrap();
    let app = g1.lookup("app").unwrap().0;
    assert_eq!(app.state, VmState::Active);
    assert_eq!(app.providers[0].name.as_str(), "netvm", "the built-in");
    for impostor in ["sys.netvm", "user.x"] {
        let e = g1.entries().find(|e| e.name.as_str() == impostor).unwrap();
        assert_eq!(e.state, VmState::Rejected, "{impostor}");
        let why = e
            .diagnostics
            .iter()
            .find(|x| x.code == DiagCode::NameReadsAsReference)
            .unwrap_or_else(|| panic!("{impostor}: {e:?}"));
        assert!(why.message.contains("rename the directory"), "{why:?}");
    }
    // No such label: an ordinary name.
    assert_eq!(g1.lookup("other.x").unwrap().0.state, VmState::Active);
    // `sys.netvm` names the built-in; the impostor is `user.sys.netvm`.
    let (shown, others) = g1.lookup("sys.netvm").unwrap();
    assert_eq!(
        (shown.source.as_str(), shown.name.as_str()),
        ("sys", "netvm")
    );
    assert!(others.is_empty());
    let (found, _) = g1.lookup("user.sys.netvm").unwrap();
    assert_eq!(found.state, VmState::Rejected);
    // A reference to the impostor finds a rejected provider.
    let odd = g1.lookup("odd").unwrap().0;
    assert_eq!(odd.state, VmState::Rejected);
}

#[test]
fn ids_are_kept_across_merges_and_given_to_the_applier() {
    let t = Tree::new();
    t.vm("sys", "netvm");
    t.vm("user", "app");
    let mut ids = VmIds::new(9);
    let o = opts_of(&t, Names::Plain, Layout::Spectrum);
    let g0 = Catalog::empty(Epoch(1));
    let d = merge_with(&g0, scans(&t), &o, &mut ids);
    let id = entry(&d, "netvm").id.clone().unwrap();
    assert_eq!(ids.get(&label("sys"), &"netvm".parse().unwrap()), Some(&id));
    let req = vm_catalogd::rescan::handoff::apply_request(&g0, &d);
    assert_eq!(req.vms[1].name.as_str(), "netvm");
    assert_eq!(req.vms[1].id, id);
    assert_eq!(
        req.vms[1].view,
        t.join("vm/by-id").join(id.as_str()).join("config")
    );
    let g1 = g0.successor(d).unwrap().0;
    // The same ids the next time: nothing changes.
    let again = merge_with(&g1, scans(&t), &o, &mut ids);
    assert!(g1.successor(again).is_none());
    assert!(ids.take_changed());
    assert!(!ids.take_changed());
}

#[test]
fn spectrum_views_are_by_id_with_by_name_links() {
    let t = Tree::new();
    t.vm("sys", "netvm");
    t.vm("user", "nc");
    t.provider("user", "nc", "sys.netvm");
    let o = opts_of(&t, Names::Qualified, Layout::Spectrum);
    let mut ids = VmIds::new(3);
    let d = merge_with(&Catalog::empty(Epoch(1)), scans(&t), &o, &mut ids);
    let vm_dir = t.join("vm");
    let mut views = Views::with_layout(&vm_dir, Layout::Spectrum);
    // A plain view left by an earlier run, and someone else's link.
    t.file("vm/old/config/.vm-catalogd-view", b"");
    std::os::unix::fs::symlink("/elsewhere", vm_dir.join("by-name-foreign")).unwrap();
    t.dir("vm/by-name");
    std::os::unix::fs::symlink("/elsewhere", vm_dir.join("by-name/foreign")).unwrap();
    let r = views.sync(d.active());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.created.len(), 2);
    assert_eq!(
        r.removed.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["old"]
    );
    let nc_id = entry(&d, "user.nc").id.clone().unwrap();
    let by_id = vm_dir.join("by-id").join(nc_id.as_str());
    assert_eq!(
        std::fs::read_link(vm_dir.join("by-name/user.nc")).unwrap(),
        by_id
    );
    assert_eq!(
        std::fs::read_link(by_id.join("config/providers/net/sys.netvm")).unwrap(),
        t.join("user/nc/providers/net/sys.netvm")
    );
    assert!(
        vm_dir.join("by-name/foreign").is_symlink(),
        "not ours: kept"
    );
    // nc leaves: its link and view go, netvm's stay.
    std::fs::remove_dir_all(t.join("user/nc")).unwrap();
    let d = merge_with(&Catalog::empty(Epoch(1)), scans(&t), &o, &mut ids);
    let r = views.sync(d.active());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        r.unlinked.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["user.nc"]
    );
    assert!(!by_id.exists());
    assert!(vm_dir.join("by-name/sys.netvm/config/vmlinux").is_symlink());
    // Back to the plain layout: the Spectrum views and links go.
    let o = opts_of(&t, Names::Qualified, Layout::Plain);
    let d = merge_with(&Catalog::empty(Epoch(1)), scans(&t), &o, &mut ids);
    let r = Views::new(&vm_dir).sync(d.active());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(vm_dir.join("sys.netvm/config/vmlinux").is_symlink());
    assert!(!Path::new(&vm_dir.join("by-name/sys.netvm")).is_symlink());
    assert_eq!(std::fs::read_dir(vm_dir.join("by-id")).unwrap().count(), 0);
}
