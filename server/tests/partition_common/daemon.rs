//! The real `vm-catalogd` on a loop disk: started from the test's private
//! mount namespace (so its mounts are ours to read back and vanish with
//! it), restricted to the test's own disk, and seen only through the client
//! library. Dropping it kills the daemon and undoes its mounts before the
//! disk is detached (the daemon leaves partitions mounted when it stops).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use vm_catalog::protocol::{Info, SourceEntry, VmEntry, VmState};
use vm_catalog::{Client, Mirror, Watch, WatchEvent};
use vm_catalog_tests::daemon::TestDaemon;
use vm_catalog_tests::loopdev::LoopDisk;

use super::runtime;

/// Upper bound for anything the daemon does on its own (a hotplug rescan,
/// an unmount). Only a broken daemon ever waits this long.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// The VM every daemon here has in its built-in source: it shows that the
/// daemon still serves its catalog whatever the partitions do.
pub(crate) const BUILTIN_VM: &str = "vm-builtin";

/// A running `vm-catalogd` that looks for user partitions on one loop disk.
pub(crate) struct DiskDaemon {
    // Dropped in this order: the watch, the runtime, then the daemon (after
    // `Drop::drop` killed it and undid its mounts).
    watch: Option<Watch>,
    rt: Runtime,
    daemon: TestDaemon,
}

impl DiskDaemon {
    /// Starts the daemon on `disk` with an empty kernel command line.
    pub(crate) fn start(disk: &LoopDisk) -> DiskDaemon {
        DiskDaemon::start_with(disk, "", &[])
    }

    /// Starts the daemon on `disk` (`--partition-disk`), reading `ext=`
    /// from a command-line file holding `cmdline` (never the host's), with
    /// `extra` arguments, and waits until it is ready.
    pub(crate) fn start_with(disk: &LoopDisk, cmdline: &str, extra: &[&str]) -> DiskDaemon {
        let mut daemon = TestDaemon::new(env!("CARGO_BIN_EXE_vm-catalogd"));
        daemon.without_user_source();
        daemon.builtin_vm(BUILTIN_VM);
        let cmdline_file = daemon.tree().file("cmdline", cmdline.as_bytes());
        daemon
            .arg("--partition-disk")
            .arg(disk.name())
            .arg("--cmdline")
            .arg(cmdline_file);
        for a in extra {
            daemon.arg(a);
        }
        daemon.start().unwrap_or_else(|e| panic!("{e}"));
        let mut d = DiskDaemon {
            watch: None,
            rt: runtime(),
            daemon,
        };
        // Subscribed before the test changes anything, so that every
        // generation is seen, in order.
        d.wait_for("the first snapshot", |_| true);
        d
    }

    /// Where the daemon builds the VM views.
    pub(crate) fn vm_dir(&self) -> PathBuf {
        self.daemon.vm_dir()
    }

    /// Where the daemon mounts partitions (`<state-dir>/mnt`).
    pub(crate) fn mount_base(&self) -> PathBuf {
        self.daemon.tree().join("state/mnt")
    }

    /// Where the partition with this PARTUUID is mounted.
    pub(crate) fn mount_point(&self, partuuid: &str) -> PathBuf {
        self.mount_base().join(partuuid)
    }

    /// The daemon's log so far.
    pub(crate) fn log(&self) -> String {
        self.daemon.log()
    }

    fn client(&self) -> Client {
        self.rt
            .block_on(Client::connect(self.daemon.socket()))
            .unwrap_or_else(|e| panic!("connect: {e}\n--- log ---\n{}", self.log()))
    }

    /// `ListSources`.
    pub(crate) fn sources(&self) -> Vec<SourceEntry> {
        let c = self.client();
        self.rt.block_on(c.sources()).expect("ListSources").sources
    }

    /// The source labelled `label`.
    pub(crate) fn source(&self, label: &str) -> SourceEntry {
        let all = self.sources();
        all.iter()
            .find(|s| s.label.as_str() == label)
            .cloned()
            .unwrap_or_else(|| panic!("no source {label} in {all:#?}"))
    }

    /// `ListVms`: the active VMs, or every definition.
    pub(crate) fn vms(&self, include_inactive: bool) -> Vec<VmEntry> {
        let c = self.client();
        self.rt
            .block_on(c.list_vms(include_inactive, None))
            .expect("ListVms")
            .vms
    }

    /// Names of the active VMs.
    pub(crate) fn active_names(&self) -> Vec<String> {
        self.vms(false)
            .iter()
            .map(|v| v.name.as_str().to_owned())
            .collect()
    }

    /// `GetInfo`.
    pub(crate) fn info(&self) -> Info {
        let c = self.client();
        self.rt.block_on(c.info()).expect("GetInfo")
    }

    /// Waits, on a subscription, until the catalog satisfies `pred`. Fails
    /// if the daemon goes away, or after [`WAIT`].
    pub(crate) fn wait_for(&mut self, what: &str, pred: impl Fn(&Mirror) -> bool) {
        let DiskDaemon { watch, rt, daemon } = self;
        let watch = watch.get_or_insert_with(|| Watch::new(daemon.socket()));
        let deadline = Instant::now() + WAIT;
        loop {
            if watch.mirror().cursor().is_some() && pred(watch.mirror()) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rt.block_on(async { tokio::time::timeout(left, watch.next()).await }) {
                Ok(Ok(WatchEvent::Disconnected { error, .. })) => panic!(
                    "{what}: the daemon went away: {error}\n--- log ---\n{}",
                    daemon.log()
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("{what}: {e}"),
                Err(_) => panic!(
                    "{what}: not within {WAIT:?}\n--- catalog ---\n{:#?}\n--- log ---\n{}",
                    watch.mirror(),
                    daemon.log()
                ),
            }
        }
    }

    /// Polls `cond` until it holds (for what the catalog does not show,
    /// such as the mount table). Fails after [`WAIT`].
    pub(crate) fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {WAIT:?}\n--- log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process still runs.
    pub(crate) fn running(&mut self) -> bool {
        self.daemon.running()
    }

    /// Starts the daemon again after [`DiskDaemon::stop`], on the same
    /// directories (a new epoch).
    pub(crate) fn start_again(&mut self) {
        self.daemon.start().unwrap_or_else(|e| panic!("{e}"));
        self.wait_for("the first snapshot", |_| true);
    }

    /// Stops the daemon with SIGTERM; it must exit cleanly.
    pub(crate) fn stop(&mut self) {
        self.watch = None;
        let status = self.daemon.stop();
        assert!(status.success(), "{status}\n--- log ---\n{}", self.log());
    }
}

impl Drop for DiskDaemon {
    fn drop(&mut self) {
        self.daemon.kill();
        for target in mounts_under(&self.mount_base()).iter().rev() {
            unmount(target);
        }
    }
}

/// The state of the definition of `name` that claims it, if any.
pub(crate) fn state(m: &Mirror, name: &str) -> Option<VmState> {
    m.get(name).map(|e| e.state)
}

/// The state of the source labelled `label`, if any.
pub(crate) fn source_state(m: &Mirror, label: &str) -> Option<vm_catalog::protocol::SourceState> {
    m.sources()
        .find(|s| s.label.as_str() == label)
        .map(|s| s.state)
}

/// Mount points at or below `base`, in mount order.
pub(crate) fn mounts_under(base: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    vm_catalogd::source::partition::mountinfo::parse(&text)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(base))
        .collect()
}

fn unmount(target: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(target.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path; umount2 has no other preconditions.
    unsafe {
        if libc::umount2(c.as_ptr(), 0) != 0 && libc::umount2(c.as_ptr(), libc::MNT_DETACH) != 0 {
            eprintln!(
                "cleanup: umount {}: {}",
                target.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}
