//! Start-up: adopting, reconciling and repairing what is live.

use super::*;

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
    let mut state: crate::apply::s6rc::state::State = serde_json::from_str(&before).unwrap();
    state.next = Some(crate::apply::s6rc::state::DbRecord {
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
fn a_live_directory_that_appears_after_start_up_is_adopted_not_re_initialized() {
    let s = Setup::new();
    let mut a = s.open();
    // Someone else inits the live directory after the daemon started.
    let mut other = S6rcApplier::open_with(s.config(), s.fake.clone()).unwrap();
    other.apply(&req(1, vec![vm("a", &[], 1)]));
    let r = a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        r.outcome.status,
        ApplyStatus::Applied,
        "{}",
        r.outcome.message
    );
    assert_eq!(services(&r), ["a", "b"]);
    let inits = s
        .fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("init "))
        .count();
    assert_eq!(inits, 1);
}
