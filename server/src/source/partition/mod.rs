//! User partitions: discovery from the GPT, mounting, hotplug, removal.
//!
//! In data-flow order: [`sysfs`] says which block devices the kernel has;
//! [`gpt`] reads a disk's partition table strictly; [`discover`] picks the
//! user partitions (type [`guid::USER_PARTITION_TYPE`], attribute bits, the
//! `ext=` of [`ext`]); [`mount`] mounts one through a [`host::Host`]
//! ([`system::SystemHost`] for real); [`manager`] keeps the mounted set in
//! line with sysfs and hands the daemon one [`crate::source::SourceSpec`] per
//! partition; [`uevent`] tells it when to look again.
//!
//! The daemon's side:
//! ```no_run
//! use vm_catalogd::source::partition::{PartitionConfig, PartitionManager, DiskPolicy};
//! let mut config = PartitionConfig::new("/run/vm-catalogd/mnt");
//! config.disks = DiskPolicy::RootDisk;
//! let mut manager = PartitionManager::new(config);
//! let sources = manager.reconcile(); // after binding the uevent listener
//! // … rescan and apply; once the removed ones are out of the database:
//! manager.release_removed();
//! # drop(sources);
//! ```

pub mod config;
pub mod discover;
mod discover_ext;
pub mod ext;
pub mod gpt;
pub mod gpt_image;
pub mod guid;
pub mod host;
pub mod manager;
pub mod mount;
pub mod mountinfo;
pub mod mountpoint;
pub mod superblock;
pub mod sysfs;
pub mod system;
pub mod uevent;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
pub(crate) mod testing_world;

pub use config::{DiskPolicy, ExtSource, PartitionConfig};
pub use manager::PartitionManager;
pub use superblock::FsType;
pub use uevent::{Hint, UeventGroup, UeventListener};
