//! Loop disks for integration tests, and a private mount namespace to use
//! them in.
//!
//! Loop devices and their partitions are global to the machine, so a
//! [`LoopDisk`] holds an exclusive `flock` on a lock file shared by every
//! test process for as long as it lives, and detaches everything it made on
//! drop (`partx -d` before `losetup -d`, or the partitions outlive the
//! loop). This kernel may have no partition parser: `losetup -P` creates no
//! `loopNpM`, so the partition nodes are made with `partx` (libblkid in user
//! space and `BLKPG_ADD_PARTITION`).
//!
//! Mounting is only allowed inside a private mount namespace:
//! [`in_private_mount_ns`] runs the calling test again under
//! `unshare -m --propagation private`, so that whatever the test mounts
//! vanishes with it, even when it fails halfway.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{require_root, require_tool, skip};

/// Environment variable naming the test that runs inside the namespace.
const NS_ENV: &str = "VM_CATALOG_TEST_MOUNT_NS";
/// Environment variable naming the file the test creates once it runs
/// inside the namespace.
const NS_RAN_ENV: &str = "VM_CATALOG_TEST_MOUNT_NS_RAN";

/// The tools a loop-disk test needs.
pub const TOOLS: [&str; 5] = ["losetup", "partx", "sfdisk", "mkfs.ext4", "unshare"];

/// An exclusive lock serializing loop-device tests across processes; held
/// until dropped (closing the file releases the `flock`).
#[derive(Debug)]
pub struct LoopLock {
    _file: File,
}

/// Takes the loop-device lock, waiting for other tests to finish.
pub fn lock() -> io::Result<LoopLock> {
    let f = File::options()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join("vm-catalog-loopdev.lock"))?;
    // SAFETY: flock on a descriptor we own; it only blocks until the lock is free.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(LoopLock { _file: f })
}

/// `Some(())` when loop-disk tests can run here (root, `/dev/loop-control`,
/// the tools); otherwise prints a skip line and returns `None`.
pub fn require_loop(what: &str) -> Option<()> {
    require_root(what)?;
    if !Path::new("/dev/loop-control").exists() {
        skip(&format!("{what} needs /dev/loop-control"));
        return None;
    }
    for t in TOOLS {
        require_tool(t)?;
    }
    Some(())
}

/// Runs the test `name` (its full name as the test harness prints it,
/// with its module path: `hotplug::daemon_releases_…`) again in a private
/// mount namespace and asserts that it ran there and passed. Returns `true`
/// in that child, where the test body runs; `false` in the parent, which
/// must then return.
pub fn in_private_mount_ns(name: &str) -> bool {
    if std::env::var(NS_ENV).as_deref() == Ok(name) {
        if let Some(ran) = std::env::var_os(NS_RAN_ENV) {
            File::create(ran).expect("mark the test as run in its namespace");
        }
        return true;
    }
    let exe = std::env::current_exe().expect("test executable");
    let marks = tempfile::tempdir().expect("temp dir");
    let ran = marks.path().join("ran");
    let status = Command::new("unshare")
        .args(["-m", "--propagation", "private"])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(NS_ENV, name)
        .env(NS_RAN_ENV, &ran)
        .status()
        .expect("run unshare");
    assert!(
        status.success(),
        "{name} failed in its mount namespace: {status}"
    );
    // A name that matches no test runs nothing, successfully.
    assert!(
        ran.exists(),
        "{name} did not run in its mount namespace: no test has that exact name"
    );
    false
}

/// Runs a command; an error (with its stderr) unless it exits 0.
pub fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> io::Result<String> {
    run_as(&Launcher::Plain, cmd, args, stdin)
}

/// How a [`LoopDisk`] starts its tools: as they are, or each through a
/// caller's wrapper (a test that must trace every process it starts).
#[derive(Clone, Default)]
pub enum Launcher {
    /// `Command::new(program)`.
    #[default]
    Plain,
    /// The command that runs `program`; the tool's arguments follow.
    Wrapped(std::sync::Arc<dyn Fn(&str) -> Command + Send + Sync>),
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Launcher::Plain => "Plain",
            Launcher::Wrapped(_) => "Wrapped",
        })
    }
}

impl Launcher {
    fn command(&self, program: &str) -> Command {
        match self {
            Launcher::Plain => Command::new(program),
            Launcher::Wrapped(wrap) => wrap(program),
        }
    }
}

fn run_as(
    launcher: &Launcher,
    cmd: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> io::Result<String> {
    use std::io::Write;
    let mut child = launcher
        .command(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(s) = stdin {
        child.stdin.take().expect("piped").write_all(s.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A disk image attached to a loop device, detached on drop.
#[derive(Debug)]
pub struct LoopDisk {
    dev: PathBuf,
    name: String,
    image: PathBuf,
    launcher: Launcher,
    _dir: tempfile::TempDir,
    _lock: LoopLock,
}

impl LoopDisk {
    /// A sparse image of `size_mib` MiB partitioned by `sfdisk` with
    /// `layout` (a sfdisk script), attached, with partition nodes made by `partx -u`.
    pub fn new(size_mib: u64, layout: &str) -> io::Result<LoopDisk> {
        LoopDisk::launched(Launcher::Plain, size_mib, layout)
    }

    /// [`LoopDisk::new`], every tool it ever runs (cleanup too) started by
    /// `launcher`.
    pub fn launched(launcher: Launcher, size_mib: u64, layout: &str) -> io::Result<LoopDisk> {
        let sfdisk = launcher.clone();
        LoopDisk::attach(launcher, size_mib, |img| {
            run_as(&sfdisk, "sfdisk", &["-q", path_str(img)?], Some(layout)).map(drop)
        })
    }

    /// A sparse image of `size_mib` MiB written by `write`, attached. Partition
    /// nodes are made when `partx` finds a table it accepts.
    pub fn with_image(
        size_mib: u64,
        write: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<LoopDisk> {
        LoopDisk::attach(Launcher::Plain, size_mib, write)
    }

    fn attach(
        launcher: Launcher,
        size_mib: u64,
        write: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<LoopDisk> {
        let lock = lock()?;
        let dir = tempfile::tempdir()?;
        let image = dir.path().join("disk.img");
        File::create(&image)?.set_len(size_mib << 20)?;
        write(&image)?;
        let dev = run_as(
            &launcher,
            "losetup",
            &["-f", "--show", "-P", path_str(&image)?],
            None,
        )?;
        let dev = PathBuf::from(dev.trim());
        let name = dev
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other("losetup printed no device"))?
            .to_owned();
        let disk = LoopDisk {
            dev,
            name,
            image,
            launcher,
            _dir: dir,
            _lock: lock,
        };
        // An empty or hostile table (that libblkid refuses) is not an error here.
        if let Err(e) = disk.run("partx", &["-u", path_str(&disk.dev)?], None) {
            eprintln!("note: {e}");
        }
        Ok(disk)
    }

    /// Runs one of the disk's tools through its launcher.
    fn run(&self, cmd: &str, args: &[&str], stdin: Option<&str>) -> io::Result<String> {
        run_as(&self.launcher, cmd, args, stdin)
    }

    /// The kernel name (`loop3`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device node (`/dev/loop3`).
    pub fn path(&self) -> &Path {
        &self.dev
    }

    /// The image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The kernel name of partition `n` (`loop3p1`).
    pub fn part_name(&self, n: u32) -> String {
        format!("{}p{n}", self.name)
    }

    /// The node of partition `n` (`/dev/loop3p1`).
    pub fn part_path(&self, n: u32) -> PathBuf {
        PathBuf::from("/dev").join(self.part_name(n))
    }

    /// Tells the kernel about partition `n` (`partx -a --nr n`): an add uevent.
    pub fn partx_add(&self, n: u32) -> io::Result<()> {
        self.run(
            "partx",
            &["-a", "--nr", &n.to_string(), path_str(&self.dev)?],
            None,
        )
        .map(drop)
    }

    /// Makes the kernel forget partition `n` (`partx -d --nr n`): a remove uevent.
    pub fn partx_delete(&self, n: u32) -> io::Result<()> {
        self.run(
            "partx",
            &["-d", "--nr", &n.to_string(), path_str(&self.dev)?],
            None,
        )
        .map(drop)
    }

    /// Makes an ext4 file system on partition `n`, filled from `content`
    /// (`mkfs.ext4 -d`, so nothing needs mounting).
    pub fn mkfs_ext4(&self, n: u32, label: &str, content: Option<&Path>) -> io::Result<()> {
        let node = self.part_path(n);
        let mut args = vec!["-q", "-F", "-L", label];
        if let Some(c) = content {
            args.extend(["-d", path_str(c)?]);
        }
        args.push(path_str(&node)?);
        self.run("mkfs.ext4", &args, None).map(drop)
    }

    /// Runs `sfdisk` on the attached disk without telling the kernel
    /// (`--no-reread --no-tell-kernel`): the table and the kernel then differ.
    pub fn sfdisk_behind_kernel(&self, args: &[&str], stdin: Option<&str>) -> io::Result<String> {
        let mut all = vec!["-q", "--no-reread", "--no-tell-kernel"];
        all.extend_from_slice(args);
        self.run("sfdisk", &all, stdin)
    }

    /// Whether the kernel knows any partition of the disk.
    pub fn has_partitions(&self) -> bool {
        std::fs::read_dir(format!("/sys/class/block/{}", self.name))
            .map(|rd| {
                rd.filter_map(Result::ok).any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{}p", self.name))
                })
            })
            .unwrap_or(false)
    }

    /// Sends a synthetic uevent (`add`, `change`, `remove`) for the disk or
    /// one of its partitions (`n`), by writing its sysfs `uevent` file.
    pub fn synth_uevent(&self, part: Option<u32>, action: &str) -> io::Result<()> {
        let name = part.map_or_else(|| self.name.clone(), |n| self.part_name(n));
        std::fs::write(format!("/sys/class/block/{name}/uevent"), action)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let dev = self.dev.to_string_lossy().into_owned();
        if self.has_partitions() {
            if let Err(e) = self.run("partx", &["-d", &dev], None) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Err(e) = self.run("losetup", &["-d", &dev], None) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn path_str(p: &Path) -> io::Result<&str> {
    p.to_str()
        .ok_or_else(|| io::Error::other(format!("{} is not UTF-8", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a test moved into a module kept calling this with its
    /// old, short name; the child ran no test, exited 0, and the test
    /// passed without running.
    #[test]
    fn a_name_that_matches_no_test_fails_instead_of_passing() {
        let Some(()) = require_root("unshare -m") else {
            return;
        };
        let Some(_) = require_tool("unshare") else {
            return;
        };
        let r = std::panic::catch_unwind(|| in_private_mount_ns("no_such_module::no_such_test"));
        let msg = r.expect_err("an error").downcast::<String>().unwrap();
        assert!(msg.contains("no test has that exact name"), "{msg}");
    }
}
