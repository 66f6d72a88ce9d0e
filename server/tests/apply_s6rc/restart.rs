//! Restart-pending and `restart_changed`.

use std::fs;

use vm_catalogd::apply::Applier;
use vm_catalogd::apply::s6rc::outcome::S6rcOutcome;

use crate::rig::{Rig, pending, req, result, vm};

both!(
    a_changed_running_vm_is_restart_pending_until_it_restarts,
    restart_changed_restarts_through_the_conversion_file,
);

fn a_changed_running_vm_is_restart_pending_until_it_restarts(r: &impl Rig) {
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = r.start(&["a"])[0];
    // Only a's own fingerprint changes: the tree is the same, nothing runs.
    let calls = r.calls();
    let rep = a.apply(&req(2, vec![vm("a", &[], 2), vm("b", &[], 1)]));
    assert_eq!(
        *result(&rep),
        S6rcOutcome::Unchanged,
        "{}",
        rep.outcome.message
    );
    assert_eq!(r.calls(), calls);
    assert_eq!(pending(&rep), ["a"]);
    assert!(
        rep.outcome.message.ends_with("; restart pending: a"),
        "{}",
        rep.outcome.message
    );
    // A real update (c added) keeps it pending, and does not restart it.
    let three = vec![vm("a", &[], 2), vm("b", &[], 1), vm("c", &[], 1)];
    let rep = a.apply(&req(3, three.clone()));
    let S6rcOutcome::Applied(s) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert!(s.restarted.is_empty());
    assert_eq!(pending(&rep), ["a"]);
    assert_eq!(r.pid("a"), Some(pid), "not restarted by default");
    assert!(!r.root().join("state/conversions").exists());
    // A restart through s6-rc runs the live definition: no longer pending.
    r.restart("a");
    let rep = a.apply(&req(4, three));
    assert_eq!(*result(&rep), S6rcOutcome::Unchanged);
    assert!(pending(&rep).is_empty());
    // A definition changing back to what b runs is not pending either.
    let pid = r.start(&["b"])[0];
    a.apply(&req(
        5,
        vec![vm("a", &[], 2), vm("b", &[], 7), vm("c", &[], 1)],
    ));
    let rep = a.apply(&req(
        6,
        vec![vm("a", &[], 2), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert!(pending(&rep).is_empty(), "{:?}", pending(&rep));
    assert_eq!(r.pid("b"), Some(pid));
}

fn restart_changed_restarts_through_the_conversion_file(r: &impl Rig) {
    let mut config = r.config();
    config.restart_changed = true;
    let mut a = r.open_with(config).unwrap();
    a.apply(&req(
        1,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    let pids = r.start(&["a", "b"]);
    // a changes and runs; b runs unchanged; c changes but is down.
    let rep = a.apply(&req(
        2,
        vec![
            vm("a", &[], 2),
            vm("b", &[], 1),
            vm("c", &[], 2),
            vm("d", &[], 1),
        ],
    ));
    let S6rcOutcome::Applied(s) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert_eq!(s.restarted, ["a".parse().unwrap()]);
    assert!(pending(&rep).is_empty());
    assert_eq!(
        fs::read_to_string(r.root().join("state/conversions")).unwrap(),
        "a restart\n"
    );
    let new = r.pid("a").expect("a runs again");
    assert_ne!(new, pids[0]);
    assert_eq!(r.pid("b"), Some(pids[1]));
    assert_eq!(r.pid("c"), None);
    a.tidy();
    assert_eq!(r.dbs().len(), 1);
}
