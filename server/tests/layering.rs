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
//!   each part) and `main.rs` — may;
//! - no import cycle spans files of different folders: each `use` and path
//!   is resolved to the file that defines the module it names (a
//!   re-export in a `mod.rs` is that file's import too), and a cycle in
//!   that file graph may only join files of one folder.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
    /// The modules that are files, so that a path relative to the current
    /// module (`draft::Draft` in `catalog/mod.rs`) counts too.
    files: &'a BTreeMap<Vec<String>, PathBuf>,
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
            Some(first) => {
                let mut child = self.module.clone();
                child.push(first.to_owned());
                if !self.files.contains_key(&child) {
                    return None;
                }
            }
            None => return None,
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

    /// `pub(super)` and `pub(in crate::x)` say who may see an item, not
    /// what the file uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segments, None);
        syn::visit::visit_path(self, p);
    }
}

/// Every crate-absolute path that the code `source`, in the module
/// `module`, names.
fn paths(
    module: &[String],
    source: &str,
    files: &BTreeMap<Vec<String>, PathBuf>,
) -> Vec<Vec<String>> {
    let file = syn::parse_file(source).unwrap_or_else(|e| panic!("{module:?}: {e}"));
    let mut deps = Deps {
        module: module.to_vec(),
        files,
        out: Vec::new(),
    };
    deps.visit_file(&file);
    deps.out
}

/// The top-level modules that the code `source`, in the module `module`,
/// depends on (each once, sorted), other than its own.
fn dependencies(module: &[String], source: &str) -> Vec<String> {
    let own = module.first().cloned().unwrap_or_default();
    let mut tops: Vec<String> = paths(module, source, &BTreeMap::new())
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

/// The library's files by the module each defines (`main.rs` is another
/// crate, the binary, and is left out).
fn module_files(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files
        .into_iter()
        .map(|f| f.strip_prefix(src).unwrap().to_path_buf())
        .filter(|rel| rel != Path::new("main.rs"))
        .map(|rel| (module_of(&rel), rel))
        .collect()
}

/// The file that defines the module a crate-absolute path is in: the
/// longest prefix of the path that is a file's module.
fn file_of<'a>(path: &[String], files: &'a BTreeMap<Vec<String>, PathBuf>) -> &'a Path {
    (0..=path.len())
        .rev()
        .find_map(|n| files.get(&path[..n]))
        .expect("the crate root is a file")
}

/// The file-level import graph: for each file, the other files it names.
type Graph = BTreeMap<PathBuf, BTreeSet<PathBuf>>;

fn import_graph(src: &Path, files: &BTreeMap<Vec<String>, PathBuf>) -> Graph {
    let mut graph = Graph::new();
    for (module, rel) in files {
        let code = fs::read_to_string(src.join(rel)).unwrap();
        let to: BTreeSet<PathBuf> = paths(module, &code, files)
            .iter()
            .map(|p| file_of(p, files).to_path_buf())
            .filter(|f| f != rel)
            .collect();
        graph.insert(rel.clone(), to);
    }
    graph
}

fn folder(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new(""))
}

/// The shortest path from `from` to `to` in `graph`, both ends included.
fn shortest_path(graph: &Graph, from: &Path, to: &Path) -> Option<Vec<PathBuf>> {
    let mut came_from: BTreeMap<&Path, &Path> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut path = vec![at.to_path_buf()];
            let mut step = at;
            while step != from {
                step = came_from[step];
                path.push(step.to_path_buf());
            }
            path.reverse();
            return Some(path);
        }
        for next in graph.get(at).into_iter().flatten() {
            if !came_from.contains_key(next.as_path()) && next != from {
                came_from.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Every import cycle that spans files of more than one folder, each as
/// its files in order (the first again at the end), one per pair of files
/// of different folders that import each other through it; shortest first.
fn cross_folder_cycles(graph: &Graph) -> Vec<Vec<PathBuf>> {
    let mut cycles: Vec<Vec<PathBuf>> = Vec::new();
    let mut seen: BTreeSet<BTreeSet<PathBuf>> = BTreeSet::new();
    for (from, tos) in graph {
        for to in tos.iter().filter(|to| folder(to) != folder(from)) {
            let Some(back) = shortest_path(graph, to, from) else {
                continue;
            };
            let mut cycle = vec![from.clone()];
            cycle.extend(back);
            let members: BTreeSet<PathBuf> = cycle.iter().cloned().collect();
            if seen.insert(members) {
                cycles.push(cycle);
            }
        }
    }
    cycles.sort_by_key(Vec::len);
    cycles
}

fn show(cycle: &[PathBuf]) -> String {
    let names: Vec<String> = cycle.iter().map(|f| f.display().to_string()).collect();
    names.join(" → ")
}

#[test]
fn no_import_cycle_spans_files_of_different_folders() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = module_files(&src);
    assert!(files.len() > 50, "found the sources: {}", files.len());
    let cycles = cross_folder_cycles(&import_graph(&src, &files));
    let shown: Vec<String> = cycles.iter().map(|c| show(c)).collect();
    assert!(
        cycles.is_empty(),
        "{} import cycles span folders:\n{}",
        cycles.len(),
        shown.join("\n")
    );
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

fn g(edges: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for (from, to) in edges {
        graph
            .entry(PathBuf::from(from))
            .or_default()
            .insert(PathBuf::from(to));
        graph.entry(PathBuf::from(to)).or_default();
    }
    graph
}

/// The cycle finder itself: a cycle through two folders is found and
/// shown in order, one inside a folder is allowed, and a use resolves to
/// the file of the module it names.
#[test]
fn a_cycle_across_folders_is_found_and_one_within_a_folder_is_not() {
    let across = g(&[
        ("apply/mod.rs", "apply/s6rc/mod.rs"),
        ("apply/s6rc/mod.rs", "apply/s6rc/plan.rs"),
        ("apply/s6rc/plan.rs", "apply/mod.rs"),
        ("apply/none.rs", "apply/mod.rs"),
    ]);
    let found = cross_folder_cycles(&across);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        show(&found[0]),
        "apply/mod.rs → apply/s6rc/mod.rs → apply/s6rc/plan.rs → apply/mod.rs"
    );
    let within = g(&[
        ("catalog/mod.rs", "catalog/draft.rs"),
        ("catalog/draft.rs", "catalog/mod.rs"),
        ("catalog/draft.rs", "definition/mod.rs"),
    ]);
    assert!(cross_folder_cycles(&within).is_empty());

    let files: BTreeMap<Vec<String>, PathBuf> = [
        ("", "lib.rs"),
        ("apply", "apply/mod.rs"),
        ("apply::applier", "apply/applier.rs"),
        ("apply::s6rc", "apply/s6rc/mod.rs"),
    ]
    .into_iter()
    .map(|(module, file)| {
        (
            m(module).into_iter().filter(|s| !s.is_empty()).collect(),
            PathBuf::from(file),
        )
    })
    .collect();
    let named = |module: &str, code: &str| -> BTreeSet<PathBuf> {
        paths(&m(module), code, &files)
            .iter()
            .map(|p| file_of(p, &files).to_path_buf())
            .collect()
    };
    let s6rc = "use super::applier::Applier; use crate::apply::ApplyConfig; fn f() { super::super::apply::open(); }";
    assert_eq!(
        named("apply::s6rc", s6rc),
        BTreeSet::from(["apply/applier.rs".into(), "apply/mod.rs".into()])
    );
    assert_eq!(
        named("apply", "pub use applier::Applier; pub(super) fn f() {}"),
        BTreeSet::from(["apply/applier.rs".into()])
    );
}
