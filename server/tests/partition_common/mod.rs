//! Helpers shared by the loop-disk partition tests.

#![allow(dead_code)]

pub(crate) mod daemon;

use std::path::{Path, PathBuf};
use std::time::Duration;

use vm_catalog_tests::loopdev::LoopDisk;
use vm_catalogd::source::SourceSpec;
use vm_catalogd::source::partition::gpt::GptEntry;
use vm_catalogd::source::partition::gpt_image::GptImage;
use vm_catalogd::source::partition::guid::{Guid, USER_PARTITION_TYPE};
use vm_catalogd::source::partition::{
    DiskPolicy, ExtSource, Hint, PartitionConfig, UeventListener,
};

pub(crate) const USER: &str = "9293e1ff-cee4-4658-88be-898ec863944f";
pub(crate) const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// The PARTUUID of partition `n` of the layouts here: unique to this
/// process, because `ext=PARTUUID=` (and `LABEL=`, `UUID=`) is resolved
/// over every disk of the machine, not only the test's own: a fixed id
/// would match a disk another process (another copy of this suite, a
/// leaked disk of a crashed run) has attached with the same layout.
pub(crate) fn puuid(n: u32) -> String {
    format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id())
}

/// 1: user (A), 2: Linux data, 3: user read-only (attribute 60),
/// 4: user no-auto (attribute 63).
pub(crate) fn layout() -> String {
    format!(
        "label: gpt\n\
         start=2048, size=16384, type={USER}, uuid={}, name=\"user-a\"\n\
         start=18432, size=8192, type={LINUX}, uuid={}, name=\"other\"\n\
         start=26624, size=16384, type={USER}, uuid={}, name=\"user-c\", attrs=\"GUID:60\"\n\
         start=43008, size=16384, type={USER}, uuid={}, name=\"user-d\", attrs=\"GUID:63\"\n",
        puuid(1),
        puuid(2),
        puuid(3),
        puuid(4)
    )
}

/// A definition tree `svc/data/<vm>/{vmlinux,blk/root.img}` for each VM.
pub(crate) fn definitions(vms: &[&str]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for vm in vms {
        let v = d.path().join("svc/data").join(vm);
        std::fs::create_dir_all(v.join("blk")).unwrap();
        std::fs::write(v.join("vmlinux"), "kernel").unwrap();
        std::fs::write(v.join("blk/root.img"), "disk").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", v.join("escape")).unwrap();
    }
    d
}

pub(crate) fn config(disk: &LoopDisk, state: &Path) -> PartitionConfig {
    let mut c = PartitionConfig::new(state.join("mnt"));
    c.disks = DiskPolicy::Named(vec![disk.name().to_owned()]);
    c.ext = ExtSource::None;
    c
}

/// The mountinfo line of the mount at `target`: (per-mount options, super options).
pub(crate) fn mountinfo(target: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if Path::new(f[4]) != target {
            return None;
        }
        let dash = f.iter().position(|x| *x == "-")?;
        Some((f[5].to_owned(), f[dash + 3].to_owned()))
    })
}

pub(crate) fn spec<'a>(specs: &'a [SourceSpec], label: &str) -> &'a SourceSpec {
    specs
        .iter()
        .find(|s| s.label.as_str() == label)
        .unwrap_or_else(|| panic!("no source {label} in {specs:#?}"))
}

pub(crate) fn mount_point(s: &SourceSpec) -> PathBuf {
    s.root.parent().and_then(Path::parent).unwrap().to_owned()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Waits for a hint (the timeout only keeps a broken test from hanging).
pub(crate) fn hint(rt: &tokio::runtime::Runtime, l: &mut UeventListener) -> Hint {
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), l.next()).await })
        .expect("a uevent within a minute")
        .unwrap()
}

/// A 16 MiB disk whose table has valid CRCs but absurd geometry: the entry
/// count and size written in its headers.
pub(crate) fn hostile(entry_count: u32, entry_size: u32) -> GptImage {
    let mut img = GptImage::new(512, 16 << 11).with_entry(GptEntry {
        number: 1,
        type_guid: USER_PARTITION_TYPE,
        part_guid: Guid([0xaa; 16]),
        first_lba: 2048,
        last_lba: 4095,
        attributes: 0,
        name: "evil".into(),
    });
    img.entry_count = entry_count;
    img.entry_size = entry_size;
    img
}

/// The three hostile tables that make the public GPT crates panic or abort.
pub(crate) fn hostile_tables() -> [(&'static str, GptImage); 3] {
    [
        ("entry size 256", hostile(128, 256)),
        ("0xffffffff entries", hostile(u32::MAX, 128)),
        ("count x size overflows", hostile(0x0200_0001, 128)),
    ]
}
