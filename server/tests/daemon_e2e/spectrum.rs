//! Today's Spectrum (issue 15): its own definitions (built the way
//! make-vm.nix builds them, by `contrib/examples/spectrum/make-tree`), its
//! qualified names and its `/run/vm` layout, through the real daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

const UUID: &str = "a7834806-2f82-4faf-8ac4-4f8fd8a474ca";
const MAKE_TREE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../contrib/examples/spectrum/make-tree"
);
/// netvm's kernel in the store, as make-tree puts it.
const NETVM_KERNEL: &str =
    "nix/store/0r3kl4vnz1h3i8q5n4cw0v7w2b9x3c6d-spectrum-netvm/lib/spectrum/vm/netvm/vmlinux";

/// The app template's kernel in the store, where the template's link leads.
const APPVM_KERNEL: &str =
    "nix/store/5k7m9p1r3t5v7x9z1b3d5f7h9j1l3n5q-spectrum-appvm/lib/spectrum/img/appvm/vmlinux";

/// Builds the Spectrum-shaped fixture at `root` with `make-tree`.
fn make_tree(root: &std::path::Path) {
    let status = Command::new("sh")
        .arg(MAKE_TREE)
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success(), "make-tree failed");
}

/// A daemon on a fresh make-tree fixture: the built-in VMs as the trusted
/// source `sys`, the user partition's `vms/` as the untrusted source `user`.
fn spectrum(names: &str, layout: &str) -> TestDaemon {
    let mut d = daemon();
    let root = d.tree().join("spectrum");
    make_tree(&root);
    d.set(
        "--builtin",
        format!("sys={}", root.join("usr/lib/spectrum/vm").display()),
    );
    d.without_user_source();
    d.arg("--source")
        .arg(format!("user={}/media/{UUID}/vms", root.display()));
    d.arg("--trusted-target")
        .arg(format!("{}/", root.join("usr/lib/spectrum/img").display()));
    d.arg("--trusted-target")
        .arg(format!("{}/", root.join("nix/store").display()));
    d.arg("--names").arg(names).arg("--vm-layout").arg(layout);
    d
}

fn root(d: &TestDaemon) -> PathBuf {
    d.tree().join("spectrum")
}

/// Name → entry of every definition.
async fn entries(c: &Client) -> BTreeMap<String, VmEntry> {
    c.list_vms(true, None)
        .await
        .unwrap()
        .vms
        .into_iter()
        .map(|e| (e.name.to_string(), e))
        .collect()
}

fn canonical(p: impl AsRef<Path>) -> PathBuf {
    std::fs::canonicalize(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

/// Done when (issue 15): netvm, appvm-firefox and appvm-foot (symlinks to
/// store directories) and a user `nc` with `providers/net/sys.netvm` are
/// all active, in both naming modes and both layouts, with the provider
/// resolved to the built-in netvm.
#[tokio::test]
async fn spectrum_vms_are_all_active_in_both_naming_modes_and_both_layouts() {
    for (names, layout) in [
        ("plain", "plain"),
        ("plain", "spectrum"),
        ("qualified", "plain"),
        ("qualified", "spectrum"),
    ] {
        let what = format!("--names {names} --vm-layout {layout}");
        let mut d = spectrum(names, layout);
        d.start().unwrap();
        let c = Client::connect(d.socket()).await.unwrap();
        let all = entries(&c).await;
        let q = |source: &str, n: &str| match names {
            "plain" => n.to_string(),
            _ => format!("{source}.{n}"),
        };
        let want: Vec<String> = [
            q("sys", "appvm-firefox"),
            q("sys", "appvm-foot"),
            q("sys", "netvm"),
            q("user", "nc"),
            q("user", "portal"),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
        assert_eq!(all.keys().cloned().collect::<Vec<_>>(), want, "{what}");
        for e in all.values() {
            assert_eq!(e.state, VmState::Active, "{what}: {e:?}");
        }
        let netvm = q("sys", "netvm");
        for dependant in [q("sys", "appvm-firefox"), q("user", "nc")] {
            let e = &all[&dependant];
            assert_eq!(
                e.providers,
                [Provider {
                    kind: ProviderKind::Net,
                    name: netvm.parse().unwrap()
                }],
                "{what}: {dependant}'s provider is the built-in netvm"
            );
            // The view names the provider so that start-vmm finds it.
            let link = Path::new(e.view.as_ref().unwrap())
                .join("providers/net")
                .join(&netvm);
            assert_eq!(
                std::fs::read_link(&link).unwrap(),
                Path::new(&e.path).join("providers/net/sys.netvm"),
                "{what}"
            );
        }
        // The store directory behind the built-in link is followed; fs/ is
        // linked as it is (its run link is for the guest, dangling here).
        let firefox = &all[&q("sys", "appvm-firefox")];
        assert!(
            firefox.path.contains("/nix/store/"),
            "{what}: {}",
            firefox.path
        );
        let fs = std::fs::read_link(Path::new(firefox.view.as_ref().unwrap()).join("fs")).unwrap();
        assert_eq!(fs, Path::new(&firefox.path).join("fs"), "{what}");
        assert_eq!(std::fs::read(fs.join("type")).unwrap(), b"nix\n");
        assert!(
            std::fs::read_link(fs.join("run"))
                .unwrap()
                .starts_with("/nix/store/")
        );
        // A user VM's kernel links to the template, whose file links into
        // the store (issue 21): the view links the chain's final path.
        let nc = &all[&q("user", "nc")];
        assert_eq!(
            std::fs::read_link(Path::new(nc.view.as_ref().unwrap()).join("vmlinux")).unwrap(),
            root(&d).join(APPVM_KERNEL),
            "{what}"
        );
        // An empty providers/ is fine.
        assert!(all[&q("sys", "appvm-foot")].providers.is_empty());
        // The kernel of netvm's view is netvm's, whatever the layout.
        let by = match layout {
            "spectrum" => d.vm_dir().join("by-name").join(&netvm),
            _ => d.vm_dir().join(&netvm),
        };
        assert_eq!(
            canonical(by.join("config/vmlinux")),
            root(&d).join(NETVM_KERNEL),
            "{what}"
        );
        let e = &all[&netvm];
        let id = e.id.as_ref().unwrap().as_str();
        let view = match layout {
            "spectrum" => d.vm_dir().join("by-id").join(id).join("config"),
            _ => d.vm_dir().join(&netvm).join("config"),
        };
        assert_eq!(e.view.as_deref(), Some(view.to_str().unwrap()), "{what}");
        // A qualified name finds the definition in both modes.
        let got = c.get_vm(&"sys.netvm".parse().unwrap()).await.unwrap();
        assert_eq!(got.vm.name.as_str(), netvm, "{what}");
        drop(c);
        d.stop();
    }
}

/// Done when (issue 15): with `--vm-layout spectrum`, `by-name/sys.netvm`
/// leads to a by-id directory whose `config/vmlinux` resolves to netvm's
/// kernel, and every id survives a daemon restart.
#[tokio::test]
async fn spectrum_layout_ids_survive_a_daemon_restart() {
    let mut d = spectrum("qualified", "spectrum");
    d.start().unwrap();
    let by_name = d.vm_dir().join("by-name");
    let ids = async |d: &TestDaemon| {
        let c = Client::connect(d.socket()).await.unwrap();
        let mut out = BTreeMap::new();
        for (name, e) in entries(&c).await {
            let id = e.id.unwrap().to_string();
            assert_eq!(
                std::fs::read_link(by_name.join(&name)).unwrap(),
                d.vm_dir().join("by-id").join(&id),
                "{name}"
            );
            out.insert(name, id);
        }
        out
    };
    let before = ids(&d).await;
    assert_eq!(before.len(), 5);
    let mut unique: Vec<_> = before.values().collect();
    unique.dedup();
    assert_eq!(unique.len(), 5, "{before:?}");
    for id in before.values() {
        assert_eq!(id.len(), 6);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
    }
    assert_eq!(
        canonical(by_name.join("sys.netvm/config/vmlinux")),
        root(&d).join(NETVM_KERNEL)
    );
    // Something else lives in a by-id directory (Spectrum's vmm socket,
    // serial, …): it is kept.
    let netvm_dir = d.vm_dir().join("by-id").join(&before["sys.netvm"]);
    std::fs::write(netvm_dir.join("serial"), b"").unwrap();
    d.stop();
    d.start().unwrap();
    assert_eq!(ids(&d).await, before, "the same ids after a restart");
    assert!(netvm_dir.join("serial").exists());
    // A VM that goes away loses its view and its link; one that comes back
    // gets a new id (its old one was forgotten with it).
    let c = Client::connect(d.socket()).await.unwrap();
    let portal = root(&d).join(format!("media/{UUID}/vms/portal"));
    let stash = d.tree().join("portal");
    std::fs::rename(&portal, &stash).unwrap();
    c.rescan(false).await.unwrap();
    assert!(std::fs::symlink_metadata(by_name.join("user.portal")).is_err());
    assert!(
        !d.vm_dir()
            .join("by-id")
            .join(&before["user.portal"])
            .exists()
    );
    std::fs::rename(&stash, &portal).unwrap();
    c.rescan(false).await.unwrap();
    let after = ids(&d).await;
    assert_ne!(after["user.portal"], before["user.portal"]);
    assert_eq!(after["sys.netvm"], before["sys.netvm"]);
}

/// Qualified references in the plain naming mode: `<label>.<name>` is the
/// definition of `<name>` from that source, shadowed or not; a provider
/// must be the one that claims its name.
#[tokio::test]
async fn a_qualified_reference_names_the_definition_of_that_source() {
    let mut d = daemon();
    d.builtin_vm("netvm");
    d.user_vm("netvm");
    d.user_vm("app");
    d.tree().provider("user", "app", "builtin.netvm");
    d.user_vm("odd");
    d.tree().provider("user", "odd", "user.netvm");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let all = c.list_vms(true, None).await.unwrap();
    let app = all.vms.iter().find(|e| e.name.as_str() == "app").unwrap();
    assert_eq!(app.state, VmState::Active);
    assert_eq!(
        app.providers[0].name.as_str(),
        "netvm",
        "resolved to its catalog name"
    );
    let odd = all.vms.iter().find(|e| e.name.as_str() == "odd").unwrap();
    assert_eq!(odd.state, VmState::Rejected);
    let why = odd
        .diagnostics
        .iter()
        .find(|x| x.code == DiagCode::ProviderUnavailable)
        .unwrap();
    assert!(why.message.contains("shadowed"), "{why:?}");
    let shadowed = c.get_vm(&"user.netvm".parse().unwrap()).await.unwrap();
    assert_eq!(
        (shadowed.vm.source.as_str(), shadowed.vm.state),
        ("user", VmState::Shadowed)
    );
    assert_eq!(shadowed.others.len(), 1);
    let e = c
        .get_vm(&"nosuch.netvm".parse().unwrap())
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    // `resolve` (so `vm-start`) refuses a shadowed definition, exit 3.
    let out = Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .args(["resolve", "user.netvm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shadowed"));
}

/// Issue 22, item 2: under `--names plain` a user directory `sys.netvm`
/// became the provider of every VM naming `sys.netvm` (the built-in
/// `appvm-firefox` included), and `show sys.netvm` and `by-name/sys.netvm`
/// led to it.
#[tokio::test]
async fn a_user_directory_sys_netvm_impersonated_the_built_in_netvm_under_plain_names() {
    let mut d = spectrum("plain", "spectrum");
    let vms = root(&d).join(format!("media/{UUID}/vms"));
    d.tree().vm(&vms, "sys.netvm");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let all = entries(&c).await;
    for dependant in ["appvm-firefox", "nc"] {
        let e = &all[dependant];
        assert_eq!(e.state, VmState::Active, "{dependant}");
        assert_eq!(e.providers[0].name.as_str(), "netvm", "{dependant}");
    }
    let impostor = &all["sys.netvm"];
    assert_eq!(
        (impostor.source.as_str(), impostor.state),
        ("user", VmState::Rejected)
    );
    assert!(
        impostor
            .diagnostics
            .iter()
            .any(|x| x.code == DiagCode::NameReadsAsReference),
        "{impostor:?}"
    );
    let shown = c.get_vm(&"sys.netvm".parse().unwrap()).await.unwrap().vm;
    assert_eq!(
        (shown.source.as_str(), shown.name.as_str()),
        ("sys", "netvm")
    );
    let out = Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .args(["show", "sys.netvm"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("source:          sys"), "{text}");
    assert!(!d.vm_dir().join("by-name/sys.netvm").exists());
}

/// With qualified names a bare provider name is not a catalog name: the
/// dependant is rejected, and told the qualified name.
#[tokio::test]
async fn a_bare_provider_under_qualified_names_is_missing_with_a_hint() {
    let mut d = spectrum("qualified", "plain");
    let nc = root(&d).join(format!("media/{UUID}/vms/nc"));
    std::fs::rename(
        nc.join("providers/net/sys.netvm"),
        nc.join("providers/net/netvm"),
    )
    .unwrap();
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let nc = c.get_vm(&"user.nc".parse().unwrap()).await.unwrap().vm;
    assert_eq!(nc.state, VmState::Rejected);
    let why = nc
        .diagnostics
        .iter()
        .find(|x| x.code == DiagCode::MissingProvider)
        .unwrap();
    assert!(why.message.contains("did you mean sys.netvm?"), "{why:?}");
}

/// What broke on a real Spectrum host (issue 21): the template's files are
/// links into the store, so a user VM's `vmlinux` resolves through two
/// links. With only the template trusted the chain's hop into the store is
/// refused, naming the hop; with the store trusted too, it is followed.
#[test]
fn user_vms_linked_to_a_template_that_links_into_the_store_are_accepted() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("spectrum");
    make_tree(&root);
    let root = canonical(&root);
    let check = |store: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vm-catalogd"));
        c.args(["check", "--names", "qualified", "--trusted-target"])
            .arg(format!("{}/", root.join("usr/lib/spectrum/img").display()));
        if store {
            c.arg("--trusted-target")
                .arg(format!("{}/", root.join("nix/store").display()));
        }
        c.arg("--sources")
            .arg("--trusted-source")
            .arg(format!(
                "sys={}",
                root.join("usr/lib/spectrum/vm").display()
            ))
            .arg(format!("user={}/media/{UUID}/vms", root.display()))
            .output()
            .unwrap()
    };
    let out = check(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("unsafe-symlink"), "{text}");
    let hop = root.join("usr/lib/spectrum/img/appvm/vmlinux");
    assert!(text.contains(&hop.display().to_string()), "{text}");
    let out = check(true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
