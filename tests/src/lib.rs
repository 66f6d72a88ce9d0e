//! Shared test harness: temp dirs, s6-svscan, loop disks, the daemon under test.
//!
//! Tests that need root, a loop device or a missing tool call one of the
//! `require_*` functions first; they print `SKIP: <reason>` and return `None`
//! when the test cannot run here, so the test returns without asserting
//! anything and says so.

pub mod daemon;
pub mod loopdev;

use std::path::{Path, PathBuf};

pub mod s6;
pub mod tree;
pub mod wire;
pub use tree::Tree;

/// Prints the standard skip line. Use it when a test cannot run here.
pub fn skip(reason: &str) {
    eprintln!("SKIP: {reason}");
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `Some(())` as root; otherwise prints a skip line and returns `None`.
pub fn require_root(what: &str) -> Option<()> {
    if is_root() {
        Some(())
    } else {
        skip(&format!("{what} needs root"));
        None
    }
}

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds a tool on `PATH`; otherwise prints a skip line and returns `None`.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = which(name);
    if found.is_none() {
        skip(&format!("{name} not installed"));
    }
    found
}

/// The directory holding `s6-rc-compile`, `s6-rc-init`, `s6-rc-update`,
/// `s6-rc` and `s6-rc-db`: `$S6RC_BINDIR` if set, else the directory of
/// `s6-rc-compile` on `PATH`.
pub fn s6rc_bindir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("S6RC_BINDIR") {
        let d = PathBuf::from(d);
        if is_executable(&d.join("s6-rc-compile")) {
            return Some(d);
        }
    }
    which("s6-rc-compile").and_then(|p| p.parent().map(Path::to_path_buf))
}

/// [`s6rc_bindir`], or prints `SKIP: s6-rc not installed` and returns `None`.
pub fn require_s6rc() -> Option<PathBuf> {
    let d = s6rc_bindir();
    if d.is_none() {
        skip("s6-rc not installed (set S6RC_BINDIR or put s6-rc-compile on PATH)");
    }
    d
}
