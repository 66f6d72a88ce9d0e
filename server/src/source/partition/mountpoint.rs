//! Mount points: `<mount-base>/<key>`, where the key is a PARTUUID we
//! formatted ourselves (never a label). The base is created mode 0700.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Creates the mount base (mode 0700) if needed, and checks that it is a
/// real directory owned by us, closing it to others if needed.
pub fn prepare_base(base: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(base)?;
    let m = std::fs::symlink_metadata(base)?;
    if !m.file_type().is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            base.display()
        )));
    }
    if m.uid() != rustix::process::geteuid().as_raw() {
        return Err(io::Error::other(format!(
            "{} is not owned by us",
            base.display()
        )));
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates the empty mount point `target`, or accepts an existing empty
/// directory (left by an earlier run). Anything else there is refused:
/// we never mount over a populated directory or through a symlink.
pub fn prepare_target(target: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let m = std::fs::symlink_metadata(target)?;
            if !m.file_type().is_dir() {
                return Err(io::Error::other(format!(
                    "{} exists and is not a directory",
                    target.display()
                )));
            }
            if std::fs::read_dir(target)?.next().is_some() {
                return Err(io::Error::other(format!(
                    "{} is not empty",
                    target.display()
                )));
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Removes a mount point after unmounting; a missing one is fine.
pub fn remove_target(target: &Path) -> io::Result<()> {
    match std::fs::remove_dir(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_created_private_and_tightened() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("state/mnt");
        prepare_base(&base).unwrap();
        assert_eq!(std::fs::metadata(&base).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_base(&base).unwrap();
        assert_eq!(std::fs::metadata(&base).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn base_that_is_a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("mnt")).unwrap();
        assert!(prepare_base(&d.path().join("mnt")).is_err());
    }

    #[test]
    fn target_must_be_new_or_an_empty_directory() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("aaaa");
        prepare_target(&t).unwrap();
        prepare_target(&t).unwrap(); // empty: accepted again
        std::fs::write(t.join("x"), "").unwrap();
        assert!(prepare_target(&t).is_err());
        std::os::unix::fs::symlink("/", d.path().join("link")).unwrap();
        assert!(prepare_target(&d.path().join("link")).is_err());
        remove_target(&d.path().join("nope")).unwrap();
    }
}
