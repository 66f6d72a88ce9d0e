//! The guest kernel that `contrib/guest/fetch-kernel` unpacks (Debian's,
//! never installed on the host), as the real-guest test and the bench's
//! `guest` suite find it.

use std::fs;
use std::path::{Path, PathBuf};

/// The newest kernel unpacked under `kernels`: (its `vmlinuz`, its module
/// tree), or `None` when there is none.
pub fn unpacked(kernels: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut trees: Vec<PathBuf> = fs::read_dir(kernels)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("lib/modules").is_dir())
        .collect();
    trees.sort();
    let tree = trees.pop()?;
    let version = fs::read_dir(tree.join("lib/modules"))
        .ok()?
        .flatten()
        .next()?
        .file_name();
    let vmlinuz = tree
        .join("boot")
        .join(format!("vmlinuz-{}", version.to_string_lossy()));
    vmlinuz
        .exists()
        .then(|| (vmlinuz, tree.join("lib/modules").join(version)))
}
