//! Init, update, no-op, validation, templates: the live database follows
//! the active set, running VMs unrelated to a change keep their pid, removed
//! ones are stopped, and only the live compiled database is left.

use std::fs;
use std::path::Path;

use vm_catalog_protocol::{ApplyStatus, DiagCode};
use vm_catalogd::apply::plan::Changes;
use vm_catalogd::apply::s6rc::outcome::{How, Refusal, S6rcOutcome};
use vm_catalogd::apply::{Applier, ServiceName};

use crate::rig::{Rig, names, req, result, vm};

both!(
    first_apply_inits_then_identical_applies_do_nothing,
    changes_update_and_leave_only_the_live_database,
    too_many_services_are_refused_before_anything_runs,
    a_taken_scandir_name_leaves_out_that_vm_only,
    a_template_directory_is_rendered_for_each_vm,
);

fn changes(added: usize, removed: usize, changed: usize) -> Changes {
    Changes {
        added,
        removed,
        changed,
    }
}

fn first_apply_inits_then_identical_applies_do_nothing(r: &impl Rig) {
    let mut a = r.open();
    let request = req(1, vec![vm("app", &["net"], 1), vm("net", &[], 2)]);
    let rep = a.apply(&request);
    let S6rcOutcome::Applied(s) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert_eq!(
        (&s.how, s.services, s.changes),
        (&How::Init { live: r.live() }, 2, changes(2, 0, 0))
    );
    assert!(r.live_target().starts_with("live:s6-rc-init:"));
    assert_eq!(r.db_services(), ["app", "net"]);
    assert_eq!(names(&rep), ["app", "net"]);
    assert_eq!(rep.services["app"], "app".parse::<ServiceName>().unwrap());
    assert_eq!(rep.outcome.services, 2);
    assert_eq!(r.compiled(), r.root().join("state/db-1-0"));
    assert_eq!(
        rep.outcome.database.as_deref(),
        Some(r.root().join("state/db-1-0").to_str().unwrap())
    );
    assert_eq!(r.state_entries(), ["db-1-0", "src-1-0"]);
    assert!(
        r.root()
            .join("state/src-1-0/app/dependencies.d/net")
            .is_file()
    );
    assert!(r.link("app").is_symlink() && r.link("net").is_symlink());
    assert_eq!(r.pid("app"), None, "new services are added down");
    let pid = r.start(&["net"])[0];

    let (calls, target, compiled) = (r.calls(), r.live_target(), r.compiled());
    let same = req(2, request.vms.iter().rev().cloned().collect());
    let rep = a.apply(&same);
    assert_eq!(
        *result(&rep),
        S6rcOutcome::Unchanged,
        "{}",
        rep.outcome.message
    );
    assert_eq!(rep.outcome.status, ApplyStatus::Unchanged);
    assert_eq!(r.calls(), calls, "a no-op apply runs no s6-rc program");
    assert_eq!((r.live_target(), r.compiled()), (target, compiled));
    assert_eq!(names(&rep), ["app", "net"]);
    assert_eq!(rep.outcome.generation, 2);
    assert_eq!(r.pid("net"), Some(pid));
    let t = a.last_timings();
    assert!(t.compile.is_zero() && t.switch.is_zero());
}

fn changes_update_and_leave_only_the_live_database(r: &impl Rig) {
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pids = r.start(&["a", "b"]);

    // Added: c. a and b run and are unrelated to the change.
    let rep = a.apply(&req(
        2,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    let S6rcOutcome::Applied(s) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert_eq!((&s.how, s.changes), (&How::Update, changes(1, 0, 0)));
    assert_eq!(s.target, r.root().join("state/db-2-0"));
    assert!(r.live_target().starts_with("live:s6-rc-update:"));
    assert_eq!(r.db_services(), ["a", "b", "c"]);
    assert_eq!(
        r.dbs(),
        ["db-2-0"],
        "only the live compiled database remains"
    );
    assert_eq!(
        (r.pid("a"), r.pid("b"), r.pid("c")),
        (Some(pids[0]), Some(pids[1]), None)
    );

    // Removed: the running b is stopped; a keeps running.
    let rep = a.apply(&req(3, vec![vm("a", &[], 1), vm("c", &[], 1)]));
    let S6rcOutcome::Applied(s) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert_eq!(s.changes, changes(0, 1, 0));
    assert_eq!(names(&rep), ["a", "c"]);
    assert_eq!(r.db_services(), ["a", "c"]);
    assert_eq!(r.pid("b"), None, "the removed vm is stopped");
    assert!(!r.link("b").exists());
    assert_eq!(r.pid("a"), Some(pids[0]));
    a.tidy();
    assert_eq!(r.state_entries(), ["db-3-0", "src-3-0"]);
    assert!(r.in_sync());
}

fn too_many_services_are_refused_before_anything_runs(r: &impl Rig) {
    let mut config = r.config();
    config.max_services = 2;
    let mut a = r.open_with(config).unwrap();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let calls = r.calls();
    let rep = a.apply(&req(
        2,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert_eq!(
        *result(&rep),
        S6rcOutcome::Invalid(Refusal::TooManyServices { count: 3, max: 2 })
    );
    assert_eq!(rep.outcome.services, 3);
    assert_eq!(r.calls(), calls, "nothing ran");
    assert_eq!(r.db_services(), ["a"]);
    assert_eq!(r.dbs(), ["db-1-0"]);
    assert_eq!(names(&rep), ["a"]);
}

fn a_taken_scandir_name_leaves_out_that_vm_only(r: &impl Rig) {
    std::os::unix::fs::symlink("/etc/s6/host-service", r.link("b")).unwrap();
    let mut a = r.open();
    let rep = a.apply(&req(
        1,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &["b"], 1)],
    ));
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "{}",
        rep.outcome.message
    );
    assert_eq!(names(&rep), ["a"]);
    assert_eq!(r.db_services(), ["a"]);
    let codes: Vec<_> = rep
        .left_out
        .iter()
        .map(|l| (l.vm.to_string(), l.code))
        .collect();
    assert_eq!(
        codes,
        [
            ("b".to_string(), DiagCode::ServiceConflict),
            ("c".to_string(), DiagCode::ProviderUnavailable)
        ]
    );
    assert_eq!(
        fs::read_link(r.link("b")).unwrap(),
        Path::new("/etc/s6/host-service"),
        "the other entry is untouched"
    );
}

fn a_template_directory_is_rendered_for_each_vm(r: &impl Rig) {
    let t = r.root().join("template");
    fs::create_dir_all(t.join("data")).unwrap();
    fs::write(t.join("type"), "longrun\n").unwrap();
    let start = r.root().join("vmm");
    fs::write(
        t.join("run"),
        "#!/bin/sh\nexec @VM_START@ --name @VM_NAME@\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("@VM_VIEW@", t.join("data/config")).unwrap();
    let mut config = r.config();
    config.template_dir = Some(t);
    let mut a = r.open_with(config).unwrap();
    let rep = a.apply(&req(1, vec![vm("a", &[], 1)]));
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "{}",
        rep.outcome.message
    );
    let src = r.root().join("state/src-1-0/a");
    assert_eq!(
        fs::read_to_string(src.join("run")).unwrap(),
        format!("#!/bin/sh\nexec {} --name a\n", start.display())
    );
    assert_eq!(
        fs::read_link(src.join("data/config")).unwrap(),
        Path::new("/run/vm/a/config")
    );
}
