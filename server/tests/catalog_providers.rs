//! Who may be whose provider: a VM of an untrusted source uses providers
//! from trusted sources and its own source only, unless the administrator
//! allows cross-source providers.

mod catalog_common;

use catalog_common::{opts, scan, trusted, untrusted};
use vm_catalog_protocol::{DiagCode, Epoch, VmEntry, VmState};
use vm_catalog_tests::Tree;
use vm_catalogd::catalog::{Catalog, Draft, MergeOptions, VmIds, merge_with};

/// `sys` (trusted) with `netvm`; the untrusted sticks `a` with `anet` and
/// `b` with `bnet`; `b`'s VMs use each of them.
fn tree() -> Tree {
    let t = Tree::new();
    t.vm("sys", "netvm");
    t.vm("a", "anet");
    t.vm("b", "bnet");
    for (vm, provider) in [
        ("uses-sys", "netvm"),
        ("uses-own", "bnet"),
        ("uses-a", "anet"),
        ("uses-a-qualified", "a.anet"),
    ] {
        t.vm("b", vm);
        t.provider("b", vm, provider);
    }
    t.vm("b", "behind");
    t.provider("b", "behind", "uses-a");
    t
}

fn merged(t: &Tree, cross_source_providers: bool) -> Draft {
    let scans = vec![
        scan(trusted(t, "sys"), opts(t)),
        scan(untrusted(t, "a"), opts(t)),
        scan(untrusted(t, "b"), opts(t)),
    ];
    let o = MergeOptions {
        cross_source_providers,
        ..MergeOptions::plain(t.join("vm"))
    };
    merge_with(&Catalog::empty(Epoch(1)), scans, &o, &mut VmIds::new(1))
}

fn entry<'a>(d: &'a Draft, name: &str) -> &'a VmEntry {
    d.entries()
        .find(|e| e.name.as_str() == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn an_untrusted_vm_uses_trusted_and_own_source_providers_only() {
    let t = tree();
    let d = merged(&t, false);
    for vm in ["uses-sys", "uses-own"] {
        assert_eq!(entry(&d, vm).state, VmState::Active, "{vm}");
    }
    for vm in ["uses-a", "uses-a-qualified"] {
        let e = entry(&d, vm);
        assert_eq!(e.state, VmState::Rejected, "{vm}");
        let why = e
            .diagnostics
            .iter()
            .find(|x| x.code == DiagCode::ProviderUntrusted)
            .unwrap_or_else(|| panic!("{vm}: {e:?}"));
        assert!(
            why.message.contains("untrusted source a")
                && why.message.contains("--allow-cross-source-providers"),
            "{why:?}"
        );
    }
    // Whoever depends on a refused VM is rejected too.
    let behind = entry(&d, "behind");
    assert_eq!(behind.state, VmState::Rejected);
    assert!(
        behind
            .diagnostics
            .iter()
            .any(|x| x.code == DiagCode::ProviderUnavailable)
    );
    // The provider itself is fine.
    assert_eq!(entry(&d, "anet").state, VmState::Active);
}

#[test]
fn the_administrator_may_allow_cross_source_providers() {
    let t = tree();
    let d = merged(&t, true);
    for vm in [
        "uses-sys",
        "uses-own",
        "uses-a",
        "uses-a-qualified",
        "behind",
    ] {
        assert_eq!(entry(&d, vm).state, VmState::Active, "{vm}");
    }
}

#[test]
fn a_trusted_vm_is_not_restricted() {
    let t = Tree::new();
    t.vm("sys", "app");
    t.provider("sys", "app", "anet");
    t.vm("a", "anet");
    let scans = vec![
        scan(trusted(&t, "sys"), opts(&t)),
        scan(untrusted(&t, "a"), opts(&t)),
    ];
    let d = merge_with(
        &Catalog::empty(Epoch(1)),
        scans,
        &MergeOptions::plain(t.join("vm")),
        &mut VmIds::new(1),
    );
    assert_eq!(entry(&d, "app").state, VmState::Active);
}
