//! How the partition manager is set up.

use std::path::PathBuf;

use super::superblock::FsType;
use super::uevent::UeventGroup;

/// Which disks are searched for user partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskPolicy {
    /// The disk that holds the root file system (through a partition or
    /// device-mapper slaves), as the Discoverable Partitions Specification
    /// and Spectrum do. The default.
    RootDisk,
    /// Every disk. A USB stick that carries the type GUID is then mounted.
    All,
    /// These disks (kernel names such as `vda`, `loop3`), in this order.
    Named(Vec<String>),
}

/// Where `ext=` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtSource {
    /// The last `ext=` of a kernel command-line file (`/proc/cmdline`).
    Cmdline(PathBuf),
    /// This value (as after `ext=`).
    Value(String),
    /// No `ext=`: the primary partition is discovered.
    None,
}

/// The partition manager's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionConfig {
    /// Where sysfs is mounted (`/sys`).
    pub sysfs_root: PathBuf,
    /// Where device nodes are (`/dev`).
    pub dev_root: PathBuf,
    /// Where partitions are mounted, one directory per PARTUUID
    /// (`<state-dir>/mnt`); created mode 0700.
    pub mount_base: PathBuf,
    /// Which disks are searched.
    pub disks: DiskPolicy,
    /// Where `ext=` comes from.
    pub ext: ExtSource,
    /// Run `fsck_program -p` before a read-write mount.
    pub fsck: bool,
    /// The fsck for ext4 (`/sbin/fsck.ext4`).
    pub fsck_program: PathBuf,
    /// File systems that may be mounted (`[Ext4]`).
    pub filesystems: Vec<FsType>,
    /// The netlink group the uevent listener joins.
    pub uevent_group: UeventGroup,
}

impl PartitionConfig {
    /// The defaults, mounting under `mount_base`: `/sys`, `/dev`, the root
    /// disk, `ext=` from `/proc/cmdline`, no fsck, ext4 only, kernel uevents.
    pub fn new(mount_base: impl Into<PathBuf>) -> PartitionConfig {
        PartitionConfig {
            sysfs_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
            mount_base: mount_base.into(),
            disks: DiskPolicy::RootDisk,
            ext: ExtSource::Cmdline(PathBuf::from("/proc/cmdline")),
            fsck: false,
            fsck_program: PathBuf::from("/sbin/fsck.ext4"),
            filesystems: vec![FsType::Ext4],
            uevent_group: UeventGroup::Kernel,
        }
    }
}
