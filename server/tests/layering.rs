//! The layering of ARCHITECTURE.md, checked on the source: every "never"
//! between parts is a rule here, and every file's dependencies are read
//! from its parsed `use` trees and paths (`crate::…`, `super::…`, groups,
//! renames, globs, paths written inline in code), not from substrings, so
//! that `use crate::{x, apply::Y}` or `super::super::rpc::Z` count.
//!
//! The rules:
//! - the catalog never uses the appliers or the views (the rescan's commit
//!   is where they meet);
//! - the rescan never uses the triggers (triggers only send);
//! - nothing below the RPC layer uses it: only the RPC layer itself and the
//!   wiring above every stage — `config.rs` (which builds each part's
//!   configuration, the RPC layer's included), `daemon.rs` (which starts
//!   each part) and `main.rs` — may.

use std::fs;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The module path of the file `rel` (relative to `src/`):
/// `catalog/draft.rs` is `[catalog, draft]`, `catalog/mod.rs` `[catalog]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut m: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// Collects the crate-absolute paths a file names, as segment lists.
struct Deps<'a> {
    /// The module the code is in (inline `mod`s push onto it).
    module: Vec<String>,
    root: &'a [String],
    out: Vec<Vec<String>>,
}

impl Deps<'_> {
    /// `segments` as seen from the current module, made crate-absolute;
    /// `None` for paths that do not start at `crate`, `super` or `self`
    /// (another crate, a prelude or local name).
    fn absolute(&self, segments: &[String]) -> Option<Vec<String>> {
        let mut base = self.module.clone();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            _ => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// Every path of a `use` tree, each with its prefix.
    fn tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.record(prefix, Some(n.ident.to_string())),
            syn::UseTree::Rename(r) => self.record(prefix, Some(r.ident.to_string())),
            syn::UseTree::Glob(_) => self.record(prefix, None),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.tree(prefix, t);
                }
            }
        }
    }

    fn record(&mut self, prefix: &[String], last: Option<String>) {
        let mut segments = prefix.to_vec();
        segments.extend(last);
        if let Some(abs) = self.absolute(&segments) {
            self.out.push(abs);
        }
    }
}

impl<'ast> Visit<'ast> for Deps<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.tree(&mut Vec::new(), &u.tree);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segments, None);
        syn::visit::visit_path(self, p);
    }
}

/// The top-level modules that the code `source`, in the module `module`,
/// depends on (each once, sorted), other than its own.
fn dependencies(module: &[String], source: &str) -> Vec<String> {
    let file = syn::parse_file(source).unwrap_or_else(|e| panic!("{module:?}: {e}"));
    let mut deps = Deps {
        module: module.to_vec(),
        root: module,
        out: Vec::new(),
    };
    deps.visit_file(&file);
    let own = deps.root.first().cloned().unwrap_or_default();
    let mut tops: Vec<String> = deps
        .out
        .into_iter()
        .filter_map(|p| p.into_iter().next())
        .filter(|t| *t != own)
        .collect();
    tops.sort();
    tops.dedup();
    tops
}

/// Where a top-level module (`catalog`) or file (`daemon`) may not reach.
fn forbidden(from: &str) -> &'static [&'static str] {
    match from {
        "catalog" => &["apply", "views", "rpc"],
        "rescan" => &["triggers", "rpc"],
        "rpc" | "config" | "daemon" | "main" | "" => &[],
        _ => &["rpc"],
    }
}

/// Every (file, module it must not use) in `src`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    assert!(files.len() > 50, "found the sources: {}", files.len());
    let mut out = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(src).unwrap();
        let module = module_of(rel);
        let from = module.first().cloned().unwrap_or_default();
        let code = fs::read_to_string(f).unwrap();
        for dep in dependencies(&module, &code) {
            if forbidden(&from).contains(&dep.as_str()) {
                out.push(format!("{} uses {dep}", rel.display()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn no_part_uses_what_the_architecture_says_it_never_uses() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "layering broken: {found:#?}");
}

fn m(path: &str) -> Vec<String> {
    path.split("::").map(str::to_owned).collect()
}

fn broken(module: &str, code: &str) -> Vec<String> {
    let module = m(module);
    dependencies(&module, code)
        .into_iter()
        .filter(|d| forbidden(&module[0]).contains(&d.as_str()))
        .collect()
}

/// The checker itself: each way of naming a forbidden module is caught, and
/// allowed code passes.
#[test]
fn a_forbidden_use_is_found_however_it_is_written() {
    let planted = [
        ("catalog::draft", "use crate::apply::ApplyRequest;"),
        (
            "catalog::draft",
            "use crate::{definition::Definition, apply::ActiveVm};",
        ),
        ("catalog::draft", "use crate::{views as v};"),
        ("catalog::draft", "use super::super::views::Views;"),
        ("catalog", "use crate::apply::*;"),
        (
            "catalog::draft",
            "fn f() -> crate::apply::ApplyReport { todo!() }",
        ),
        ("catalog::draft", "fn f() { use crate::views; }"),
        (
            "catalog::draft",
            "mod inner { use super::super::super::apply::X; }",
        ),
        ("rescan::commit", "use crate::triggers::inotify::Target;"),
        (
            "rescan::worker",
            "fn f() { let _ = crate::triggers::retry::Retry::new(); }",
        ),
        ("publish::snapshot", "use crate::{rpc::{self, Ctx}};"),
        ("views", "use super::rpc;"),
    ];
    for (module, code) in planted {
        assert!(
            !broken(module, code).is_empty(),
            "not caught: {module}: {code}"
        );
    }
    let allowed = [
        (
            "catalog::draft",
            "use super::resolve::Raw; use crate::definition::Definition;",
        ),
        (
            "catalog::draft",
            "// use crate::apply::X;\n/// [`crate::views`]\nfn f() {}",
        ),
        (
            "catalog::draft",
            "use vm_catalog_protocol::apply::X; use std::apply;",
        ),
        (
            "rescan::commit",
            "use crate::apply::Applier; use crate::views::Views;",
        ),
        (
            "rpc::session",
            "use crate::rpc::ctx::Ctx; use super::policy;",
        ),
        ("daemon", "use crate::rpc; use crate::triggers::inotify;"),
    ];
    for (module, code) in allowed {
        assert!(
            broken(module, code).is_empty(),
            "wrongly caught: {module}: {code}"
        );
    }
}
