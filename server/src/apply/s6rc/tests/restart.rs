//! Restart-pending and `restart_changed`.

use super::*;

#[test]
fn a_changed_running_vm_is_restart_pending_until_it_restarts() {
    let s = Setup::new();
    let mut a = s.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = s.fake.start("a");
    // Only a's own fingerprint changes: the tree is the same, nothing runs.
    let calls = s.fake.calls().len();
    let r = a.apply(&req(2, vec![vm("a", &[], 2), vm("b", &[], 1)]));
    assert_eq!(r.outcome.status, ApplyStatus::Unchanged);
    assert_eq!(s.fake.calls().len(), calls);
    assert_eq!(pending(&r), ["a"]);
    assert!(
        r.outcome.message.ends_with("; restart pending: a"),
        "{}",
        r.outcome.message
    );
    // A real update (c added) keeps it pending, and does not restart it.
    let r = a.apply(&req(
        3,
        vec![vm("a", &[], 2), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert_eq!(r.outcome.status, ApplyStatus::Applied);
    assert_eq!(pending(&r), ["a"]);
    assert_eq!(s.fake.world().pids["a"], pid);
    assert!(s.fake.world().conversions.is_empty());
    // A restart through s6-rc runs the live definition: no longer pending.
    s.fake.start("a");
    let r = a.apply(&req(
        4,
        vec![vm("a", &[], 2), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert_eq!(r.outcome.status, ApplyStatus::Unchanged);
    assert!(pending(&r).is_empty());
    // A definition changing back to what a runs is not pending either.
    let pid = s.fake.start("b");
    a.apply(&req(
        5,
        vec![vm("a", &[], 2), vm("b", &[], 7), vm("c", &[], 1)],
    ));
    let r = a.apply(&req(
        6,
        vec![vm("a", &[], 2), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert!(pending(&r).is_empty(), "{:?}", pending(&r));
    assert_eq!(s.fake.world().pids["b"], pid);
}

#[test]
fn restart_changed_restarts_through_the_conversion_file() {
    let s = Setup::new();
    let mut config = s.config();
    config.restart_changed = true;
    let mut a = S6rcApplier::open_with(config, s.fake.clone()).unwrap();
    a.apply(&req(
        1,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    let pid_a = s.fake.start("a");
    let pid_b = s.fake.start("b");
    // a changes and runs; b runs unchanged; c changes but is down.
    let r = a.apply(&req(
        2,
        vec![
            vm("a", &[], 2),
            vm("b", &[], 1),
            vm("c", &[], 2),
            vm("d", &[], 1),
        ],
    ));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(s.fake.world().conversions, ["a restart\n"]);
    assert_ne!(s.fake.world().pids["a"], pid_a);
    assert_eq!(s.fake.world().pids["b"], pid_b);
    assert!(pending(&r).is_empty());
    assert!(
        r.outcome.message.contains("; restarted a"),
        "{}",
        r.outcome.message
    );
}
