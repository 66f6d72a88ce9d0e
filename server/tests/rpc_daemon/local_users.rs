//! Other local users against root (issue 12, item 2), on the real daemon.

use vm_catalog_tests::peers::{Creds, connect_as};

use super::*;

/// Regression (issue 12, item 2): 8 uids with 32 idle connections each
/// (the socket is 0666 by default) filled the daemon's 256 connections,
/// and root's `vm-catalog status` and `list` got `busy: too many
/// connections`.
#[test]
fn root_gets_in_while_eight_uids_hold_all_the_connections_they_can() {
    let Some(()) = vm_catalog_tests::require_root("connecting as other uids") else {
        return;
    };
    let mut d = daemon();
    d.user_vm("netvm");
    d.start().unwrap();
    let mut held = Vec::new();
    for uid in 1001..=1008 {
        for _ in 0..32 {
            held.push(connect_as(&d.socket(), &Creds::user(uid)).unwrap());
        }
    }
    // Each says Hello; the daemon welcomes what the fair share allows.
    let welcomed = held
        .iter()
        .filter(|fd| vm_catalog_tests::peers::hello(fd).is_ok())
        .count();
    assert!(welcomed < 224, "{welcomed} user connections");
    let status = cli(&d, &["status"]);
    assert!(status.status.success(), "{status:?}");
    let list = cli(&d, &["list"]);
    assert!(list.status.success(), "{list:?}");
    assert!(String::from_utf8_lossy(&list.stdout).contains("netvm"));
    // A user who held nothing gets in too.
    let other = connect_as(&d.socket(), &Creds::user(2000)).unwrap();
    vm_catalog_tests::peers::hello(&other).expect("a ninth user gets in");
}
