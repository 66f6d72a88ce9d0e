//! The waiting rules of crash safety on the fake, where an update left by a
//! killed daemon is a program the fake says runs, for a number of looks,
//! and then switches (`crash.rs` has the same on real s6-rc).

use std::fs;
use std::time::Duration;

use vm_catalogd::apply::Applier;
use vm_catalogd::apply::s6rc::outcome::{Cause, S6rcOutcome};
use vm_catalogd::apply::s6rc::state::{DbRecord, S6rcState, StateFile};
use vm_catalogd::apply::s6rc::tools::{Holder, S6rc};

use crate::rig::{FakeRig, Rig, names, req, result, vm};

/// Gen 1 {a} applied; then, as a daemon killed during its update to gen 2
/// {b} leaves it: `db-2-0` compiled and recorded as `next`, and the update
/// still running (`looks` more looks, then it switches).
fn killed_during_an_update(r: &FakeRig, looks: usize) -> std::path::PathBuf {
    r.open().apply(&req(1, vec![vm("a", &[], 1)]));
    let (src, db) = (
        r.root().join("state/src-2-0"),
        r.root().join("state/db-2-0"),
    );
    fs::create_dir_all(src.join("b")).unwrap();
    r.tools().compile(&db, &src).unwrap();
    let path = r.root().join("state/state.json");
    let mut state = S6rcState::load(&path).unwrap().unwrap().state;
    state.next = Some(DbRecord {
        database: db.clone(),
        source: Some(src),
        tree: None,
        services: [("b".parse().unwrap(), None)].into(),
    });
    state.save(&path).unwrap();
    let holder = Holder {
        pid: 4242,
        command: format!(
            "s6-rc-update -b -l {} -- {}",
            r.live().display(),
            db.display()
        ),
    };
    let mut w = r.fake.world();
    w.busy = Some((vec![holder], looks));
    w.orphan = Some(db.clone());
    db
}

#[test]
fn a_restart_during_an_update_waits_for_the_live_lock() {
    let r = FakeRig::new();
    let db = killed_during_an_update(&r, 5);
    let mut a = r.open();
    assert!(
        r.fake.world().orphan.is_none(),
        "it waited until the update was done"
    );
    assert_eq!(r.compiled(), db, "the update switched meanwhile");
    assert_eq!(
        a.state().live.as_ref().unwrap().database,
        db,
        "and was adopted"
    );
    assert!(a.state().next.is_none());
    assert_eq!(
        r.dbs(),
        ["db-2-0"],
        "the old database went after the switch"
    );
    let rep = a.apply(&req(2, vec![vm("b", &[], 1)]));
    assert!(!rep.outcome.status.is_failure(), "{}", rep.outcome.message);
    assert_eq!(names(&rep), ["b"]);
}

#[test]
fn an_orphaned_update_keeps_its_target_database() {
    let r = FakeRig::new();
    let db = killed_during_an_update(&r, usize::MAX);
    let mut config = r.config();
    config.timeout = Duration::from_millis(100);
    let mut a = r.open_with(config).unwrap();
    assert!(
        db.join("services").is_file(),
        "the update's target database stays"
    );
    assert_eq!(r.dbs(), ["db-1-0", "db-2-0"]);
    assert_eq!(a.state().next.as_ref().unwrap().database, db);
    let rep = a.apply(&req(2, vec![vm("b", &[], 1)]));
    let S6rcOutcome::FailedBeforeSwitch(Cause::Busy(busy)) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert_eq!(busy.programs[0].pid, 4242);
    assert!(
        rep.outcome
            .message
            .contains("pid 4242 (s6-rc-update -b -l "),
        "{}",
        rep.outcome.message
    );
    assert_eq!(
        r.dbs(),
        ["db-1-0", "db-2-0"],
        "nothing is deleted while it runs"
    );
    assert_eq!(
        r.fake.world().calls.len(),
        3,
        "nothing ran: {:?}",
        r.fake.world().calls
    );
    // It is done: the next apply adopts what it switched to.
    r.fake.world().busy = None;
    let rep = a.apply(&req(3, vec![vm("b", &[], 1)]));
    assert!(!rep.outcome.status.is_failure(), "{}", rep.outcome.message);
    assert_eq!(r.db_services(), ["b"]);
    assert!(!r.root().join("state/db-1-0").exists());
}
