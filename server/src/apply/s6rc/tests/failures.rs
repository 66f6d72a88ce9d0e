//! Failures before and after the switch, repair and rollback.

use super::*;

#[test]
fn a_failing_compile_keeps_the_old_database_and_the_next_apply_recovers() {
    let s = Setup::new();
    let mut a = s.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    s.fake.world().fail_compile = true;
    let r = a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(r.outcome.status, ApplyStatus::FailedBeforeSwitch);
    assert!(
        r.outcome
            .message
            .starts_with("s6-rc-compile exited with code 1: s6-rc-compile: fatal: injected; "),
        "{}",
        r.outcome.message
    );
    assert!(
        r.outcome.message.ends_with("db-1-0 stays live"),
        "{}",
        r.outcome.message
    );
    assert_eq!(
        services(&r),
        ["a"],
        "the services of the database that is live"
    );
    assert_eq!(s.compiled(), s.root.join("state/db-1-0"));
    assert_eq!(s.state_entries(), ["db-1-0", "src-1-0"]);
    s.fake.world().fail_compile = false;
    let r = a.apply(&req(3, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(services(&r), ["a", "b"]);
}

#[test]
fn an_update_failing_before_the_switch_keeps_the_old_database() {
    let s = Setup::new();
    let mut a = s.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    s.fake.world().update_faults = vec![Fault::Before(9)];
    let r = a.apply(&req(2, vec![vm("b", &[], 1)]));
    assert_eq!(r.outcome.status, ApplyStatus::FailedBeforeSwitch);
    assert!(
        r.outcome
            .message
            .contains("stopping services failed, the database was not switched"),
        "{}",
        r.outcome.message
    );
    assert_eq!(services(&r), ["a"]);
    assert_eq!(s.state_entries(), ["db-1-0", "src-1-0"]);
    let r = a.apply(&req(3, vec![vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "the next apply tries again"
    );
}

#[test]
fn a_failure_after_the_switch_is_repaired_by_updating_again() {
    let s = Setup::new();
    let mut a = s.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let pid = s.fake.start("a");
    s.fake.world().update_faults = vec![Fault::After];
    let r = a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Repaired,
        "{}",
        r.outcome.message
    );
    let m = &r.outcome.message;
    assert!(
        m.contains("after the switch, 4 scan directory links missing"),
        "{m}"
    );
    assert!(m.contains("; repaired by switching to "), "{m}");
    assert_eq!(services(&r), ["a", "b"]);
    assert!(s.link("a").is_symlink() && s.link("b").is_symlink());
    assert_eq!(
        s.fake.world().pids["a"],
        pid,
        "the running vm was not touched"
    );
    assert_eq!(s.state_entries(), ["db-2-1", "src-2-1"]);
}

#[test]
fn a_repair_that_fails_too_rolls_back_to_the_previous_database() {
    let s = Setup::new();
    let mut a = s.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    s.fake.world().update_faults = vec![Fault::After, Fault::After];
    let r = a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::FailedAfterSwitch,
        "{}",
        r.outcome.message
    );
    assert!(
        r.outcome
            .message
            .contains("; rolled back to the previous database "),
        "{}",
        r.outcome.message
    );
    assert_eq!(s.compiled(), s.root.join("state/db-1-0"));
    assert_eq!(services(&r), ["a"]);
    assert!(s.link("a").is_symlink() && !s.link("b").exists());
    assert_eq!(s.state_entries(), ["db-1-0", "src-1-0"]);
    let r = a.apply(&req(3, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "the next apply tries again"
    );
}

#[test]
fn without_a_scanner_nothing_is_compiled() {
    let s = Setup::new();
    s.fake.world().scanner = false;
    let mut a = s.open();
    let r = a.apply(&req(1, vec![vm("a", &[], 1)]));
    assert_eq!(r.outcome.status, ApplyStatus::FailedBeforeSwitch);
    let want = format!(
        "no s6-svscan is running on {}; nothing is live",
        s.root.join("scan").display()
    );
    assert_eq!(r.outcome.message, want);
    assert!(s.fake.calls().is_empty());
}
