//! Writes a rendered [`Tree`] as an s6-rc source directory: one
//! subdirectory per service, the template's files, and
//! `dependencies.d/<provider>` (empty files) for each provider.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::Path;

use super::render::{Entry, Tree};

/// Writes `tree` into `dir`, which must not exist.
pub fn write(tree: &Tree, dir: &Path) -> io::Result<()> {
    fs::create_dir(dir)?;
    for (name, service) in &tree.services {
        let sdir = dir.join(name.as_str());
        fs::create_dir(&sdir)?;
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::ActiveVm;
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
        let src = d.path().join("src");
        write(&r.tree, &src).unwrap();
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
        assert!(write(&r.tree, &src).is_err(), "the directory must be new");
    }
}
