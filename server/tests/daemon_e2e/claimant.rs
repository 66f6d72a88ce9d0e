//! The one claimant rule (DESIGN §9) as every reader of the daemon sees
//! it: `GetVm`, `show`, `resolve` and the UI VM listeners all follow the
//! definition the catalog lists as active.

use vm_catalog_tests::s6;

use super::*;

/// `vm-catalog --socket <socket> <args>`: its exit code and output.
fn cli(d: &TestDaemon, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Regression: when the first of two sources defining `x` failed (its
/// definition kept as `unavailable`), `GetVm x`, `show x` and `resolve x`
/// answered with the unavailable definition (so `vm-start x` refused an
/// active VM) and the `--ui-vm x` listener was dropped, because the
/// published snapshot had a claimant rule of its own ("first not
/// shadowed").
#[tokio::test]
async fn an_unavailable_first_definition_hid_the_active_one_from_get_vm_resolve_and_the_listener() {
    for p in ["s6-svscan", "s6-instance-maker", "s6-instance-create"] {
        let Some(_) = vm_catalog_tests::require_tool(p) else {
            return;
        };
    }
    // A real s6-svscan with a templated service, so that `x` has a service
    // and `resolve x` can succeed.
    let host = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(host.path()).unwrap();
    let vmm = s6::write_vm_command(&root.join("vmm")).unwrap();
    let service = root.join("scan/vmm");
    std::fs::create_dir_all(root.join("scan")).unwrap();
    s6::make_instance_service(&service, &vmm).unwrap();
    let _svscan = s6::Svscan::start(&root.join("scan"), 100).unwrap();
    assert!(s6::wait_for(Duration::from_secs(10), || {
        s6::scanner_listens(&service.join("instance"))
    }));
    let mut d = daemon();
    d.arg("--no-partitions")
        .arg("--apply")
        .arg("s6-instance")
        .arg("--instance-service")
        .arg(&service);
    let sockets = d.tree().join("sockets");
    std::fs::create_dir_all(&sockets).unwrap();
    d.without_user_source();
    for label in ["a", "b"] {
        d.tree().vm(label, "x");
        let spec = format!("{label}={}", d.tree().join(label).display());
        d.arg("--source").arg(spec);
    }
    d.arg("--no-watch")
        .arg("--ui-vm")
        .arg("x")
        .arg("--ui-vm-socket")
        .arg(format!("{}/{{id}}", sockets.display()));
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let first = c.get_vm(&"x".parse().unwrap()).await.unwrap().vm;
    assert_eq!((first.source.as_str(), first.state), ("a", VmState::Active));
    let listener_a = sockets.join(first.id.unwrap().as_str());
    eventually("a's listener", async || listener_a.exists()).await;

    // Source `a` becomes a regular file: it fails, its `x` is kept as
    // unavailable and `b`'s `x` becomes the VM.
    std::fs::remove_dir_all(d.tree().join("a")).unwrap();
    std::fs::write(d.tree().join("a"), "not a directory").unwrap();
    c.rescan(false).await.unwrap();
    let all = c.list_vms(true, None).await.unwrap();
    assert_eq!(names(&all), ["x@a:unavailable", "x@b:active"]);

    let got = c.get_vm(&"x".parse().unwrap()).await.unwrap();
    assert_eq!(
        (got.vm.source.as_str(), got.vm.state),
        ("b", VmState::Active)
    );
    assert_eq!(got.others.len(), 1);
    assert_eq!(got.others[0].state, VmState::Unavailable);

    let (code, out, err) = cli(&d, &["show", "x", "--json"]);
    assert_eq!(code, Some(0), "show x: {err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["vm"]["source"], "b", "{out}");
    assert_eq!(shown["vm"]["state"], "active", "{out}");
    let (code, out, err) = cli(&d, &["resolve", "x"]);
    assert_eq!(code, Some(0), "resolve x: {err}");
    assert_eq!(Some(out.trim()), got.vm.service.as_deref(), "{out}");

    // The listener follows `b`'s `x` (its id names the new socket).
    let listener_b = sockets.join(got.vm.id.unwrap().as_str());
    assert_ne!(listener_a, listener_b);
    eventually("b's listener", async || listener_b.exists()).await;
    eventually("a's listener to go", async || !listener_a.exists()).await;
    let vm = Client::connect_stream(&listener_b).await.unwrap();
    assert_eq!(vm.ping(vec![7]).await.unwrap(), [7]);
}
