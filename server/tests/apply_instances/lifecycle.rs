//! Instances appear, are adopted after a restart, go when their VM goes;
//! instances the daemon did not make are left alone.

use vm_catalog_protocol::{ApplyStatus, DiagCode};
use vm_catalogd::apply::instance::outcome::{InstanceOutcome, InstanceRun};
use vm_catalogd::apply::plan::Changes;
use vm_catalogd::apply::{Applier, ApplyReport};

use crate::rig::{Rig, request, vm};

both!(
    instances_appear_down_and_are_named_by_id,
    instances_up_start_at_once_providers_first,
    instances_are_adopted_after_a_restart_with_their_pids_unchanged,
    a_lost_state_json_made_its_instances_foreign,
    an_instance_goes_when_its_vm_goes,
    an_unrelated_running_instance_is_never_restarted,
    a_changed_running_vm_is_restart_pending_until_it_restarts,
    an_instance_deleted_by_hand_is_made_again,
    with_restart_changed_a_changed_running_vm_restarts,
);

fn run(r: &ApplyReport) -> &InstanceRun {
    match r.result.detail() {
        Some(InstanceOutcome::Ran(run)) => run,
        other => panic!("not an instance run: {other:?}"),
    }
}

fn changes(added: usize, removed: usize, changed: usize) -> Changes {
    Changes {
        added,
        removed,
        changed,
    }
}

fn instances_appear_down_and_are_named_by_id(rig: &impl Rig) {
    let mut a = rig.open();
    let r = a.apply(&request(
        1,
        &[vm("netvm", "NNNNNN", &[]), vm("app", "AAAAAA", &[])],
    ));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(run(&r).changes, changes(2, 0, 0));
    assert_eq!(run(&r).instances, 2);
    assert!(run(&r).failed.is_empty());
    assert_eq!(rig.instances(), ["AAAAAA", "NNNNNN"]);
    assert_eq!(rig.pid("AAAAAA"), None, "created down");
    assert_eq!(
        r.services[&crate::rig::n("app")].to_string(),
        "AAAAAA",
        "the service field shows the instance"
    );
    assert_eq!(r.services[&crate::rig::n("netvm")].as_str(), "NNNNNN");
    assert_eq!(r.outcome.services, 2);
    assert_eq!(
        r.outcome.database.as_deref(),
        rig.service().to_str(),
        "the templated service is what is live"
    );
    // The same set again: nothing runs but the listing.
    let before = rig.changes_made().len();
    let r = a.apply(&request(
        1,
        &[vm("netvm", "NNNNNN", &[]), vm("app", "AAAAAA", &[])],
    ));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Unchanged,
        "{}",
        r.outcome.message
    );
    assert_eq!(rig.changes_made().len(), before);
}

fn instances_up_start_at_once_providers_first(rig: &impl Rig) {
    let mut c = rig.config();
    c.start = true;
    let mut a = rig.open_with(c);
    // "app" sorts first, but its provider "zz-net" is created first.
    let r = a.apply(&request(
        1,
        &[
            vm("app", "AAAAAA", &["zz-net"]),
            vm("zz-net", "NNNNNN", &[]),
        ],
    ));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(
        rig.changes_made(),
        ["s6-instance-create NNNNNN", "s6-instance-create AAAAAA"]
    );
    assert!(vm_catalog_tests::s6::wait_for(
        std::time::Duration::from_secs(10),
        || rig.pid("AAAAAA").is_some() && rig.pid("NNNNNN").is_some()
    ));
}

fn instances_are_adopted_after_a_restart_with_their_pids_unchanged(rig: &impl Rig) {
    let vms = [vm("netvm", "NNNNNN", &[]), vm("app", "AAAAAA", &["netvm"])];
    let mut a = rig.open();
    a.apply(&request(1, &vms));
    let pid = rig.start("AAAAAA");
    drop(a);
    let calls = rig.changes_made().len();
    // The daemon restarts: a new applier reads what it made.
    let mut a = rig.open();
    let r = a.apply(&request(1, &vms));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Unchanged,
        "{}",
        r.outcome.message
    );
    assert!(
        run(&r).foreign.is_empty(),
        "its own instances are not foreign"
    );
    assert_eq!(r.services.len(), 2);
    assert_eq!(
        rig.pid("AAAAAA"),
        Some(pid),
        "the running instance kept its pid"
    );
    assert_eq!(
        rig.changes_made().len(),
        calls,
        "nothing was created or deleted"
    );
}

fn a_lost_state_json_made_its_instances_foreign(rig: &impl Rig) {
    let vms = [vm("netvm", "NNNNNN", &[]), vm("app", "AAAAAA", &["netvm"])];
    let other = rig.create_by_hand("OOOOOO");
    let mut a = rig.open();
    a.apply(&request(1, &vms));
    let pid = rig.start("AAAAAA");
    drop(a);
    let calls = rig.changes_made().len();
    let state = rig.root().join("state/state.json");
    std::fs::write(&state, "{\"version\":1,\"made\":{\"NNN").unwrap();
    // The daemon restarts: its instances are known by their markers.
    let mut a = rig.open();
    let with = [vms[0].clone(), vms[1].clone(), vm("other", "OOOOOO", &[])];
    let r = a.apply(&request(1, &with));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Unchanged,
        "{}",
        r.outcome.message
    );
    assert!(
        r.outcome.message.contains("state: "),
        "{}",
        r.outcome.message
    );
    assert!(
        r.outcome
            .message
            .contains("adopted by their vm-catalogd marker"),
        "{}",
        r.outcome.message
    );
    let names: Vec<&str> = run(&r).foreign.iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["OOOOOO"], "an unmarked instance stays foreign");
    assert_eq!(r.left_out.len(), 1);
    assert_eq!(r.left_out[0].code, DiagCode::ServiceConflict);
    assert_eq!(r.services.len(), 2);
    assert_eq!(rig.pid("AAAAAA"), Some(pid), "not restarted");
    assert_eq!(rig.pid("OOOOOO"), Some(other), "not restarted");
    assert_eq!(rig.changes_made().len(), calls, "nothing made or deleted");
    assert!(
        state.with_extension("json.unreadable").exists(),
        "set aside"
    );
    // The next report says nothing of it any more.
    let r = a.apply(&request(2, &vms));
    assert!(
        !r.outcome.message.contains("state: "),
        "{}",
        r.outcome.message
    );
}

fn an_instance_goes_when_its_vm_goes(rig: &impl Rig) {
    let mut a = rig.open();
    a.apply(&request(
        1,
        &[vm("netvm", "NNNNNN", &[]), vm("app", "AAAAAA", &[])],
    ));
    let pid = rig.start("AAAAAA");
    let keep = rig.start("NNNNNN");
    let r = a.apply(&request(2, &[vm("netvm", "NNNNNN", &[])]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(run(&r).changes, changes(0, 1, 0));
    assert_eq!(rig.instances(), ["NNNNNN"]);
    assert!(!r.services.contains_key(&crate::rig::n("app")));
    assert_eq!(
        rig.pid("NNNNNN"),
        Some(keep),
        "the other VM was not touched"
    );
    if rig.root().join("bin").exists() {
        // Real: the VMM process is gone.
        assert!(vm_catalog_tests::s6::wait_for(
            std::time::Duration::from_secs(10),
            || !vm_catalog_tests::s6::alive(pid)
        ));
    }
    assert!(!a.state().made.keys().any(|n| n.as_str() == "AAAAAA"));
}

fn an_unrelated_running_instance_is_never_restarted(rig: &impl Rig) {
    let other = rig.create_by_hand("someone");
    let taken = rig.create_by_hand("TTTTTT");
    let mut a = rig.open();
    let vms = [vm("netvm", "NNNNNN", &[]), vm("taken", "TTTTTT", &[])];
    let r = a.apply(&request(1, &vms));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    let names: Vec<&str> = run(&r).foreign.iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["TTTTTT", "someone"], "reported");
    assert_eq!(r.left_out.len(), 1);
    assert_eq!(r.left_out[0].code, DiagCode::ServiceConflict);
    assert_eq!(r.left_out[0].vm.as_str(), "taken");
    assert!(!r.services.contains_key(&crate::rig::n("taken")));
    // Every later apply leaves them alone too, the last VM gone included.
    a.apply(&request(2, &[vm("netvm", "NNNNNN", &[])]));
    a.apply(&request(3, &[]));
    assert_eq!(rig.pid("someone"), Some(other));
    assert_eq!(rig.pid("TTTTTT"), Some(taken));
    assert_eq!(rig.instances(), ["TTTTTT", "someone"]);
    assert!(
        !rig.changes_made()
            .iter()
            .any(|c| c.ends_with(" someone") || c.ends_with(" TTTTTT")),
        "{:?}",
        rig.changes_made()
    );
}

fn a_changed_running_vm_is_restart_pending_until_it_restarts(rig: &impl Rig) {
    let mut a = rig.open();
    a.apply(&request(1, &[vm("app", "AAAAAA", &[])]));
    let pid = rig.start("AAAAAA");
    let mut changed = vm("app", "AAAAAA", &[]);
    changed.fingerprint = 2;
    let r = a.apply(&request(2, std::slice::from_ref(&changed)));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(run(&r).changes, changes(0, 0, 1));
    assert!(r.restart_pending.contains(&crate::rig::n("app")));
    assert_eq!(rig.pid("AAAAAA"), Some(pid), "not restarted");
    // Still pending while it runs with that pid.
    let r = a.apply(&request(2, std::slice::from_ref(&changed)));
    assert_eq!(r.outcome.status, ApplyStatus::Unchanged);
    assert!(r.restart_pending.contains(&crate::rig::n("app")));
    // Restarted by its user: it runs the new definition.
    rig.restart("AAAAAA");
    let r = a.apply(&request(2, std::slice::from_ref(&changed)));
    assert!(r.restart_pending.is_empty(), "{:?}", r.restart_pending);
}

fn an_instance_deleted_by_hand_is_made_again(rig: &impl Rig) {
    let mut a = rig.open();
    a.apply(&request(1, &[vm("app", "AAAAAA", &[])]));
    let out = a_delete_by_hand(rig, "AAAAAA");
    assert!(out, "deleted by hand");
    let r = a.apply(&request(1, &[vm("app", "AAAAAA", &[])]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(run(&r).changes, changes(1, 0, 0));
    assert_eq!(rig.instances(), ["AAAAAA"]);
}

fn a_delete_by_hand(rig: &impl Rig, name: &str) -> bool {
    let mut tools = rig.tools();
    use vm_catalogd::apply::instance::{InstanceName, Instances};
    tools
        .delete(&rig.service(), &InstanceName::new(name).unwrap())
        .is_ok()
}

fn with_restart_changed_a_changed_running_vm_restarts(rig: &impl Rig) {
    let mut c = rig.config();
    c.restart_changed = true;
    let mut a = rig.open_with(c);
    a.apply(&request(
        1,
        &[vm("app", "AAAAAA", &[]), vm("idle", "IIIIII", &[])],
    ));
    let pid = rig.start("AAAAAA");
    let mut changed = [vm("app", "AAAAAA", &[]), vm("idle", "IIIIII", &[])];
    changed[0].fingerprint = 2;
    changed[1].fingerprint = 2;
    let r = a.apply(&request(2, &changed));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(
        run(&r).restarted,
        [crate::rig::n("app")],
        "the running one, not the idle one"
    );
    assert!(r.restart_pending.is_empty());
    assert!(vm_catalog_tests::s6::wait_for(
        std::time::Duration::from_secs(10),
        || rig.pid("AAAAAA").is_some_and(|p| p != pid)
    ));
    assert_eq!(rig.pid("IIIIII"), None, "the idle one stays down");
}

/// The applier lists the instances itself (one process fewer per apply):
/// what it reads is what `s6-instance-list` prints, on a real scanner with
/// instances made by the applier and by hand.
#[test]
fn the_instances_listed_are_what_s6_instance_list_prints() {
    use vm_catalogd::apply::instance::Instances;
    let Some(rig) = crate::rig::RealRig::new() else {
        return;
    };
    let mut a = rig.open();
    a.apply(&request(1, &[vm("app", "AAAAAA", &[])]));
    rig.create_by_hand("by-hand");
    let mut listed: Vec<String> = rig
        .tools()
        .list(&rig.service())
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    listed.sort();
    let out = std::process::Command::new("s6-instance-list")
        .arg(rig.service())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut printed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    printed.sort();
    assert_eq!(listed, printed);
    assert_eq!(listed, ["AAAAAA", "by-hand"]);
}
