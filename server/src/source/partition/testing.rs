//! Test doubles: a fake sysfs tree in a temporary directory and a fake
//! [`BlockHost`] that serves device contents from memory and records what it is
//! asked to do.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::gpt::ReadAt;
use super::host::{
    BlockHost, FsckOutcome, MountEntry, MountError, MountRequest, OpenError, Unmounted,
};
use super::sysfs::DevId;

/// A fake ext superblock (magic, UUID, label) in a 4 KiB device.
pub(crate) fn ext_image(uuid: [u8; 16], label: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; 4096];
    d[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
    d[1024 + 0x68..1024 + 0x78].copy_from_slice(&uuid);
    d[1024 + 0x78..1024 + 0x78 + label.len()].copy_from_slice(label);
    d
}

/// A sysfs tree laid out as the kernel does it for virtual block devices.
pub(crate) struct FakeSysfs {
    dir: tempfile::TempDir,
}

impl FakeSysfs {
    /// An empty tree.
    pub(crate) fn new() -> FakeSysfs {
        let dir = tempfile::tempdir().unwrap();
        for d in ["class/block", "dev/block", "devices/virtual/block"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        FakeSysfs { dir }
    }

    /// The sysfs root.
    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    fn devdir(&self, name: &str) -> PathBuf {
        std::fs::canonicalize(self.root().join("class/block").join(name)).unwrap()
    }

    fn link(&self, name: &str, dev: DevId, rel: &str) {
        let r = self.root();
        std::os::unix::fs::symlink(format!("../../{rel}"), r.join("class/block").join(name))
            .unwrap();
        std::os::unix::fs::symlink(
            format!("../../{rel}"),
            r.join("dev/block").join(dev.to_string()),
        )
        .unwrap();
    }

    /// Adds a disk.
    pub(crate) fn disk(&self, name: &str, dev: DevId, size: u64, lbs: u32, diskseq: Option<u64>) {
        let rel = format!("devices/virtual/block/{name}");
        let d = self.root().join(&rel);
        std::fs::create_dir_all(d.join("queue")).unwrap();
        std::fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
        std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
        std::fs::write(d.join("queue/logical_block_size"), format!("{lbs}\n")).unwrap();
        if let Some(s) = diskseq {
            std::fs::write(d.join("diskseq"), format!("{s}\n")).unwrap();
        }
        std::fs::write(
            d.join("uevent"),
            format!(
                "MAJOR={}\nMINOR={}\nDEVNAME={name}\nDEVTYPE=disk\n",
                dev.major, dev.minor
            ),
        )
        .unwrap();
        self.link(name, dev, &rel);
    }

    /// Adds a partition of `disk`.
    pub(crate) fn partition(
        &self,
        disk: &str,
        name: &str,
        number: u32,
        dev: DevId,
        start: u64,
        size: u64,
    ) {
        let rel = format!("devices/virtual/block/{disk}/{name}");
        let d = self.root().join(&rel);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
        std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
        std::fs::write(d.join("start"), format!("{start}\n")).unwrap();
        std::fs::write(d.join("partition"), format!("{number}\n")).unwrap();
        std::fs::write(
            d.join("uevent"),
            format!(
                "MAJOR={}\nMINOR={}\nDEVNAME={name}\nDEVTYPE=partition\nPARTN={number}\n",
                dev.major, dev.minor
            ),
        )
        .unwrap();
        self.link(name, dev, &rel);
    }

    /// Removes a partition (as `partx -d` does).
    pub(crate) fn remove_partition(&self, name: &str, dev: DevId) {
        let d = self.devdir(name);
        std::fs::remove_dir_all(d).unwrap();
        std::fs::remove_file(self.root().join("class/block").join(name)).unwrap();
        std::fs::remove_file(self.root().join("dev/block").join(dev.to_string())).unwrap();
    }

    /// Makes `slave` a device-mapper slave of `dm`.
    pub(crate) fn slave(&self, dm: &str, slave: &str) {
        let d = self.devdir(dm).join("slaves");
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(self.devdir(slave), d.join(slave)).unwrap();
    }

    /// Replaces a device's `uevent` file.
    pub(crate) fn set_uevent(&self, name: &str, text: &str) {
        std::fs::write(self.devdir(name).join("uevent"), text).unwrap();
    }
}

/// A device served from memory.
#[derive(Debug, Clone)]
pub(crate) struct FakeDevice {
    /// Its node name.
    pub devname: String,
    /// Its number.
    pub dev: DevId,
    data: Vec<u8>,
}

impl ReadAt for FakeDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.data[..].read_at(buf, offset)
    }
}

/// A fake device node: number, disk sequence number, contents.
pub(crate) type FakeNode = (DevId, Option<u64>, Vec<u8>);

/// A [`BlockHost`] without privileges.
#[derive(Default)]
pub(crate) struct FakeHost {
    /// Devices by node name: number, disk sequence number, contents.
    pub devices: RefCell<BTreeMap<String, FakeNode>>,
    /// The device of `/`.
    pub root: std::cell::Cell<Option<DevId>>,
    /// The mount table.
    pub mounts: RefCell<Vec<MountEntry>>,
    /// What was done, in order (`fsck NAME`, `mount NAME TARGET ro|rw`, `unmount TARGET`).
    pub calls: RefCell<Vec<String>>,
    /// What fsck answers.
    pub fsck_outcome: RefCell<Option<FsckOutcome>>,
    /// Mount targets that are busy (unmounting them detaches).
    pub busy: RefCell<BTreeSet<PathBuf>>,
}

impl FakeHost {
    /// Adds a device.
    pub(crate) fn device(&self, devname: &str, dev: DevId, diskseq: Option<u64>, data: Vec<u8>) {
        self.devices
            .borrow_mut()
            .insert(devname.to_owned(), (dev, diskseq, data));
    }

    /// The recorded calls.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

impl BlockHost for FakeHost {
    type Device = FakeDevice;

    fn open_block(
        &self,
        devname: &str,
        expect: DevId,
        diskseq: Option<u64>,
    ) -> Result<FakeDevice, OpenError> {
        let node = PathBuf::from("/dev").join(devname);
        let devices = self.devices.borrow();
        let Some((dev, seq, data)) = devices.get(devname) else {
            return Err(OpenError::Io {
                node,
                source: std::io::ErrorKind::NotFound.into(),
            });
        };
        if *dev != expect {
            return Err(OpenError::WrongDevice {
                node,
                expected: expect,
                found: *dev,
            });
        }
        if let (Some(want), Some(have)) = (diskseq, *seq) {
            if want != have {
                return Err(OpenError::DiskseqChanged {
                    node,
                    expected: want,
                    found: have,
                });
            }
        }
        Ok(FakeDevice {
            devname: devname.to_owned(),
            dev: *dev,
            data: data.clone(),
        })
    }

    fn root_dev(&self) -> std::io::Result<DevId> {
        self.root
            .get()
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }

    fn block_dev_at(&self, path: &Path) -> std::io::Result<Option<DevId>> {
        let name = path
            .strip_prefix("/dev")
            .map_err(|_| std::io::ErrorKind::NotFound)?;
        Ok(self
            .devices
            .borrow()
            .get(name.to_str().unwrap_or_default())
            .map(|d| d.0))
    }

    fn mounts(&self) -> std::io::Result<Vec<MountEntry>> {
        Ok(self.mounts.borrow().clone())
    }

    fn fsck(&self, _program: &Path, dev: &FakeDevice) -> std::io::Result<FsckOutcome> {
        self.calls
            .borrow_mut()
            .push(format!("fsck {}", dev.devname));
        Ok(self
            .fsck_outcome
            .borrow()
            .clone()
            .unwrap_or(FsckOutcome::Clean))
    }

    fn mount(&self, dev: &FakeDevice, target: &Path, req: &MountRequest) -> Result<(), MountError> {
        let rw = if req.read_only { "ro" } else { "rw" };
        self.calls
            .borrow_mut()
            .push(format!("mount {} {} {rw}", dev.devname, target.display()));
        if self.mounts.borrow().iter().any(|m| m.dev == dev.dev) {
            return Err(MountError::AlreadyMounted);
        }
        let options = [rw, "nosuid", "nodev", "noexec", "nosymfollow"];
        self.mounts.borrow_mut().push(MountEntry {
            dev: dev.dev,
            mount_point: target.to_owned(),
            options: options.iter().map(|s| s.to_string()).collect(),
            fstype: req.fstype.name().to_owned(),
        });
        Ok(())
    }

    fn unmount(&self, target: &Path) -> std::io::Result<Unmounted> {
        self.calls
            .borrow_mut()
            .push(format!("unmount {}", target.display()));
        let mut mounts = self.mounts.borrow_mut();
        let before = mounts.len();
        mounts.retain(|m| m.mount_point != target);
        Ok(if mounts.len() == before {
            Unmounted::NotMounted
        } else if self.busy.borrow().contains(target) {
            Unmounted::Detached
        } else {
            Unmounted::Clean
        })
    }
}

/// Shares a host between a manager and the test that drives it.
impl<T: BlockHost> BlockHost for std::rc::Rc<T> {
    type Device = T::Device;

    fn open_block(
        &self,
        devname: &str,
        expect: DevId,
        diskseq: Option<u64>,
    ) -> Result<T::Device, OpenError> {
        (**self).open_block(devname, expect, diskseq)
    }

    fn root_dev(&self) -> std::io::Result<DevId> {
        (**self).root_dev()
    }

    fn block_dev_at(&self, path: &Path) -> std::io::Result<Option<DevId>> {
        (**self).block_dev_at(path)
    }

    fn mounts(&self) -> std::io::Result<Vec<MountEntry>> {
        (**self).mounts()
    }

    fn fsck(&self, program: &Path, dev: &T::Device) -> std::io::Result<FsckOutcome> {
        (**self).fsck(program, dev)
    }

    fn mount(&self, dev: &T::Device, target: &Path, req: &MountRequest) -> Result<(), MountError> {
        (**self).mount(dev, target, req)
    }

    fn unmount(&self, target: &Path) -> std::io::Result<Unmounted> {
        (**self).unmount(target)
    }
}
