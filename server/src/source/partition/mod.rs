//! User partitions: discovery from the GPT, mounting, hotplug, removal.
//!
//! In data-flow order: [`sysfs`] says which block devices the kernel has;
//! [`gpt`] reads a disk's partition table strictly; [`discover`] picks the
//! user partitions (type [`guid::USER_PARTITION_TYPE`], attribute bits, the
//! `ext=` of [`ext`]); [`mount`] mounts one through a [`host::BlockHost`]
//! ([`system::SystemHost`] for real); [`manager`] keeps the mounted set in
//! line with sysfs and hands the daemon one [`crate::source::SourceSpec`] per
//! partition; [`uevent`] tells it when to look again.
//!
//! The daemon's side:
//! ```no_run
//! use vm_catalogd::source::partition::{PartitionConfig, PartitionManager, UeventListener};
//! # async fn daemon() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PartitionConfig::new("/run/vm-catalogd/mnt");
//! // Bind first, so that nothing between this and the first reconcile is missed.
//! let mut listener = UeventListener::bind(config.uevent_group)?;
//! let mut manager = PartitionManager::new(config);
//! let (tx, rx) = std::sync::mpsc::channel::<()>();
//! // The rescan worker owns the manager: reconcile blocks.
//! std::thread::spawn(move || loop {
//!     let sources = manager.reconcile(); // Present, Gone and Failed partition sources
//!     // … scan them with the other sources, merge, apply, publish …
//!     # drop(sources);
//!     if manager.release_removed() {
//!         continue; // a partition waiting for the released one can now be mounted
//!     }
//!     if rx.recv().is_err() {
//!         break;
//!     }
//!     while rx.try_recv().is_ok() {} // coalesce
//! });
//! // Every hint (including "events were lost") asks for a reconcile and a rescan.
//! while let Ok(_hint) = listener.next().await {
//!     if tx.send(()).is_err() {
//!         break;
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod discover;
mod discover_ext;
pub mod ext;
pub mod gpt;
#[cfg(any(test, feature = "testing"))]
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
