//! What the process table says about the live directory: which s6-rc
//! programs work on it, and which supervisors run in its directories.
//!
//! s6-rc's lock alone cannot say that nobody works on the live directory:
//! `s6-rc-init` takes no lock, `s6-rc-update` releases it when it execs its
//! last `s6-rc` and locks the *old* live directory's `lock` file while it
//! switches to a new one (s6rc.md §1.4), and a program that was spawned has
//! not taken it yet. Their command lines say it: every one of them names
//! the live directory with `-l`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::tools::{Holder, Supervisor};

/// The s6-rc programs that work on a live directory or a database.
const PROGRAMS: [&str; 5] = [
    "s6-rc",
    "s6-rc-update",
    "s6-rc-init",
    "s6-rc-compile",
    "s6-rc-dryrun",
];

/// Interpreters whose first argument is the program they run (a wrapper
/// script around an s6-rc program, before it `exec`s it).
const INTERPRETERS: [&str; 5] = ["sh", "dash", "bash", "execlineb", "busybox"];

/// The processes running an s6-rc program with `-l live` (or `-llive`),
/// or with an argument under `state`.
pub(super) fn programs_on(live: &Path, state: &Path) -> Vec<Holder> {
    let me = std::process::id();
    let mut out = Vec::new();
    for pid in pids() {
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<&[u8]> = raw.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        let base = |a: &[u8]| {
            Path::new(OsStr::from_bytes(a))
                .file_name()
                .and_then(OsStr::to_str)
                .map(str::to_owned)
        };
        let mut start = 0;
        if argv.len() > 1 && base(argv[0]).is_some_and(|n| INTERPRETERS.contains(&n.as_str())) {
            start = 1;
        }
        let Some(program) = argv.get(start).and_then(|a| base(a)) else {
            continue;
        };
        if PROGRAMS.contains(&program.as_str()) && names(&argv[start + 1..], live, state) {
            let command = argv
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            out.push(Holder { pid, command });
        }
    }
    out
}

/// Whether `args` name `live` with `-l`, or a path under `state`.
fn names(args: &[&[u8]], live: &Path, state: &Path) -> bool {
    let live = live.as_os_str().as_bytes();
    let mut state_dir = state.as_os_str().as_bytes().to_vec();
    state_dir.push(b'/');
    args.iter().enumerate().any(|(i, a)| {
        (*a == live && i > 0 && args[i - 1] == b"-l")
            || a.strip_prefix(b"-l") == Some(live)
            || a.starts_with(&state_dir)
    })
}

/// The `s6-supervise` processes running in `<dir of live>/<name of
/// live>:s6-rc-*/servicedirs/*`, deleted or not.
pub(super) fn supervisors(live: &Path) -> Vec<Supervisor> {
    let (Some(parent), Some(base)) = (live.parent(), live.file_name()) else {
        return Vec::new();
    };
    let parent = fs::canonicalize(parent).unwrap_or_else(|_| parent.to_owned());
    let mut out = Vec::new();
    for pid in pids() {
        let comm = fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.strip_suffix(b"\n").unwrap_or(&comm) != b"s6-supervise" {
            continue;
        }
        let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        let bytes = cwd.as_os_str().as_bytes();
        let (bytes, deleted) = match bytes.strip_suffix(b" (deleted)") {
            Some(b) => (b, true),
            None => (bytes, false),
        };
        let dir = PathBuf::from(OsStr::from_bytes(bytes));
        if in_live_dir(&dir, &parent, base.as_bytes()) {
            out.push(Supervisor { pid, dir, deleted });
        }
    }
    out
}

/// Whether `dir` is `<parent>/<base>:s6-rc-*/servicedirs/<name>`.
fn in_live_dir(dir: &Path, parent: &Path, base: &[u8]) -> bool {
    let Ok(rel) = dir.strip_prefix(parent) else {
        return false;
    };
    let parts: Vec<&[u8]> = rel.iter().map(OsStr::as_bytes).collect();
    let mut init = base.to_vec();
    init.extend_from_slice(b":s6-rc-");
    matches!(parts.as_slice(), [top, b"servicedirs", _] if top.starts_with(&init))
}

/// Sends `a` (rescan) to the s6-svscan of `scandir`, then SIGTERM to each
/// of `pids` (s6-supervise stops its service and exits), and waits a
/// little for them to go. Returns how many are gone.
pub(super) fn stop_supervisors(scandir: &Path, pids: &[u32]) -> usize {
    // A rescan first: s6-svscan then knows that their entries are gone and
    // does not start them again when they exit.
    rescan(scandir);
    for &pid in pids {
        if let Ok(p) = libc::pid_t::try_from(pid) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    rescan(scandir);
    pids.iter().filter(|&&p| !alive(p)).count()
}

fn rescan(scandir: &Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(mut f) = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(scandir.join(".s6-svscan/control"))
    {
        let _ = f.write_all(b"a");
    }
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

fn pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_name_the_live_directory_or_the_state() {
        let live = Path::new("/run/s6-rc.vm");
        let state = Path::new("/var/lib/vmc/s6-rc");
        let yes: [&[&[u8]]; 4] = [
            &[b"-b", b"-l", b"/run/s6-rc.vm", b"--", b"/x/db"],
            &[b"-v", b"1", b"-l/run/s6-rc.vm", b"-u", b"change"],
            &[
                b"--",
                b"/var/lib/vmc/s6-rc/db-1-0",
                b"/var/lib/vmc/s6-rc/src-1-0",
            ],
            &[b"-c", b"/x", b"-l", b"/run/s6-rc.vm", b"/run/service"],
        ];
        for args in yes {
            assert!(names(args, live, state), "{args:?}");
        }
        let no: [&[&[u8]]; 3] = [
            &[b"-l", b"/run/s6-rc", b"-u", b"change", b"x"],
            &[b"/run/s6-rc.vm"],
            &[b"--", b"/var/lib/vmc/s6-rc-other/db"],
        ];
        for args in no {
            assert!(!names(args, live, state), "{args:?}");
        }
    }

    #[test]
    fn a_running_program_and_its_wrapper_script_are_found() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let d = tempfile::tempdir().unwrap();
        let (live, state) = (d.path().join("live"), d.path().join("state"));
        let script = d.path().join("s6-rc-update");
        fs::write(
            &script,
            "#!/bin/sh
sleep 1000
",
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&script)
            .arg("-l")
            .arg(&live)
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let found = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            programs_on(&live, &state).iter().any(|h| h.pid == pid)
        });
        let other = programs_on(&d.path().join("other"), &state);
        // SAFETY: kill has no memory-safety preconditions; the group is the
        // child's own, the script and its sleep.
        unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
        let _ = child.wait();
        assert!(
            found,
            "the wrapper of s6-rc-update on {} is found",
            live.display()
        );
        assert!(
            other.iter().all(|h| h.pid != pid),
            "not on another live directory"
        );
    }

    #[test]
    fn supervisors_count_only_in_live_directories_of_this_live() {
        let parent = Path::new("/run");
        let b = b"s6-rc.vm";
        assert!(in_live_dir(
            Path::new("/run/s6-rc.vm:s6-rc-update:abc/servicedirs/vm1"),
            parent,
            b
        ));
        assert!(in_live_dir(
            Path::new("/run/s6-rc.vm:s6-rc-init:x/servicedirs/s6rc-fdholder"),
            parent,
            b
        ));
        for other in [
            "/run/s6-rc:s6-rc-init:x/servicedirs/vm1",
            "/run/s6-rc.vm/servicedirs/vm1",
            "/run/s6-rc.vm:s6-rc-update:abc/servicedirs/vm1/log",
            "/etc/s6/sv/getty",
        ] {
            assert!(!in_live_dir(Path::new(other), parent, b), "{other}");
        }
    }
}
