//! Restart-pending and `restart_changed`, against what s6-rc-update really
//! restarts.

use vm_catalog_protocol::ApplyStatus;
use vm_catalogd::apply::Applier;
use vm_catalogd::apply::s6rc::S6rcApplier;

use crate::host::{Host, pending, req, vm};

#[test]
fn a_changed_running_vm_keeps_running_and_is_restart_pending() {
    let Some(h) = Host::new() else { return };
    let mut a = h.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pids = h.start(&["a", "b"]);
    let r = a.apply(&req(
        2,
        vec![vm("a", &[], 2), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(pending(&r), ["a"]);
    assert!(
        r.outcome.message.contains("restart pending: a"),
        "{}",
        r.outcome.message
    );
    assert_eq!(h.pid("a"), Some(pids[0]), "not restarted by default");
    assert_eq!(h.pid("b"), Some(pids[1]));
    // Restarted by hand, a runs the live definition.
    let live = h.live();
    let live = live.to_str().unwrap();
    assert_eq!(
        h.s6rc("s6-rc", &["-l", live, "-t", "20000", "-d", "change", "a"])
            .0,
        0
    );
    h.start(&["a"]);
    let r = a.apply(&req(
        3,
        vec![vm("a", &[], 2), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert_eq!(r.outcome.status, ApplyStatus::Unchanged);
    assert!(pending(&r).is_empty());
}

#[test]
fn restart_changed_restarts_only_the_changed_running_vms() {
    let Some(h) = Host::new() else { return };
    let mut config = h.config();
    config.restart_changed = true;
    let mut a = S6rcApplier::open(config).unwrap();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pids = h.start(&["a", "b"]);
    let r = a.apply(&req(2, vec![vm("a", &[], 2), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(
        r.outcome.message.contains("; restarted a"),
        "{}",
        r.outcome.message
    );
    assert!(pending(&r).is_empty());
    let new = h.pid("a").expect("a runs again");
    assert_ne!(new, pids[0]);
    assert!(h.gone(pids[0]));
    assert_eq!(h.pid("b"), Some(pids[1]));
    assert_eq!(h.dbs().len(), 1);
}

#[test]
fn a_new_provider_makes_s6rc_update_restart_its_dependant() {
    let Some(h) = Host::new() else { return };
    let mut a = h.open();
    a.apply(&req(1, vec![vm("app", &[], 1)]));
    let pid = h.start(&["app"])[0];
    let r = a.apply(&req(2, vec![vm("app", &["net"], 1), vm("net", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(
        r.outcome.message.contains("; restarted app"),
        "{}",
        r.outcome.message
    );
    assert!(pending(&r).is_empty(), "app runs its new definition");
    assert_ne!(h.pid("app"), Some(pid));
    assert!(
        h.pid("net").is_some(),
        "s6-rc-update started the new provider"
    );
}

#[test]
fn a_changed_run_script_reaches_the_live_database_but_not_running_vms() {
    let Some(h) = Host::new() else { return };
    let mut a = h.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = h.start(&["a"])[0];
    drop(a);
    // The daemon restarts with another start command.
    let other = vm_catalog_tests::s6::write_vm_command(&h.root.join("vmm2")).unwrap();
    let mut config = h.config();
    config.start_command = other.clone();
    let mut a = S6rcApplier::open(config).unwrap();
    let r = a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(r.outcome.message.contains("~2"), "{}", r.outcome.message);
    let run = std::fs::read_to_string(h.live().join("servicedirs/a/run")).unwrap();
    assert!(run.contains(other.to_str().unwrap()), "{run}");
    assert_eq!(h.pid("a"), Some(pid), "the running vm keeps its process");
    assert_eq!(pending(&r), ["a"], "b is down, so only a is pending");
}
