//! Queries: listing, getting, sources, info, through both clients.

use super::*;

#[tokio::test]
async fn list_get_not_found_and_sources() {
    let mut d = daemon();
    d.builtin_vm("netvm");
    d.user_vm("netvm");
    d.user_vm("appvm");
    d.tree().provider("user", "appvm", "netvm");
    std::fs::create_dir_all(d.user().join("broken/blk")).unwrap();
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    // Readiness came after the first scan: everything is there already.
    let all = c.list_vms(true, None).await.unwrap();
    assert_eq!(
        names(&all),
        [
            "appvm@user:active",
            "broken@user:rejected",
            "netvm@builtin:active",
            "netvm@user:shadowed"
        ]
    );
    assert_eq!(all.cursor.epoch, c.welcome().epoch);
    let active = c.list_vms(false, None).await.unwrap();
    assert_eq!(
        names(&active),
        ["appvm@user:active", "netvm@builtin:active"]
    );
    let d1 = c.get_vm(&"netvm".parse().unwrap()).await.unwrap();
    assert_eq!(d1.vm.source.as_str(), "builtin");
    assert_eq!(d1.others.len(), 1);
    assert_eq!(
        d1.others[0].shadowed_by.as_ref().map(|l| l.as_str()),
        Some("builtin")
    );
    let broken = c.get_vm(&"broken".parse().unwrap()).await.unwrap();
    assert!(
        broken
            .vm
            .diagnostics
            .iter()
            .any(|x| x.code == DiagCode::MissingKernel)
    );
    let e = c.get_vm(&"nosuch".parse().unwrap()).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let sources = c.sources().await.unwrap();
    let labels: Vec<_> = sources
        .sources
        .iter()
        .map(|s| (s.label.as_str(), s.kind, s.state))
        .collect();
    assert_eq!(
        labels,
        [
            ("builtin", SourceKind::Builtin, SourceState::Ready),
            ("user", SourceKind::Directory, SourceState::Ready)
        ]
    );
    let info = c.info().await.unwrap();
    assert_eq!(info.applier, "none");
    assert_eq!(info.active_vms, 2);
    assert_eq!(info.last_rescan.unwrap().trigger, RescanTrigger::Startup);
}

#[test]
fn the_blocking_client_makes_every_call() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.builtin_vm("netvm");
    d.user_vm("netvm");
    d.start().unwrap();
    let mut c = vm_catalog::BlockingClient::connect(d.socket()).unwrap();
    assert_eq!(c.ping(vec![1, 2]).unwrap(), [1, 2]);
    assert_eq!(c.info().unwrap().active_vms, 1);
    let all = c.list_vms(true, None).unwrap();
    assert_eq!(all.vms.len(), 2);
    let detail = c.get_vm(&"netvm".parse().unwrap()).unwrap();
    assert_eq!(detail.others.len(), 1);
    assert!(
        c.get_vm(&"nosuch".parse().unwrap())
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(c.sources().unwrap().sources.len(), 2);
    d.user_vm("app");
    let r = c.rescan(false).unwrap();
    assert!(
        r.changes
            .iter()
            .any(|ch| matches!(&ch.item, ChangeItem::Vm(e) if e.name.as_str() == "app"))
    );
    // Still usable after an error, and the daemon going away is reported.
    assert_eq!(c.ping(vec![]).unwrap(), Vec::<u8>::new());
    d.stop();
    let e = c.ping(vec![]).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    let e = vm_catalog::BlockingClient::connect(d.socket()).unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
}
