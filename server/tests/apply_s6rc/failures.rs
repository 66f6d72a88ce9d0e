//! Failures before and after the switch; the repair and the rollback.

use std::fs;

use vm_catalog_protocol::DiagCode;
use vm_catalogd::apply::Applier;
use vm_catalogd::apply::s6rc::outcome::{Cause, Recovery, S6rcOutcome};

use crate::fake::Fault;
use crate::rig::{Rig, names, req, result, vm};

both!(
    a_failing_compile_keeps_the_old_database_and_the_next_apply_recovers,
    an_update_failing_before_the_switch_keeps_the_old_database,
    a_scandir_name_taken_during_the_update_is_repaired_without_touching_running_vms,
    a_repair_that_fails_too_rolls_back_to_the_previous_database,
    without_a_scanner_nothing_is_compiled,
);

fn a_failing_compile_keeps_the_old_database_and_the_next_apply_recovers(r: &impl Rig) {
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let pid = r.start(&["a"])[0];
    r.fail_compiles(true);
    let rep = a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let S6rcOutcome::FailedBeforeSwitch(Cause::Program(e)) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert_eq!((e.program(), e.code()), ("s6-rc-compile", Some(1)));
    assert!(
        e.to_string().contains("s6-rc-compile: fatal: injected"),
        "{e}"
    );
    assert!(
        rep.outcome.message.ends_with("db-1-0 stays live"),
        "{}",
        rep.outcome.message
    );
    assert_eq!(
        names(&rep),
        ["a"],
        "the services of the database that is live"
    );
    assert_eq!(r.compiled(), r.root().join("state/db-1-0"));
    assert_eq!(r.db_services(), ["a"]);
    assert_eq!(r.state_entries(), ["db-1-0", "src-1-0"]);
    assert_eq!(r.pid("a"), Some(pid));
    r.fail_compiles(false);
    let rep = a.apply(&req(3, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "{}",
        rep.outcome.message
    );
    assert_eq!(names(&rep), ["a", "b"]);
    assert_eq!(r.db_services(), ["a", "b"]);
    a.tidy();
    assert_eq!(r.dbs(), ["db-3-0"]);
    assert_eq!(r.pid("a"), Some(pid));
}

fn an_update_failing_before_the_switch_keeps_the_old_database(r: &impl Rig) {
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    r.fail_updates(&[Fault::Before(9)]);
    let rep = a.apply(&req(2, vec![vm("b", &[], 1)]));
    let S6rcOutcome::FailedBeforeSwitch(Cause::Program(e)) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert_eq!((e.program(), e.code()), ("s6-rc-update", Some(9)));
    assert!(
        rep.outcome
            .message
            .contains("stopping services failed, the database was not switched"),
        "{}",
        rep.outcome.message
    );
    assert_eq!(names(&rep), ["a"]);
    assert_eq!(r.db_services(), ["a"]);
    a.tidy();
    assert_eq!(
        r.state_entries(),
        ["db-1-0", "src-1-0"],
        "the failed database is gone after the reply"
    );
    let rep = a.apply(&req(3, vec![vm("b", &[], 1)]));
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "the next apply tries again"
    );
    assert_eq!(r.db_services(), ["b"]);
}

fn a_scandir_name_taken_during_the_update_is_repaired_without_touching_running_vms(r: &impl Rig) {
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = r.start(&["a"])[0];
    r.fail_updates(&[Fault::TakeName("x".into())]);
    let all = vec![vm("a", &[], 1), vm("b", &[], 1), vm("x", &[], 1)];
    let rep = a.apply(&req(2, all.clone()));
    let S6rcOutcome::Repaired { failure, .. } = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert!(
        matches!(failure, Cause::Damaged { error: Some(e), missing } if e.code() == Some(111) && !missing.is_empty()),
        "{failure}"
    );
    let left: Vec<_> = rep
        .left_out
        .iter()
        .map(|l| (l.vm.as_str(), l.code))
        .collect();
    assert_eq!(left, [("x", DiagCode::ServiceConflict)]);
    assert_eq!(names(&rep), ["a", "b"]);
    assert_eq!(r.db_services(), ["a", "b"]);
    assert_eq!(r.pid("a"), Some(pid), "the running vm kept its process");
    assert!(
        r.link("a").is_symlink() && r.link("b").is_symlink(),
        "links are back"
    );
    assert!(r.in_sync());
    a.tidy();
    assert_eq!(r.dbs().len(), 1);
    // Leaving the failed database, s6-rc-update unlinked the name of each
    // of its longruns, x's too, although that link was never its own.
    assert!(fs::symlink_metadata(r.link("x")).is_err());
    // The name is free again: x joins.
    let rep = a.apply(&req(3, all));
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "{}",
        rep.outcome.message
    );
    assert_eq!(r.db_services(), ["a", "b", "x"]);
    assert_eq!(r.pid("a"), Some(pid));
}

fn a_repair_that_fails_too_rolls_back_to_the_previous_database(r: &impl Rig) {
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let pid = r.start(&["a"])[0];
    // b's name is taken during the update (a failure after the switch),
    // and the repairing update fails before its switch.
    r.fail_updates(&[Fault::TakeName("b".into()), Fault::Before(9)]);
    let rep = a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let S6rcOutcome::FailedAfterSwitch { failure, recovery } = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert!(matches!(failure, Cause::Damaged { .. }), "{failure}");
    let Recovery::RolledBack { repair, to } = recovery else {
        panic!("{recovery}")
    };
    assert!(
        matches!(repair, Cause::Program(e) if e.code() == Some(9)),
        "{repair}"
    );
    assert_eq!(to, &r.root().join("state/db-1-0"));
    assert_eq!(r.compiled(), r.root().join("state/db-1-0"));
    assert_eq!(names(&rep), ["a"]);
    assert_eq!(r.db_services(), ["a"]);
    assert!(r.link("a").is_symlink());
    assert!(
        fs::symlink_metadata(r.link("b")).is_err(),
        "leaving the failed database unlinked b's name"
    );
    assert_eq!(r.pid("a"), Some(pid), "the running vm was not touched");
    assert!(r.in_sync());
    a.tidy();
    assert_eq!(r.state_entries(), ["db-1-0", "src-1-0"]);
    let rep = a.apply(&req(3, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "the next apply tries again"
    );
    assert_eq!(r.db_services(), ["a", "b"]);
}

fn without_a_scanner_nothing_is_compiled(r: &impl Rig) {
    let mut config = r.config();
    config.scandir = r.root().join("no-scanner");
    fs::create_dir(&config.scandir).unwrap();
    let mut a = r.open_with(config.clone()).unwrap();
    r.without_scanner();
    let rep = a.apply(&req(1, vec![vm("a", &[], 1)]));
    assert_eq!(
        *result(&rep),
        S6rcOutcome::FailedBeforeSwitch(Cause::NoScanner {
            scandir: config.scandir.clone()
        })
    );
    assert_eq!(
        rep.outcome.message,
        format!(
            "no s6-svscan is running on {}; nothing is live",
            config.scandir.display()
        )
    );
    assert_eq!(r.calls(), 0);
    assert!(r.dbs().is_empty());
}
