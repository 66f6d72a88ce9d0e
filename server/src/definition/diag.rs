//! Building diagnostics, and showing untrusted paths safely.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use vm_catalog_protocol::{DiagCode, Diagnostic, Severity};

/// A path as text that cannot break a log line or a terminal: `\` is
/// doubled, control characters and bytes that are not UTF-8 are written as
/// `\n`, `\t` or `\xNN` (`\u{NNNN}` for non-ASCII control characters).
///
/// ```
/// use std::ffi::OsStr;
/// use std::os::unix::ffi::OsStrExt;
/// use vm_catalogd::definition::display_path;
/// let p = std::path::Path::new(OsStr::from_bytes(b"/src/bad\nname\xff"));
/// assert_eq!(display_path(p), "/src/bad\\nname\\xff");
/// ```
pub fn display_path(path: &Path) -> String {
    display_bytes(path.as_os_str().as_bytes())
}

/// [`display_path`] for raw bytes.
pub fn display_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_ascii_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:04x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// An error-level diagnostic about `path`.
pub(super) fn error(code: DiagCode, path: &Path, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        code,
        severity: Severity::Error,
        path: display_path(path),
        message: message.into(),
    }
}

/// A warning-level diagnostic about `path`.
pub(super) fn warning(code: DiagCode, path: &Path, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        code,
        severity: Severity::Warning,
        path: display_path(path),
        message: message.into(),
    }
}

/// Whether any diagnostic is an error.
pub fn has_error(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(|d| d.severity == Severity::Error)
}

/// Sorts diagnostics into a stable order (readdir order is not stable
/// across file systems): by path, then code, then message.
pub(super) fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (&a.path, a.code, &a.message, a.severity).cmp(&(&b.path, b.code, &b.message, b.severity))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_escapes_controls_backslashes_and_bad_bytes() {
        assert_eq!(display_bytes(b"a\\b"), "a\\\\b");
        assert_eq!(display_bytes(b"a\x1bb\r"), "a\\x1bb\\r");
        assert_eq!(display_bytes("a\u{85}b".as_bytes()), "a\\u{0085}b");
        assert_eq!(display_bytes(b"\xc3\xa9\xc3"), "\u{e9}\\xc3");
        assert_eq!(display_bytes(b"plain/path:1,2"), "plain/path:1,2");
    }
}
