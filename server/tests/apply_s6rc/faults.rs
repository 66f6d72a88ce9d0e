//! Failures: a failing compile, and a scan-directory name taken while
//! s6-rc-update runs (it fails after the switch with every link removed).
//! The faults are injected by wrapping one real program in a script.

use std::fs;

use vm_catalog_protocol::{ApplyStatus, DiagCode};
use vm_catalogd::apply::Applier;
use vm_catalogd::apply::s6rc::S6rcApplier;

use crate::host::{Host, names, req, vm};

#[test]
fn a_failing_compile_leaves_the_previous_database_live_and_the_next_apply_recovers() {
    let Some(h) = Host::new() else { return };
    let flag = h.root.join("fail-compile");
    let script = format!(
        "if [ -e {} ]; then echo 's6-rc-compile: fatal: injected' >&2; exit 1; fi",
        flag.display()
    );
    let mut config = h.config();
    config.bin_dir = Some(h.wrapped_bin("s6-rc-compile", &script));
    let mut a = S6rcApplier::open(config).unwrap();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let pid = h.start(&["a"])[0];
    fs::write(&flag, "").unwrap();
    let r = a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::FailedBeforeSwitch,
        "{}",
        r.outcome.message
    );
    assert!(
        r.outcome.message.contains("s6-rc-compile: fatal: injected"),
        "{}",
        r.outcome.message
    );
    assert_eq!(h.compiled(), h.root.join("state/db-1-0"));
    assert_eq!(h.db_services(), ["a"]);
    assert_eq!(names(&r), ["a"]);
    assert_eq!(h.dbs(), ["db-1-0"]);
    assert_eq!(h.pid("a"), Some(pid));
    fs::remove_file(&flag).unwrap();
    let r = a.apply(&req(3, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(h.db_services(), ["a", "b"]);
    assert_eq!(h.dbs(), ["db-3-0"]);
    assert_eq!(h.pid("a"), Some(pid));
}

#[test]
fn a_scandir_name_taken_during_the_update_is_repaired_without_touching_running_vms() {
    let Some(h) = Host::new() else { return };
    let flag = h.root.join("take-name");
    let taken = h.link("x");
    let script = format!(
        "if [ -e {} ]; then ln -s /nonexistent {} 2>/dev/null || :; fi",
        flag.display(),
        taken.display()
    );
    let mut config = h.config();
    config.bin_dir = Some(h.wrapped_bin("s6-rc-update", &script));
    let mut a = S6rcApplier::open(config).unwrap();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = h.start(&["a"])[0];
    fs::write(&flag, "").unwrap();
    let r = a.apply(&req(
        3,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("x", &[], 1)],
    ));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Repaired,
        "{}",
        r.outcome.message
    );
    let m = &r.outcome.message;
    assert!(m.contains("exited with code 111"), "{m}");
    assert!(m.contains("scan directory links missing"), "{m}");
    assert_eq!(r.left_out.len(), 1);
    assert_eq!(
        (r.left_out[0].vm.as_str(), r.left_out[0].code),
        ("x", DiagCode::ServiceConflict)
    );
    assert_eq!(h.db_services(), ["a", "b"]);
    assert_eq!(names(&r), ["a", "b"]);
    assert_eq!(h.pid("a"), Some(pid), "the running vm kept its process");
    assert!(
        h.link("a").is_symlink() && h.link("b").is_symlink(),
        "links are back"
    );
    let live = h.live();
    assert_eq!(
        h.s6rc("s6-rc", &["-l", live.to_str().unwrap(), "diff"]).0,
        0
    );
    assert_eq!(h.dbs().len(), 1);
    // Leaving the failed database, s6-rc-update unlinked the name of each
    // of its longruns, x's too, although that link was never its own.
    assert!(fs::symlink_metadata(&taken).is_err());
    // Once the name is free again, x joins.
    fs::remove_file(&flag).unwrap();
    let r = a.apply(&req(
        4,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("x", &[], 1)],
    ));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(h.db_services(), ["a", "b", "x"]);
    assert_eq!(h.pid("a"), Some(pid));
}

#[test]
fn too_many_services_are_refused_before_compiling() {
    let Some(h) = Host::new() else { return };
    let mut config = h.config();
    config.max_services = 2;
    let mut a = S6rcApplier::open(config).unwrap();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let r = a.apply(&req(
        2,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Invalid,
        "{}",
        r.outcome.message
    );
    assert_eq!(h.db_services(), ["a"]);
    assert_eq!(h.dbs(), ["db-1-0"]);
}
