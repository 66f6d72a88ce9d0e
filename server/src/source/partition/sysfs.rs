//! What the kernel says about block devices, read from sysfs.
//!
//! `<sysfs>/class/block/*`: each entry is a disk or, when it has a
//! `partition` file, a partition whose parent directory is its disk. Sizes
//! and starts are always in 512-byte units. Device node names come from the
//! `DEVNAME` line of the device's own `uevent` file (written by the kernel),
//! never from a netlink message.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Most entries read from `class/block`.
const MAX_DEVICES: usize = 16_384;
/// Longest attribute file read.
const MAX_ATTR: u64 = 4096;
/// Deepest chain of device-mapper slaves followed.
const MAX_SLAVE_DEPTH: usize = 8;

/// A device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevId {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl DevId {
    /// From a `dev_t` as `stat` returns it.
    pub fn from_raw(rdev: u64) -> DevId {
        DevId {
            major: rustix::fs::major(rdev),
            minor: rustix::fs::minor(rdev),
        }
    }
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DevId {
    type Err = ();

    /// Parses `MAJOR:MINOR`.
    fn from_str(s: &str) -> Result<DevId, ()> {
        let (a, b) = s.split_once(':').ok_or(())?;
        Ok(DevId {
            major: a.parse().map_err(|_| ())?,
            minor: b.parse().map_err(|_| ())?,
        })
    }
}

/// A whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name (`loop1`, `nvme0n1`).
    pub name: String,
    /// Node name under `/dev`.
    pub devname: String,
    /// Device number.
    pub dev: DevId,
    /// Size in 512-byte units.
    pub size: u64,
    /// `queue/logical_block_size`.
    pub logical_block_size: u32,
    /// `diskseq`, where the kernel has it (5.15+).
    pub diskseq: Option<u64>,
}

/// A partition the kernel knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Kernel name (`loop1p3`).
    pub name: String,
    /// Node name under `/dev`.
    pub devname: String,
    /// Device number.
    pub dev: DevId,
    /// Kernel name of its disk.
    pub disk: String,
    /// Partition number (1-based GPT entry index).
    pub number: u32,
    /// Start in 512-byte units.
    pub start: u64,
    /// Size in 512-byte units.
    pub size: u64,
}

/// Every disk and partition, by kernel name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockSnapshot {
    /// Disks.
    pub disks: BTreeMap<String, Disk>,
    /// Partitions.
    pub partitions: BTreeMap<String, Partition>,
}

impl BlockSnapshot {
    /// The partitions of one disk, by number.
    pub fn partitions_of<'a>(&'a self, disk: &'a str) -> impl Iterator<Item = &'a Partition> {
        self.partitions.values().filter(move |p| p.disk == disk)
    }
}

/// Reads a small sysfs attribute, trimmed.
fn attr(dir: &Path, name: &str) -> io::Result<String> {
    let mut s = String::new();
    std::fs::File::open(dir.join(name))?
        .take(MAX_ATTR)
        .read_to_string(&mut s)?;
    Ok(s.trim().to_owned())
}

fn num<T: FromStr>(dir: &Path, name: &str) -> io::Result<T> {
    attr(dir, name)?.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad sysfs attribute {}", dir.join(name).display()),
        )
    })
}

/// Whether a `DEVNAME` is a plain relative path of sane components.
pub fn valid_devname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b':' | b'+')
        })
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn devname(dir: &Path) -> io::Result<String> {
    let uevent = attr(dir, "uevent")?;
    let name = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .unwrap_or_default();
    if valid_devname(name) {
        Ok(name.to_owned())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad DEVNAME in {}", dir.join("uevent").display()),
        ))
    }
}

/// Reads every block device. Devices that vanish or look odd while being
/// read are left out (and logged).
pub fn snapshot(sysfs: &Path) -> io::Result<BlockSnapshot> {
    let mut snap = BlockSnapshot::default();
    let class = sysfs.join("class/block");
    for entry in std::fs::read_dir(&class)?.take(MAX_DEVICES) {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        match read_device(&class.join(name), name) {
            Ok(Device::Disk(d)) => {
                snap.disks.insert(d.name.clone(), d);
            }
            Ok(Device::Partition(p)) => {
                snap.partitions.insert(p.name.clone(), p);
            }
            Err(e) => tracing::debug!(device = name, error = %e, "skipping block device"),
        }
    }
    Ok(snap)
}

enum Device {
    Disk(Disk),
    Partition(Partition),
}

fn read_device(link: &Path, name: &str) -> io::Result<Device> {
    let dir = std::fs::canonicalize(link)?;
    let dev = attr(&dir, "dev")?
        .parse()
        .map_err(|()| io::Error::new(io::ErrorKind::InvalidData, "bad dev attribute"))?;
    let devname = devname(&dir)?;
    let size = num(&dir, "size")?;
    if dir.join("partition").exists() {
        let disk = dir
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "partition without disk"))?;
        Ok(Device::Partition(Partition {
            name: name.to_owned(),
            devname,
            dev,
            disk: disk.to_owned(),
            number: num(&dir, "partition")?,
            start: num(&dir, "start")?,
            size,
        }))
    } else {
        Ok(Device::Disk(Disk {
            name: name.to_owned(),
            devname,
            dev,
            size,
            logical_block_size: num(&dir, "queue/logical_block_size")?,
            diskseq: num(&dir, "diskseq").ok(),
        }))
    }
}

/// The disk that holds the block device `dev`: its parent when it is a
/// partition, the disk under its first device-mapper slave (in name order)
/// when it is a mapped device, else itself.
pub fn disk_holding(sysfs: &Path, dev: DevId) -> Option<String> {
    let mut dir = std::fs::canonicalize(sysfs.join("dev/block").join(dev.to_string())).ok()?;
    for _ in 0..MAX_SLAVE_DEPTH {
        if dir.join("partition").exists() {
            return name_of(dir.parent()?);
        }
        let mut slaves: Vec<PathBuf> = match std::fs::read_dir(dir.join("slaves")) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .take(64)
                .collect(),
            Err(_) => Vec::new(),
        };
        slaves.sort();
        match slaves.first() {
            None => return name_of(&dir),
            Some(s) => dir = std::fs::canonicalize(s).ok()?,
        }
    }
    None
}

fn name_of(dir: &Path) -> Option<String> {
    dir.file_name()?.to_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::partition::testing::FakeSysfs;

    #[test]
    fn snapshot_reads_disks_and_partitions() {
        let fs = FakeSysfs::new();
        fs.disk("loop1", DevId { major: 7, minor: 1 }, 131072, 512, Some(14));
        fs.partition(
            "loop1",
            "loop1p3",
            3,
            DevId {
                major: 259,
                minor: 4,
            },
            59392,
            40960,
        );
        let s = snapshot(fs.root()).unwrap();
        assert_eq!(s.disks["loop1"].diskseq, Some(14));
        assert_eq!(s.disks["loop1"].logical_block_size, 512);
        let p = &s.partitions["loop1p3"];
        assert_eq!(
            (p.disk.as_str(), p.number, p.start, p.size),
            ("loop1", 3, 59392, 40960)
        );
        assert_eq!(p.dev.to_string(), "259:4");
        assert_eq!(p.devname, "loop1p3");
        assert_eq!(s.partitions_of("loop1").count(), 1);
    }

    #[test]
    fn devices_with_a_hostile_devname_are_skipped() {
        let fs = FakeSysfs::new();
        fs.disk("loop1", DevId { major: 7, minor: 1 }, 100, 512, None);
        fs.set_uevent("loop1", "MAJOR=7\nMINOR=1\nDEVNAME=../etc/passwd\n");
        assert!(snapshot(fs.root()).unwrap().disks.is_empty());
    }

    #[test]
    fn devname_validation() {
        assert!(valid_devname("loop1p1"));
        assert!(valid_devname("mapper/root"));
        for bad in ["", "/dev/sda", "a/../b", "a//b", "sd a", "x\ny", "./a"] {
            assert!(!valid_devname(bad), "{bad:?}");
        }
    }

    #[test]
    fn disk_holding_follows_partitions_and_dm_slaves() {
        let fs = FakeSysfs::new();
        fs.disk(
            "vda",
            DevId {
                major: 254,
                minor: 0,
            },
            1000,
            512,
            None,
        );
        fs.partition(
            "vda",
            "vda2",
            2,
            DevId {
                major: 254,
                minor: 2,
            },
            100,
            100,
        );
        fs.disk(
            "dm-0",
            DevId {
                major: 253,
                minor: 0,
            },
            100,
            512,
            None,
        );
        fs.slave("dm-0", "vda2");
        assert_eq!(
            disk_holding(
                fs.root(),
                DevId {
                    major: 254,
                    minor: 2
                }
            )
            .as_deref(),
            Some("vda")
        );
        assert_eq!(
            disk_holding(
                fs.root(),
                DevId {
                    major: 253,
                    minor: 0
                }
            )
            .as_deref(),
            Some("vda")
        );
        assert_eq!(
            disk_holding(
                fs.root(),
                DevId {
                    major: 254,
                    minor: 0
                }
            )
            .as_deref(),
            Some("vda")
        );
        assert_eq!(
            disk_holding(
                fs.root(),
                DevId {
                    major: 0,
                    minor: 30
                }
            ),
            None
        );
    }
}
