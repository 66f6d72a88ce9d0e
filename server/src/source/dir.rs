//! Built-in and directory sources: their specs, and whether the file
//! system an untrusted one lives on lets a planted symlink redirect a VMM.

use std::os::fd::AsFd;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags, StatVfsMountFlags};
use vm_catalog_protocol::{DiagCode, Diagnostic, Severity, SourceKind, SourceLabel, Trust};

use crate::definition::display_path;

use super::{Presence, SourceSpec};

/// Where the image's built-in VM definitions are, by default.
pub const DEFAULT_BUILTIN_ROOT: &str = "/usr/img/builtin";

/// The built-in source's label.
pub const BUILTIN_LABEL: &str = "builtin";

impl SourceSpec {
    /// The built-in source at `root`: trusted, labelled `builtin`. A missing
    /// directory scans as an empty source with a `source-missing` warning.
    pub fn builtin(root: impl Into<PathBuf>) -> SourceSpec {
        SourceSpec::directory(
            SourceLabel::try_from(BUILTIN_LABEL).expect("the built-in label is valid"),
            root,
            Trust::Trusted,
        )
        .with_kind(SourceKind::Builtin)
    }

    /// A directory source (from the command line).
    pub fn directory(label: SourceLabel, root: impl Into<PathBuf>, trust: Trust) -> SourceSpec {
        SourceSpec {
            label,
            kind: SourceKind::Directory,
            trust,
            root: root.into(),
            device: None,
            partuuid: None,
            read_only: false,
            presence: Presence::Present,
            diagnostics: Vec::new(),
        }
    }

    /// The same source under another label.
    pub fn with_label(mut self, label: SourceLabel) -> SourceSpec {
        self.label = label;
        self
    }

    fn with_kind(mut self, kind: SourceKind) -> SourceSpec {
        self.kind = kind;
        self
    }
}

/// `ST_NOSYMFOLLOW` (Linux 5.10): symlinks are not followed on this mount.
const ST_NOSYMFOLLOW: u64 = 0x2000;

/// Whether the file system of the open directory `dir` follows symlinks
/// (it is not mounted `nosymfollow`); `None` if that cannot be told.
///
/// The scan of an untrusted source never follows a symlink, but the VMM
/// opens a view's final paths later, by path: on such a mount, a symlink
/// planted after the scan (a swap race) redirects it.
pub fn follows_symlinks(dir: impl AsFd) -> Option<bool> {
    let st = rustix::fs::fstatvfs(dir).ok()?;
    Some(
        !st.f_flag
            .contains(StatVfsMountFlags::from_bits_retain(ST_NOSYMFOLLOW)),
    )
}

impl SourceSpec {
    /// Whether this is a source whose mount must be `nosymfollow` for its
    /// symlink checks to hold until the VMM opens the files: an untrusted
    /// directory source. (Partitions are always mounted `nosymfollow`.)
    pub fn needs_nosymfollow(&self) -> bool {
        self.trust == Trust::Untrusted && self.kind != SourceKind::Partition
    }

    /// Whether this source needs `nosymfollow` and its root is on a file
    /// system that follows symlinks (a root that cannot be opened: no).
    pub fn follows_symlinks(&self) -> bool {
        if !self.needs_nosymfollow() {
            return false;
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::open(&self.root, flags, Mode::empty())
            .ok()
            .and_then(follows_symlinks)
            == Some(true)
    }

    /// The spec with a `symlinks-followed` warning when
    /// [`SourceSpec::follows_symlinks`]: checked at every rescan, so that a
    /// remount `nosymfollow` clears it.
    pub fn with_mount_check(mut self) -> SourceSpec {
        if self.follows_symlinks() {
            self.diagnostics.push(Diagnostic {
                code: DiagCode::SymlinksFollowed,
                severity: Severity::Warning,
                path: display_path(&self.root),
                message: "this untrusted source is on a file system not mounted nosymfollow: \
                          a symlink planted after a scan can redirect a VMM \
                          (mount it nosymfollow; see docs/catalog.md)"
                    .into(),
            });
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_spec_is_trusted_and_labelled() {
        let s = SourceSpec::builtin("/usr/img/builtin");
        assert_eq!(s.label.as_str(), "builtin");
        assert_eq!(s.kind, SourceKind::Builtin);
        assert_eq!(s.trust, Trust::Trusted);
        assert_eq!(s.presence, Presence::Present);
    }
}
