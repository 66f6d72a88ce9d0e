//! Writing the source incrementally and tidying after the reply: a changed
//! VM rewrites only its own service directory; a crash while the source is
//! written leaves nothing that compiles to something else; the old
//! databases are moved out at the end of the apply, only under the live
//! lock, and deleted in the background; their sources go at the tidy after
//! the reply; the live database never goes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use vm_catalogd::apply::s6rc::outcome::S6rcOutcome;
use vm_catalogd::apply::s6rc::render::{Renderer, Tree};
use vm_catalogd::apply::s6rc::template::Template;
use vm_catalogd::apply::{ActiveVm, Applier, ApplyReport};

use crate::rig::{Rig, req, result, vm};

both!(
    a_changed_vm_rewrites_only_its_own_service_directory,
    a_crash_while_the_source_is_written_recovers,
    old_databases_go_and_the_live_one_never,
);

fn applied(rep: &ApplyReport) {
    assert!(
        matches!(result(rep), S6rcOutcome::Applied(_)),
        "{}",
        rep.outcome.message
    );
}

/// `<state>/svc/<content>` that `src/<name>` links to.
fn linked(r: &impl Rig, src: &str, name: &str) -> PathBuf {
    fs::read_link(r.root().join("state").join(src).join(name)).unwrap()
}

fn inode(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

/// The service directories in the store.
fn svc(r: &impl Rig) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(r.root().join("state/svc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn trash_is_empty(r: &impl Rig) -> bool {
    fs::read_dir(r.root().join("state/trash")).map_or(true, |mut d| d.next().is_none())
}

/// The tree the rig's applier renders for `vms` (built-in template).
fn tree(r: &impl Rig, vms: &[ActiveVm]) -> Tree {
    let start = r.root().join("vmm");
    Renderer::new(Template::builtin(), "vm-", start.to_str().unwrap(), 400)
        .render(vms, &mut |_| None)
        .unwrap()
        .tree
}

fn a_changed_vm_rewrites_only_its_own_service_directory(r: &impl Rig) {
    let mut a = r.open();
    let one = vec![vm("a", &[], 1), vm("b", &[], 1), vm("net", &[], 1)];
    applied(&a.apply(&req(1, one)));
    assert_eq!(a.last_timings().written, 3);
    let (sa, snet) = (linked(r, "src-1-0", "a"), linked(r, "src-1-0", "net"));
    let (ia, inet) = (inode(&sa.join("run")), inode(&snet.join("run")));

    // b gains a provider (its service directory changes), c is new.
    let two = vec![
        vm("a", &[], 1),
        vm("b", &["net"], 1),
        vm("c", &[], 1),
        vm("net", &[], 1),
    ];
    applied(&a.apply(&req(2, two)));
    assert_eq!(a.last_timings().written, 2, "b and c, nothing else");
    assert_eq!(linked(r, "src-2-0", "a"), sa);
    assert_eq!(linked(r, "src-2-0", "net"), snet);
    assert_eq!(inode(&sa.join("run")), ia, "a's files were not rewritten");
    assert_eq!(inode(&snet.join("run")), inet);
    assert_ne!(linked(r, "src-2-0", "b"), linked(r, "src-1-0", "b"));
    let src = r.root().join("state/src-2-0");
    assert!(src.join("b/dependencies.d/net").is_file());
    assert!(!src.join("a/dependencies.d").exists());
    assert_eq!(r.db_services(), ["a", "b", "c", "net"]);
    assert!(r.in_sync());

    // A template that names the VM nowhere renders one service directory
    // for every VM: it is written once and linked under each name.
    let t = r.root().join("template");
    fs::create_dir_all(&t).unwrap();
    fs::write(t.join("type"), "longrun\n").unwrap();
    fs::write(t.join("run"), "#!/bin/execlineb -P\n@VM_START@\n").unwrap();
    let mut config = r.config();
    config.template_dir = Some(t);
    drop(a);
    let mut a = r.open_with(config).unwrap();
    applied(&a.apply(&req(3, vec![vm("a", &[], 1), vm("b", &[], 1)])));
    assert_eq!(a.last_timings().written, 1);
    assert_eq!(linked(r, "src-3-0", "a"), linked(r, "src-3-0", "b"));
    assert_eq!(r.db_services(), ["a", "b"]);
}

fn a_crash_while_the_source_is_written_recovers(r: &impl Rig) {
    let mut a = r.open();
    applied(&a.apply(&req(1, vec![vm("a", &[], 1)])));
    let pid = r.start(&["a"])[0];
    drop(a);
    // The daemon died while it wrote the source of {a, b}: b's service
    // directory half written, the source directory not renamed into place.
    let vms = vec![vm("a", &[], 1), vm("b", &[], 1)];
    let t = tree(r, &vms);
    let state = r.root().join("state");
    let b = t.services["b"].content.to_hex();
    let half = state.join(format!("tmp-svc-{b}"));
    fs::create_dir(&half).unwrap();
    fs::write(half.join("type"), "longrun\n").unwrap();
    fs::write(half.join("run"), "#!/bin/execlineb -P\n").unwrap();
    let tmp_src = state.join("tmp-src-2-0");
    fs::create_dir(&tmp_src).unwrap();
    std::os::unix::fs::symlink(linked(r, "src-1-0", "a"), tmp_src.join("a")).unwrap();
    assert!(!state.join(format!("svc/{b}")).exists());

    let mut a = r.open();
    assert_eq!(
        r.state_entries(),
        ["db-1-0", "src-1-0"],
        "the leftovers are gone"
    );
    a.settle();
    let rep = a.apply(&req(2, vms));
    applied(&rep);
    assert_eq!(a.last_timings().written, 1, "b, whole");
    let run = fs::read_to_string(state.join("src-2-0/b/run")).unwrap();
    let start = r.root().join("vmm");
    assert_eq!(run, format!("#!/bin/execlineb -P\n{} b\n", start.display()));
    assert_eq!(r.db_services(), ["a", "b"]);
    assert_eq!(r.pid("a"), Some(pid));
    assert!(r.in_sync());
}

fn old_databases_go_and_the_live_one_never(r: &impl Rig) {
    let mut a = r.open();
    applied(&a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)])));
    let pid = r.start(&["a"])[0];
    a.tidy();
    assert_eq!(
        r.state_entries(),
        ["db-1-0", "src-1-0"],
        "nothing to tidy yet"
    );
    applied(&a.apply(&req(
        2,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &[], 1)],
    )));
    assert_eq!(
        r.state_entries(),
        ["db-2-0", "src-1-0", "src-2-0"],
        "the old database was moved out, its source stays until the tidy"
    );
    a.tidy();
    assert!(a.last_timings().tidy > std::time::Duration::ZERO);
    assert_eq!(r.state_entries(), ["db-2-0", "src-2-0"]);
    a.settle();
    assert!(trash_is_empty(r), "deleted in the background");
    assert_eq!(svc(r).len(), 3, "a, b and c's service directories");
    assert_eq!(r.compiled(), r.root().join("state/db-2-0"));
    assert_eq!(r.db_services(), ["a", "b", "c"]);
    assert_eq!(r.pid("a"), Some(pid));

    // b leaves: its service directory goes with the source that had it.
    applied(&a.apply(&req(3, vec![vm("a", &[], 1), vm("c", &[], 1)])));
    a.tidy();
    a.tidy();
    a.settle();
    assert_eq!(r.state_entries(), ["db-3-0", "src-3-0"]);
    assert_eq!(svc(r).len(), 2);
    assert!(trash_is_empty(r));
    // An unchanged apply leaves nothing to tidy.
    assert_eq!(
        *result(&a.apply(&req(4, vec![vm("a", &[], 1), vm("c", &[], 1)]))),
        S6rcOutcome::Unchanged
    );
    a.tidy();
    assert_eq!(r.state_entries(), ["db-3-0", "src-3-0"]);
    assert_eq!(r.db_services(), ["a", "c"]);
    assert_eq!(r.pid("a"), Some(pid));
    assert!(r.in_sync());
    // The live database still works after all that: an update from it.
    applied(&a.apply(&req(5, vec![vm("a", &[], 1)])));
    assert_eq!(r.db_services(), ["a"]);
}

/// On the fake only, which can take the live lock between the update and
/// the apply's cleanup (as someone's `s6-rc` may).
#[test]
fn old_databases_stay_while_someone_holds_the_live_lock() {
    let r = crate::rig::FakeRig::new();
    let mut a = r.open();
    applied(&a.apply(&req(1, vec![vm("a", &[], 1)])));
    r.fake.world().lock_after_update = true;
    applied(&a.apply(&req(2, vec![vm("b", &[], 1)])));
    assert!(r.fake.world().held.is_some(), "someone holds the live lock");
    a.tidy();
    assert_eq!(
        r.state_entries(),
        ["db-1-0", "db-2-0", "src-2-0"],
        "no database moves while the lock is held; an old source needs no lock"
    );
    {
        let mut w = r.fake.world();
        w.lock_after_update = false;
        w.held = None;
    }
    applied(&a.apply(&req(3, vec![vm("c", &[], 1)])));
    assert_eq!(r.dbs(), ["db-3-0"], "the next apply moves them all out");
    a.tidy();
    assert_eq!(r.state_entries(), ["db-3-0", "src-3-0"]);
    assert_eq!(r.db_services(), ["c"]);
}
