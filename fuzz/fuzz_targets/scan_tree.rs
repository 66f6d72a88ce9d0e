#![no_main]
//! Hostile definition trees through the scanner.
//!
//! Each input builds a tree in a fresh temp dir (on `/dev/shm` when there
//! is one): directories, files, symlinks with any target (relative,
//! absolute, into the trusted prefix, out of it, to the host, loops, raw
//! bytes), FIFOs, sockets, names that are not UTF-8, hundreds of entries,
//! with caps from the input. The tree is scanned as an untrusted source
//! (directory or partition), as a trusted one, and entry by entry as
//! `vm-catalogd check` does; then every rule is checked against the tree
//! itself (see `fuzz/common/hostile_tree.rs` for the input format and the
//! rules). Seeds: `fuzz/seeds/scan_tree/` (written and checked by
//! `server/tests/scan_hostile_tree.rs`).
//! `cargo fuzz run -s none scan_tree fuzz/corpus/scan_tree fuzz/seeds/scan_tree`.

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../common/hostile_tree.rs"]
#[allow(dead_code)]
mod hostile_tree;

const SCRATCH: &str = "vm-catalog-fuzz-scan-tree.";

/// One temp dir per process, named after the pid and emptied per input.
/// libFuzzer ends a process without running destructors, so each process
/// first removes the dirs of processes that are gone.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let parent = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH)) else {
                continue;
            };
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = parent.join(format!("{SCRATCH}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("create the scratch dir");
        std::fs::canonicalize(&dir).expect("canonicalize the scratch dir")
    })
}

fuzz_target!(|data: &[u8]| {
    let base = scratch().join("t");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir(&base).expect("create the tree's dir");
    let built = hostile_tree::build(&base, data);
    if let Err(e) = hostile_tree::scan_and_check(&built) {
        panic!("{e}");
    }
    std::fs::remove_dir_all(&base).expect("remove the tree");
});
