//! Hooks with `--apply s6-rc` (the plain layout) on real s6-rc and a real
//! `s6-svscan`: `prepare` runs before the VM's service is in the live
//! database (its scan directory entry), `release` after it has left it; a
//! VM whose prepare fails has no service, the others do.

use vm_catalog_tests::s6::{Svscan, write_vm_command};

use super::*;

#[test]
fn with_s6rc_prepare_runs_before_the_service_and_release_after_it_is_gone() {
    let Some(bin) = vm_catalog_tests::require_s6rc() else {
        return;
    };
    if vm_catalog_tests::require_tool("s6-svscan").is_none() {
        return;
    }
    let hooks = tempfile::tempdir().unwrap();
    let mut d = daemon();
    let root = d.tree().path().to_owned();
    let scan = root.join("scan");
    let _svscan = Svscan::start(&scan, 200).unwrap();
    let vmm = write_vm_command(&root.join("vmm")).unwrap();
    let fail = hooks.path().join("fail");
    std::fs::write(&fail, b"").unwrap();
    let body = format!(
        "[ -e {scan}/vm-$3 ] && echo \"$1 $3\" >> {seen}\n\
         [ \"$1 $3\" = 'prepare bad' ] && [ -e {fail} ] && exit 1",
        scan = scan.display(),
        seen = hooks.path().join("seen").display(),
        fail = fail.display(),
    );
    d.arg("--apply")
        .arg("s6-rc")
        .arg("--s6rc-bindir")
        .arg(&bin)
        .arg("--live")
        .arg(root.join("live"))
        .arg("--scandir")
        .arg(&scan)
        .arg("--prefix")
        .arg("vm-")
        .arg("--start-command")
        .arg(&vmm)
        .arg("--no-watch")
        .arg("--vm-hook")
        .arg(hook(hooks.path(), &body));
    d.builtin_vm("netvm");
    d.user_vm("app");
    d.user_vm("bad");
    d.start().unwrap();
    let vms = list(&d);
    assert_eq!(vms["bad"].codes, ["hook-failed"], "{vms:?}");
    assert_eq!(vms["bad"].service, None);
    for n in ["app", "netvm"] {
        assert!(vms[n].service.is_some(), "{vms:?}");
        assert!(scan.join(format!("vm-{n}")).exists());
    }
    assert!(!scan.join("vm-bad").exists());
    // app leaves: released once its service has left the database.
    std::fs::remove_dir_all(d.user().join("app")).unwrap();
    std::fs::remove_file(&fail).unwrap();
    rescan(&d, false);
    assert!(calls(hooks.path()).contains(&format!("release {} app", vms["app"].id)));
    assert!(!d.vm_dir().join("app").exists());
    let vms = list(&d);
    assert!(
        vms["bad"].service.is_some(),
        "prepared and applied: {vms:?}"
    );
    assert_eq!(
        std::fs::read_to_string(hooks.path().join("seen")).unwrap_or_default(),
        "",
        "no hook ran while its VM's service was live"
    );
}
