//! Built-in and directory sources: their specs, and `LABEL=DIR` arguments.

use std::path::PathBuf;
use std::str::FromStr;

use vm_catalog_protocol::{NameError, SourceKind, SourceLabel, Trust};

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

    fn with_kind(mut self, kind: SourceKind) -> SourceSpec {
        self.kind = kind;
        self
    }
}

/// Why a `LABEL=DIR` argument is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirArgError {
    /// No `=`.
    #[error("expected LABEL=DIR")]
    NoEquals,
    /// The label is not a valid source label.
    #[error("invalid source label")]
    Label(#[source] NameError),
    /// `builtin` is the built-in source's label.
    #[error("the label {BUILTIN_LABEL:?} is reserved for the built-in source")]
    Reserved,
    /// The directory is empty or relative.
    #[error("the directory must be an absolute path")]
    RelativeDir,
}

/// A directory source as given on the command line: `LABEL=DIR`.
///
/// ```
/// use vm_catalogd::source::dir::DirArg;
/// let a: DirArg = "usb=/media/usb/vms".parse().unwrap();
/// assert_eq!(a.label.as_str(), "usb");
/// assert!("usb".parse::<DirArg>().is_err());
/// assert!("builtin=/x".parse::<DirArg>().is_err());
/// assert!("a b=/x".parse::<DirArg>().is_err());
/// assert!("usb=relative".parse::<DirArg>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirArg {
    /// The source's label.
    pub label: SourceLabel,
    /// Its directory.
    pub root: PathBuf,
}

impl FromStr for DirArg {
    type Err = DirArgError;
    fn from_str(s: &str) -> Result<Self, DirArgError> {
        let (label, dir) = s.split_once('=').ok_or(DirArgError::NoEquals)?;
        let label = SourceLabel::try_from(label).map_err(DirArgError::Label)?;
        if label.as_str() == BUILTIN_LABEL {
            return Err(DirArgError::Reserved);
        }
        let root = PathBuf::from(dir);
        if !root.is_absolute() {
            return Err(DirArgError::RelativeDir);
        }
        Ok(DirArg { label, root })
    }
}

impl DirArg {
    /// The source spec, untrusted unless `trust` says otherwise.
    pub fn into_spec(self, trust: Trust) -> SourceSpec {
        SourceSpec::directory(self.label, self.root, trust)
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

    #[test]
    fn dir_arg_errors_say_why() {
        assert_eq!("x".parse::<DirArg>().unwrap_err(), DirArgError::NoEquals);
        assert_eq!(
            "builtin=/a".parse::<DirArg>().unwrap_err(),
            DirArgError::Reserved
        );
        assert_eq!(
            "a=".parse::<DirArg>().unwrap_err(),
            DirArgError::RelativeDir
        );
        let a: DirArg = "t=/a=b".parse().unwrap();
        assert_eq!(a.root, PathBuf::from("/a=b"));
        assert_eq!(a.into_spec(Trust::Untrusted).kind, SourceKind::Directory);
    }
}
