//! The parts of the real-guest test: the guest images, the traced host
//! processes, a guest's shell and consoles.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vm_catalog_tests::loopdev::Launcher;

/// `contrib/` of this checkout.
pub(crate) const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib");

/// Upper bound of anything a guest does under TCG (a boot, a change
/// reaching it). Only a broken system waits this long.
pub(crate) const GUEST_WAIT: Duration = Duration::from_secs(240);

/// The cache `.ci/run` fills (`contrib/guest/fetch-kernel`):
/// `VM_CATALOG_GUEST_CACHE`, by default `~/.cache/vm-catalog-guest`.
pub(crate) fn cache() -> PathBuf {
    std::env::var_os("VM_CATALOG_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/vm-catalog-guest")
        })
}

/// The unpacked Debian kernel: (its `vmlinuz`, its module tree).
pub(crate) fn kernel() -> Option<(PathBuf, PathBuf)> {
    vm_catalog_tests::kernel::unpacked(&cache().join("kernels"))
}

/// Runs `contrib/guest/make-initramfs` (with the modules, and the client
/// for a UI VM's image) into `out`.
pub(crate) fn make_initramfs(traces: &Traces, out: &Path, modules: &Path, client: Option<&Path>) {
    let mut cmd = traces.command("make-initramfs", &format!("{CONTRIB}/guest/make-initramfs"));
    cmd.arg("--modules").arg(modules);
    if let Some(c) = client {
        cmd.arg("--client").arg(c);
    }
    let o = cmd.arg(out).output().expect("run make-initramfs");
    assert!(
        o.status.success(),
        "make-initramfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Writes a VM definition `dir` (`vmlinux`, `blk/initramfs.img`, and a
/// data disk `blk/data.img`), copying the files.
pub(crate) fn write_vm(dir: &Path, vmlinuz: &Path, initramfs: &Path) {
    fs::create_dir_all(dir.join("blk")).unwrap();
    fs::copy(vmlinuz, dir.join("vmlinux")).unwrap();
    fs::copy(initramfs, dir.join("blk/initramfs.img")).unwrap();
    fs::write(dir.join("blk/data.img"), vec![0u8; 64 << 10]).unwrap();
}

/// `sh -c 'exec strace … "$@"' traced program`: the arguments follow.
fn traced(strace_args: &str, program: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("exec {strace_args} \"$@\""))
        .arg("traced")
        .arg(program);
    c
}

/// Every host process the test starts runs under `strace -f -e
/// trace=socket`, its trace in this directory: the proof that nothing on
/// the host opens an `AF_VSOCK` socket.
pub(crate) struct Traces {
    dir: tempfile::TempDir,
}

impl Traces {
    pub(crate) fn new() -> Traces {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Traces { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The strace arguments before the command: follow forks, trace only
    /// `socket` and `execve` (what ran: the proof reached it), with a
    /// seccomp filter, so the rest runs at full speed; write to
    /// `dir/<label>.<pid>`.
    fn strace_args(&self, label: &str, detached: bool) -> String {
        format!(
            "strace {}-f --seccomp-bpf -qq -e trace=socket,execve -e signal=none -o {}/{label}.$$",
            if detached { "-D " } else { "" },
            self.dir().display()
        )
    }

    /// A script that runs `program` traced, `strace -D`: the program keeps
    /// the script's pid (signals reach it, its parent waits for it), the
    /// tracer runs apart and ends with it. Already traced (a nested
    /// `s6-svscan`), it runs `program` as it is: its tracer sees it.
    pub(crate) fn wrapper(&self, label: &str, program: &Path) -> PathBuf {
        let path = self.dir().join(format!("wrap-{label}"));
        fs::write(
            &path,
            format!(
                "#!/bin/sh\n\
                 if grep -q '^TracerPid:[[:space:]]*0$' /proc/$$/status; then\n\
                 exec {} {} \"$@\"\n\
                 fi\n\
                 exec {} \"$@\"\n",
                self.strace_args(label, true),
                program.display(),
                program.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A command that runs `program args…` traced, in the foreground.
    pub(crate) fn command(&self, label: &str, program: &str) -> Command {
        traced(&self.strace_args(label, false), program)
    }

    /// A loop disk's launcher that runs each of its tools traced (cleanup
    /// too, though that runs after [`Traces::finish`]).
    pub(crate) fn launcher(&self, label: &str) -> Launcher {
        let args = self.strace_args(label, false);
        Launcher::Wrapped(std::sync::Arc::new(move |program| traced(&args, program)))
    }

    /// The pids of the tracers still running (found by their output
    /// directory on their command line: only this test's).
    pub(crate) fn tracers(&self) -> BTreeSet<u32> {
        let needle = self.dir().to_string_lossy().into_owned();
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.starts_with("strace\0") && c.contains(&needle)
                })
            })
            .collect()
    }

    /// Waits for every tracer to end (they end with their last tracee),
    /// then reads every trace.
    pub(crate) fn finish(&self) -> Traced {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.tracers().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = self.tracers();
        for pid in &left {
            // SAFETY: kill has no memory preconditions; the pid is one of
            // this test's tracers.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        assert!(left.is_empty(), "tracers still running: {left:?}");
        let mut t = Traced::default();
        for e in fs::read_dir(self.dir()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("wrap-") {
                continue;
            }
            t.files += 1;
            let text = fs::read_to_string(e.path()).unwrap();
            for l in text.lines() {
                if l.contains("socket(") {
                    t.socket_calls += 1;
                }
                if let Some(rest) = l.split_once("execve(\"").map(|x| x.1) {
                    let prog = rest.split('"').next().unwrap_or("");
                    let base = prog.rsplit('/').next().unwrap_or(prog);
                    t.programs.insert(base.to_owned());
                }
                if l.contains("AF_VSOCK") || l.contains("PF_VSOCK") || l.contains("socket(40,") {
                    t.vsock.push(format!("{name}: {l}"));
                }
            }
        }
        t
    }
}

/// What the traces saw.
#[derive(Debug, Default)]
pub(crate) struct Traced {
    /// Trace files.
    pub files: usize,
    /// `socket` calls.
    pub socket_calls: usize,
    /// The programs run (base names of every `execve`).
    pub programs: BTreeSet<String>,
    /// Every line with an `AF_VSOCK` socket.
    pub vsock: Vec<String>,
}

/// A guest's shell: `contrib/guest/init` runs one on ttyS1 when the kernel
/// command line says `vm-catalog.shell=ttyS1`, and `qemu-vm` (VMM_SHELL=1)
/// puts the host's end on the Unix socket `shell` in the VM's directory.
pub(crate) struct Shell {
    stream: BufReader<UnixStream>,
    /// Everything read, for a failure's report.
    pub transcript: String,
}

const DONE: &str = "__vm_catalog_done__";

impl Shell {
    /// Connects to `path` once QEMU listens there.
    pub(crate) fn connect(path: &Path) -> Shell {
        let deadline = Instant::now() + GUEST_WAIT;
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{}: {e}", path.display());
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        s.set_read_timeout(Some(GUEST_WAIT)).unwrap();
        Shell {
            stream: BufReader::new(s),
            transcript: String::new(),
        }
    }

    /// Runs the shell line `cmd` in the guest: its output and exit code.
    pub(crate) fn run(&mut self, cmd: &str) -> (String, i32) {
        let line = format!("{cmd}; echo {DONE} $?\n");
        self.stream.get_mut().write_all(line.as_bytes()).unwrap();
        let mut out = String::new();
        loop {
            let mut l = String::new();
            match self.stream.read_line(&mut l) {
                Ok(0) => panic!("the guest's shell closed\n{}", self.transcript),
                Ok(_) => {}
                Err(e) => panic!("the guest's shell: {e}\n{}", self.transcript),
            }
            self.transcript.push_str(&l);
            if let Some(code) = l.trim_end().strip_prefix(DONE) {
                return (out, code.trim().parse().unwrap_or(-1));
            }
            out.push_str(&l);
        }
    }

    /// Runs `cmd`, which must succeed: its output.
    pub(crate) fn ok(&mut self, cmd: &str) -> String {
        let (out, code) = self.run(cmd);
        assert_eq!(code, 0, "guest: {cmd}: exit {code}\n{out}");
        out
    }
}

/// Polls `cond` until it holds; fails with `what` and `report()` after
/// [`GUEST_WAIT`].
pub(crate) fn wait(what: &str, report: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUEST_WAIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {GUEST_WAIT:?}\n{}",
            report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The JSON lines of a `watch --json` output that parse.
pub(crate) fn events(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect()
}

/// Whether `events` has one with `event` for the VM `name`.
pub(crate) fn has_event(events: &[serde_json::Value], event: &str, name: &str) -> bool {
    events
        .iter()
        .any(|e| e["event"] == event && e["name"] == name)
}

/// Whether the process `pid` and every one of `children` are gone.
pub(crate) fn all_gone(pids: &BTreeSet<u32>) -> bool {
    pids.iter().all(|p| !vm_catalog_tests::s6::alive(*p))
}

/// Reads a file, or says why not.
pub(crate) fn read_or_say(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

/// `io::Result` for the few helpers that call out.
pub(crate) fn check(what: &str, r: io::Result<std::process::Output>) -> String {
    let o = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
