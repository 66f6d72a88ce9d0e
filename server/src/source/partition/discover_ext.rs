//! `ext=` resolution for discovery: the device it names must be exactly
//! one; it becomes the primary partition, replacing discovery for that
//! device (attribute 63 does not apply to a device named explicitly).

use vm_catalog_protocol::DiagCode;

use super::discover::{Candidate, Run, Table, backup_warning, error_chain};
use super::ext::{ExtSpec, ExtSpecError};
use super::host::BlockHost;
use super::superblock::read_ext;
use super::sysfs::{DevId, Disk};

impl<H: BlockHost> Run<'_, H> {
    /// Resolves `ext=` and makes its device the primary candidate.
    pub(super) fn resolve_ext(&mut self, spec: &Result<ExtSpec, ExtSpecError>) {
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
}
