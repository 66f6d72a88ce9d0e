//! Init, update, no-op, validation, templates.

use super::*;

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
