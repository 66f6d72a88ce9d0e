//! The applier's decisions, on the fake s6-rc: when it inits, updates, does
//! nothing, repairs, rolls back, what it deletes, what it reports and what
//! it remembers across a restart.

use std::fs;
use std::path::{Path, PathBuf};

use vm_catalog_protocol::{ApplyStatus, DiagCode};

use super::fake::{Fake, Fault};
use super::{OpenError, S6rcApplier, S6rcConfig};
use crate::apply::{ActiveVm, Applier, ApplyReport, ApplyRequest};

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    fake: Fake,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        fs::create_dir(root.join("scan")).unwrap();
        Setup {
            _tmp: tmp,
            root,
            fake: Fake::new(),
        }
    }

    fn config(&self) -> S6rcConfig {
        let mut c = S6rcConfig::new(self.root.join("state"));
        c.live_dir = self.root.join("live");
        c.scandir = self.root.join("scan");
        c
    }

    fn open(&self) -> S6rcApplier<Fake> {
        S6rcApplier::open_with(self.config(), self.fake.clone()).unwrap()
    }

    fn state_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "state.json" && n != "conversions")
            .collect();
        v.sort();
        v
    }

    fn compiled(&self) -> PathBuf {
        fs::read_link(self.root.join("live/compiled")).unwrap()
    }

    fn link(&self, name: &str) -> PathBuf {
        self.root.join("scan").join(format!("vm-{name}"))
    }
}

fn vm(name: &str, providers: &[&str], fp: u64) -> ActiveVm {
    ActiveVm {
        name: name.parse().unwrap(),
        view: format!("/run/vm/{name}/config").into(),
        providers: providers.iter().map(|p| p.parse().unwrap()).collect(),
        fingerprint: fp,
    }
}

fn req(generation: u64, vms: Vec<ActiveVm>) -> ApplyRequest {
    ApplyRequest { generation, vms }
}

fn services(r: &ApplyReport) -> Vec<String> {
    r.services.keys().map(|n| n.to_string()).collect()
}

fn pending(r: &ApplyReport) -> Vec<String> {
    r.restart_pending.iter().map(|n| n.to_string()).collect()
}

#[test]
fn first_apply_inits_then_identical_applies_do_nothing() {
    let s = Setup::new();
    let mut a = s.open();
    let r = a.apply(&req(1, vec![vm("app", &["net"], 1), vm("net", &[], 2)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(
        r.outcome.message.starts_with("initialized "),
        "{}",
        r.outcome.message
    );
    assert_eq!(services(&r), ["app", "net"]);
    assert_eq!(r.services["app"], "app");
    assert_eq!(r.outcome.services, 2);
    assert_eq!(
        r.outcome.database.as_deref(),
        Some(s.root.join("state/db-1-0").to_str().unwrap())
    );
    assert_eq!(s.state_entries(), ["db-1-0", "src-1-0"]);
    assert!(
        s.root
            .join("state/src-1-0/app/dependencies.d/net")
            .is_file()
    );
    assert!(s.link("app").is_symlink() && s.link("net").is_symlink());

    let calls = s.fake.calls().len();
    let r = a.apply(&req(2, vec![vm("net", &[], 2), vm("app", &["net"], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Unchanged,
        "{}",
        r.outcome.message
    );
    assert_eq!(
        s.fake.calls().len(),
        calls,
        "a no-op apply runs no s6-rc program"
    );
    assert_eq!(services(&r), ["app", "net"]);
    assert_eq!(r.outcome.generation, 2);
}

#[test]
fn changes_update_and_leave_only_the_live_database() {
    let s = Setup::new();
    let mut a = s.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let r = a.apply(&req(2, vec![vm("a", &[], 1), vm("c", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert!(
        r.outcome.message.contains("(2 services, +1 -1 ~0)"),
        "{}",
        r.outcome.message
    );
    assert_eq!(services(&r), ["a", "c"]);
    assert_eq!(s.compiled(), s.root.join("state/db-2-0"));
    assert_eq!(s.state_entries(), ["db-2-0", "src-2-0"]);
    assert!(!s.link("b").exists() && s.link("c").is_symlink());
    assert!(s.fake.calls().last().unwrap().starts_with("update "));
}

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
fn a_changed_running_vm_is_restart_pending_until_it_restarts() {
    let s = Setup::new();
    let mut a = s.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = s.fake.start("a");
    // Only a's own fingerprint changes: the tree is the same, nothing runs.
    let calls = s.fake.calls().len();
    let r = a.apply(&req(2, vec![vm("a", &[], 2), vm("b", &[], 1)]));
    assert_eq!(r.outcome.status, ApplyStatus::Unchanged);
    assert_eq!(s.fake.calls().len(), calls);
    assert_eq!(pending(&r), ["a"]);
    assert!(
        r.outcome.message.ends_with("; restart pending: a"),
        "{}",
        r.outcome.message
    );
    // A real update (c added) keeps it pending, and does not restart it.
    let r = a.apply(&req(
        3,
        vec![vm("a", &[], 2), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert_eq!(r.outcome.status, ApplyStatus::Applied);
    assert_eq!(pending(&r), ["a"]);
    assert_eq!(s.fake.world().pids["a"], pid);
    assert!(s.fake.world().conversions.is_empty());
    // A restart through s6-rc runs the live definition: no longer pending.
    s.fake.start("a");
    let r = a.apply(&req(
        4,
        vec![vm("a", &[], 2), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert_eq!(r.outcome.status, ApplyStatus::Unchanged);
    assert!(pending(&r).is_empty());
    // A definition changing back to what a runs is not pending either.
    let pid = s.fake.start("b");
    a.apply(&req(
        5,
        vec![vm("a", &[], 2), vm("b", &[], 7), vm("c", &[], 1)],
    ));
    let r = a.apply(&req(
        6,
        vec![vm("a", &[], 2), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert!(pending(&r).is_empty(), "{:?}", pending(&r));
    assert_eq!(s.fake.world().pids["b"], pid);
}

#[test]
fn restart_changed_restarts_through_the_conversion_file() {
    let s = Setup::new();
    let mut config = s.config();
    config.restart_changed = true;
    let mut a = S6rcApplier::open_with(config, s.fake.clone()).unwrap();
    a.apply(&req(
        1,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    let pid_a = s.fake.start("a");
    let pid_b = s.fake.start("b");
    // a changes and runs; b runs unchanged; c changes but is down.
    let r = a.apply(&req(
        2,
        vec![
            vm("a", &[], 2),
            vm("b", &[], 1),
            vm("c", &[], 2),
            vm("d", &[], 1),
        ],
    ));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(s.fake.world().conversions, ["a restart\n"]);
    assert_ne!(s.fake.world().pids["a"], pid_a);
    assert_eq!(s.fake.world().pids["b"], pid_b);
    assert!(pending(&r).is_empty());
    assert!(
        r.outcome.message.contains("; restarted a"),
        "{}",
        r.outcome.message
    );
}

#[test]
fn too_many_services_is_refused_before_anything_runs() {
    let s = Setup::new();
    let mut config = s.config();
    config.max_services = 2;
    let mut a = S6rcApplier::open_with(config, s.fake.clone()).unwrap();
    let r = a.apply(&req(
        1,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &[], 1)],
    ));
    assert_eq!(r.outcome.status, ApplyStatus::Invalid);
    assert_eq!(r.outcome.services, 3);
    assert!(
        r.outcome
            .message
            .starts_with("3 vm services exceed the maximum of 2"),
        "{}",
        r.outcome.message
    );
    assert!(s.fake.calls().is_empty());
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

#[test]
fn a_taken_scandir_name_leaves_out_that_vm_only() {
    let s = Setup::new();
    std::os::unix::fs::symlink("/etc/s6/host-service", s.link("b")).unwrap();
    let mut a = s.open();
    let r = a.apply(&req(
        1,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("c", &["b"], 1)],
    ));
    assert_eq!(r.outcome.status, ApplyStatus::Applied);
    assert_eq!(services(&r), ["a"]);
    let codes: Vec<_> = r
        .left_out
        .iter()
        .map(|l| (l.vm.to_string(), l.code))
        .collect();
    assert_eq!(
        codes,
        [
            ("b".to_string(), DiagCode::InvalidName),
            ("c".to_string(), DiagCode::ProviderUnavailable)
        ]
    );
    assert!(r.outcome.message.contains(
        "left out: b (scan directory entry vm-b is taken by a link to /etc/s6/host-service)"
    ));
}

#[test]
fn a_restarted_daemon_adopts_the_live_directory_without_init() {
    let s = Setup::new();
    let mut a = s.open();
    let request = req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]);
    a.apply(&request);
    s.fake.start("a");
    a.apply(&req(2, vec![vm("a", &[], 2), vm("b", &[], 1)]));
    drop(a);
    fs::create_dir(s.root.join("state/tmp-src-9-0")).unwrap();
    fs::create_dir(s.root.join("state/db-9-0")).unwrap();
    let live_target = fs::read_link(s.root.join("live")).unwrap();
    let calls = s.fake.calls().len();
    let mut a = s.open();
    assert_eq!(fs::read_link(s.root.join("live")).unwrap(), live_target);
    assert_eq!(
        s.state_entries(),
        ["db-1-0", "src-1-0"],
        "stray dirs are gone"
    );
    let r = a.apply(&req(1, vec![vm("a", &[], 2), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Unchanged,
        "{}",
        r.outcome.message
    );
    assert_eq!(pending(&r), ["a"], "restart-pending survives the restart");
    assert_eq!(s.fake.calls().len(), calls);
    let r = a.apply(&req(2, vec![vm("a", &[], 2), vm("c", &[], 1)]));
    assert_eq!(r.outcome.status, ApplyStatus::Applied);
    assert!(
        s.fake
            .calls()
            .iter()
            .all(|c| !c.starts_with("init ") || c.contains("db-1-0"))
    );
}

#[test]
fn adopting_without_a_state_file_reads_the_services_and_updates_once() {
    let s = Setup::new();
    let mut a = s.open();
    let request = req(1, vec![vm("a", &[], 1)]);
    a.apply(&request);
    drop(a);
    fs::remove_file(s.root.join("state/state.json")).unwrap();
    let mut a = s.open();
    let r = a.apply(&request);
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "the tree of an unknown database is unknown"
    );
    assert_eq!(a.apply(&request).outcome.status, ApplyStatus::Unchanged);
}

#[test]
fn adopting_a_switch_the_daemon_did_not_see_finish() {
    let s = Setup::new();
    let mut a = s.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let before = fs::read_to_string(s.root.join("state/state.json")).unwrap();
    a.apply(&req(2, vec![vm("b", &[], 1)]));
    // The daemon died after s6-rc-update switched, before saving the state.
    let mut state: super::state::State = serde_json::from_str(&before).unwrap();
    state.next = Some(super::state::DbRecord {
        database: s.compiled(),
        source: Some(s.root.join("state/src-2-0")),
        tree: None,
        services: [("b".parse().unwrap(), None)].into(),
    });
    state.save(&s.root.join("state/state.json")).unwrap();
    let a = s.open();
    assert_eq!(
        a.state.live.as_ref().unwrap().database,
        s.root.join("state/db-2-0")
    );
    assert!(a.state.next.is_none());
}

#[test]
fn a_deleted_live_database_is_compiled_again_from_its_source() {
    let s = Setup::new();
    let mut a = s.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    drop(a);
    fs::remove_dir_all(s.root.join("state/db-1-0")).unwrap();
    let _a = s.open();
    assert!(s.root.join("state/db-1-0/services").is_file());
}

#[test]
fn a_lost_live_link_is_pointed_back_at_the_one_live_directory() {
    let s = Setup::new();
    let mut a = s.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    drop(a);
    fs::remove_file(s.root.join("live")).unwrap();
    let _a = s.open();
    assert_eq!(s.compiled(), s.root.join("state/db-1-0"));
}

#[test]
fn a_live_directory_with_another_prefix_is_refused() {
    let s = Setup::new();
    s.open().apply(&req(1, vec![vm("a", &[], 1)]));
    let mut config = s.config();
    config.prefix = "other-".into();
    let e = S6rcApplier::open_with(config, s.fake.clone()).unwrap_err();
    assert!(matches!(e, OpenError::Live { .. }));
    assert!(e.to_string().contains("created with prefix \"vm-\""), "{e}");
}

#[test]
fn missing_scandir_links_force_an_update_that_restores_them() {
    let s = Setup::new();
    let request = req(1, vec![vm("a", &[], 1)]);
    s.open().apply(&request);
    fs::remove_file(s.link("a")).unwrap();
    let mut a = s.open();
    let r = a.apply(&request);
    assert_eq!(r.outcome.status, ApplyStatus::Applied);
    assert!(
        r.outcome
            .message
            .contains("links of 1 services were missing (a)"),
        "{}",
        r.outcome.message
    );
    assert!(s.link("a").is_symlink());
    assert_eq!(a.apply(&request).outcome.status, ApplyStatus::Unchanged);
}

#[test]
fn a_template_directory_is_rendered_for_each_vm() {
    let s = Setup::new();
    let t = s.root.join("template");
    fs::create_dir_all(t.join("data")).unwrap();
    fs::write(t.join("type"), "longrun\n").unwrap();
    fs::write(
        t.join("run"),
        "#!/bin/sh\nexec @VM_START@ --name @VM_NAME@\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("@VM_VIEW@", t.join("data/config")).unwrap();
    let mut config = s.config();
    config.template_dir = Some(t);
    let mut a = S6rcApplier::open_with(config, s.fake.clone()).unwrap();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let src = s.root.join("state/src-1-0/a");
    assert_eq!(
        fs::read_to_string(src.join("run")).unwrap(),
        "#!/bin/sh\nexec /bin/start-vmm --name a\n"
    );
    assert_eq!(
        fs::read_link(src.join("data/config")).unwrap(),
        Path::new("/run/vm/a/config")
    );
}
