//! Discovery: which block devices should be mounted as user partitions.
//!
//! Pure logic over a sysfs snapshot and the devices' own bytes (read through
//! [`Host::open_block`], so pinned and verified): GPT entries of the user
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
use super::host::Host;
use super::superblock::read_ext;
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
    /// Why.
    pub diagnostic: Diagnostic,
}

/// The outcome of one discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// What to mount, primary first.
    pub candidates: Vec<Candidate>,
    /// What is refused.
    pub refusals: Vec<Refusal>,
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

enum Table {
    Gpt(GptTable),
    None,
    Bad(String),
}

struct Run<'a, H: Host> {
    host: &'a H,
    config: &'a PartitionConfig,
    snap: &'a BlockSnapshot,
    tables: HashMap<String, Table>,
    out: Discovery,
}

/// Works out what to mount. `ext` is the parsed `ext=`, if there is one.
pub fn discover<H: Host>(
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

impl<H: Host> Run<'_, H> {
    fn node(&self, devname: &str) -> PathBuf {
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

    fn table(&mut self, disk: &Disk) -> &Table {
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
    fn candidate(
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

    fn refuse_primary(
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

    fn resolve_ext(&mut self, spec: &Result<ExtSpec, ExtSpecError>) {
        let spec = match spec {
            Ok(s) => s,
            Err(e) => {
                self.refuse_primary(DiagCode::AmbiguousExt, None, None, e.to_string());
                return;
            }
        };
        let matches = self.ext_matches(spec);
        let name = match matches.as_slice() {
            [one] => one.clone(),
            [] => {
                let msg = format!("ext={spec} matches no device");
                self.refuse_primary(DiagCode::AmbiguousExt, None, None, msg);
                return;
            }
            many => {
                let nodes: Vec<String> = many
                    .iter()
                    .map(|n| self.node(&self.devname_of(n)).display().to_string())
                    .collect();
                let msg = format!(
                    "ext={spec} matches {} devices: {}",
                    many.len(),
                    nodes.join(", ")
                );
                self.refuse_primary(DiagCode::AmbiguousExt, None, None, msg);
                return;
            }
        };
        // It replaces discovery for this device.
        self.out.candidates.retain(|c| c.name != name);
        if let Some(c) = self.ext_candidate(&name, spec) {
            self.out.candidates.insert(0, c);
        }
    }

    fn devname_of(&self, name: &str) -> String {
        self.snap
            .disks
            .get(name)
            .map(|d| d.devname.clone())
            .or_else(|| self.snap.partitions.get(name).map(|p| p.devname.clone()))
            .unwrap_or_else(|| name.to_owned())
    }

    /// Every device (disk or partition, not empty) with its number and disk.
    fn all_devices(&self) -> Vec<(String, String, DevId, Option<u64>)> {
        let disks = self
            .snap
            .disks
            .values()
            .filter(|d| d.size > 0)
            .map(|d| (d.name.clone(), d.devname.clone(), d.dev, d.diskseq));
        let parts = self
            .snap
            .partitions
            .values()
            .filter(|p| p.size > 0)
            .map(|p| {
                let seq = self.snap.disks.get(&p.disk).and_then(|d| d.diskseq);
                (p.name.clone(), p.devname.clone(), p.dev, seq)
            });
        disks.chain(parts).collect()
    }

    /// Kernel names of the devices `ext=` matches.
    fn ext_matches(&mut self, spec: &ExtSpec) -> Vec<String> {
        let devices = self.all_devices();
        match spec {
            ExtSpec::Node(n) => devices
                .into_iter()
                .filter(|d| &d.1 == n)
                .map(|d| d.0)
                .collect(),
            ExtSpec::Path(p) => match self.host.block_dev_at(&self.node(p)) {
                Ok(Some(dev)) => devices
                    .into_iter()
                    .filter(|d| d.2 == dev)
                    .map(|d| d.0)
                    .collect(),
                Ok(None) => Vec::new(),
                Err(e) => {
                    tracing::debug!(error = %e, "ext= path");
                    Vec::new()
                }
            },
            ExtSpec::PartUuid(g) => {
                let disks: Vec<Disk> = self.snap.disks.values().cloned().collect();
                let mut found = Vec::new();
                for disk in disks {
                    let Table::Gpt(t) = self.table(&disk) else {
                        continue;
                    };
                    let numbers: Vec<u32> = t
                        .entries
                        .iter()
                        .filter(|e| e.part_guid == *g)
                        .map(|e| e.number)
                        .collect();
                    for n in numbers {
                        if let Some(p) = self.snap.partitions_of(&disk.name).find(|p| p.number == n)
                        {
                            found.push(p.name.clone());
                        }
                    }
                }
                found
            }
            ExtSpec::Uuid(_) | ExtSpec::Label(_) => devices
                .into_iter()
                .filter(|(_, devname, dev, seq)| {
                    let Ok(d) = self.host.open_block(devname, *dev, *seq) else {
                        return false;
                    };
                    match (read_ext(&d), spec) {
                        (Ok(Some(sb)), ExtSpec::Uuid(u)) => sb.uuid == *u,
                        (Ok(Some(sb)), ExtSpec::Label(l)) => sb.label == *l,
                        _ => false,
                    }
                })
                .map(|d| d.0)
                .collect(),
        }
    }

    /// The primary candidate for the one device `ext=` matched.
    fn ext_candidate(&mut self, name: &str, spec: &ExtSpec) -> Option<Candidate> {
        if let Some(part) = self.snap.partitions.get(name).cloned() {
            let disk = self.snap.disks.get(&part.disk).cloned();
            if let Some(disk) = disk {
                if let Table::Gpt(t) = self.table(&disk) {
                    let t = t.clone();
                    if let Some(entry) = t.entry(part.number) {
                        let warnings = backup_warning(&t, &self.node(&disk.devname));
                        // Named explicitly: no-auto does not apply.
                        let mut c = self.candidate(&disk, &part, entry, &t, warnings)?;
                        c.primary = true;
                        return Some(c);
                    }
                }
                return self.non_gpt_candidate(
                    &part.name,
                    &part.devname,
                    part.dev,
                    disk.diskseq,
                    spec,
                );
            }
            return None;
        }
        let disk = self.snap.disks.get(name)?.clone();
        self.non_gpt_candidate(&disk.name, &disk.devname, disk.dev, disk.diskseq, spec)
    }

    /// An `ext=` device without a GPT entry: keyed by its ext4 UUID.
    fn non_gpt_candidate(
        &mut self,
        name: &str,
        devname: &str,
        dev: DevId,
        diskseq: Option<u64>,
        spec: &ExtSpec,
    ) -> Option<Candidate> {
        let node = self.node(devname);
        let sb = self
            .host
            .open_block(devname, dev, diskseq)
            .map_err(|e| error_chain(&e))
            .and_then(|d| read_ext(&d).map_err(|e| e.to_string()));
        match sb {
            Ok(Some(sb)) => Some(Candidate {
                name: name.to_owned(),
                devname: devname.to_owned(),
                dev,
                diskseq,
                partuuid: None,
                key: format!("fs-{}", sb.uuid),
                read_only: false,
                primary: true,
                warnings: Vec::new(),
            }),
            Ok(None) => {
                let msg = format!("ext={spec}: {} has no ext4 file system", node.display());
                self.refuse_primary(DiagCode::UnsupportedFilesystem, Some(node), None, msg);
                None
            }
            Err(e) => {
                let msg = format!("ext={spec}: {e}");
                self.refuse_primary(DiagCode::MountFailed, Some(node), None, msg);
                None
            }
        }
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

fn backup_warning(t: &GptTable, node: &std::path::Path) -> Vec<Diagnostic> {
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
#[path = "discover_tests.rs"]
mod tests;
