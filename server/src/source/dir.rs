//! Built-in and directory sources: their specs.

use std::path::PathBuf;

use vm_catalog_protocol::{SourceKind, SourceLabel, Trust};

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
