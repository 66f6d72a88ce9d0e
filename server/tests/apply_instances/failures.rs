//! A failed create or delete is reported, typed, and tried again at the
//! next apply; an unsupervised templated service fails the apply whole.

use vm_catalog_protocol::ApplyStatus;
use vm_catalogd::apply::Applier;
use vm_catalogd::apply::instance::outcome::{InstanceAction, InstanceOutcome};

use crate::rig::{Rig, request, vm};

both!(
    a_failed_create_is_reported_and_retried,
    a_failed_delete_is_reported_and_retried,
    an_unsupervised_template_fails_before_anything_runs,
    a_failed_create_whose_cleanup_failed_is_deleted_and_made_again,
);

fn a_failed_create_is_reported_and_retried(rig: &impl Rig) {
    let mut a = rig.open();
    rig.fail_creates(1);
    let vms = [vm("app", "AAAAAA", &[]), vm("netvm", "NNNNNN", &[])];
    let r = a.apply(&request(1, &vms));
    let Some(InstanceOutcome::Ran(run)) = r.result.detail() else {
        panic!("{:?}", r.result)
    };
    assert_eq!(run.failed.len(), 1, "{}", r.outcome.message);
    let f = &run.failed[0];
    assert_eq!(f.action, InstanceAction::Create);
    assert_eq!(f.instance.as_str(), "AAAAAA");
    assert_eq!(f.vm.as_str(), "app");
    assert_eq!(f.error.code(), Some(111));
    assert_eq!(run.changes.added, 1, "the other create went on");
    assert_eq!(r.outcome.status, ApplyStatus::FailedAfterSwitch);
    assert!(r.outcome.status.is_failure(), "so the daemon retries");
    assert!(!r.services.contains_key(&crate::rig::n("app")));
    assert_eq!(
        rig.instances(),
        ["NNNNNN"],
        "the half-made instance was removed"
    );
    // The retry.
    let r = a.apply(&request(1, &vms));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(rig.instances(), ["AAAAAA", "NNNNNN"]);
    assert_eq!(r.services.len(), 2);
}

fn a_failed_delete_is_reported_and_retried(rig: &impl Rig) {
    let mut a = rig.open();
    a.apply(&request(1, &[vm("app", "AAAAAA", &[])]));
    rig.fail_deletes(1);
    let r = a.apply(&request(2, &[]));
    let Some(InstanceOutcome::Ran(run)) = r.result.detail() else {
        panic!("{:?}", r.result)
    };
    assert_eq!(run.failed.len(), 1, "{}", r.outcome.message);
    assert_eq!(run.failed[0].action, InstanceAction::Delete);
    assert_eq!(r.outcome.status, ApplyStatus::FailedBeforeSwitch);
    assert!(
        r.outcome
            .message
            .contains("deleting instance AAAAAA of app"),
        "{}",
        r.outcome.message
    );
    assert_eq!(rig.instances(), ["AAAAAA"]);
    let r = a.apply(&request(2, &[]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(rig.instances().is_empty());
}

fn an_unsupervised_template_fails_before_anything_runs(rig: &impl Rig) {
    let mut c = rig.config();
    c.service = rig.unsupervised();
    let mut a = rig.open_with(c);
    let r = a.apply(&request(1, &[vm("app", "AAAAAA", &[])]));
    assert_eq!(r.outcome.status, ApplyStatus::FailedBeforeSwitch);
    assert!(
        matches!(r.result.detail(), Some(InstanceOutcome::NoScanner { .. })),
        "{:?}",
        r.result
    );
    assert!(r.services.is_empty());
    assert!(rig.changes_made().is_empty());
}

fn a_failed_create_whose_cleanup_failed_is_deleted_and_made_again(rig: &impl Rig) {
    let mut a = rig.open();
    rig.fail_creates(1);
    rig.fail_deletes(1);
    let vms = [vm("app", "AAAAAA", &[])];
    let r = a.apply(&request(1, &vms));
    assert!(r.outcome.status.is_failure(), "{}", r.outcome.message);
    assert_eq!(
        rig.instances(),
        ["AAAAAA"],
        "the create made it, the cleanup failed"
    );
    assert!(
        a.state().made.values().any(|m| !m.confirmed),
        "recorded as unconfirmed"
    );
    // The next apply deletes it, then makes it again: it is not foreign.
    let r = a.apply(&request(1, &vms));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(r.left_out.is_empty(), "{:?}", r.left_out);
    assert_eq!(r.services.len(), 1);
    assert_eq!(rig.instances(), ["AAAAAA"]);
    let calls = rig.changes_made();
    assert_eq!(
        calls[calls.len() - 2..],
        ["s6-instance-delete AAAAAA", "s6-instance-create AAAAAA"]
    );
}
