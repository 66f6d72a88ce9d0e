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

/// Regression (issue 12, item 2, what the fair share left): enough uids
/// (15 with the defaults) held every user slot, and the next uid was refused for as long as they stayed. Now
/// the uid holding the most gives way: its oldest idle connection gets a
/// `Goodbye`, and the newcomer gets the slot.
#[test]
fn a_user_refused_for_a_full_table_gets_the_slot_of_the_biggest_holder() {
    let Some(()) = vm_catalog_tests::require_root("connecting as other uids") else {
        return;
    };
    let mut d = daemon();
    // 40 in all, 20 reserved for root: 20 for users.
    d.arg("--max-connections")
        .arg("40")
        .arg("--max-connections-per-uid")
        .arg("16");
    d.start().unwrap();
    // uid 1001 takes its fair share (7 of 20), 13 uids one each.
    let mut held: Vec<(u32, std::os::fd::OwnedFd)> = Vec::new();
    loop {
        let fd = connect_as(&d.socket(), &Creds::user(1001)).unwrap();
        if vm_catalog_tests::peers::hello(&fd).is_err() {
            break;
        }
        held.push((1001, fd));
    }
    assert_eq!(held.len(), 7);
    for uid in 1002..=1014 {
        let fd = connect_as(&d.socket(), &Creds::user(uid)).unwrap();
        vm_catalog_tests::peers::hello(&fd).expect("one each");
        held.push((uid, fd));
    }
    // Every user slot is taken. The next uid gets in; uid 1001's oldest
    // connection is told why it goes.
    let newcomer = connect_as(&d.socket(), &Creds::user(2000)).unwrap();
    vm_catalog_tests::peers::hello(&newcomer).expect("room made for the newcomer");
    let oldest = &held.iter().find(|(u, _)| *u == 1001).unwrap().1;
    let (kind, body) = vm_catalog_tests::peers::recv(oldest).unwrap();
    assert_eq!(kind, vm_catalog_protocol::FrameKind::Goodbye);
    assert!(String::from_utf8_lossy(&body).contains("evicted"));
    // Root is not touched and still gets in.
    let status = cli(&d, &["status"]);
    assert!(status.status.success(), "{status:?}");
}
