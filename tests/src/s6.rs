//! A real `s6-svscan` on a temporary scan directory, and test VM commands.
//!
//! [`Svscan::start`] runs Debian's `s6-svscan` in its own process group on a
//! scan directory the caller owns. Dropping it stops the scanner, every
//! `s6-supervise` it started and every service those run, then kills whatever
//! of that process tree is still alive: a test never leaves processes behind.
//!
//! [`write_vm_command`] writes the "VMM" that tests use as the VM start
//! command: it signals readiness on fd 3 and `exec`s a long `sleep`, so the
//! supervised pid is the sleep itself and a stop leaves no orphan.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A running `s6-svscan`, stopped with its whole process tree on drop.
#[derive(Debug)]
pub struct Svscan {
    scandir: PathBuf,
    child: Option<Child>,
}

impl Svscan {
    /// Starts `s6-svscan -c max_services scandir` (creating `scandir`) and
    /// waits until it listens on its control FIFO.
    ///
    /// `max_services` is s6-svscan 2.11's `-c`: the most service directories
    /// it supervises (its default is 500).
    pub fn start(scandir: &Path, max_services: usize) -> io::Result<Svscan> {
        Svscan::start_with_env(scandir, max_services, &[])
    }

    /// [`Svscan::start`] with `env` added to the scanner's environment,
    /// which every supervisor and service below it inherits.
    pub fn start_with_env(
        scandir: &Path,
        max_services: usize,
        env: &[(&str, &Path)],
    ) -> io::Result<Svscan> {
        fs::create_dir_all(scandir)?;
        let child = Command::new("s6-svscan")
            .envs(env.iter().copied())
            .arg("-c")
            .arg(max_services.to_string())
            .arg(scandir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let svscan = Svscan {
            scandir: scandir.to_owned(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !scanner_listens(scandir) {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "s6-svscan did not open its control fifo",
                ));
            }
            sleep(Duration::from_millis(10));
        }
        Ok(svscan)
    }

    /// The scan directory.
    pub fn scandir(&self) -> &Path {
        &self.scandir
    }

    /// The scanner's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Every live process below the scanner: supervisors and services.
    pub fn descendants(&self) -> BTreeSet<u32> {
        descendants_of(self.pid())
    }
}

impl Drop for Svscan {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let root = child.id();
        let mut seen = descendants_of(root);
        // SIGTERM makes s6-svscan stop every supervisor, and each supervisor
        // its service, before it exits.
        signal(root, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            seen.extend(descendants_of(root));
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                signal(root, libc::SIGKILL);
                let _ = child.wait();
                break;
            }
            sleep(Duration::from_millis(20));
        }
        // Anything of the tree still alive (a service that ignored SIGTERM,
        // a supervisor that missed the scanner's exit) is killed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        for p in seen {
            if alive(p) {
                signal(p, libc::SIGKILL);
            }
        }
    }
}

/// Whether an `s6-svscan` reads the control FIFO of `scandir`.
pub fn scanner_listens(scandir: &Path) -> bool {
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(scandir.join(".s6-svscan/control"))
        .is_ok()
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; pid is positive.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Whether `pid` is a process that has not exited (zombies count as dead).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).is_some_and(|(state, _)| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// `(state, ppid)` from the text of `/proc/PID/stat`.
fn stat_fields(stat: &str) -> Option<(char, u32)> {
    // The command name is in parentheses and may contain anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The live descendants of `root`, from `/proc`.
pub fn descendants_of(root: u32) -> BTreeSet<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            match stat_fields(&stat) {
                Some((state, ppid)) if state != 'Z' => children.entry(ppid).or_default().push(pid),
                _ => {}
            }
        }
    }
    let mut out = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if out.insert(c) {
                todo.push(c);
            }
        }
    }
    out
}

/// Writes the test "VMM" at `path`: a shell script that signals readiness
/// on fd 3 and `exec`s `sleep` for a long time. Its arguments (the VM name)
/// are ignored. Returns `path`.
pub fn write_vm_command(path: &Path) -> io::Result<PathBuf> {
    let script = "#!/bin/sh\n\
                  # A test VM: ready at once, then nothing until stopped.\n\
                  echo >&3\n\
                  exec 3>&-\n\
                  exec sleep 1000000\n";
    fs::write(path, script)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(path.to_owned())
}

/// The pid and "up" bit of the service directory `dir`, from `s6-svstat`.
///
/// `None` when the service is down (or `s6-svstat` fails).
pub fn svstat_pid(dir: &Path) -> Option<u32> {
    let out = Command::new("s6-svstat")
        .arg("-o")
        .arg("up,pid")
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    match (it.next(), it.next()) {
        (Some("true"), Some(pid)) => pid.parse().ok(),
        _ => None,
    }
}

/// Makes the templated service `dir` with Debian's `s6-instance-maker`,
/// from a template whose `run` execs `vmm INSTANCE` (readiness on fd 3).
/// Link or place `dir` in a scan directory to supervise it; its instances
/// are then supervised by its own `s6-svscan` of `dir/instance`.
pub fn make_instance_service(dir: &Path, vmm: &Path) -> io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let template = tmp.path().join("template");
    fs::create_dir(&template)?;
    fs::write(
        template.join("run"),
        format!("#!/bin/sh\nexec {} \"$1\"\n", vmm.display()),
    )?;
    fs::set_permissions(template.join("run"), fs::Permissions::from_mode(0o755))?;
    fs::write(template.join("notification-fd"), "3\n")?;
    // Room for a thousand instances (s6-instance-maker's default is 500).
    let out = Command::new("s6-instance-maker")
        .arg("-c")
        .arg("1000")
        .arg(&template)
        .arg(dir)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "s6-instance-maker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// The pid of the instance `name` of the templated service `service`, if
/// it is up.
pub fn instance_pid(service: &Path, name: &str) -> Option<u32> {
    svstat_pid(&service.join("instance").join(name))
}

/// The instances of the templated service `service` (its `instance/`
/// directory), sorted.
pub fn instances(service: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(service.join("instance"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits up to `timeout` for `cond`; returns whether it became true.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "42 (a) b (c)) S 7 42 42 0 -1";
        assert_eq!(stat_fields(stat), Some(('S', 7)));
    }

    #[test]
    fn svscan_stops_its_whole_tree_on_drop() {
        if crate::require_tool("s6-svscan").is_none() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let scan = tmp.path().join("scan");
        let cmd = write_vm_command(&tmp.path().join("vmm")).unwrap();
        let svc = tmp.path().join("svc");
        fs::create_dir(&svc).unwrap();
        fs::write(
            svc.join("run"),
            format!("#!/bin/sh\nexec {}\n", cmd.display()),
        )
        .unwrap();
        fs::set_permissions(svc.join("run"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(svc.join("notification-fd"), "3\n").unwrap();
        let svscan = Svscan::start(&scan, 10).unwrap();
        std::os::unix::fs::symlink(&svc, scan.join("svc")).unwrap();
        Command::new("s6-svscanctl")
            .arg("-a")
            .arg(&scan)
            .status()
            .unwrap();
        assert!(wait_for(Duration::from_secs(60), || svstat_pid(&svc).is_some()));
        let pid = svstat_pid(&svc).unwrap();
        let tree = svscan.descendants();
        assert!(tree.contains(&pid), "the service runs below the scanner");
        assert!(tree.len() >= 2, "a supervisor and its service");
        drop(svscan);
        for p in tree {
            assert!(!alive(p), "process {p} survived the scanner");
        }
    }
}

/// A supervised scan directory holding the templated service `vmm` (made
/// by `s6-instance-maker` around [`write_vm_command`]), in a temp dir: what
/// the s6-instance applier's daemon tests run on. `None` (a loud skip, a
/// failure under CI) when an s6 or s6-instance tool is missing.
#[derive(Debug)]
pub struct InstanceScan {
    /// The temp dir everything lives in (canonical).
    pub root: PathBuf,
    /// The templated service, `<root>/scan/vmm`.
    pub service: PathBuf,
    svscan: Option<Svscan>,
    _tmp: tempfile::TempDir,
}

impl InstanceScan {
    /// Makes the service and starts `s6-svscan` on it once `prepare` (given
    /// the root) has run; waits until its instance scanner listens.
    pub fn start(prepare: impl FnOnce(&Path)) -> Option<InstanceScan> {
        for p in [
            "s6-svscan",
            "s6-instance-maker",
            "s6-instance-create",
            "s6-instance-delete",
            "s6-instance-list",
            "s6-instance-status",
            "s6-instance-control",
        ] {
            crate::require_tool(p)?;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        let vmm = write_vm_command(&root.join("vmm")).unwrap();
        let service = root.join("scan/vmm");
        fs::create_dir_all(root.join("scan")).unwrap();
        make_instance_service(&service, &vmm).unwrap();
        prepare(&root);
        let svscan = Svscan::start(&root.join("scan"), 100).unwrap();
        assert!(wait_for(Duration::from_secs(60), || scanner_listens(
            &service.join("instance")
        )));
        Some(InstanceScan {
            root,
            service,
            svscan: Some(svscan),
            _tmp: tmp,
        })
    }
}

impl Drop for InstanceScan {
    fn drop(&mut self) {
        // The scanner (and every VMM it supervises) goes before the temp dir.
        drop(self.svscan.take());
    }
}
