//! The layering of ARCHITECTURE.md, checked on the source: no stage below
//! the RPC layer uses `crate::rpc`. Only the RPC layer itself and the wiring
//! above every stage — `config.rs` (which builds each part's configuration,
//! the RPC layer's included) and `daemon.rs` (which starts each part) — may.

use std::fs;
use std::path::{Path, PathBuf};

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

#[test]
fn no_stage_below_the_rpc_layer_uses_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 50, "found the sources: {}", files.len());
    let allowed = |p: &Path| {
        let rel = p.strip_prefix(&src).unwrap();
        rel.starts_with("rpc")
            || rel == Path::new("config.rs")
            || rel == Path::new("daemon.rs")
            || rel == Path::new("main.rs")
    };
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| !allowed(p))
        .filter(|p| {
            // Code, not comments (a log filter may name the rpc target).
            fs::read_to_string(p).unwrap().lines().any(|l| {
                let code = l.trim_start();
                !code.starts_with("//")
                    && (code.contains("crate::rpc") || code.contains("vm_catalogd::rpc"))
            })
        })
        .map(|p| p.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "these modules below the RPC layer use it: {offenders:?}"
    );
}
