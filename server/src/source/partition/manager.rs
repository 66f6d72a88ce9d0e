//! The partition manager: level-triggered reconciliation of what is mounted
//! with what sysfs and the partition tables say, and the release of
//! partitions that went away.
//!
//! [`PartitionManager::reconcile`] re-derives the wanted set from sysfs,
//! mounts what is new, and marks as [`Presence::Gone`] what is mounted but
//! no longer wanted. Gone partitions stay mounted until
//! [`PartitionManager::release_removed`], which the daemon calls once the
//! catalog and the service database stopped using them; they keep being
//! reported as `Gone` (so their VMs show as unavailable) until the same
//! partition comes back or [`PartitionManager::forget_released`] is called.
//! Failures are diagnostics on the source ([`Presence::Failed`]), retried at
//! every reconcile; nothing here fails the daemon.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vm_catalog_protocol::{DiagCode, Diagnostic, Severity, SourceKind, SourceLabel, Trust};

use super::config::{ExtSource, PartitionConfig};
use super::discover::{Candidate, Refusal, diag, discover, error_chain};
use super::ext::{ExtSpec, ExtSpecError, ext_from_cmdline_file};
use super::guid::Guid;
use super::host::{BlockHost, MountEntry, Unmounted};
use super::mount::mount_candidate;
use super::mountpoint::{prepare_base, remove_target};
use super::sysfs::{self, DevId};
use super::system::SystemHost;
use crate::source::{Presence, SourceSpec};

// The daemon moves the manager into its rescan worker thread.
const _: () = {
    const fn send<T: Send>() {}
    send::<PartitionManager<SystemHost>>();
};

/// Where the VM definitions are on a user partition.
pub const DATA_DIR: &str = "svc/data";

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Mounted,
    Gone { released: bool },
}

/// A partition the manager mounted.
#[derive(Debug, Clone)]
struct Tracked {
    label: SourceLabel,
    name: String,
    device: PathBuf,
    dev: DevId,
    diskseq: Option<u64>,
    partuuid: Option<Guid>,
    target: PathBuf,
    read_only: bool,
    state: State,
    diagnostics: Vec<Diagnostic>,
}

impl Tracked {
    /// The same device, to be mounted the same way (a change of attribute
    /// 60 needs a new mount).
    fn same_device(&self, c: &Candidate) -> bool {
        self.name == c.name
            && self.dev == c.dev
            && self.diskseq == c.diskseq
            && self.partuuid == c.partuuid
            && self.read_only == c.read_only
    }

    fn spec(&self) -> SourceSpec {
        SourceSpec {
            label: self.label.clone(),
            kind: SourceKind::Partition,
            trust: Trust::Untrusted,
            root: self.target.join(DATA_DIR),
            device: Some(self.device.clone()),
            partuuid: self.partuuid.map(|g| g.to_string()),
            read_only: self.read_only,
            presence: match self.state {
                State::Mounted => Presence::Present,
                State::Gone { .. } => Presence::Gone,
            },
            diagnostics: self.diagnostics.clone(),
        }
    }
}

/// Finds, mounts and releases user partitions. Generic over the privileged
/// operations ([`BlockHost`]) so that its logic is tested without root.
#[derive(Debug)]
pub struct PartitionManager<H: BlockHost = SystemHost> {
    config: PartitionConfig,
    host: H,
    ext: Option<Result<ExtSpec, ExtSpecError>>,
    /// By mount key (PARTUUID).
    tracked: BTreeMap<String, Tracked>,
}

impl PartitionManager<SystemHost> {
    /// A manager doing real mounts. Reads `ext=` now (the command line does
    /// not change); an unreadable command-line file is logged and means no `ext=`.
    pub fn new(config: PartitionConfig) -> PartitionManager<SystemHost> {
        let host = SystemHost::new(config.dev_root.clone());
        PartitionManager::with_host(config, host)
    }
}

impl<H: BlockHost> PartitionManager<H> {
    /// A manager over the given host operations.
    pub fn with_host(config: PartitionConfig, host: H) -> PartitionManager<H> {
        let value = match &config.ext {
            ExtSource::None => None,
            ExtSource::Value(v) => Some(v.clone()),
            ExtSource::Cmdline(path) => ext_from_cmdline_file(path).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the kernel command line");
                None
            }),
        };
        PartitionManager {
            ext: value.map(|v| v.parse()),
            config,
            host,
            tracked: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &PartitionConfig {
        &self.config
    }

    /// The host operations.
    pub fn host(&self) -> &H {
        &self.host
    }

    /// Re-derives the wanted partitions from sysfs and the partition tables,
    /// mounts the new ones, marks the removed ones `Gone`, and returns every
    /// partition source: the primary (`user`) first, then by label. Blocking.
    pub fn reconcile(&mut self) -> Vec<SourceSpec> {
        let snap = match sysfs::snapshot(&self.config.sysfs_root) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read sysfs: keeping the partitions as they are");
                return self.specs(Vec::new());
            }
        };
        let found = discover(&self.host, &self.config, &snap, self.ext.as_ref());
        let mounts = self.host.mounts().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the mount table");
            Vec::new()
        });
        self.drop_vanished_mounts(&mounts);

        // Mounted partitions that are no longer wanted.
        for t in self.tracked.values_mut() {
            let wanted = found.candidates.iter().any(|c| t.same_device(c));
            // A table that cannot be read this round (rewritten in place, a
            // read error) says nothing about the partitions the kernel still
            // has: keep them, rather than stop the VMs that run from them.
            let kept = snap
                .partitions
                .get(&t.name)
                .is_some_and(|p| p.dev == t.dev && found.unreadable.contains(&p.disk));
            if t.state == State::Mounted && !wanted && kept {
                tracing::warn!(
                    label = %t.label,
                    device = %t.device.display(),
                    "the partition table cannot be read: keeping the partition as it is"
                );
                continue;
            }
            if t.state == State::Mounted && !wanted {
                tracing::info!(label = %t.label, device = %t.device.display(), "user partition removed");
                t.state = State::Gone { released: false };
            }
        }

        // Those already mounted first: a relabelling (a new primary) frees
        // their old label for a new partition in the same round.
        let (known, new): (Vec<&Candidate>, Vec<&Candidate>) = found
            .candidates
            .iter()
            .partition(|c| self.tracked.get(&c.key).is_some_and(|t| t.same_device(c)));
        let mut failed = found.refusals;
        for c in known.into_iter().chain(new) {
            if let Some(refusal) = self.admit(c, &mounts) {
                failed.push(refusal);
            }
        }
        self.specs(failed)
    }

    /// Brings one wanted partition to `Mounted`, or says why not. `None`
    /// also when it must wait for a removed one to be released.
    fn admit(&mut self, c: &Candidate, mounts: &[MountEntry]) -> Option<Refusal> {
        let label = c.label();
        let intact = self.tracked.get(&c.key).is_some_and(|t| {
            t.same_device(c)
                && (t.state == State::Mounted || t.state == (State::Gone { released: false }))
        });
        if intact {
            // Still there, or back before it was released: its mount is
            // intact. A new label (it became the primary, or stopped being
            // it) only once no other partition holds that label: e.g. a
            // removed primary keeps `user` until it is released.
            let free = self.take_label(&c.key, &label);
            let t = self.tracked.get_mut(&c.key).expect("intact");
            t.state = State::Mounted;
            if free {
                t.label = label;
            }
            t.diagnostics = c.warnings.clone();
            return None;
        }
        if self
            .tracked
            .get(&c.key)
            .is_some_and(|t| t.state == (State::Gone { released: false }))
        {
            tracing::info!(
                key = c.key,
                "waiting for the removed partition to be released"
            );
            return None;
        }
        if !self.take_label(&c.key, &label) {
            return None;
        }
        let target = self.config.mount_base.join(&c.key);
        let device = self.config.dev_root.join(&c.devname);
        let result = prepare_base(&self.config.mount_base)
            .map_err(|e| {
                diag(
                    DiagCode::MountFailed,
                    Severity::Error,
                    self.config.mount_base.display().to_string(),
                    format!("mount base unusable: {}", error_chain(&e)),
                )
            })
            .and_then(|()| mount_candidate(&self.host, &self.config, c, &target, mounts));
        match result {
            Ok(()) => {
                tracing::info!(%label, device = %device.display(), target = %target.display(), read_only = c.read_only, "user partition mounted");
                self.tracked.insert(
                    c.key.clone(),
                    Tracked {
                        label,
                        name: c.name.clone(),
                        device,
                        dev: c.dev,
                        diskseq: c.diskseq,
                        partuuid: c.partuuid,
                        target,
                        read_only: c.read_only,
                        state: State::Mounted,
                        diagnostics: c.warnings.clone(),
                    },
                );
                None
            }
            Err(d) => {
                tracing::warn!(%label, device = %device.display(), code = %d.code, message = d.message, "user partition not mounted");
                Some(Refusal {
                    label,
                    device: Some(device),
                    partuuid: c.partuuid,
                    diagnostic: d,
                })
            }
        }
    }

    /// Whether the partition `key` may take `label`. A released removed
    /// partition holding it gives it up (and leaves the list); any other
    /// holder keeps it, until it is released or relabelled, so that no two
    /// sources ever share a label (the catalog would ignore one of them).
    fn take_label(&mut self, key: &str, label: &SourceLabel) -> bool {
        let holders: Vec<String> = self
            .tracked
            .iter()
            .filter(|(k, t)| t.label == *label && k.as_str() != key)
            .map(|(k, _)| k.clone())
            .collect();
        for k in holders {
            if self.tracked[&k].state == (State::Gone { released: true }) {
                self.tracked.remove(&k);
            } else {
                tracing::info!(%label, key, "label still held by another partition");
                return false;
            }
        }
        true
    }

    /// A mounted partition whose mount vanished (unmounted behind our back)
    /// is forgotten, so that it is mounted again.
    fn drop_vanished_mounts(&mut self, mounts: &[MountEntry]) {
        self.tracked.retain(|_, t| {
            let present = mounts.iter().any(|m| m.dev == t.dev && m.mount_point == t.target);
            if t.state == State::Mounted && !present {
                tracing::warn!(label = %t.label, target = %t.target.display(), "mount vanished; mounting again");
                return false;
            }
            true
        });
    }

    fn specs(&self, failed: Vec<Refusal>) -> Vec<SourceSpec> {
        let mut out: Vec<SourceSpec> = self.tracked.values().map(Tracked::spec).collect();
        for r in failed {
            if out.iter().any(|s| s.label == r.label) {
                continue; // e.g. a duplicate of a mounted partition; the mounted one wins
            }
            out.push(SourceSpec {
                label: r.label,
                kind: SourceKind::Partition,
                trust: Trust::Untrusted,
                root: PathBuf::new(),
                device: r.device,
                partuuid: r.partuuid.map(|g| g.to_string()),
                read_only: false,
                presence: Presence::Failed,
                diagnostics: vec![r.diagnostic],
            });
        }
        // The primary, then by PARTUUID, then disks whose table is refused.
        out.sort_by_key(|s| {
            let l = s.label.as_str();
            (
                l != super::discover::PRIMARY_LABEL,
                l.starts_with("disk-"),
                s.label.clone(),
            )
        });
        out
    }

    /// Unmounts every partition marked `Gone` (lazily when busy) and removes
    /// its mount point. Call it after the catalog and the service database
    /// stopped using them. Returns whether anything was released; then a
    /// replacement that waited for it is mounted by the next reconcile.
    pub fn release_removed(&mut self) -> bool {
        let mut any = false;
        for t in self.tracked.values_mut() {
            if t.state != (State::Gone { released: false }) {
                continue;
            }
            match self.host.unmount(&t.target) {
                Ok(how) => {
                    if how == Unmounted::Detached {
                        tracing::warn!(target = %t.target.display(), "busy: detached lazily");
                    }
                    if let Err(e) = remove_target(&t.target) {
                        tracing::warn!(target = %t.target.display(), error = %e, "cannot remove the mount point");
                    }
                    tracing::info!(label = %t.label, target = %t.target.display(), "user partition released");
                    t.state = State::Gone { released: true };
                    any = true;
                }
                Err(e) => {
                    tracing::warn!(target = %t.target.display(), error = %e, "unmount failed");
                    t.diagnostics.push(diag(
                        DiagCode::MountFailed,
                        Severity::Warning,
                        t.target.display().to_string(),
                        format!("unmount failed: {e}"),
                    ));
                }
            }
        }
        any
    }

    /// Stops reporting released partitions (their VMs leave the catalog).
    pub fn forget_released(&mut self) {
        self.tracked
            .retain(|_, t| t.state != State::Gone { released: true });
    }

    /// Marks every mounted partition `Gone` and releases it (daemon shutdown).
    pub fn unmount_all(&mut self) {
        for t in self.tracked.values_mut() {
            if t.state == State::Mounted {
                t.state = State::Gone { released: false };
            }
        }
        self.release_removed();
    }
}

#[cfg(test)]
mod tests;
