//! The real daemon for the suites that measure it: the `vm-catalogd` and
//! `vm-catalog` binaries built next to this one, a daemon on temp dirs with
//! generated definitions, and its memory as `/proc` reports it.
//!
//! The test harness's `TestDaemon` fixes `--log-level debug` and keeps its
//! state on the temp dir's file system; a benchmark wants the daemon as it
//! is deployed (the default log level; state and views on a tmpfs, as `/run`
//! is), so [`Daemon`] runs it with exactly the arguments given.

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vm_catalog_tests::Tree;

use crate::raw::RawClient;

/// How long the daemon may take to answer its first `Hello` (its first scan
/// and apply happen before it serves).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds the daemon and CLI binaries if needed, before anything is timed
/// (a build inside a suite would count in its figures). Errors show up
/// again when a suite asks for a binary.
pub(crate) fn prepare() {
    let _ = bin_dir();
}

/// The profile directory of this binary (`target/release`), after making
/// sure the daemon and CLI binaries in it are built from the current source.
///
/// Under `cargo run` (`$CARGO` is set) it runs `cargo build` for the two
/// binaries with this binary's profile: `cargo run -p vm-catalog-bench`
/// builds only the libraries this crate links, never the `vm-catalogd`
/// executable, which could otherwise be missing or stale. Without cargo, the
/// binaries must already be there.
fn bin_dir() -> Result<&'static Path, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
        let dir = exe
            .parent()
            .ok_or("no directory for this binary")?
            .to_owned();
        if let Some(cargo) = std::env::var_os("CARGO") {
            let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
            let mut build = Command::new(cargo);
            build
                .args(["build", "--quiet", "--manifest-path"])
                .arg(&manifest)
                .args(["-p", "vm-catalogd", "--bin", "vm-catalogd"])
                .args(["-p", "vm-catalog", "--bin", "vm-catalog"]);
            match profile {
                "debug" => {}
                "release" => {
                    build.arg("--release");
                }
                p => {
                    build.args(["--profile", p]);
                }
            }
            let status = build.status().map_err(|e| format!("{build:?}: {e}"))?;
            if !status.success() {
                return Err(format!("{build:?}: {status}"));
            }
        }
        if dir.file_name().is_some_and(|n| n == "debug") {
            eprintln!("vm-catalog-bench: WARNING: a debug build; run with --release for figures");
        }
        Ok(dir)
    })
    .as_ref()
    .map(PathBuf::as_path)
    .map_err(Clone::clone)
}

/// The path of workspace binary `name` (`vm-catalogd`, `vm-catalog`).
pub(crate) fn workspace_bin(name: &str) -> Result<PathBuf, String> {
    let bin = bin_dir()?.join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it (cargo build --release --bin {name}) or run the \
             benchmarks with cargo run",
            bin.display()
        ))
    }
}

/// A `vm-catalogd` on temp dirs: a built-in source (`builtin/`, empty) and
/// an untrusted source `user` (`user/`). Stopped on drop.
#[derive(Debug)]
pub(crate) struct Daemon {
    tree: Tree,
    child: Option<Child>,
}

impl Default for Daemon {
    fn default() -> Self {
        Self::new()
    }
}

impl Daemon {
    /// A daemon, not started, with empty sources.
    pub(crate) fn new() -> Daemon {
        let tree = Tree::new();
        tree.dir("builtin");
        tree.dir("user");
        tree.dir("run");
        Daemon { tree, child: None }
    }

    /// The temp dir.
    pub(crate) fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The `user` source.
    pub(crate) fn user(&self) -> PathBuf {
        self.tree.join("user")
    }

    /// The socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.tree.join("run/socket")
    }

    /// The arguments of a catalog-only daemon (`--apply none`) with its
    /// state and views in the temp dir, taking `connections` clients.
    pub(crate) fn catalog_only(&self, connections: usize) -> Vec<OsString> {
        let mut a = vec![
            "--apply".into(),
            "none".into(),
            "--state-dir".into(),
            self.tree.join("state").into(),
            "--vm-dir".into(),
            self.tree.join("vm").into(),
        ];
        a.extend(limits(connections));
        a
    }

    /// Starts the daemon with `args` after the sources, the socket,
    /// `--no-watch` (the suites rescan by request), `--no-partitions` and
    /// the default log level; waits until it answers a `Hello`, which it
    /// does only after its first scan and apply.
    pub(crate) fn start(&mut self, args: &[OsString]) -> Result<(), String> {
        let log = fs::File::create(self.tree.join("daemon.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(workspace_bin("vm-catalogd")?);
        cmd.arg("--socket")
            .arg(self.socket())
            .arg("--builtin")
            .arg(self.tree.join("builtin"))
            .arg("--source")
            .arg(format!("user={}", self.user().display()))
            .args(["--no-watch", "--no-partitions", "--log-level", "info"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // SAFETY: between fork and exec only one raw prctl system call,
        // which is async-signal-safe: if this process dies without running
        // its destructors (killed, aborted), the daemon stops too.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))
                .map_err(Into::into)
            });
        }
        self.child = Some(cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match RawClient::connect(&self.socket()) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline || !self.running() => {
                    let log = fs::read_to_string(self.tree.join("daemon.log")).unwrap_or_default();
                    self.stop();
                    return Err(format!("the daemon did not start: {e}\n--- log ---\n{log}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// The daemon's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after 10 s.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `--max-connections` and `--max-connections-per-uid` for `n` clients,
/// and this process's group as `--admin-group` (so a run as another user
/// than root may still call `Rescan`).
pub(crate) fn limits(n: usize) -> Vec<OsString> {
    let limit = (n + 16).to_string();
    vec![
        "--max-connections".into(),
        limit.clone().into(),
        "--max-connections-per-uid".into(),
        limit.into(),
        "--admin-group".into(),
        rustix::process::getegid().as_raw().to_string().into(),
    ]
}

/// The name of generated definition `i` of [`definitions`].
pub(crate) fn vm_name(i: usize) -> String {
    if i == 0 {
        "netvm".into()
    } else {
        format!("vm{i:05}")
    }
}

/// Writes `n` definitions in the daemon's `user` source, like the rescan
/// suite's: `vmlinux`, `blk/root.img`, and every other one with
/// `providers/net/netvm` (`netvm` is one of them).
pub(crate) fn definitions(d: &Daemon, n: usize) {
    for i in 0..n {
        let name = vm_name(i);
        d.tree.vm("user", &name);
        if i > 0 && i % 2 == 0 {
            d.tree.provider("user", &name, "netvm");
        }
    }
}

/// Turns one VM's `providers/net/netvm` on or off: a change of one VM at
/// the next rescan. Returns whether it is on now.
pub(crate) fn toggle_provider(d: &Daemon, name: &str) -> Result<bool, String> {
    let p = d.user().join(name).join("providers/net/netvm");
    if p.exists() {
        fs::remove_file(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(false)
    } else {
        d.tree.provider("user", name, "netvm");
        Ok(true)
    }
}

/// Memory of a process from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// Peak resident set (`VmHWM`).
    pub peak: u64,
    /// Resident set now (`VmRSS`).
    pub now: u64,
}

/// Reads [`Memory`] of `pid`.
pub(crate) fn memory(pid: u32) -> Result<Memory, String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        peak: field("VmHWM:")?,
        now: field("VmRSS:")?,
    })
}

/// A child process stopped on drop: SIGTERM, then SIGKILL if it is still
/// there after 10 s; reaped either way.
pub(crate) struct Killed(pub(crate) std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_of_this_process_is_read() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.peak >= m.now && m.now > 0, "{m:?}");
    }

    #[test]
    fn generated_names_match_the_rescan_suite() {
        assert_eq!(vm_name(0), "netvm");
        assert_eq!(vm_name(7), "vm00007");
    }

    #[test]
    fn generated_definitions_and_toggles_land_in_the_user_source() {
        let d = Daemon::new();
        definitions(&d, 3);
        assert!(d.user().join("vm00002/providers/net/netvm").exists());
        assert!(!d.user().join("vm00001/providers").exists());
        assert!(toggle_provider(&d, "vm00001").unwrap());
        assert!(!toggle_provider(&d, "vm00001").unwrap());
    }
}
