//! Discovery: which block devices should be mounted as user partitions.
//!
//! Pure logic over a sysfs snapshot and the devices' own bytes (read through
//! [`BlockHost::open_block`], so pinned and verified): GPT entries of the user
//! type on the allowed disks, no-auto (bit 63) skipped, read-only (bit 60)
//! kept, the start/size cross-check against the kernel, `ext=` resolution
//! (exactly one match), and duplicate PARTUUIDs refused.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use vm_catalog_protocol::{DiagCode, Diagnostic, Severity, SourceLabel};

use super::config::{DiskPolicy, PartitionConfig};
use super::ext::{ExtSpec, ExtSpecError};
use super::gpt::{GptEntry, GptError, GptTable, read_gpt};
use super::guid::{Guid, USER_PARTITION_TYPE};
use super::host::BlockHost;
use super::sysfs::{self, BlockSnapshot, DevId, Disk, Partition};

/// The label of the primary user partition.
pub const PRIMARY_LABEL: &str = "user";

/// A block device to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Kernel name.
    pub name: String,
    /// Node name under the /dev root.
    pub devname: String,
    /// Device number.
    pub dev: DevId,
    /// Its disk's sequence number.
    pub diskseq: Option<u64>,
    /// The GPT partition GUID, when it is a GPT partition.
    pub partuuid: Option<Guid>,
    /// The mount directory's name, formatted by us: the PARTUUID, or
    /// `fs-<UUID>` for an `ext=` device that is not a GPT partition.
    pub key: String,
    /// Attribute 60.
    pub read_only: bool,
    /// Named by `ext=`, or the first user partition on the first disk searched.
    pub primary: bool,
    /// Findings that do not stop it (a backup GPT header was used, …).
    pub warnings: Vec<Diagnostic>,
}

impl Candidate {
    /// `user` for the primary, else the PARTUUID (or key).
    pub fn label(&self) -> SourceLabel {
        let s = if self.primary {
            PRIMARY_LABEL
        } else {
            &self.key
        };
        SourceLabel::try_from(s).expect("keys are formatted from hex digits")
    }
}

/// Something that should have been a source but cannot be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `user`, a PARTUUID, or `disk-<name>` for a disk whose table is bad.
    pub label: SourceLabel,
    /// The device node, where known.
    pub device: Option<PathBuf>,
    /// The PARTUUID, where known.
    pub partuuid: Option<Guid>,
    pub diagnostic: Diagnostic,
}

/// The outcome of one discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// What to mount, primary first.
    pub candidates: Vec<Candidate>,
    /// What is refused.
    pub refusals: Vec<Refusal>,
    /// Disks whose partition table could not be read this round: their
    /// partitions are neither wanted nor known to be gone.
    pub unreadable: Vec<String>,
}

/// A diagnostic with the path it is about.
pub fn diag(
    code: DiagCode,
    severity: Severity,
    path: impl Into<String>,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        code,
        severity,
        path: path.into(),
        message: message.into(),
    }
}

/// A disk's partition table, as far as discovery cares.
pub(super) enum Table {
    /// A valid GPT.
    Gpt(GptTable),
    /// No GPT at all.
    None,
    /// A GPT that cannot be used, and why.
    Bad(String),
}

/// One discovery in progress.
pub(super) struct Run<'a, H: BlockHost> {
    pub(super) host: &'a H,
    pub(super) config: &'a PartitionConfig,
    pub(super) snap: &'a BlockSnapshot,
    pub(super) tables: HashMap<String, Table>,
    pub(super) out: Discovery,
}

/// Works out what to mount. `ext` is the parsed `ext=`, if there is one.
pub fn discover<H: BlockHost>(
    host: &H,
    config: &PartitionConfig,
    snap: &BlockSnapshot,
    ext: Option<&Result<ExtSpec, ExtSpecError>>,
) -> Discovery {
    let mut run = Run {
        host,
        config,
        snap,
        tables: HashMap::new(),
        out: Discovery::default(),
    };
    let (disks, primary_disk) = run.allowed_disks();
    for disk in &disks {
        run.scan_disk(disk);
    }
    match ext {
        Some(spec) => run.resolve_ext(spec),
        None => {
            if let Some(c) = run.out.candidates.iter_mut().find(|c| {
                primary_disk.as_deref() == snap.partitions.get(&c.name).map(|p| p.disk.as_str())
            }) {
                c.primary = true;
            }
        }
    }
    run.refuse_duplicates();
    let mut out = run.out;
    out.candidates
        .sort_by(|a, b| b.primary.cmp(&a.primary).then(a.key.cmp(&b.key)));
    out
}

impl<H: BlockHost> Run<'_, H> {
    pub(super) fn node(&self, devname: &str) -> PathBuf {
        self.config.dev_root.join(devname)
    }

    /// The disks to search, in order, and the one whose first user
    /// partition is the primary when there is no `ext=`.
    fn allowed_disks(&self) -> (Vec<String>, Option<String>) {
        let root = || {
            let dev = self
                .host
                .root_dev()
                .map_err(|e| tracing::warn!(error = %e, "cannot stat /"))
                .ok()?;
            let disk = sysfs::disk_holding(&self.config.sysfs_root, dev);
            if disk.is_none() {
                tracing::warn!(%dev, "the root file system is not on a disk: no user partitions");
            }
            disk
        };
        match &self.config.disks {
            DiskPolicy::RootDisk => {
                let r = root();
                (r.iter().cloned().collect(), r)
            }
            DiskPolicy::Named(names) => (names.clone(), names.first().cloned()),
            DiskPolicy::All => {
                let r = root();
                let mut all: Vec<String> = self.snap.disks.keys().cloned().collect();
                all.sort_by_key(|d| Some(d) != r.as_ref());
                (all, r)
            }
        }
    }

    pub(super) fn table(&mut self, disk: &Disk) -> &Table {
        if !self.tables.contains_key(&disk.name) {
            let t = if disk.size == 0 {
                Table::None
            } else {
                match self.host.open_block(&disk.devname, disk.dev, disk.diskseq) {
                    Err(e) => Table::Bad(error_chain(&e)),
                    Ok(dev) => {
                        match read_gpt(&dev, disk.size.saturating_mul(512), disk.logical_block_size)
                        {
                            Ok(t) => Table::Gpt(t),
                            Err(GptError::NotGpt) => Table::None,
                            Err(e) => Table::Bad(e.to_string()),
                        }
                    }
                }
            };
            self.tables.insert(disk.name.clone(), t);
        }
        &self.tables[&disk.name]
    }

    fn scan_disk(&mut self, name: &str) {
        let Some(disk) = self.snap.disks.get(name) else {
            tracing::debug!(disk = name, "configured disk not present");
            return;
        };
        let disk = disk.clone();
        let table = match self.table(&disk) {
            Table::None => return,
            Table::Bad(why) => {
                let why = why.clone();
                self.refuse_disk(&disk, &why);
                return;
            }
            Table::Gpt(t) => t.clone(),
        };
        let warnings = backup_warning(&table, &self.node(&disk.devname));
        for entry in table
            .entries
            .iter()
            .filter(|e| e.type_guid == USER_PARTITION_TYPE)
        {
            if entry.no_auto() {
                tracing::debug!(
                    disk = name,
                    number = entry.number,
                    "no-auto (attribute 63): skipped"
                );
                continue;
            }
            let Some(part) = self
                .snap
                .partitions_of(name)
                .find(|p| p.number == entry.number)
            else {
                tracing::debug!(
                    disk = name,
                    number = entry.number,
                    "not (yet) known to the kernel"
                );
                continue;
            };
            if let Some(c) = self.candidate(&disk, part, entry, &table, warnings.clone()) {
                self.out.candidates.push(c);
            }
        }
    }

    /// A candidate for a kernel partition and its GPT entry, after the
    /// geometry cross-check (a refusal otherwise).
    pub(super) fn candidate(
        &mut self,
        disk: &Disk,
        part: &Partition,
        entry: &GptEntry,
        table: &GptTable,
        warnings: Vec<Diagnostic>,
    ) -> Option<Candidate> {
        let node = self.node(&part.devname);
        if !geometry_matches(entry, part, table.sector_size) {
            let msg = format!(
                "the partition table says sectors {}..={} of {} bytes, the kernel says start {} size {} (512-byte units)",
                entry.first_lba, entry.last_lba, table.sector_size, part.start, part.size
            );
            self.out.refusals.push(Refusal {
                label: SourceLabel::try_from(entry.part_guid.to_string()).expect("hex label"),
                device: Some(node.clone()),
                partuuid: Some(entry.part_guid),
                diagnostic: diag(
                    DiagCode::GeometryMismatch,
                    Severity::Error,
                    node.display().to_string(),
                    msg,
                ),
            });
            return None;
        }
        Some(Candidate {
            name: part.name.clone(),
            devname: part.devname.clone(),
            dev: part.dev,
            diskseq: disk.diskseq,
            partuuid: Some(entry.part_guid),
            key: entry.part_guid.to_string(),
            read_only: entry.read_only(),
            primary: false,
            warnings,
        })
    }

    fn refuse_disk(&mut self, disk: &Disk, why: &str) {
        self.out.unreadable.push(disk.name.clone());
        let Ok(label) = SourceLabel::try_from(format!("disk-{}", disk.name)) else {
            tracing::warn!(disk = disk.name, why, "bad partition table");
            return;
        };
        let node = self.node(&disk.devname);
        self.out.refusals.push(Refusal {
            label,
            device: Some(node.clone()),
            partuuid: None,
            diagnostic: diag(
                DiagCode::BadPartitionTable,
                Severity::Error,
                node.display().to_string(),
                format!("partition table refused: {why}"),
            ),
        });
    }

    pub(super) fn refuse_primary(
        &mut self,
        code: DiagCode,
        device: Option<PathBuf>,
        partuuid: Option<Guid>,
        msg: String,
    ) {
        self.out.refusals.push(Refusal {
            label: SourceLabel::try_from(PRIMARY_LABEL).expect("valid"),
            device,
            partuuid,
            diagnostic: diag(code, Severity::Error, "ext", msg),
        });
    }

    /// Two devices with one PARTUUID (a cloned disk): neither is mounted.
    fn refuse_duplicates(&mut self) {
        let mut by_key: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        for c in self.out.candidates.drain(..) {
            by_key.entry(c.key.clone()).or_default().push(c);
        }
        for (key, mut group) in by_key {
            if group.len() == 1 {
                self.out.candidates.push(group.pop().expect("one"));
                continue;
            }
            let nodes: Vec<String> = group
                .iter()
                .map(|c| self.node(&c.devname).display().to_string())
                .collect();
            let primary = group.iter().any(|c| c.primary);
            self.out.refusals.push(Refusal {
                label: if primary {
                    SourceLabel::try_from(PRIMARY_LABEL).expect("valid")
                } else {
                    group[0].label()
                },
                device: None,
                partuuid: group[0].partuuid,
                diagnostic: diag(
                    DiagCode::DuplicatePartuuid,
                    Severity::Error,
                    nodes.join(", "),
                    format!(
                        "{} devices carry the id {key}: none is mounted",
                        group.len()
                    ),
                ),
            });
        }
    }
}

pub(super) fn backup_warning(t: &GptTable, node: &std::path::Path) -> Vec<Diagnostic> {
    t.primary_problem
        .iter()
        .map(|p| {
            diag(
                DiagCode::BadPartitionTable,
                Severity::Warning,
                node.display().to_string(),
                format!("primary gpt header unusable ({p}), the backup was used"),
            )
        })
        .collect()
}

/// Whether a GPT entry and the kernel's partition cover the same sectors.
pub fn geometry_matches(entry: &GptEntry, part: &Partition, sector_size: u32) -> bool {
    let f = u64::from(sector_size / 512);
    let start = entry.first_lba.checked_mul(f);
    let size = (entry.last_lba - entry.first_lba)
        .checked_add(1)
        .and_then(|n| n.checked_mul(f));
    start == Some(part.start) && size == Some(part.size)
}

/// An error and its sources, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
