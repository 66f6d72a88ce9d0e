//! Helpers shared by the `catalog_*` integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use vm_catalog_protocol::{Diagnostic, SourceLabel, Trust};
use vm_catalog_tests::Tree;
use vm_catalogd::definition::{Definition, ScanOptions, SourceScan, scan_source};
use vm_catalogd::source::SourceSpec;

/// Scan options whose only trusted prefix is `<tree>/img/`.
pub(crate) fn opts(tree: &Tree) -> ScanOptions {
    ScanOptions {
        trusted_prefixes: vec![tree.join("img/")],
        ..ScanOptions::default()
    }
}

pub(crate) fn label(s: &str) -> SourceLabel {
    SourceLabel::try_from(s).unwrap()
}

/// An untrusted directory source at `<tree>/<rel>`, labelled `rel`.
pub(crate) fn untrusted(tree: &Tree, rel: &str) -> SourceSpec {
    SourceSpec::directory(label(rel), tree.join(rel), Trust::Untrusted)
}

/// A trusted directory source at `<tree>/<rel>`, labelled `rel`.
pub(crate) fn trusted(tree: &Tree, rel: &str) -> SourceSpec {
    SourceSpec::directory(label(rel), tree.join(rel), Trust::Trusted)
}

/// Runs `f` on another thread and fails the test if it does not finish
/// within a minute: a hang detector, not a timing assertion.
pub(crate) fn no_hang<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the scan hung")
}

/// Scans `spec` (on a watchdog thread).
pub(crate) fn scan(spec: SourceSpec, opts: ScanOptions) -> SourceScan {
    no_hang(move || scan_source(&spec, &opts))
}

/// `(code, path relative to the tree, severity)` of each diagnostic.
pub(crate) fn codes(tree: &Tree, diags: &[Diagnostic]) -> Vec<(String, String)> {
    let root = format!("{}/", tree.path().display());
    diags
        .iter()
        .map(|d| {
            let sev = match d.severity {
                vm_catalog_protocol::Severity::Error => "",
                vm_catalog_protocol::Severity::Warning => " (warning)",
            };
            (
                format!("{}{sev}", d.code),
                d.path.strip_prefix(&root).unwrap_or(&d.path).to_owned(),
            )
        })
        .collect()
}

/// Shorthand for building expected [`codes`].
pub(crate) fn want(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(c, p)| (c.to_string(), p.to_string()))
        .collect()
}

/// The definition called `name` in `scan`.
pub(crate) fn def<'a>(scan: &'a SourceScan, name: &str) -> &'a Definition {
    scan.definitions
        .iter()
        .find(|d| d.name.as_str() == name)
        .unwrap_or_else(|| panic!("no definition {name} in {:?}", scan.definitions))
}

/// The names of the definitions in `scan`.
pub(crate) fn names(scan: &SourceScan) -> Vec<&str> {
    scan.definitions.iter().map(|d| d.name.as_str()).collect()
}

/// Whether `p` is inside `dir` (lexically).
pub(crate) fn is_under(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}
