//! What only real s6-rc shows: dependencies it starts, restarts it makes by
//! itself, the files it copies into the live directory, a live directory
//! made by hand, the pids the applier reads.

use std::fs;

use vm_catalogd::apply::Applier;
use vm_catalogd::apply::s6rc::Commands;
use vm_catalogd::apply::s6rc::outcome::S6rcOutcome;
use vm_catalogd::apply::s6rc::tools::S6rc;

use crate::rig::{RealRig, Rig, names, pending, req, result, vm};

#[test]
fn a_removed_running_vm_is_stopped_by_the_update() {
    let Some(r) = RealRig::new() else { return };
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pids = r.start(&["a", "b"]);
    a.apply(&req(2, vec![vm("a", &[], 1)]));
    assert!(r.gone(pids[1]), "the removed vm's process is gone");
    assert_eq!(r.pid("a"), Some(pids[0]));
    assert!(r.in_sync());
}

#[test]
fn providers_are_dependencies_that_s6rc_starts_first() {
    let Some(r) = RealRig::new() else { return };
    let mut a = r.open();
    let rep = a.apply(&req(1, vec![vm("app", &["net"], 1), vm("net", &[], 1)]));
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "{}",
        rep.outcome.message
    );
    let live = r.live();
    let (code, deps) = r.s6rc(
        "s6-rc-db",
        &["-l", live.to_str().unwrap(), "dependencies", "app"],
    );
    assert_eq!(code, 0);
    assert!(deps.lines().any(|l| l == "net"), "{deps}");
    r.start(&["app"]);
    assert!(r.pid("net").is_some(), "starting app started its provider");
}

#[test]
fn a_new_provider_makes_s6rc_update_restart_its_dependant() {
    let Some(r) = RealRig::new() else { return };
    let mut a = r.open();
    a.apply(&req(1, vec![vm("app", &[], 1)]));
    let pid = r.start(&["app"])[0];
    let rep = a.apply(&req(2, vec![vm("app", &["net"], 1), vm("net", &[], 1)]));
    let S6rcOutcome::Applied(s) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert_eq!(s.restarted, ["app".parse().unwrap()]);
    assert!(pending(&rep).is_empty(), "app runs its new definition");
    assert_ne!(r.pid("app"), Some(pid));
    assert!(
        r.pid("net").is_some(),
        "s6-rc-update started the new provider"
    );
}

#[test]
fn a_changed_run_script_reaches_the_live_database_but_not_running_vms() {
    let Some(r) = RealRig::new() else { return };
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = r.start(&["a"])[0];
    drop(a);
    // The daemon restarts with another start command.
    let other = vm_catalog_tests::s6::write_vm_command(&r.root().join("vmm2")).unwrap();
    let mut config = r.config();
    config.start_command = other.clone();
    let mut a = r.open_with(config).unwrap();
    let rep = a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let S6rcOutcome::Applied(s) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert_eq!(s.changes.changed, 2);
    let run = fs::read_to_string(r.live().join("servicedirs/a/run")).unwrap();
    assert!(run.contains(other.to_str().unwrap()), "{run}");
    assert_eq!(r.pid("a"), Some(pid), "the running vm keeps its process");
    assert_eq!(pending(&rep), ["a"], "b is down, so only a is pending");
}

#[test]
fn a_live_directory_made_by_hand_is_adopted_and_updated() {
    let Some(r) = RealRig::new() else { return };
    // An admin's own database and init, with the same prefix.
    let src = r.root().join("hand-src/a");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("type"), "longrun\n").unwrap();
    fs::write(src.join("notification-fd"), "3\n").unwrap();
    let vmm = r.root().join("vmm");
    fs::write(
        src.join("run"),
        format!("#!/bin/execlineb -P\n{} a\n", vmm.display()),
    )
    .unwrap();
    let db = r.root().join("hand-db");
    let (db_s, src_s) = (db.to_str().unwrap(), r.root().join("hand-src"));
    assert_eq!(
        r.s6rc("s6-rc-compile", &[db_s, src_s.to_str().unwrap()]).0,
        0
    );
    let (live, scan) = (r.live(), r.root().join("scan"));
    let init = [
        "-c",
        db_s,
        "-l",
        live.to_str().unwrap(),
        "-p",
        "vm-",
        scan.to_str().unwrap(),
    ];
    assert_eq!(r.s6rc("s6-rc-init", &init).0, 0);
    let pid = r.start(&["a"])[0];

    let mut a = r.open();
    let request = req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]);
    let rep = a.apply(&request);
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "{}",
        rep.outcome.message
    );
    assert!(r.live_target().starts_with("live:s6-rc-update:"));
    assert_eq!(r.db_services(), ["a", "b"]);
    assert_eq!(names(&rep), ["a", "b"]);
    assert_eq!(r.pid("a"), Some(pid));
    assert!(
        db.is_dir(),
        "a database outside the state directory is not ours to delete"
    );
    assert_eq!(*result(&a.apply(&request)), S6rcOutcome::Unchanged);
}

#[test]
fn the_applier_reads_the_same_pids_as_s6_svstat() {
    let Some(r) = RealRig::new() else { return };
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = r.start(&["a"])[0];
    let mut tools = Commands::find(Some(&r.bin)).unwrap();
    assert_eq!(tools.pid(&r.live(), "a"), Some(pid));
    assert_eq!(tools.pid(&r.live(), "b"), None);
    assert!(tools.scanner_running(r.svscan.scandir()));
}
