//! Start-up: adopting, reconciling and repairing what is live, never
//! re-running s6-rc-init over it.

use std::fs;

use vm_catalogd::apply::s6rc::OpenError;
use vm_catalogd::apply::s6rc::outcome::{Forced, S6rcOutcome};
use vm_catalogd::apply::s6rc::state::{DbRecord, S6rcState, StateFile};
use vm_catalogd::apply::{Applier, ApplyReport};

use crate::rig::{Rig, names, pending, req, result, vm};

both!(
    a_restarted_daemon_adopts_the_live_directory_without_init,
    adopting_without_a_state_file_reads_the_services_and_updates_once,
    a_truncated_or_garbage_state_file_was_fatal_to_nothing,
    adopting_a_switch_the_daemon_did_not_see_finish,
    a_deleted_live_database_is_compiled_again_from_its_source,
    a_lost_live_link_is_pointed_back_at_the_one_live_directory,
    a_live_directory_with_another_prefix_is_refused,
    missing_scandir_links_force_an_update_that_restores_them,
    a_live_directory_that_appears_after_start_up_is_adopted_not_re_initialized,
);

fn applied(rep: &ApplyReport) -> bool {
    matches!(result(rep), S6rcOutcome::Applied(_))
}

fn a_restarted_daemon_adopts_the_live_directory_without_init(r: &impl Rig) {
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    let pid = r.start(&["a"])[0];
    a.apply(&req(2, vec![vm("a", &[], 2), vm("b", &[], 1)]));
    drop(a);
    // Stray work left by a killed daemon.
    fs::create_dir(r.root().join("state/tmp-src-9-0")).unwrap();
    fs::create_dir(r.root().join("state/db-9-0")).unwrap();
    let target = r.live_target();
    let calls = r.calls();

    let mut a = r.open();
    assert_eq!(
        r.live_target(),
        target,
        "opening changes nothing that is live"
    );
    assert_eq!(
        r.state_entries(),
        ["db-1-0", "src-1-0"],
        "stray dirs are gone"
    );
    let rep = a.apply(&req(1, vec![vm("a", &[], 2), vm("b", &[], 1)]));
    assert_eq!(
        *result(&rep),
        S6rcOutcome::Unchanged,
        "{}",
        rep.outcome.message
    );
    assert_eq!(pending(&rep), ["a"], "restart-pending survives the restart");
    assert_eq!(names(&rep), ["a", "b"]);
    assert_eq!(r.calls(), calls, "neither opening nor a no-op runs s6-rc");
    let rep = a.apply(&req(2, vec![vm("a", &[], 2), vm("c", &[], 1)]));
    assert!(applied(&rep), "{}", rep.outcome.message);
    assert!(r.live_target().starts_with("live:s6-rc-update:"));
    assert_eq!(r.db_services(), ["a", "c"]);
    assert_eq!(r.pid("a"), Some(pid));
    a.tidy();
    assert_eq!(r.dbs(), ["db-2-0"]);
}

fn adopting_without_a_state_file_reads_the_services_and_updates_once(r: &impl Rig) {
    let mut a = r.open();
    let request = req(1, vec![vm("a", &[], 1)]);
    a.apply(&request);
    let pid = r.start(&["a"])[0];
    drop(a);
    fs::remove_file(r.root().join("state/state.json")).unwrap();
    let mut a = r.open();
    assert_eq!(
        a.state().live.as_ref().unwrap().tree,
        None,
        "read from s6-rc-db"
    );
    let rep = a.apply(&request);
    assert!(applied(&rep), "the tree of an unknown database is unknown");
    assert_eq!(*result(&a.apply(&request)), S6rcOutcome::Unchanged);
    assert_eq!(r.pid("a"), Some(pid));
}

fn a_truncated_or_garbage_state_file_was_fatal_to_nothing(r: &impl Rig) {
    let mut a = r.open();
    let request = req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]);
    a.apply(&request);
    let pids = r.start(&["a", "b"]);
    drop(a);
    let path = r.root().join("state/state.json");
    let text = fs::read(&path).unwrap();
    for damaged in [text[..text.len() / 2].to_vec(), b"\xff garbage {".to_vec()] {
        fs::write(&path, damaged).unwrap();
        let mut a = r.open();
        let rep = a.apply(&request);
        assert!(
            rep.outcome.message.contains("; state: cannot parse"),
            "{}",
            rep.outcome.message
        );
        assert!(
            matches!(
                result(&rep),
                S6rcOutcome::Applied(_) | S6rcOutcome::Unchanged
            ),
            "{}",
            rep.outcome.message
        );
        assert_eq!(*result(&a.apply(&request)), S6rcOutcome::Unchanged);
        assert_eq!(r.pid("a"), Some(pids[0]), "never restarted");
        assert_eq!(r.pid("b"), Some(pids[1]), "never restarted");
    }
    // One bad record: the rest is kept.
    let text = fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["running"] = serde_json::json!({"../x": {"pid": "no"}});
    fs::write(&path, v.to_string()).unwrap();
    let mut a = r.open();
    let rep = a.apply(&request);
    assert_eq!(
        *result(&rep),
        S6rcOutcome::Unchanged,
        "{}",
        rep.outcome.message
    );
    assert!(
        rep.outcome
            .message
            .contains(r#"state: unreadable records of state.json skipped: running["../x"]"#),
        "{}",
        rep.outcome.message
    );
}

fn adopting_a_switch_the_daemon_did_not_see_finish(r: &impl Rig) {
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let before = fs::read_to_string(r.root().join("state/state.json")).unwrap();
    a.apply(&req(2, vec![vm("b", &[], 1)]));
    drop(a);
    // The daemon died after s6-rc-update switched, before saving the state.
    let mut state: S6rcState = serde_json::from_str(&before).unwrap();
    state.next = Some(DbRecord {
        database: r.compiled(),
        source: Some(r.root().join("state/src-2-0")),
        tree: None,
        services: [("b".parse().unwrap(), None)].into(),
    });
    state.save(&r.root().join("state/state.json")).unwrap();
    let a = r.open();
    let live = a.state().live.as_ref().unwrap();
    assert_eq!(live.database, r.root().join("state/db-2-0"));
    assert!(a.state().next.is_none());
    assert_eq!(r.dbs(), ["db-2-0"]);
}

fn a_deleted_live_database_is_compiled_again_from_its_source(r: &impl Rig) {
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let pid = r.start(&["a"])[0];
    drop(a);
    fs::remove_dir_all(r.root().join("state/db-1-0")).unwrap();
    let mut a = r.open();
    assert!(r.root().join("state/db-1-0").is_dir());
    assert_eq!(r.db_services(), ["a"], "s6-rc reads it again");
    let rep = a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert!(applied(&rep), "{}", rep.outcome.message);
    assert_eq!(r.pid("a"), Some(pid));
}

fn a_lost_live_link_is_pointed_back_at_the_one_live_directory(r: &impl Rig) {
    let mut a = r.open();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let target = r.live_target();
    drop(a);
    fs::remove_file(r.live()).unwrap();
    let _a = r.open();
    assert_eq!(r.live_target(), target);
    assert_eq!(r.compiled(), r.root().join("state/db-1-0"));
    assert_eq!(r.db_services(), ["a"]);
}

fn a_live_directory_with_another_prefix_is_refused(r: &impl Rig) {
    r.open().apply(&req(1, vec![vm("a", &[], 1)]));
    let mut config = r.config();
    config.prefix = "other-".into();
    let Err(e) = r.open_with(config) else {
        panic!("opened a live directory made with another prefix")
    };
    assert!(matches!(e, OpenError::Live { .. }));
    assert!(e.to_string().contains("created with prefix \"vm-\""), "{e}");
}

fn missing_scandir_links_force_an_update_that_restores_them(r: &impl Rig) {
    let request = req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]);
    r.open().apply(&request);
    let pid = r.start(&["a"])[0];
    fs::remove_file(r.link("b")).unwrap();
    let mut a = r.open();
    let rep = a.apply(&request);
    let S6rcOutcome::Applied(s) = result(&rep) else {
        panic!("{}", rep.outcome.message)
    };
    assert_eq!(s.forced, Some(Forced::LinksMissing(vec!["b".into()])));
    assert!(r.link("b").is_symlink());
    assert_eq!(r.pid("a"), Some(pid));
    assert_eq!(*result(&a.apply(&request)), S6rcOutcome::Unchanged);
}

fn a_live_directory_that_appears_after_start_up_is_adopted_not_re_initialized(r: &impl Rig) {
    let mut a = r.open();
    // Someone else inits the live directory after the daemon started.
    let mut other = r.open();
    other.apply(&req(1, vec![vm("a", &[], 1)]));
    drop(other);
    let target = r.live_target();
    let rep = a.apply(&req(1, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert!(applied(&rep), "{}", rep.outcome.message);
    assert_ne!(r.live_target(), target);
    assert!(r.live_target().starts_with("live:s6-rc-update:"));
    assert_eq!(names(&rep), ["a", "b"]);
    assert_eq!(r.db_services(), ["a", "b"]);
}
