//! User partitions end to end, through the real `vm-catalogd` binary, as
//! root: each test builds a GPT loop disk, puts VM definitions on it, runs
//! in its own private mount namespace (`loopdev::in_private_mount_ns`),
//! starts the daemon there restricted to that disk (`--partition-disk`),
//! and looks only through the client library (`ListVms`, `ListSources`,
//! `GetInfo`, a `Watch`) and at `/proc/self/mountinfo`. Nothing here asks
//! for a rescan: what changes at run time is noticed through uevents.
//! Skips loudly without root, loop devices or the partition tools. One
//! module per topic; the disk layout and the helpers are here.

#[path = "../partition_common/mod.rs"]
mod partition_common;

mod hotplug;
mod mounting;
mod refusals;
mod running_vms;

use partition_common::daemon::{BUILTIN_VM, DiskDaemon, mounts_under, source_state, state};
use partition_common::*;
use vm_catalog::Mirror;
use vm_catalog::protocol::{
    DiagCode, RescanTrigger, SourceKind, SourceState, Trust, VmEntry, VmState,
};
use vm_catalog_tests::loopdev::{LoopDisk, in_private_mount_ns, require_loop};

/// 48 MiB: 1 user (the primary), 2 user, 3 user read-only (attribute 60),
/// 4 user no-auto (attribute 63), 5 Linux data.
fn disk_layout() -> String {
    format!(
        "label: gpt\n\
         start=2048, size=16384, type={USER}, uuid={}, name=\"user-a\"\n\
         start=18432, size=16384, type={USER}, uuid={}, name=\"user-b\"\n\
         start=34816, size=16384, type={USER}, uuid={}, name=\"user-c\", attrs=\"GUID:60\"\n\
         start=51200, size=16384, type={USER}, uuid={}, name=\"user-d\", attrs=\"GUID:63\"\n\
         start=67584, size=8192, type={LINUX}, uuid={}, name=\"other\"\n",
        puuid(1),
        puuid(2),
        puuid(3),
        puuid(4),
        puuid(5)
    )
}

/// The disk, with an ext4 file system holding `vms[n - 1]` on partition `n`.
fn disk_with(vms: &[&[&str]]) -> LoopDisk {
    let disk = LoopDisk::new(48, &disk_layout()).unwrap();
    for (i, names) in vms.iter().enumerate() {
        let n = i as u32 + 1;
        let defs = definitions(names);
        disk.mkfs_ext4(n, &format!("vmc-{n}"), Some(defs.path()))
            .unwrap();
    }
    disk
}

fn entry<'a>(vms: &'a [VmEntry], name: &str, source: &str) -> &'a VmEntry {
    vms.iter()
        .find(|v| v.name.as_str() == name && v.source.as_str() == source)
        .unwrap_or_else(|| panic!("no {name} from {source} in {vms:#?}"))
}

fn has_opts(opts: &str, want: &[&str]) -> bool {
    want.iter().all(|o| opts.split(',').any(|x| x == *o))
}

const HARDENED: [&str; 4] = ["nosuid", "nodev", "noexec", "nosymfollow"];
