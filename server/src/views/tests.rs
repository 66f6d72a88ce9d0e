//! The VM directory's mode and its removal.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::sync::{make_vm_dir, remove_tree};

fn open(p: &Path) -> std::os::fd::OwnedFd {
    rustix::fs::open(
        p,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap()
}

#[test]
fn a_by_id_directory_is_made_private_and_an_existing_one_keeps_its_mode() {
    let t = tempfile::tempdir().unwrap();
    let root = open(t.path());
    make_vm_dir(&root, Path::new("by-id/abcdef")).unwrap();
    let mode = |p: &str| std::fs::metadata(t.path().join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("by-id/abcdef"), 0o700);
    assert_eq!(mode("by-id"), 0o755 & !umask());
    make_vm_dir(&root, Path::new("plain")).unwrap();
    assert_eq!(mode("plain"), 0o755 & !umask(), "the plain layout's is not");
    std::fs::set_permissions(
        t.path().join("by-id/abcdef"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    make_vm_dir(&root, Path::new("by-id/abcdef")).unwrap();
    assert_eq!(mode("by-id/abcdef"), 0o750, "what a hook set is kept");
}

/// The process's umask, read without changing it.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

#[test]
fn remove_tree_removes_sockets_and_links_but_nothing_they_point_at() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("file"), b"keep").unwrap();
    let vm = t.path().join("vm");
    std::fs::create_dir_all(vm.join("ns/a/b")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(vm.join("vmm")).unwrap();
    std::fs::write(vm.join("vmm.lock"), b"").unwrap();
    std::os::unix::fs::symlink(&outside, vm.join("ns/escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("file"), vm.join("ns/a/b/f")).unwrap();
    std::fs::set_permissions(vm.join("ns/a"), std::fs::Permissions::from_mode(0o500)).unwrap();
    remove_tree(&open(t.path()), "vm".as_ref()).unwrap();
    assert!(!vm.exists());
    assert_eq!(std::fs::read(outside.join("file")).unwrap(), b"keep");
}
