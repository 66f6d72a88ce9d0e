//! Merging scans: precedence, shadowing, provider resolution, sources that
//! go away.

mod catalog_common;

use std::collections::{BTreeMap, BTreeSet};

use catalog_common::{codes, label, opts, scan, untrusted, want};
use vm_catalog_protocol::{DiagCode, Epoch, Severity, SourceState, VmEntry, VmName, VmState};
use vm_catalog_tests::Tree;
use vm_catalogd::catalog::{Annotations, Catalog, Draft, merge};
use vm_catalogd::definition::SourceScan;
use vm_catalogd::source::{Presence, SourceSpec};

fn builtin(t: &Tree) -> SourceScan {
    scan(SourceSpec::builtin(t.join("builtin")), opts(t))
}

fn dir(t: &Tree, rel: &str) -> SourceScan {
    scan(untrusted(t, rel), opts(t))
}

/// `(name, source, state)` of every entry.
fn states(d: &Draft) -> Vec<(String, String, VmState)> {
    d.entries()
        .map(|e| (e.name.to_string(), e.source.to_string(), e.state))
        .collect()
}

fn entry<'a>(d: &'a Draft, name: &str, source: &str) -> &'a VmEntry {
    d.entries()
        .find(|e| e.name.as_str() == name && e.source.as_str() == source)
        .unwrap_or_else(|| panic!("no {name} from {source}"))
}

fn s(name: &str, source: &str, state: VmState) -> (String, String, VmState) {
    (name.into(), source.into(), state)
}

fn publish(prev: &Catalog, d: Draft) -> Catalog {
    prev.successor(d).expect("something changed").0
}

#[test]
fn merge_first_source_claims_and_lower_ones_are_shadowed() {
    let t = Tree::new();
    t.vm("builtin", "netvm");
    t.vm("a", "netvm");
    t.vm("a", "appvm");
    t.vm("b", "appvm");
    let vm_dir = t.join("run/vm");
    let d = merge(
        &Catalog::empty(Epoch(1)),
        vec![builtin(&t), dir(&t, "a"), dir(&t, "b")],
        &vm_dir,
    );
    assert_eq!(
        states(&d),
        [
            s("appvm", "a", VmState::Active),
            s("appvm", "b", VmState::Shadowed),
            s("netvm", "builtin", VmState::Active),
            s("netvm", "a", VmState::Shadowed),
        ]
    );
    let shadowed = entry(&d, "appvm", "b");
    assert_eq!(shadowed.shadowed_by, Some(label("a")));
    assert_eq!(shadowed.view, None);
    assert_eq!(
        codes(&t, &shadowed.diagnostics),
        want(&[("shadowed (warning)", "b/appvm")])
    );
    let active = entry(&d, "appvm", "a");
    assert_eq!(
        active.view.as_deref(),
        Some(vm_dir.join("appvm/config").to_str().unwrap())
    );
    assert!(active.diagnostics.is_empty());
    let precedences: Vec<(String, u32, u32)> = d
        .sources()
        .iter()
        .map(|s| (s.label.to_string(), s.precedence, s.definitions))
        .collect();
    assert_eq!(
        precedences,
        [
            ("builtin".into(), 0, 1),
            ("a".into(), 1, 2),
            ("b".into(), 2, 1)
        ]
    );
}

#[test]
fn merge_invalid_claimant_is_rejected_not_replaced() {
    let t = Tree::new();
    t.dir("builtin/netvm/blk");
    t.vm("a", "netvm");
    let d = merge(
        &Catalog::empty(Epoch(1)),
        vec![builtin(&t), dir(&t, "a")],
        &t.join("vm"),
    );
    assert_eq!(
        states(&d),
        [
            s("netvm", "builtin", VmState::Rejected),
            s("netvm", "a", VmState::Shadowed)
        ]
    );
    assert_eq!(entry(&d, "netvm", "a").shadowed_by, Some(label("builtin")));
    let c = publish(&Catalog::empty(Epoch(1)), d);
    let (claimant, others) = c.lookup("netvm").unwrap();
    assert_eq!(
        (claimant.source.as_str(), claimant.state),
        ("builtin", VmState::Rejected)
    );
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].source.as_str(), "a");
    assert!(c.lookup("nope").is_none());
    assert_eq!(c.active().count(), 0);
}

#[test]
fn merge_rejects_missing_cyclic_and_rejected_providers_transitively() {
    let t = Tree::new();
    // app -> net -> router (missing)
    for vm in [
        "app",
        "net",
        "app2",
        "cyc1",
        "cyc2",
        "selfish",
        "ok",
        "good-net",
        "broken",
        "on-broken",
    ] {
        t.vm("a", vm);
    }
    t.provider("a", "app", "net");
    t.provider("a", "net", "router");
    // app2 -> cyc1 <-> cyc2
    t.provider("a", "app2", "cyc1");
    t.provider("a", "cyc1", "cyc2");
    t.provider("a", "cyc2", "cyc1");
    t.provider("a", "selfish", "selfish");
    t.provider("a", "ok", "good-net");
    std::fs::remove_file(t.join("a/broken/vmlinux")).unwrap();
    t.provider("a", "on-broken", "broken");
    let d = merge(&Catalog::empty(Epoch(1)), vec![dir(&t, "a")], &t.join("vm"));
    let got: BTreeMap<String, (VmState, Vec<(String, String)>)> = d
        .entries()
        .map(|e| (e.name.to_string(), (e.state, codes(&t, &e.diagnostics))))
        .collect();
    let expect = |name: &str, state: VmState, diags: &[(&str, &str)]| {
        assert_eq!(got[name], (state, want(diags)), "{name}");
    };
    expect(
        "net",
        VmState::Rejected,
        &[("missing-provider", "a/net/providers/net/router")],
    );
    expect(
        "app",
        VmState::Rejected,
        &[("provider-unavailable", "a/app/providers/net/net")],
    );
    expect(
        "cyc1",
        VmState::Rejected,
        &[("provider-cycle", "a/cyc1/providers/net/cyc2")],
    );
    expect(
        "cyc2",
        VmState::Rejected,
        &[("provider-cycle", "a/cyc2/providers/net/cyc1")],
    );
    expect(
        "app2",
        VmState::Rejected,
        &[("provider-unavailable", "a/app2/providers/net/cyc1")],
    );
    expect(
        "selfish",
        VmState::Rejected,
        &[("provider-cycle", "a/selfish/providers/net/selfish")],
    );
    expect("ok", VmState::Active, &[]);
    expect("good-net", VmState::Active, &[]);
    expect(
        "broken",
        VmState::Rejected,
        &[("missing-kernel", "a/broken/vmlinux")],
    );
    expect(
        "on-broken",
        VmState::Rejected,
        &[("provider-unavailable", "a/on-broken/providers/net/broken")],
    );
    let cycle = d.entries().find(|e| e.name.as_str() == "cyc1").unwrap();
    assert!(
        cycle.diagnostics[0].message.contains("cyc1, cyc2"),
        "{}",
        cycle.diagnostics[0].message
    );
}

#[test]
fn merge_provider_resolves_to_the_claimant_of_its_name() {
    let t = Tree::new();
    t.dir("builtin/netvm");
    t.vm("a", "netvm");
    t.vm("a", "app");
    t.provider("a", "app", "netvm");
    let d = merge(
        &Catalog::empty(Epoch(1)),
        vec![builtin(&t), dir(&t, "a")],
        &t.join("vm"),
    );
    assert_eq!(
        entry(&d, "app", "a").state,
        VmState::Rejected,
        "the claimant (built-in) is rejected"
    );
    assert_eq!(
        codes(&t, &entry(&d, "app", "a").diagnostics),
        want(&[("provider-unavailable", "a/app/providers/net/netvm")])
    );
}

#[test]
fn merge_keeps_a_gone_sources_definitions_as_unavailable() {
    // `a` is trusted, so that `b`'s VMs may use its VMs as providers.
    let a = |t: &Tree, gone: bool| {
        let mut s = catalog_common::trusted(t, "a");
        if gone {
            s.presence = Presence::Gone;
        }
        scan(s, opts(t))
    };
    let t = Tree::new();
    t.vm("a", "x");
    t.vm("a", "only-a");
    t.vm("b", "x");
    t.vm("b", "user");
    t.provider("b", "user", "only-a");
    let prev = publish(
        &Catalog::empty(Epoch(1)),
        merge(
            &Catalog::empty(Epoch(1)),
            vec![a(&t, false), dir(&t, "b")],
            &t.join("vm"),
        ),
    );
    assert_eq!(prev.active().count(), 3);

    let d = merge(&prev, vec![a(&t, true), dir(&t, "b")], &t.join("vm"));
    assert_eq!(
        states(&d),
        [
            s("only-a", "a", VmState::Unavailable),
            s("user", "b", VmState::Rejected),
            s("x", "a", VmState::Unavailable),
            s("x", "b", VmState::Active),
        ]
    );
    let x_a = entry(&d, "x", "a");
    assert_eq!(x_a.view, None);
    assert_eq!(
        codes(&t, &x_a.diagnostics),
        want(&[("source-unavailable (warning)", "a/x")])
    );
    assert_eq!(
        codes(&t, &entry(&d, "user", "b").diagnostics),
        want(&[("provider-unavailable", "b/user/providers/net/only-a")])
    );
    assert_eq!(d.sources()[0].state, SourceState::Unavailable);
    assert_eq!(d.sources()[0].definitions, 2);
    let next = publish(&prev, d);
    let (claimant, others) = next.lookup("x").unwrap();
    assert_eq!(
        (claimant.source.as_str(), claimant.state),
        ("b", VmState::Active)
    );
    assert_eq!(others[0].state, VmState::Unavailable);
    let (claimant, _) = next.lookup("only-a").unwrap();
    assert_eq!(
        claimant.state,
        VmState::Unavailable,
        "an unavailable-only name is looked up as such"
    );

    // Still gone on the next rescan: still there, unavailable, unchanged.
    assert!(
        next.successor(merge(&next, vec![a(&t, true), dir(&t, "b")], &t.join("vm")))
            .is_none()
    );
    // Forgotten (no longer in the scans): gone for good.
    let forgotten = merge(&next, vec![dir(&t, "b")], &t.join("vm"));
    assert_eq!(
        states(&forgotten),
        [
            s("user", "b", VmState::Rejected),
            s("x", "b", VmState::Active)
        ]
    );
}

#[test]
fn merge_keeps_a_failed_sources_definitions_and_drops_a_missing_ones() {
    let t = Tree::new();
    t.vm("a", "x");
    let prev = publish(
        &Catalog::empty(Epoch(1)),
        merge(&Catalog::empty(Epoch(1)), vec![dir(&t, "a")], &t.join("vm")),
    );
    let mut failed = untrusted(&t, "a");
    failed.presence = Presence::Failed;
    let d = merge(&prev, vec![scan(failed, opts(&t))], &t.join("vm"));
    assert_eq!(states(&d), [s("x", "a", VmState::Unavailable)]);
    assert_eq!(d.sources()[0].state, SourceState::Failed);

    std::fs::remove_dir_all(t.join("a")).unwrap();
    let d = merge(&prev, vec![dir(&t, "a")], &t.join("vm"));
    assert!(
        states(&d).is_empty(),
        "a deleted directory's definitions are gone"
    );
    assert_eq!(d.sources()[0].state, SourceState::Missing);
}

#[test]
fn merge_ignores_a_repeated_source_label() {
    let t = Tree::new();
    t.vm("a", "x");
    t.vm("b", "y");
    let mut dup = untrusted(&t, "b");
    dup.label = label("a");
    let d = merge(
        &Catalog::empty(Epoch(1)),
        vec![dir(&t, "a"), scan(dup, opts(&t))],
        &t.join("vm"),
    );
    assert_eq!(states(&d), [s("x", "a", VmState::Active)]);
    assert_eq!(d.sources().len(), 1);
}

/// What an applier reported, in the catalog's words: these services,
/// these restarts pending.
fn notes(services: &[(&str, &str)], pending: &[&str]) -> Annotations {
    Annotations {
        services: services
            .iter()
            .map(|(n, s)| (VmName::try_from(*n).unwrap(), s.to_string()))
            .collect(),
        restart_pending: pending
            .iter()
            .map(|n| VmName::try_from(*n).unwrap())
            .collect::<BTreeSet<_>>(),
        left_out: BTreeMap::new(),
        warnings: BTreeMap::new(),
    }
}

/// A note from outside the rescan (a UI VM's listener refused) is a
/// warning on an active entry, which stays active with its service, and
/// nothing on an inactive one.
#[test]
fn a_warning_from_outside_shows_on_an_active_entry_only() {
    let t = Tree::new();
    t.vm("a", "ui");
    t.dir("a/bad");
    let empty = Catalog::empty(Epoch(1));
    let mut d = merge(&empty, vec![dir(&t, "a")], &t.join("vm"));
    let mut r = notes(&[("ui", "vm-ui")], &[]);
    for vm in ["ui", "bad"] {
        r.warnings.insert(
            VmName::try_from(vm).unwrap(),
            vec![(DiagCode::ListenerRefused, "a link".into())],
        );
    }
    d.annotate(r);
    let ui = entry(&d, "ui", "a");
    assert_eq!(
        (ui.state, ui.service.as_deref()),
        (VmState::Active, Some("vm-ui"))
    );
    let refused: Vec<_> = ui
        .diagnostics
        .iter()
        .map(|d| (d.code, d.severity, d.message.as_str()))
        .collect();
    assert_eq!(
        refused,
        [(DiagCode::ListenerRefused, Severity::Warning, "a link")]
    );
    let bad = &entry(&d, "bad", "a").diagnostics;
    assert!(bad.iter().all(|d| d.code != DiagCode::ListenerRefused));
}

#[test]
fn merge_takes_the_appliers_annotations_and_keeps_them() {
    let t = Tree::new();
    t.vm("a", "net");
    t.vm("a", "app");
    t.provider("a", "app", "net");
    t.dir("a/bad");
    let vm_dir = t.join("vm");
    let empty = Catalog::empty(Epoch(1));
    let mut d = merge(&empty, vec![dir(&t, "a")], &vm_dir);
    d.annotate(notes(
        &[("app", "vm-app"), ("net", "vm-net"), ("bad", "vm-bad")],
        &["net"],
    ));
    assert_eq!(entry(&d, "app", "a").service.as_deref(), Some("vm-app"));
    assert!(entry(&d, "net", "a").restart_pending);
    assert!(!entry(&d, "app", "a").restart_pending);
    assert_eq!(
        entry(&d, "bad", "a").service,
        None,
        "only active entries have a service"
    );
    let c = publish(&empty, d);

    // Nothing changed: the live annotations carry over without a new
    // report.
    let d = merge(&c, vec![dir(&t, "a")], &vm_dir);
    assert_eq!(entry(&d, "app", "a").service.as_deref(), Some("vm-app"));
    assert!(c.successor(d).is_none());
}

#[test]
fn merge_reject_from_outside_rejects_dependants_too() {
    let t = Tree::new();
    t.vm("a", "net");
    t.vm("a", "app");
    t.provider("a", "app", "net");
    let mut d = merge(&Catalog::empty(Epoch(1)), vec![dir(&t, "a")], &t.join("vm"));
    let diag = vm_catalog_protocol::Diagnostic {
        code: vm_catalog_protocol::DiagCode::IoError,
        severity: vm_catalog_protocol::Severity::Error,
        path: "/run/vm/net/config".into(),
        message: "cannot build the view".into(),
    };
    d.reject_all([(VmName::try_from("net").unwrap(), diag)]);
    assert_eq!(
        states(&d),
        [
            s("app", "a", VmState::Rejected),
            s("net", "a", VmState::Rejected)
        ]
    );
    assert!(d.active_definitions().is_empty());
    assert_eq!(d.active().count(), 0);
}

#[test]
fn merge_shows_vms_left_out_of_the_database_and_keeps_that_until_told_otherwise() {
    let t = Tree::new();
    t.vm("a", "ok");
    t.vm("a", "long");
    let vm_dir = t.join("vm");
    let empty = Catalog::empty(Epoch(1));
    let mut d = merge(&empty, vec![dir(&t, "a")], &vm_dir);
    let mut r = notes(&[("ok", "vm-ok")], &[]);
    r.left_out.insert(
        VmName::try_from("long").unwrap(),
        vec![(
            vm_catalog_protocol::DiagCode::NameTooLong,
            "the service name is too long".into(),
        )],
    );
    d.annotate(r);
    let long = entry(&d, "long", "a");
    assert_eq!(long.state, VmState::Active, "its definition is fine");
    assert_eq!(long.service, None);
    assert_eq!(
        codes(&t, &long.diagnostics),
        want(&[("name-too-long", "a/long")])
    );
    assert_eq!(entry(&d, "ok", "a").service.as_deref(), Some("vm-ok"));
    let g1 = publish(&empty, d);

    // A dry run (no applier) sees the same: nothing changes.
    assert!(
        g1.successor(merge(&g1, vec![dir(&t, "a")], &vm_dir))
            .is_none()
    );
    // The applier takes it in: the diagnostic goes, a service comes.
    let mut d = merge(&g1, vec![dir(&t, "a")], &vm_dir);
    d.annotate(notes(&[("ok", "vm-ok"), ("long", "vm-long")], &[]));
    let (g2, changes) = g1.successor(d).unwrap();
    assert_eq!(changes.len(), 1);
    let (long, _) = g2.lookup("long").unwrap();
    assert!(long.diagnostics.is_empty());
    assert_eq!(long.service.as_deref(), Some("vm-long"));
}
