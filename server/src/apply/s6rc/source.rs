//! Writes a rendered [`Tree`] as an s6-rc source directory, incrementally.
//!
//! Each service directory — the template's files and
//! `dependencies.d/<provider>` (empty files) for each provider — is written
//! once, into the store's `svc/<content>/` (named by its content
//! fingerprint: first into `tmp-svc-<content>`, then renamed into place).
//! The source directory of a database is one symlink per service to its
//! entry there ([`write_linked`]): a VM whose service did not change costs
//! one symlink, a changed one its files. `s6-rc-compile` follows the
//! symlinks; what it compiles is fixed when the source is written, since an
//! entry of `svc/` never changes.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::Path;

use super::render::{Entry, Service, Tree};
use super::store::{Store, remove_any};

/// What [`write_linked`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Service directories written (new or changed services).
    pub written: usize,
    /// Service directories already in the store, linked as they were.
    pub reused: usize,
}

/// Writes `tree` into `dir`, which must not exist, as a source directory of
/// symlinks to the service directories in `store`; writes those that are
/// not there yet.
pub fn write_linked(tree: &Tree, store: &Store, dir: &Path) -> io::Result<Written> {
    fs::create_dir(dir)?;
    let mut done = Written::default();
    for (name, service) in &tree.services {
        let target = store.service_dir(&service.content);
        if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            done.reused += 1;
        } else {
            let tmp = store.tmp_service_dir(&service.content);
            remove_any(&tmp)?;
            write_service(service, &tmp)?;
            remove_any(&target)?;
            fs::rename(&tmp, &target)?;
            done.written += 1;
        }
        symlink(&target, dir.join(name.as_str()))?;
    }
    Ok(done)
}

/// Writes one service directory at `sdir`, which must not exist.
pub fn write_service(service: &Service, sdir: &Path) -> io::Result<()> {
    fs::create_dir(sdir)?;
    for (rel, entry) in &service.entries {
        let path = sdir.join(rel);
        match entry {
            Entry::Dir => fs::create_dir(&path)?,
            Entry::Symlink(target) => {
                symlink(std::ffi::OsStr::from_bytes(target), &path)?;
            }
            Entry::File {
                contents,
                executable,
            } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&path)?;
                io::Write::write_all(&mut f, contents)?;
            }
        }
    }
    if !service.dependencies.is_empty() {
        let deps = sdir.join("dependencies.d");
        fs::create_dir(&deps)?;
        for d in &service.dependencies {
            fs::File::create(deps.join(d.as_str()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::applier::ActiveVm;
    use crate::apply::s6rc::render::Renderer;
    use crate::apply::s6rc::template::Template;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_services_with_dependencies() {
        let vms = [
            ActiveVm {
                name: "app".parse().unwrap(),
                view: "/run/vm/app/config".into(),
                providers: vec!["net".parse().unwrap()],
                fingerprint: 0,
                id: "app".parse().unwrap(),
            },
            ActiveVm {
                name: "net".parse().unwrap(),
                view: "/run/vm/net/config".into(),
                providers: vec![],
                fingerprint: 0,
                id: "net".parse().unwrap(),
            },
        ];
        let r = Renderer::new(Template::builtin(), "vm-", "/bin/start-vmm", 10)
            .render(&vms, &mut |_| None)
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("state")).unwrap();
        let src = d.path().join("src");
        write_linked(&r.tree, &store, &src).unwrap();
        assert_eq!(
            fs::read_to_string(src.join("app/type")).unwrap(),
            "longrun\n"
        );
        assert_eq!(
            fs::read_to_string(src.join("app/run")).unwrap(),
            "#!/bin/execlineb -P\n/bin/start-vmm app\n"
        );
        let mode = fs::metadata(src.join("app/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(src.join("app/dependencies.d/net").is_file());
        assert!(!src.join("net/dependencies.d").exists());
        assert!(
            write_linked(&r.tree, &store, &src).is_err(),
            "the directory must be new"
        );
    }

    #[test]
    fn linked_sources_write_each_service_once() {
        let vms = |app_deps: Vec<vm_catalog_protocol::VmName>| {
            [
                ActiveVm {
                    name: "app".parse().unwrap(),
                    view: "/run/vm/app/config".into(),
                    providers: app_deps,
                    fingerprint: 0,
                    id: "app".parse().unwrap(),
                },
                ActiveVm {
                    name: "net".parse().unwrap(),
                    view: "/run/vm/net/config".into(),
                    providers: vec![],
                    fingerprint: 0,
                    id: "net".parse().unwrap(),
                },
            ]
        };
        let renderer = Renderer::new(Template::builtin(), "vm-", "/bin/start-vmm", 10);
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("state")).unwrap();
        let one = renderer.render(&vms(vec![]), &mut |_| None).unwrap().tree;
        let src1 = store.root().join("src-1");
        assert_eq!(
            write_linked(&one, &store, &src1).unwrap(),
            Written {
                written: 2,
                reused: 0
            }
        );
        let net = fs::read_link(src1.join("net")).unwrap();
        assert_eq!(net, store.service_dir(&one.services["net"].content));
        assert_eq!(
            fs::read_to_string(src1.join("net/run")).unwrap(),
            "#!/bin/execlineb -P\n/bin/start-vmm net\n"
        );
        // A stale half-written entry (a crash mid-write) is written again.
        let two = renderer
            .render(&vms(vec!["net".parse().unwrap()]), &mut |_| None)
            .unwrap()
            .tree;
        let app2 = &two.services["app"].content;
        fs::create_dir(store.tmp_service_dir(app2)).unwrap();
        fs::write(
            store.tmp_service_dir(app2).join("run"),
            "#!/bin/execlineb -P\n",
        )
        .unwrap();
        let src2 = store.root().join("src-2");
        assert_eq!(
            write_linked(&two, &store, &src2).unwrap(),
            Written {
                written: 1,
                reused: 1
            },
            "only the changed service is written"
        );
        assert_eq!(fs::read_link(src2.join("net")).unwrap(), net);
        assert!(src2.join("app/dependencies.d/net").is_file());
        assert!(!store.tmp_service_dir(app2).exists());
        assert_eq!(
            fs::read_to_string(src2.join("app/run")).unwrap(),
            "#!/bin/execlineb -P\n/bin/start-vmm app\n"
        );
        assert!(
            !src1.join("app/dependencies.d").exists(),
            "src-1 is as it was"
        );
    }
}
