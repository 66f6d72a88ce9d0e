//! A restarted daemon adopts the live directory: no s6-rc-init over it.

use std::fs;

use vm_catalog_protocol::ApplyStatus;
use vm_catalogd::apply::Applier;

use crate::host::{Host, names, req, vm};

#[test]
fn a_restarted_daemon_adopts_the_live_directory_without_init() {
    let Some(h) = Host::new() else { return };
    let mut a = h.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = h.start(&["a"])[0];
    let target = h.live_target();
    drop(a);

    let mut a = h.open();
    assert_eq!(
        h.live_target(),
        target,
        "opening changes nothing that is live"
    );
    let r = a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Unchanged,
        "{}",
        r.outcome.message
    );
    assert_eq!(names(&r), ["a", "b"]);
    let r = a.apply(&req(2, vec![vm("a", &[], 1), vm("c", &[], 1)]));
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
    assert_eq!(h.db_services(), ["a", "c"]);
    assert_eq!(h.pid("a"), Some(pid));
    assert_eq!(h.dbs(), ["db-2-0"]);
}

#[test]
fn a_live_directory_made_by_hand_is_adopted_and_updated() {
    let Some(h) = Host::new() else { return };
    // An admin's own database and init, with the same prefix.
    let src = h.root.join("hand-src/a");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("type"), "longrun\n").unwrap();
    fs::write(src.join("notification-fd"), "3\n").unwrap();
    fs::write(
        src.join("run"),
        format!("#!/bin/execlineb -P\n{} a\n", h.root.join("vmm").display()),
    )
    .unwrap();
    let db = h.root.join("hand-db");
    let (db_s, src_s) = (db.to_str().unwrap(), h.root.join("hand-src"));
    assert_eq!(
        h.s6rc("s6-rc-compile", &[db_s, src_s.to_str().unwrap()]).0,
        0
    );
    let (live, scan) = (h.live(), h.root.join("scan"));
    let init = [
        "-c",
        db_s,
        "-l",
        live.to_str().unwrap(),
        "-p",
        "vm-",
        scan.to_str().unwrap(),
    ];
    assert_eq!(h.s6rc("s6-rc-init", &init).0, 0);
    let pid = h.start(&["a"])[0];

    let mut a = h.open();
    let request = req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]);
    let r = a.apply(&request);
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(h.live_target().starts_with("live:s6-rc-update:"));
    assert_eq!(h.db_services(), ["a", "b"]);
    assert_eq!(h.pid("a"), Some(pid));
    assert!(
        db.is_dir(),
        "a database outside the state directory is not ours to delete"
    );
    assert_eq!(a.apply(&request).outcome.status, ApplyStatus::Unchanged);
}
