//! Rescans: on request (real and dry), coalesced, on SIGHUP, and who may ask.

use super::*;

#[tokio::test]
async fn rescan_and_dry_run_see_a_vm_added_on_disk() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.user_vm("one");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let g0 = c.info().await.unwrap().cursor.generation;
    d.user_vm("two");
    // A dry run shows the change but publishes nothing.
    let dry = c.rescan(true).await.unwrap();
    assert!(dry.outcome.dry_run);
    assert_eq!(dry.outcome.generation, g0);
    assert_eq!(dry.outcome.apply.status, ApplyStatus::Disabled);
    assert!(dry.changes.iter().any(
        |ch| matches!(&ch.item, ChangeItem::Vm(e) if e.name.as_str() == "two")
            && ch.kind == ChangeKind::Added
    ));
    assert_eq!(c.list_vms(false, None).await.unwrap().vms.len(), 1);
    // The real one publishes a new generation.
    let real = c.rescan(false).await.unwrap();
    assert_eq!(real.outcome.generation, g0 + 1);
    assert_eq!(c.list_vms(false, None).await.unwrap().vms.len(), 2);
    // Nothing changed: same generation, no changes.
    let again = c.rescan(false).await.unwrap();
    assert!(again.changes.is_empty());
    assert_eq!(again.outcome.generation, g0 + 1);
    let info = c.info().await.unwrap();
    assert_eq!(info.cursor.generation, g0 + 1);
    assert_eq!(info.last_rescan.unwrap().trigger, RescanTrigger::Request);
}

#[tokio::test]
async fn concurrent_rescans_coalesce_and_each_sees_its_change() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.start().unwrap();
    let c = Arc::new(Client::connect(d.socket()).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..20 {
        // Each caller writes its VM, then asks: the reply must show it.
        d.user_vm(&format!("vm-{i:02}"));
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.rescan(false).await.unwrap();
            let list = c.list_vms(false, None).await.unwrap();
            assert!(
                list.cursor.generation >= r.outcome.generation
                    && list
                        .vms
                        .iter()
                        .any(|e| e.name.as_str() == format!("vm-{i:02}")),
                "the reply of caller {i} reflects its change"
            );
            r.outcome.generation
        }));
    }
    let mut generations = Vec::new();
    for t in tasks {
        generations.push(t.await.unwrap());
    }
    let rescans = d.log().matches("rescan done").count();
    // 20 requests, one start-up rescan: coalescing means fewer rescans.
    assert!(
        rescans < 21,
        "{rescans} rescans for 20 requests\n{}",
        d.log()
    );
    assert_eq!(c.list_vms(false, None).await.unwrap().vms.len(), 20);
    generations.dedup();
    assert!(generations.len() < 20, "{generations:?}");
}

#[tokio::test]
async fn only_root_and_the_admin_group_may_rescan() {
    let Some(()) = vm_catalog_tests::require_root("running clients as other users") else {
        return;
    };
    let Some(setpriv) = vm_catalog_tests::require_tool("setpriv") else {
        return;
    };
    let mut d = daemon();
    d.arg("--admin-group").arg("4242");
    d.start().unwrap();
    let cli = workspace_bin("vm-catalog");
    let run_as = |groups: &str, args: &[&str]| {
        Command::new(&setpriv)
            .args(["--reuid", "65534", "--regid", "65534", groups])
            .arg(&cli)
            .arg("--socket")
            .arg(d.socket())
            .args(args)
            .output()
            .unwrap()
    };
    // Anyone may read.
    let list = run_as("--clear-groups", &["list"]);
    assert!(list.status.success(), "{list:?}");
    // Not root, not in the admin group: refused (exit 4).
    let denied = run_as("--clear-groups", &["rescan"]);
    assert_eq!(denied.status.code(), Some(4), "{denied:?}");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("permission-denied"),
        "{denied:?}"
    );
    // In the admin group: allowed.
    let admin = run_as("--groups=4242", &["rescan"]);
    assert!(admin.status.success(), "{admin:?}");
}

#[tokio::test]
async fn sighup_rescans() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    d.user_vm("late");
    d.signal(libc::SIGHUP);
    eventually("the VM after SIGHUP", async || {
        c.list_vms(false, None).await.unwrap().vms.len() == 1
    })
    .await;
    assert_eq!(
        c.info().await.unwrap().last_rescan.unwrap().trigger,
        RescanTrigger::Signal
    );
}
