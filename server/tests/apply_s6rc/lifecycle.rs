//! Init, update, no-op: the live database follows the active set, running
//! VMs unrelated to a change keep their pid, removed ones are stopped, and
//! only the live compiled database is left.

use vm_catalog_protocol::ApplyStatus;
use vm_catalogd::apply::Applier;
use vm_catalogd::apply::s6rc::Commands;
use vm_catalogd::apply::s6rc::tools::S6rc;

use crate::host::{Host, names, req, vm};

#[test]
fn first_apply_inits_and_later_ones_update_the_live_database() {
    let Some(h) = Host::new() else { return };
    let mut a = h.open();
    let r = a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(
        h.live_target().starts_with("live:s6-rc-init:"),
        "{}",
        h.live_target()
    );
    assert_eq!(h.db_services(), ["a", "b"]);
    assert_eq!(names(&r), ["a", "b"]);
    assert_eq!(h.dbs(), ["db-1-0"]);
    assert_eq!(h.compiled(), h.root.join("state/db-1-0"));
    assert_eq!(h.pid("a"), None, "new services are added down");
    let pids = h.start(&["a", "b"]);

    // Added: c. a and b run and are unrelated to the change.
    let r = a.apply(&req(
        2,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(
        h.live_target().starts_with("live:s6-rc-update:"),
        "{}",
        h.live_target()
    );
    assert_eq!(h.db_services(), ["a", "b", "c"]);
    assert_eq!(
        h.dbs(),
        ["db-2-0"],
        "only the live compiled database remains"
    );
    assert_eq!(h.pid("a"), Some(pids[0]));
    assert_eq!(h.pid("b"), Some(pids[1]));
    assert_eq!(h.pid("c"), None);

    // Removed: the running b is stopped; a keeps running.
    let r = a.apply(&req(3, vec![vm("a", &[], 1), vm("c", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(
        r.outcome.message.contains("+0 -1 ~0"),
        "{}",
        r.outcome.message
    );
    assert_eq!(h.db_services(), ["a", "c"]);
    assert!(h.gone(pids[1]), "the removed vm's process is gone");
    assert!(!h.link("b").exists());
    assert_eq!(h.pid("a"), Some(pids[0]));
    assert_eq!(h.dbs(), ["db-3-0"]);
    let live = h.live();
    assert_eq!(
        h.s6rc("s6-rc", &["-l", live.to_str().unwrap(), "diff"]).0,
        0
    );
}

#[test]
fn an_identical_apply_changes_nothing_on_the_host() {
    let Some(h) = Host::new() else { return };
    let mut a = h.open();
    let request = req(1, vec![vm("a", &[], 1), vm("b", &["a"], 1)]);
    a.apply(&request);
    let pid = h.start(&["a"])[0];
    let (target, compiled, dbs) = (h.live_target(), h.compiled(), h.dbs());
    let r = a.apply(&request);
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Unchanged,
        "{}",
        r.outcome.message
    );
    assert_eq!(names(&r), ["a", "b"]);
    assert_eq!(
        (h.live_target(), h.compiled(), h.dbs()),
        (target, compiled, dbs)
    );
    assert_eq!(h.pid("a"), Some(pid));
    assert!(a.last_timings().compile.is_zero() && a.last_timings().switch.is_zero());
}

#[test]
fn providers_are_dependencies_that_s6rc_starts_first() {
    let Some(h) = Host::new() else { return };
    let mut a = h.open();
    let r = a.apply(&req(1, vec![vm("app", &["net"], 1), vm("net", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    let live = h.live();
    let (code, deps) = h.s6rc(
        "s6-rc-db",
        &["-l", live.to_str().unwrap(), "dependencies", "app"],
    );
    assert_eq!(code, 0);
    assert!(deps.lines().any(|l| l == "net"), "{deps}");
    h.start(&["app"]);
    assert!(h.pid("net").is_some(), "starting app started its provider");
}

#[test]
fn the_applier_reads_the_same_pids_as_s6_svstat() {
    let Some(h) = Host::new() else { return };
    let mut a = h.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = h.start(&["a"])[0];
    let mut tools = Commands::find(Some(&h.bin)).unwrap();
    assert_eq!(tools.pid(&h.live(), "a"), Some(pid));
    assert_eq!(tools.pid(&h.live(), "b"), None);
    assert!(tools.scanner_running(h.svscan.scandir()));
}
