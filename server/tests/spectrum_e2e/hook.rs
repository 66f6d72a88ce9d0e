//! `contrib/spectrum/vm-hook` under Spectrum's own scripts, with the test in
//! the daemon's place around it (the daemon makes the views with `--apply
//! none`; the test runs `prepare`, links `service`, creates the vmm
//! instance, and deletes it before `release`), as `vm-import` would have
//! done. The hook runs under busybox's sh, as on Spectrum's host.

use std::fs;
use std::path::Path;

use super::host::{self, Host, ok};
use super::*;

fn hook(op: &str, id: &str, name: &str) {
    ok("busybox", ["sh", host::VM_HOOK, op, id, name]);
}

/// What the daemon does around `prepare`: the hook, the `service` link, the
/// vmm instance (started).
fn import(id: &str, name: &str) {
    hook("prepare", id, name);
    std::os::unix::fs::symlink(
        format!("/run/service/vmm/instance/{id}"),
        format!("/run/vm/by-id/{id}/service"),
    )
    .expect("service link");
    ok("s6-instance-create", ["--", "/run/service/vmm", id]);
}

/// What the daemon does around `release`: the vmm instance deleted first.
fn remove(id: &str, name: &str) {
    ok("s6-instance-delete", ["--", "/run/service/vmm", id]);
    hook("release", id, name);
}

fn started(host: &Host) -> TestDaemon {
    let mut d = spectrum_daemon(host);
    d.start().expect("daemon");
    d
}

#[test]
fn spectrums_scripts_run_every_vm_the_hook_prepared() {
    let Some(host) = host::enter() else { return };
    let _d = started(&host);
    let vms = host::by_name();
    assert_eq!(vms.iter().map(|v| v.0.as_str()).collect::<Vec<_>>(), NAMES);
    for (name, id) in &vms {
        import(id, name);
    }
    for (_, id) in &vms {
        host::wait_ready(id);
    }
    // Spectrum's lsvm: every VM, created (STOPPED), under its one name.
    let listed = host::lsvm();
    let mut want: Vec<_> = vms
        .iter()
        .map(|(n, id)| host::LsvmLine {
            id: id.clone(),
            status: "STOPPED".into(),
            names: vec![n.clone()],
        })
        .collect();
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, want);

    // Spectrum's vm-start, by id: user.nc and its provider sys.netvm run.
    let nc = host::id_of("user.nc");
    let netvm = host::id_of("sys.netvm");
    ok("vm-start", [&nc]);
    for l in host::lsvm() {
        let running = l.id == nc || l.id == netvm;
        assert_eq!(l.status == "RUNNING", running, "{l:?}");
    }
    // The VMM ran as vmm-<id> and reached its kernel, disks, serial file and
    // vsock directory; vm-start gave the vsock socket to xdp-spectrum-<id>.
    let serial = fs::read_to_string(format!("/run/vm/by-id/{nc}/serial")).unwrap();
    assert_eq!(serial, format!("booted as vmm-{nc}\n"));
    let vsock = Path::new("/run/vsock").join(&nc);
    assert_eq!(
        host::owner_and_mode(&vsock.join("vsock")).0,
        host::uid_of(&format!("xdp-spectrum-{nc}"))
    );
    for (_, id) in &vms {
        let dir = Path::new("/run/vm/by-id").join(id);
        let vmm = host::uid_of(&format!("vmm-{id}"));
        assert_eq!(host::owner_and_mode(&dir), (vmm, 0o700), "{id}");
        assert_eq!(
            host::owner_and_mode(&Path::new("/run/vsock").join(id)).0,
            vmm
        );
        assert_eq!(
            host::connect_as_nobody(&dir.join("vmm")),
            libc::EACCES,
            "nobody reaches the VMM's API socket of {id}"
        );
        for role in ["gpu", "vmm", "xdp-spectrum"] {
            host::uid_of(&format!("{role}-{id}"));
        }
    }
    ok("vm-stop", [&nc]);
}

#[test]
fn release_leaves_nothing_of_a_vm_but_the_daemons_files() {
    let Some(host) = host::enter() else { return };
    let _d = started(&host);
    let netvm = host::id_of("sys.netvm");
    let nc = host::id_of("user.nc");
    import(&netvm, "sys.netvm");
    import(&nc, "user.nc");
    ok("vm-start", [&nc]);
    remove(&nc, "user.nc");

    assert_eq!(host::users_of(&nc), Vec::<String>::new());
    assert_eq!(host::groups_of(&nc), Vec::<String>::new());
    assert_eq!(host::mounts_of(&nc), Vec::<String>::new());
    for gone in [
        format!("/run/vsock/{nc}"),
        format!("/run/fs/{nc}"),
        format!("/run/doc/{nc}"),
        format!("/run/service/vm-services/instance/{nc}"),
        format!("/run/service/vm-services/instances/{nc}"),
    ] {
        assert!(!Path::new(&gone).exists(), "{gone} is left");
    }
    let mut left: Vec<_> = fs::read_dir(format!("/run/vm/by-id/{nc}"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["config", "service"],
        "only the daemon's files are left"
    );
    // Again: nothing to do, no error.
    hook("release", &nc, "user.nc");
    // The other VM runs on.
    assert!(
        host::lsvm()
            .iter()
            .any(|l| l.id == netvm && l.status == "RUNNING")
    );
}

#[test]
fn prepare_finishes_what_a_prepare_cut_short_left() {
    let Some(host) = host::enter() else { return };
    let _d = started(&host);
    let id = host::id_of("user.portal");
    // Cut short in useradd: the group is there, not the user.
    ok("groupadd", ["-P", "/run", "-r", &format!("vmm-{id}")]);
    hook("prepare", &id, "user.portal");
    let uid = host::uid_of(&format!("vmm-{id}"));
    // Cut short in create-vm-dependencies: the namespace is made, the
    // vm-services instance is not.
    ok(
        "s6-instance-delete",
        ["--", "/run/service/vm-services", &id],
    );
    hook("prepare", &id, "user.portal");
    let mounts = host::mounts_of(&id);
    // Done already: nothing more (no second namespace, same users).
    hook("prepare", &id, "user.portal");
    assert_eq!(host::mounts_of(&id), mounts);
    assert_eq!(host::uid_of(&format!("vmm-{id}")), uid);
    assert_eq!(host::users_of(&id).len(), 3);

    std::os::unix::fs::symlink(
        format!("/run/service/vmm/instance/{id}"),
        format!("/run/vm/by-id/{id}/service"),
    )
    .unwrap();
    ok("s6-instance-create", ["--", "/run/service/vmm", &id]);
    ok("vm-start", [&id]);
    assert!(
        host::lsvm()
            .iter()
            .any(|l| l.id == id && l.status == "RUNNING")
    );
}

#[test]
fn storage_of_a_source_is_bind_mounted_in_the_vms_namespace() {
    let Some(host) = host::enter() else { return };
    let d = started(&host);
    // Spectrum's storage belongs to its fs user (uid 1000).
    let storage = d.tree().dir("storage");
    fs::create_dir(storage.join("nc")).unwrap();
    fs::write(storage.join("nc/kept"), b"data\n").unwrap();
    ok("chown", ["-R", "1000:1000", storage.to_str().unwrap()]);
    fs::create_dir_all("/etc/vm-hook/storage").unwrap();
    std::os::unix::fs::symlink(&storage, "/etc/vm-hook/storage/user").unwrap();

    let nc = host::id_of("user.nc");
    let portal = host::id_of("user.portal");
    let netvm = host::id_of("sys.netvm");
    for (id, name) in [
        (&netvm, "sys.netvm"),
        (&nc, "user.nc"),
        (&portal, "user.portal"),
    ] {
        import(id, name);
    }
    for id in [&netvm, &nc, &portal] {
        host::wait_ready(id);
    }
    let in_vm = |id: &str, args: &[&str]| {
        let mnt = format!("--mount=/run/vm/by-id/{id}/ns/mnt");
        ok("nsenter", [&[mnt.as_str()][..], args].concat())
    };
    // user.nc sees its storage (run-vmm kept it); user.portal got its own,
    // made by the hook; sys.netvm, of a source without storage, has
    // run-vmm's tmpfs fallback.
    assert_eq!(
        in_vm(&nc, &["cat", &format!("/run/fs/{nc}/disk/kept")]),
        "data\n"
    );
    let fstype = |id: &str| {
        in_vm(
            id,
            &["findmnt", "-no", "FSTYPE", &format!("/run/fs/{id}/disk")],
        )
        .trim()
        .to_owned()
    };
    assert_ne!(fstype(&nc), "tmpfs");
    assert_ne!(fstype(&portal), "tmpfs");
    assert!(
        storage.join("portal").is_dir(),
        "storage/portal made for user.portal"
    );
    assert_eq!(fstype(&netvm), "tmpfs");
    // The host's view of /run/fs/<id> has no mount: storage lives only in
    // the VM's namespace, and release removes nothing of it.
    assert!(
        !host::mounts_of(&nc)
            .iter()
            .any(|m| m.starts_with("/run/fs/"))
    );
    remove(&nc, "user.nc");
    assert_eq!(fs::read(storage.join("nc/kept")).unwrap(), b"data\n");
}
