//! Views: `<vm-dir>/<name>/config/` built, swapped, kept and removed.

mod catalog_common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use catalog_common::{opts, scan, untrusted};
use vm_catalog_protocol::{Epoch, VmName, VmState};
use vm_catalog_tests::Tree;
use vm_catalogd::catalog::{Catalog, Draft, merge};
use vm_catalogd::views;

fn draft(t: &Tree, prev: &Catalog) -> Draft {
    merge(
        prev,
        vec![scan(untrusted(t, "src"), opts(t))],
        &t.join("vm"),
    )
}

fn link(p: impl AsRef<Path>) -> PathBuf {
    std::fs::read_link(p).unwrap()
}

fn names(v: &[VmName]) -> Vec<&str> {
    v.iter().map(|n| n.as_str()).collect()
}

#[test]
fn views_link_every_part_to_its_final_path() {
    let t = Tree::new();
    let k = t.file("img/k", b"k");
    t.vm("src", "app");
    std::fs::remove_file(t.join("src/app/vmlinux")).unwrap();
    t.symlink("src/app/vmlinux", &k);
    t.file("src/app/blk/data.img", b"");
    t.provider("src", "app", "net");
    t.dir("src/app/fs");
    t.vm("src", "net");
    let d = draft(&t, &Catalog::empty(Epoch(1)));
    let report = views::sync(&t.join("vm"), d.active());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(names(&report.created), ["app", "net"]);
    let cfg = t.join("vm/app/config");
    assert_eq!(
        link(cfg.join("vmlinux")),
        k,
        "the final path, not the link in the source"
    );
    assert_eq!(
        link(cfg.join("blk/root.img")),
        t.join("src/app/blk/root.img")
    );
    assert_eq!(
        link(cfg.join("blk/data.img")),
        t.join("src/app/blk/data.img")
    );
    assert_eq!(
        link(cfg.join("providers/net/net")),
        t.join("src/app/providers/net/net")
    );
    assert_eq!(link(cfg.join("fs")), t.join("src/app/fs"));
    assert!(cfg.join(views::MARKER).is_file());
    let mut listed: Vec<String> = std::fs::read_dir(&cfg)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [".vm-catalogd-view", "blk", "fs", "providers", "vmlinux"]
    );
    assert!(
        !t.join("vm/net/config/providers").exists(),
        "no providers, no providers/"
    );
}

#[test]
fn views_are_left_untouched_swapped_or_removed() {
    let t = Tree::new();
    t.vm("src", "stay");
    t.vm("src", "grow");
    t.vm("src", "leave");
    let vm_dir = t.join("vm");
    let g0 = Catalog::empty(Epoch(1));
    let first = draft(&t, &g0);
    views::sync(&vm_dir, first.active());
    let g1 = g0.successor(first).unwrap().0;
    let ino = |name: &str| {
        std::fs::symlink_metadata(vm_dir.join(name).join("config"))
            .unwrap()
            .ino()
    };
    let (stay, grow) = (ino("stay"), ino("grow"));
    std::fs::write(vm_dir.join("leave/notes"), b"someone else's file").unwrap();

    t.file("src/grow/blk/more.img", b"");
    std::fs::remove_dir_all(t.join("src/leave")).unwrap();
    let d = draft(&t, &g1);
    let report = views::sync(&vm_dir, d.active());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(names(&report.unchanged), ["stay"]);
    assert_eq!(names(&report.replaced), ["grow"]);
    assert_eq!(names(&report.removed), ["leave"]);
    assert_eq!(ino("stay"), stay, "an unchanged view is not rewritten");
    assert_ne!(
        ino("grow"),
        grow,
        "a changed view is a new directory, swapped in"
    );
    assert!(vm_dir.join("grow/config/blk/more.img").is_symlink());
    assert!(
        !vm_dir.join("grow/.config.new").exists(),
        "the old view is gone"
    );
    assert!(!vm_dir.join("leave/config").exists());
    assert!(
        vm_dir.join("leave/notes").exists(),
        "a VM directory with other files stays"
    );

    let report = views::sync(&vm_dir, d.active());
    assert_eq!(names(&report.unchanged), ["grow", "stay"]);
    assert!(report.created.is_empty() && report.replaced.is_empty() && report.removed.is_empty());
}

#[test]
fn views_of_others_are_never_touched_and_leftovers_are_cleaned() {
    let t = Tree::new();
    t.vm("src", "vm");
    let vm_dir = t.join("vm");
    // Someone else's directory: a config without the marker.
    t.file("vm/foreign/config/vmlinux", b"");
    // An interrupted build.
    t.file("vm/vm/.config.new/junk", b"");
    let d = draft(&t, &Catalog::empty(Epoch(1)));
    let report = views::sync(&vm_dir, d.active());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(names(&report.created), ["vm"]);
    assert!(report.removed.is_empty());
    assert!(vm_dir.join("foreign/config/vmlinux").exists());
    assert!(!vm_dir.join("vm/.config.new").exists());
    // A view that was tampered with is rebuilt.
    std::fs::remove_file(vm_dir.join("vm/config/vmlinux")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", vm_dir.join("vm/config/vmlinux")).unwrap();
    let report = views::sync(&vm_dir, d.active());
    assert_eq!(names(&report.replaced), ["vm"]);
    assert_eq!(
        link(vm_dir.join("vm/config/vmlinux")),
        t.join("src/vm/vmlinux")
    );
}

/// A `config` that the daemon did not make (a link `vm-import` left, a
/// transient VM's) is never replaced: the VM gets the error instead.
#[test]
fn a_config_the_daemon_did_not_make_is_not_replaced() {
    let t = Tree::new();
    t.vm("src", "vm");
    t.dir("vm/vm");
    std::os::unix::fs::symlink(t.join("src/vm"), t.join("vm/vm/config")).unwrap();
    let d = draft(&t, &Catalog::empty(Epoch(1)));
    let report = views::sync(&t.join("vm"), d.active());
    assert_eq!(report.errors.len(), 1);
    assert_eq!(
        report.errors[0].to_diagnostic().message,
        "cannot replace: it is not a view the daemon made"
    );
    assert_eq!(link(t.join("vm/vm/config")), t.join("src/vm"));
}

#[test]
fn views_failures_are_reported_and_can_reject_the_vm() {
    let t = Tree::new();
    t.vm("src", "net");
    t.vm("src", "app");
    t.provider("src", "app", "net");
    t.file("vm/net", b"a file where the VM's directory should be");
    let mut d = draft(&t, &Catalog::empty(Epoch(1)));
    let report = views::sync(&t.join("vm"), d.active());
    assert_eq!(names(&report.created), ["app"]);
    assert_eq!(report.errors.len(), 1);
    let e = &report.errors[0];
    assert_eq!(e.name.as_ref().map(|n| n.as_str()), Some("net"));
    let diag = e.to_diagnostic();
    assert_eq!(diag.code.name(), "io-error");
    assert_eq!(diag.path, t.join("vm/net").display().to_string());
    d.reject_all([(e.name.clone().unwrap(), diag)]);
    let states: Vec<(&str, VmState)> = d.entries().map(|e| (e.name.as_str(), e.state)).collect();
    assert_eq!(
        states,
        [("app", VmState::Rejected), ("net", VmState::Rejected)]
    );
    let report = views::sync(&t.join("vm"), d.active());
    assert!(report.errors.is_empty());
    assert_eq!(
        names(&report.removed),
        ["app"],
        "a second sync removes the rejected dependant's view"
    );

    let report = views::sync(&t.join("vm/net/sub"), d.active());
    assert_eq!(
        report.errors.len(),
        1,
        "a VM directory that cannot be made is an error, not a panic"
    );
    assert!(report.errors[0].name.is_none());
}

#[test]
fn views_remembered_are_not_read_back_until_forgotten() {
    let t = Tree::new();
    t.vm("src", "a");
    t.vm("src", "b");
    let mut views = views::Views::new(t.join("vm"));
    let d = draft(&t, &Catalog::empty(Epoch(1)));
    assert_eq!(names(&views.sync(d.active()).created), ["a", "b"]);
    // Tampered with behind the daemon's back: trusted from memory...
    std::fs::remove_file(t.join("vm/a/config/vmlinux")).unwrap();
    assert_eq!(names(&views.sync(d.active()).unchanged), ["a", "b"]);
    // ...until forgotten.
    views.forget();
    let r = views.sync(d.active());
    assert_eq!(
        (names(&r.replaced), names(&r.unchanged)),
        (vec!["a"], vec!["b"])
    );
    assert!(t.join("vm/a/config/vmlinux").is_symlink());
    // A change is always written, and a VM leaving is always removed.
    t.file("src/b/blk/x.img", b"");
    std::fs::remove_dir_all(t.join("src/a")).unwrap();
    let d = draft(&t, &Catalog::empty(Epoch(1)));
    let r = views.sync(d.active());
    assert_eq!(
        (names(&r.replaced), names(&r.removed)),
        (vec!["b"], vec!["a"])
    );
    assert!(t.join("vm/b/config/blk/x.img").is_symlink());
}
