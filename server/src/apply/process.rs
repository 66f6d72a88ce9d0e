//! Running the appliers' programs: each in its own process group, with a
//! deadline, its output captured.
//!
//! A program that is still running at its deadline is killed with its whole
//! process group (the children it spawned, such as the `s6-rc` that
//! `s6-rc-update` runs, included) and reported as [`ToolError::TimedOut`]: one
//! hung call never blocks the apply worker, and so every later rescan,
//! forever. Output goes to anonymous memory files rather than pipes, so a
//! stray grandchild that keeps a descriptor open cannot hold the caller up.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest stderr excerpt kept in an error.
const STDERR_TAIL: usize = 2000;

/// A program an applier needs is missing.
#[derive(Debug, thiserror::Error)]
#[error("{program} not found in {where_}")]
pub struct MissingProgram {
    pub program: &'static str,
    /// Where it was looked for.
    pub where_: String,
}

/// The directory holding every one of `programs` (executable files):
/// `bin_dir`, or when `None` the first directory on `env_path` that holds
/// `programs[0]`.
pub fn find_programs(
    bin_dir: Option<&Path>,
    env_path: &OsStr,
    programs: &[&'static str],
) -> Result<PathBuf, MissingProgram> {
    let bin = match bin_dir {
        Some(d) => d.to_owned(),
        None => std::env::split_paths(env_path)
            .find(|d| executable(&d.join(programs[0])))
            .ok_or(MissingProgram {
                program: programs[0],
                where_: "PATH".into(),
            })?,
    };
    for &program in programs {
        if !executable(&bin.join(program)) {
            return Err(MissingProgram {
                program,
                where_: bin.display().to_string(),
            });
        }
    }
    Ok(bin)
}

/// Whether `p` is an executable regular file (links followed).
pub fn executable(p: &Path) -> bool {
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A program that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The program could not be started.
    #[error("cannot run {program}: {error}")]
    Spawn {
        program: &'static str,
        error: String,
    },
    /// The program exited with a non-zero code.
    #[error("{program} exited with code {code}{}", detail(.stderr))]
    Exit {
        program: &'static str,
        /// Its exit code.
        code: i32,
        /// The end of what it printed on stderr, lines joined with "; ".
        stderr: String,
    },
    /// The program was killed by a signal it did not get from us.
    #[error("{program} was killed by signal {signal}{}", detail(.stderr))]
    Signal {
        program: &'static str,
        /// The signal.
        signal: i32,
        /// The end of what it printed on stderr.
        stderr: String,
    },
    /// The program was still running at its deadline: it was killed, with
    /// its process group.
    #[error(
        "{program} did not finish within {} s and was killed{}",
        .after.as_secs_f64(),
        detail(.stderr)
    )]
    TimedOut {
        program: &'static str,
        /// How long it was given.
        after: Duration,
        /// The end of what it printed on stderr.
        stderr: String,
    },
}

fn detail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl ToolError {
    /// The exit code, if the program exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            ToolError::Exit { code, .. } => Some(*code),
            ToolError::Spawn { .. } | ToolError::Signal { .. } | ToolError::TimedOut { .. } => None,
        }
    }

    pub fn program(&self) -> &'static str {
        match self {
            ToolError::Spawn { program, .. }
            | ToolError::Exit { program, .. }
            | ToolError::Signal { program, .. }
            | ToolError::TimedOut { program, .. } => program,
        }
    }
}

/// A process found working on something: its pid and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command line, arguments joined with spaces.
    pub command: String,
}

/// `e (what its exit code means)`, when that is known.
pub fn with_meaning(e: &ToolError) -> String {
    match e.code().and_then(|c| exit_meaning(e.program(), c)) {
        Some(meaning) => format!("{e} ({meaning})"),
        None => e.to_string(),
    }
}

/// What a known program's exit code means, when it means more than
/// "failed" (s6-rc-update's codes, s6rc.md §1.4).
pub fn exit_meaning(program: &str, code: i32) -> Option<&'static str> {
    if program != "s6-rc-update" {
        return None;
    }
    Some(match code {
        1 => "some state transitions failed, the database was switched",
        2 => "a state transition timed out, the database was switched",
        3 => "the conversion file names a service the live database does not have",
        4 => "invalid database or conversion file",
        5 => "the conversion file names a bundle",
        6 => "the conversion file names a service twice",
        9 => "stopping services failed, the database was not switched",
        10 => "stopping services timed out, the database was not switched",
        100 => "usage error",
        111 => "system call failure (before or after the switch)",
        126 | 127 => "the final s6-rc could not be executed, the database was switched",
        _ => return None,
    })
}

/// Runs `cmd` (stdin, stdout and stderr are set here) as `program`, in a new
/// process group, for at most `timeout`. Returns its stdout when it exits 0.
pub fn run(
    program: &'static str,
    mut cmd: Command,
    timeout: Duration,
) -> Result<Vec<u8>, ToolError> {
    let spawn_err = |e: io::Error| ToolError::Spawn {
        program,
        error: e.to_string(),
    };
    let mut stdout = memfd(c"stdout").map_err(spawn_err)?;
    let mut stderr = memfd(c"stderr").map_err(spawn_err)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(stdout.try_clone().map_err(spawn_err)?))
        .stderr(Stdio::from(stderr.try_clone().map_err(spawn_err)?))
        .process_group(0);
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let status = wait_until(&mut child, Instant::now() + timeout);
    let text = read_all(&mut stderr);
    let stderr_tail = tail(&String::from_utf8_lossy(&text), STDERR_TAIL);
    match status {
        Waited::Exited(s) => match (s.code(), s.signal()) {
            (Some(0), _) => Ok(read_all(&mut stdout)),
            (Some(code), _) => Err(ToolError::Exit {
                program,
                code,
                stderr: stderr_tail,
            }),
            (None, signal) => Err(ToolError::Signal {
                program,
                signal: signal.unwrap_or(0),
                stderr: stderr_tail,
            }),
        },
        Waited::Killed => Err(ToolError::TimedOut {
            program,
            after: timeout,
            stderr: stderr_tail,
        }),
        Waited::Lost(e) => Err(spawn_err(e)),
    }
}

enum Waited {
    Exited(ExitStatus),
    /// Killed at the deadline.
    Killed,
    /// Waiting failed: the child was killed and reaped.
    Lost(io::Error),
}

/// Waits for `child` until `deadline`; at the deadline, kills its process
/// group and reaps it.
fn wait_until(child: &mut Child, deadline: Instant) -> Waited {
    let pidfd = pidfd_open(child.id());
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Waited::Exited(status),
            Ok(None) => {}
            Err(e) => {
                kill_group(child);
                return Waited::Lost(e);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            kill_group(child);
            return Waited::Killed;
        }
        match &pidfd {
            // Readable once the process has exited.
            Some(fd) => poll_readable(fd, left),
            // No pidfd (kernel < 5.3): poll the status instead.
            None => std::thread::sleep(left.min(Duration::from_millis(5))),
        }
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: killpg has no memory-safety preconditions; the group is
        // the child's own (process_group(0)), which it leads until reaped.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
    let _ = child.wait();
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor; we own it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn poll_readable(fd: &OwnedFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
    // SAFETY: `pfd` is one valid pollfd that outlives the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// An anonymous file in memory, close-on-exec (the child gets a copy as its
/// stdout or stderr, without the flag).
fn memfd(name: &std::ffi::CStr) -> io::Result<File> {
    // SAFETY: `name` is a valid C string; memfd_create returns a new
    // descriptor or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; we own it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn read_all(f: &mut File) -> Vec<u8> {
    let mut out = Vec::new();
    if f.rewind().is_ok() {
        let _ = f.read_to_end(&mut out);
    }
    out
}

/// Keeps the last `max` bytes of `text` (on a char boundary), with lines
/// joined by "; ".
pub fn tail(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>();
    let joined = joined.join("; ");
    if joined.len() <= max {
        return joined;
    }
    let mut start = joined.len() - max;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &joined[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn output_and_exit_codes_are_captured() {
        let long = Duration::from_secs(30);
        assert_eq!(
            run("sh", sh("echo out; echo err >&2"), long),
            Ok(b"out\n".to_vec())
        );
        let e = run(
            "sh",
            sh("echo 'sh: fatal: x' >&2; echo y >&2; exit 3"),
            long,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "sh exited with code 3: sh: fatal: x; y");
        assert_eq!(e.code(), Some(3));
        let e = run("sh", sh("kill -9 $$"), long).unwrap_err();
        assert!(matches!(e, ToolError::Signal { signal: 9, .. }), "{e}");
        let e = run("nothing", Command::new("/nonexistent/program"), long).unwrap_err();
        assert!(
            matches!(
                e,
                ToolError::Spawn {
                    program: "nothing",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_hung_program_is_killed_with_its_children() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("child");
        let script = format!(
            "sleep 1000 & echo $! > {}; echo started >&2; wait",
            pidfile.display()
        );
        // The deadline is the child's real clock: 2 s, a margin that load
        // cannot eat for `sh` to start its child and say so (300 ms could).
        let e = run("sh", sh(&script), Duration::from_secs(2)).unwrap_err();
        let ToolError::TimedOut {
            program,
            after,
            stderr,
        } = &e
        else {
            panic!("{e}");
        };
        assert_eq!(
            (*program, *after, stderr.as_str()),
            ("sh", Duration::from_secs(2), "started")
        );
        assert_eq!(
            e.to_string(),
            "sh did not finish within 2 s and was killed: started"
        );
        let child: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The group was killed: the background sleep dies too (it may stay
        // a zombie until init reaps it).
        let dead = || {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            matches!(state, None | Some("Z"))
        };
        let t = Instant::now();
        while !dead() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dead(), "the background sleep survived its group's kill");
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("ab\u{e9}", 1), "…");
    }
}
