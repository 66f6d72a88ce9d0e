//! The privileged operations the partition manager needs, behind a trait:
//! opening a block device (pinned and verified), reading the mount table,
//! `fsck`, mounting and unmounting. [`super::system::SystemHost`] does them
//! for real; unit tests use a fake.

use std::io;
use std::path::{Path, PathBuf};

use super::gpt::ReadAt;
use super::superblock::FsType;
use super::sysfs::DevId;

/// Why a device node could not be opened as the device sysfs describes.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// open or fstat failed.
    #[error("cannot open {node}")]
    Io {
        node: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The node is not a block device (a symlink, a file, …).
    #[error("{0} is not a block device")]
    NotBlock(PathBuf),
    /// The node's device number is not the one sysfs gives.
    #[error("{node} is device {found}, sysfs says {expected}")]
    WrongDevice {
        node: PathBuf,
        /// From sysfs.
        expected: DevId,
        /// From fstat.
        found: DevId,
    },
    /// The disk was replaced (its sequence number changed).
    #[error("{node} has disk sequence number {found}, sysfs says {expected}")]
    DiskseqChanged {
        node: PathBuf,
        /// From sysfs.
        expected: u64,
        /// From `BLKGETDISKSEQ`.
        found: u64,
    },
}

/// One line of `/proc/self/mountinfo`, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The device of the mounted file system.
    pub dev: DevId,
    /// Where it is mounted (unescaped).
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,nodev,…`).
    pub options: Vec<String>,
    /// File-system type.
    pub fstype: String,
}

impl MountEntry {
    /// Whether the mount has every per-mount option we mount with.
    pub fn is_hardened(&self) -> bool {
        ["nosuid", "nodev", "noexec", "nosymfollow"]
            .iter()
            .all(|o| self.options.iter().any(|x| x == o))
    }
}

/// What to mount, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountRequest {
    /// The file-system type (from the allowlist, never auto-probed by the kernel).
    pub fstype: FsType,
    /// GPT attribute 60: mount read-only, and do not replay the journal.
    pub read_only: bool,
}

impl MountRequest {
    /// File-system options: `errors=remount-ro`, plus `norecovery` when
    /// read-only (otherwise "ro" still writes to the device to replay the journal).
    pub fn fs_options(&self) -> Vec<(&'static str, Option<&'static str>)> {
        let mut o = vec![("errors", Some("remount-ro"))];
        if self.read_only {
            o.push(("norecovery", None));
        }
        o
    }

    /// The same, as `mount(2)` data.
    pub fn fs_data(&self) -> String {
        self.fs_options()
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => (*k).to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What `fsck -p` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsckOutcome {
    /// Exit 0.
    Clean,
    /// Exit 1 or 2: errors corrected.
    Corrected,
    /// Exit 4 or more, or killed: errors left, do not mount.
    Failed {
        /// The exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// The end of its output.
        output: String,
    },
}

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The file system is already mounted (the kernel has its superblock).
    #[error("the file system is already mounted")]
    AlreadyMounted,
    /// Anything else.
    #[error("{what} failed{}", fmt_detail(.detail))]
    Failed {
        /// The call that failed.
        what: &'static str,
        /// The kernel's own message, where it gave one.
        detail: Option<String>,
        #[source]
        source: io::Error,
    },
}

fn fmt_detail(d: &Option<String>) -> String {
    d.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

/// How an unmount went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Unmounted.
    Clean,
    /// It was busy: detached (`MNT_DETACH`); it goes when the last user closes it.
    Detached,
    /// Nothing was mounted there.
    NotMounted,
}

/// Privileged operations on block devices and mounts.
pub trait BlockHost {
    /// An open, verified block device.
    type Device: ReadAt;

    /// Opens `<dev-root>/<devname>` without following a symlink, and checks
    /// that it is the block device `expect` on the disk with sequence number
    /// `diskseq` (when both the kernel and sysfs have one).
    fn open_block(
        &self,
        devname: &str,
        expect: DevId,
        diskseq: Option<u64>,
    ) -> Result<Self::Device, OpenError>;

    /// The device number of the file system holding `/`.
    fn root_dev(&self) -> io::Result<DevId>;

    /// The device number of the block device at `path` (symlinks followed:
    /// for `ext=/dev/disk/…`), `None` when it is not a block device.
    fn block_dev_at(&self, path: &Path) -> io::Result<Option<DevId>>;

    /// The mount table of this mount namespace.
    fn mounts(&self) -> io::Result<Vec<MountEntry>>;

    /// Runs `program -p` on the device.
    fn fsck(&self, program: &Path, dev: &Self::Device) -> io::Result<FsckOutcome>;

    /// Mounts the device on the empty directory `target`, `nodev`, `nosuid`,
    /// `noexec`, `nosymfollow`, as `req` says.
    fn mount(
        &self,
        dev: &Self::Device,
        target: &Path,
        req: &MountRequest,
    ) -> Result<(), MountError>;

    /// Unmounts `target`, lazily if it is busy.
    fn unmount(&self, target: &Path) -> io::Result<Unmounted>;
}
