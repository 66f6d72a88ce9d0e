//! Hooks with `--apply s6-instance --instances-up` on a real `s6-svscan`:
//! `prepare` runs before the VM's instance exists (so before its VMM can
//! start), `release` after it is deleted; a VM whose prepare fails gets no
//! instance, the others do; `by-id/<id>/service` links to the instance.

use std::time::Duration;

use vm_catalog_tests::s6::{self, InstanceScan, wait_for};

use super::*;

/// A scan directory with the templated service `vmm`, supervised.
struct Host {
    scan: InstanceScan,
}

impl Host {
    fn new() -> Option<Host> {
        Some(Host {
            scan: InstanceScan::start(|_| {})?,
        })
    }

    fn daemon(&self) -> TestDaemon {
        let mut d = daemon();
        d.arg("--apply")
            .arg("s6-instance")
            .arg("--instance-service")
            .arg(&self.scan.service)
            .arg("--instances-up")
            .arg("--vm-layout")
            .arg("spectrum")
            .arg("--no-watch");
        d
    }
}

#[test]
fn with_instances_up_prepare_runs_before_the_instance_and_release_after_it_is_gone() {
    let Some(h) = Host::new() else { return };
    let hooks = tempfile::tempdir().unwrap();
    let fail = hooks.path().join("fail");
    std::fs::write(&fail, b"").unwrap();
    // The hook notes any instance of its VM that exists while it runs.
    let body = format!(
        "[ -e {service}/instance/$2 ] && echo \"$1 $3\" >> {seen}\n\
         [ \"$1 $3\" = 'prepare bad' ] && [ -e {fail} ] && exit 1",
        service = h.scan.service.display(),
        seen = hooks.path().join("seen").display(),
        fail = fail.display(),
    );
    let mut d = h.daemon();
    d.builtin_vm("netvm");
    d.user_vm("app");
    d.user_vm("bad");
    d.arg("--vm-hook").arg(hook(hooks.path(), &body));
    d.start().unwrap();
    let vms = list(&d);
    let id = |n: &str| vms[n].id.clone();
    assert_eq!(vms["bad"].codes, ["hook-failed"], "{vms:?}");
    assert_eq!(vms["bad"].service, None);
    let mut want = vec![id("app"), id("netvm")];
    want.sort();
    assert_eq!(s6::instances(&h.scan.service), want, "no instance for bad");
    for n in ["app", "netvm"] {
        assert_eq!(vms[n].service.as_deref(), Some(id(n).as_str()));
        assert!(wait_for(Duration::from_secs(30), || s6::instance_pid(
            &h.scan.service,
            &id(n)
        )
        .is_some()));
    }
    // by-id/<id>/service is the VM's instance, as vm-import links it:
    // Spectrum's tests drive VMs through it.
    for n in ["app", "netvm"] {
        let link = d.vm_dir().join("by-id").join(id(n)).join("service");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            h.scan.service.join("instance").join(id(n))
        );
    }
    let by_name = d.vm_dir().join("by-name/netvm/service");
    let out = Command::new("s6-svc")
        .arg("-r")
        .arg(&by_name)
        .output()
        .unwrap();
    assert!(out.status.success(), "s6-svc -r through the link: {out:?}");
    let out = Command::new("s6-svstat").arg(&by_name).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // app leaves: released once its instance is gone.
    std::fs::remove_dir_all(d.user().join("app")).unwrap();
    std::fs::remove_file(&fail).unwrap();
    rescan(&d, false);
    assert!(!s6::instances(&h.scan.service).contains(&id("app")));
    assert!(calls(hooks.path()).contains(&format!("release {} app", id("app"))));
    assert!(!d.vm_dir().join("by-id").join(id("app")).exists());
    let vms = list(&d);
    assert!(vms["bad"].codes.is_empty(), "{vms:?}");
    assert_eq!(vms["bad"].service.as_deref(), Some(id("bad").as_str()));
    assert_eq!(
        std::fs::read_to_string(hooks.path().join("seen")).unwrap_or_default(),
        "",
        "no hook ran while its VM's instance existed"
    );
}
