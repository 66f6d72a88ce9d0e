//! Shared test harness: temp dirs, s6-svscan, loop disks, the daemon under test.
//!
//! Tests that need root, a loop device or a missing tool call one of the
//! `require_*` functions first. Where the test cannot run here they print
//! `SKIP <test>: <reason>` straight to the terminal (past the test harness's
//! output capture, so the line shows even though the test then passes) and
//! return `None`, so the test returns without asserting anything and says so.
//! Under `CI=true` they panic instead: CI must prove what it claims, so a
//! missing tool, root or loop device fails the test, naming what is missing.

pub mod daemon;
pub mod kernel;
pub mod loopdev;
pub mod peers;

use std::path::{Path, PathBuf};

pub mod s6;
pub mod tree;
pub mod wire;
pub use tree::Tree;

/// Whether the tests run under CI (`CI=true`, as `.ci/run` sets it), where
/// nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true" || v == "1")
}

/// Says that the calling test cannot run here. Outside CI it writes
/// `SKIP <test>: <reason>` to the process's stderr directly, which the test
/// harness does not capture, so the skip is visible in `cargo test`'s output
/// beside `test … ok`; the caller then returns. Under CI ([`in_ci`]) it
/// panics with the reason instead, failing the test.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    if in_ci() {
        panic!("CI=true and this test cannot run: {reason}");
    }
    use std::io::Write as _;
    // `eprintln!` would be captured (and shown only on failure); a write to
    // the stderr handle is not.
    let _ = writeln!(std::io::stderr().lock(), "SKIP {test}: {reason}");
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

/// [`s6rc_bindir`], or says `s6-rc not installed` through [`skip`] and returns `None`.
pub fn require_s6rc() -> Option<PathBuf> {
    let d = s6rc_bindir();
    if d.is_none() {
        skip("s6-rc not installed (set S6RC_BINDIR or put s6-rc-compile on PATH)");
    }
    d
}

/// Runs each applier scenario `fn NAME(rig: &impl Rig)` of the calling
/// module on both rigs of the calling test crate (`crate::rig::FakeRig`,
/// and `crate::rig::RealRig` when the real tools are there), as
/// `fake::NAME` and `real::NAME`.
// `crate::rig` is meant: the rigs are the calling test crate's.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! both_rigs {
    ($($name:ident),* $(,)?) => {
        mod fake {
            $(
                #[test]
                fn $name() {
                    super::$name(&crate::rig::FakeRig::new());
                }
            )*
        }
        mod real {
            $(
                #[test]
                fn $name() {
                    let Some(rig) = crate::rig::RealRig::new() else { return };
                    super::$name(&rig);
                }
            )*
        }
    };
}
