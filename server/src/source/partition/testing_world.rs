//! A standard fake machine for the discovery and manager tests: disk
//! `loop1` (7:1, diskseq 5) with a GPT of four entries —
//! 1: user type (A), 2: another type, 3: user type read-only (C),
//! 4: user type no-auto (D) — each known to the kernel as `loop1pN`
//! (259:N) and holding an ext4 superblock.

use std::path::PathBuf;
use std::rc::Rc;

use super::config::{DiskPolicy, ExtSource, PartitionConfig};
use super::gpt::GptEntry;
use super::gpt_image::GptImage;
use super::guid::{Guid, USER_PARTITION_TYPE};
use super::manager::PartitionManager;
use super::sysfs::DevId;
use super::testing::{FakeHost, FakeSysfs, ext_image};

/// PARTUUID of entry `n`.
pub(crate) fn uuid(n: u8) -> Guid {
    Guid([0xa0 | n; 16])
}

/// Kernel dev of `loop1pN`.
pub(crate) fn pdev(n: u32) -> DevId {
    DevId {
        major: 259,
        minor: n,
    }
}

/// The disk's dev.
pub(crate) const DISK: DevId = DevId { major: 7, minor: 1 };

/// Entry `n` of the standard table.
pub(crate) fn std_entry(n: u32) -> GptEntry {
    let (ty, attrs) = match n {
        2 => (Guid([0x0f; 16]), 0),
        3 => (USER_PARTITION_TYPE, GptEntry::ATTR_READ_ONLY),
        4 => (USER_PARTITION_TYPE, GptEntry::ATTR_NO_AUTO),
        _ => (USER_PARTITION_TYPE, 0),
    };
    let first = 100 * u64::from(n);
    GptEntry {
        number: n,
        type_guid: ty,
        part_guid: uuid(n as u8),
        first_lba: first,
        last_lba: first + 49,
        attributes: attrs,
        name: format!("part-{n}"),
    }
}

/// The fake machine.
pub(crate) struct World {
    /// sysfs.
    pub sysfs: FakeSysfs,
    /// Devices and mounts (shared with a manager).
    pub host: Rc<FakeHost>,
    /// Holds the mount base.
    pub tmp: tempfile::TempDir,
    /// The configuration (only `loop1`, no `ext=`).
    pub config: PartitionConfig,
}

impl World {
    /// The standard machine.
    pub(crate) fn new() -> World {
        let w = World::empty();
        let img = (1..=4).fold(GptImage::new(512, 2048), |img, n| {
            img.with_entry(std_entry(n))
        });
        w.add_disk("loop1", DISK, Some(5), img.to_bytes());
        for n in 1..=4 {
            w.add_partition(
                "loop1",
                n,
                pdev(n),
                100 * u64::from(n),
                50,
                ext_image([n as u8; 16], b"fs"),
            );
        }
        w
    }

    /// No devices at all.
    pub(crate) fn empty() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let sysfs = FakeSysfs::new();
        let mut config = PartitionConfig::new(tmp.path().join("mnt"));
        config.sysfs_root = sysfs.root().to_owned();
        config.disks = DiskPolicy::Named(vec!["loop1".into()]);
        config.ext = ExtSource::None;
        World {
            sysfs,
            host: Rc::new(FakeHost::default()),
            tmp,
            config,
        }
    }

    /// Adds a disk to sysfs and the host.
    pub(crate) fn add_disk(&self, name: &str, dev: DevId, seq: Option<u64>, data: Vec<u8>) {
        let sectors = data.len() as u64 / 512;
        self.sysfs.disk(name, dev, sectors, 512, seq);
        self.host.device(name, dev, seq, data);
    }

    /// Adds partition `n` of `disk` (named `<disk>p<n>`).
    pub(crate) fn add_partition(
        &self,
        disk: &str,
        n: u32,
        dev: DevId,
        start: u64,
        size: u64,
        data: Vec<u8>,
    ) {
        let name = format!("{disk}p{n}");
        let seq = self.host.devices.borrow().get(disk).and_then(|d| d.1);
        self.sysfs.partition(disk, &name, n, dev, start, size);
        self.host.device(&name, dev, seq, data);
    }

    /// Removes partition `n` of `loop1` from sysfs and the host.
    pub(crate) fn remove_partition(&self, n: u32) {
        let name = format!("loop1p{n}");
        self.sysfs.remove_partition(&name, pdev(n));
        self.host.devices.borrow_mut().remove(&name);
    }

    /// A manager over this machine.
    pub(crate) fn manager(&self) -> PartitionManager<Rc<FakeHost>> {
        PartitionManager::with_host(self.config.clone(), self.host.clone())
    }

    /// Where partition `n` is mounted.
    pub(crate) fn target(&self, n: u8) -> PathBuf {
        self.config.mount_base.join(uuid(n).to_string())
    }
}
