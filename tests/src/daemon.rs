//! The daemon under test: the real `vm-catalogd` binary on temp dirs.
//!
//! A [`TestDaemon`] owns a temp dir with a built-in source (`builtin/`), an
//! untrusted directory source labelled `user` (`user/`), the VM views, the
//! state directory, the socket and the daemon's log. It starts the daemon
//! with `--notify-fd` and waits for the readiness line, so a started daemon
//! has finished its first scan and apply. Dropping it kills the daemon.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::tree::Tree;

/// How long a daemon may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A `vm-catalogd` process on temp dirs.
#[derive(Debug)]
pub struct TestDaemon {
    tree: Tree,
    bin: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
}

/// Finds a binary of this workspace next to the running test executable
/// (`target/<profile>/<name>`), building it first if `cargo test` did not.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join(name);
    if !bin.exists() {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--quiet", "--workspace", "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    bin
}

impl TestDaemon {
    /// A daemon (not started) with the default arguments: the two sources,
    /// `--no-partitions`, `--apply none`, debug logs.
    pub fn new(bin: impl Into<PathBuf>) -> TestDaemon {
        let tree = Tree::new();
        // Other users (permission tests) must reach the socket.
        fs::set_permissions(tree.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        tree.dir("builtin");
        tree.dir("user");
        let mut d = TestDaemon {
            tree,
            bin: bin.into(),
            args: Vec::new(),
            child: None,
        };
        let t = &d.tree;
        let base: Vec<OsString> = vec![
            "--socket".into(),
            t.join("run/socket").into(),
            "--state-dir".into(),
            t.join("state").into(),
            "--vm-dir".into(),
            t.join("vm").into(),
            "--builtin".into(),
            t.join("builtin").into(),
            "--source".into(),
            format!("user={}", t.join("user").display()).into(),
            "--log-level".into(),
            "debug".into(),
        ];
        d.args = base;
        d
    }

    /// Adds arguments. Without `--apply` or partition options, the daemon
    /// runs `--apply none --no-partitions`.
    pub fn arg(&mut self, a: impl Into<OsString>) -> &mut Self {
        self.args.push(a.into());
        self
    }

    /// Replaces the value of an argument given by default (`--builtin`,
    /// `--vm-dir`, …).
    pub fn set(&mut self, flag: &str, value: impl Into<OsString>) -> &mut Self {
        let i = self
            .args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} is not a default argument"));
        self.args[i + 1] = value.into();
        self
    }

    /// Drops the `user` directory source. Needed with partition discovery
    /// on: the primary user partition takes the label `user`.
    pub fn without_user_source(&mut self) -> &mut Self {
        let user = OsString::from(format!("user={}", self.tree.join("user").display()));
        if let Some(i) = self.args.iter().position(|a| *a == user) {
            self.args.drain(i - 1..=i);
        }
        self
    }

    /// The temp dir.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.tree.join("run/socket")
    }

    /// The built-in source's root.
    pub fn builtin(&self) -> PathBuf {
        self.tree.join("builtin")
    }

    /// The `user` source's root.
    pub fn user(&self) -> PathBuf {
        self.tree.join("user")
    }

    /// Where the views are.
    pub fn vm_dir(&self) -> PathBuf {
        self.tree.join("vm")
    }

    /// The daemon's log so far (every run).
    pub fn log(&self) -> String {
        fs::read_to_string(self.tree.join("daemon.log")).unwrap_or_default()
    }

    /// Writes a valid definition `name` in the `user` source.
    pub fn user_vm(&self, name: &str) -> PathBuf {
        self.tree.vm("user", name)
    }

    /// Writes a valid definition `name` in the built-in source.
    pub fn builtin_vm(&self, name: &str) -> PathBuf {
        self.tree.vm("builtin", name)
    }

    /// Starts the daemon and waits until it is ready (first scan and apply
    /// done, socket listening).
    pub fn start(&mut self) -> io::Result<()> {
        assert!(self.child.is_none(), "already running");
        let mut args = self.args.clone();
        if !args.iter().any(|a| a == "--apply") {
            args.extend(["--apply".into(), "none".into()]);
        }
        if !args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == "--no-partitions" || a.starts_with("--partition-disk") || a == "--all-disks"
        }) {
            args.push("--no-partitions".into());
        }
        args.extend(["--notify-fd".into(), "3".into()]);
        let (read, write) = pipe()?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tree.join("daemon.log"))?;
        let write_fd = write.as_raw_fd();
        let mut cmd = Command::new(&self.bin);
        cmd.args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: between fork and exec only async-signal-safe calls: dup2
        // puts the readiness pipe on fd 3 (without close-on-exec).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(write_fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(write);
        self.child = Some(child);
        match wait_ready(read, READY_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(e) => {
                let status = self.kill();
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "daemon not ready: {e} (exit: {status:?})\n--- log ---\n{}",
                        self.log()
                    ),
                ))
            }
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait().expect("wait");
                panic!("daemon ignored SIGTERM for 30 s ({status})\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops and starts again (a new epoch).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.start()
    }

    /// Kills the daemon (SIGKILL) if it runs.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Whether the daemon has an inotify watch on the directory at `path`
    /// now (its `/proc/<pid>/fdinfo` lists the watched inodes): what a test
    /// waits for before it changes something inside a directory the daemon
    /// has only just found, instead of sleeping.
    pub fn watches(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = fs::metadata(path) else {
            return false;
        };
        watched_inodes(self.pid()).contains(&(kernel_dev(m.dev()), m.ino()))
    }

    /// Whether it is running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two new descriptors; we own them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits for the readiness newline on `read`.
fn wait_ready(read: OwnedFd, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: read.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "no readiness line"));
    }
    let mut f = fs::File::from(read);
    let mut b = [0u8; 1];
    match f.read(&mut b)? {
        1 if b[0] == b'\n' => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon exited before it was ready",
        )),
    }
}

/// A device number as the kernel writes it in `fdinfo` (`MKDEV`: major
/// above bit 20), from `stat`'s encoding.
fn kernel_dev(dev: u64) -> u64 {
    let major = libc::major(dev) as u64;
    let minor = libc::minor(dev) as u64;
    (major << 20) | minor
}

/// Every (device, inode) that an inotify descriptor of process `pid`
/// watches: the `inotify wd:… ino:… sdev:…` lines of its `fdinfo`.
fn watched_inodes(pid: u32) -> std::collections::HashSet<(u64, u64)> {
    let mut out = std::collections::HashSet::new();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for fd in fds.flatten() {
        let is_inotify =
            fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify");
        if !is_inotify {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        let Ok(text) = fs::read_to_string(info) else {
            continue;
        };
        for line in text.lines().filter(|l| l.starts_with("inotify ")) {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(name))
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
            };
            if let (Some(ino), Some(dev)) = (field("ino:"), field("sdev:")) {
                out.insert((dev, ino));
            }
        }
    }
    out
}
