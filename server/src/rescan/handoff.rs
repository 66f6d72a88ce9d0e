//! Where the catalog meets the applier, and only here: the catalog's active
//! set becomes the applier's [`ApplyRequest`], and the applier's
//! [`ApplyReport`] becomes the catalog's own [`Annotations`]. The catalog
//! imports nothing of the appliers, nor they of the catalog.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::apply::{ActiveVm, ApplyReport, ApplyRequest};
use crate::catalog::{Annotations, Candidate, Catalog, Draft};

/// An active candidate as the applier sees it.
fn active_vm(c: &Candidate) -> ActiveVm {
    let mut providers: Vec<_> = c.entry.providers.iter().map(|p| p.name.clone()).collect();
    providers.sort();
    providers.dedup();
    ActiveVm {
        name: c.entry.name.clone(),
        view: c.view.clone().unwrap_or_default(),
        providers,
        fingerprint: c.definition.fingerprint,
        id: c.id.clone(),
    }
}

/// The active set as the applier sees it, sorted by name (as `active` is).
fn active_vms<'a>(active: impl Iterator<Item = &'a Arc<Candidate>>) -> Vec<ActiveVm> {
    active.map(|c| active_vm(c)).collect()
}

/// The applier's requests, each made from the one before: what the last
/// was made from is kept, and an active candidate that did not change (the
/// same `Arc`) keeps its [`ActiveVm`].
#[derive(Debug, Default)]
pub struct Requests {
    /// The active candidates the last request was made from.
    active: Vec<Arc<Candidate>>,
    /// The last request (before the hooks).
    last: Option<ApplyRequest>,
    /// The generation of the catalog that the last request's active set
    /// became ([`Requests::committed`]): what the next one is made against.
    after: Option<u64>,
}

impl Requests {
    /// [`apply_request`]`(current, draft)`, made from the last request
    /// when that became `current`.
    pub fn next(&mut self, current: &Catalog, draft: &Draft) -> &ApplyRequest {
        let last = self.last.take();
        let request = match (last, draft.touched()) {
            (Some(mut last), Some(touched)) if self.after == Some(current.generation()) => {
                let changed = self.patch_names(&mut last.vms, draft, touched);
                ApplyRequest {
                    generation: current.generation() + u64::from(changed),
                    vms: last.vms,
                }
            }
            (Some(last), None) if self.after == Some(current.generation()) => {
                let active: Vec<Arc<Candidate>> = draft.active().cloned().collect();
                let (vms, changed) = patch(&self.active, last.vms, &active);
                self.active = active;
                ApplyRequest {
                    generation: current.generation() + u64::from(changed),
                    vms,
                }
            }
            _ => {
                self.active = draft.active().cloned().collect();
                apply_request(current, draft)
            }
        };
        self.after = None;
        self.last.insert(request)
    }

    /// Makes `vms` (made for `self.active`) those of `draft`, whose
    /// candidates are those `self.active` was taken from but for the names
    /// `touched`: only those are looked at. Returns whether any VM changed.
    fn patch_names(
        &mut self,
        vms: &mut Vec<ActiveVm>,
        draft: &Draft,
        touched: &std::collections::BTreeSet<vm_catalog_protocol::VmName>,
    ) -> bool {
        let mut changed = false;
        for name in touched {
            let new = draft
                .candidates_of(name.as_str())
                .iter()
                .find(|c| c.entry.state == vm_catalog_protocol::VmState::Active);
            let at = self.active.partition_point(|c| c.entry.name < *name);
            let old = self.active.get(at).filter(|c| c.entry.name == *name);
            match (old, new) {
                (Some(o), Some(n)) if Arc::ptr_eq(o, n) => {}
                (Some(_), Some(n)) => {
                    let vm = active_vm(n);
                    if vm != vms[at] {
                        vms[at] = vm;
                        changed = true;
                    }
                    self.active[at] = n.clone();
                }
                (Some(_), None) => {
                    self.active.remove(at);
                    vms.remove(at);
                    changed = true;
                }
                (None, Some(n)) => {
                    self.active.insert(at, n.clone());
                    vms.insert(at, active_vm(n));
                    changed = true;
                }
                (None, None) => {}
            }
        }
        changed
    }

    /// The draft of the last request became the catalog of `generation`
    /// (or left it as it was).
    pub fn committed(&mut self, generation: u64) {
        self.after = Some(generation);
    }
}

/// The requests' VMs for `new`, made from `vms` (made for `old`): each
/// candidate that is `old`'s keeps its VM. Returns whether any VM changed.
fn patch(
    old: &[Arc<Candidate>],
    mut vms: Vec<ActiveVm>,
    new: &[Arc<Candidate>],
) -> (Vec<ActiveVm>, bool) {
    let mut changed = false;
    let aligned = old.len() == new.len()
        && old
            .iter()
            .zip(new)
            .all(|(a, b)| Arc::ptr_eq(a, b) || a.entry.name == b.entry.name);
    if aligned {
        for (k, (a, b)) in old.iter().zip(new).enumerate() {
            if !Arc::ptr_eq(a, b) {
                let vm = active_vm(b);
                if vm != vms[k] {
                    vms[k] = vm;
                    changed = true;
                }
            }
        }
        return (vms, changed);
    }
    // Names came or went: walk both (sorted by name, one candidate each).
    let mut out = Vec::with_capacity(new.len());
    let mut old_vms = old.iter().zip(vms).peekable();
    for b in new {
        while old_vms
            .next_if(|(a, _)| a.entry.name < b.entry.name)
            .is_some()
        {
            changed = true;
        }
        match old_vms.next_if(|(a, _)| a.entry.name == b.entry.name) {
            Some((a, vm)) if Arc::ptr_eq(a, b) => out.push(vm),
            Some((_, vm)) => {
                let fresh = active_vm(b);
                changed |= fresh != vm;
                out.push(fresh);
            }
            None => {
                changed = true;
                out.push(active_vm(b));
            }
        }
    }
    changed |= old_vms.next().is_some();
    (out, changed)
}

/// What the applier must make live for `draft`, made against `current`:
/// every active VM, sorted by name.
///
/// Its `generation` is `current`'s when the active set (names, views,
/// providers, fingerprints, ids) is `current`'s, else the next one: the
/// generation whose active set this is. (If only other things changed, the
/// published catalog becomes the next generation with the same active set.)
pub fn apply_request(current: &Catalog, draft: &Draft) -> ApplyRequest {
    let vms = active_vms(draft.active());
    let generation = if vms == active_vms(current.active()) {
        current.generation()
    } else {
        current.generation() + 1
    };
    ApplyRequest { generation, vms }
}

/// The applier's report in the catalog's words: each VM's service by its
/// name, the VMs whose restart is pending, and each VM left out of the
/// database with the applier's code and message.
pub fn annotations(report: &ApplyReport) -> Annotations {
    let mut left_out: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for l in &report.left_out {
        left_out
            .entry(l.vm.clone())
            .or_default()
            .push((l.code, l.message.clone()));
    }
    Annotations {
        services: report
            .services
            .iter()
            .map(|(vm, service)| (vm.clone(), service.to_string()))
            .collect(),
        restart_pending: report.restart_pending.clone(),
        left_out,
        warnings: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::Applier;
    use crate::apply::none::NoneApplier;
    use crate::catalog::{MergeOptions, VmIds, merge_with};
    use crate::definition::{ScanOptions, scan_source};
    use crate::source::SourceSpec;
    use vm_catalog_protocol::{DiagCode, Epoch, Trust, VmName};

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (vm, provider) in [("net", None), ("app", Some("net"))] {
            let d = t.path().join("a").join(vm);
            std::fs::create_dir_all(d.join("blk")).unwrap();
            std::fs::write(d.join("vmlinux"), b"k").unwrap();
            std::fs::write(d.join("blk/root.img"), b"d").unwrap();
            if let Some(p) = provider {
                std::fs::create_dir_all(d.join("providers/net")).unwrap();
                std::fs::write(d.join("providers/net").join(p), b"").unwrap();
            }
        }
        t
    }

    fn draft(t: &tempfile::TempDir, current: &Catalog) -> Draft {
        let spec =
            SourceSpec::directory("a".parse().unwrap(), t.path().join("a"), Trust::Untrusted);
        let scans = vec![scan_source(&spec, &ScanOptions::default())];
        let opts = MergeOptions::plain(t.path().join("vm"));
        merge_with(current, scans, &opts, &mut VmIds::new(1))
    }

    #[test]
    fn a_new_active_set_is_the_next_generations_and_an_unchanged_one_the_current() {
        let t = tree();
        let empty = Catalog::empty(Epoch(1));
        let d = draft(&t, &empty);
        let req = apply_request(&empty, &d);
        assert_eq!(req.generation, 1);
        let names: Vec<&str> = req.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["app", "net"]);
        assert_eq!(req.vms[0].view, t.path().join("vm/app/config"));
        assert_eq!(req.vms[0].providers, [VmName::try_from("net").unwrap()]);
        let g1 = empty.successor(d).unwrap().0;
        let again = draft(&t, &g1);
        assert_eq!(apply_request(&g1, &again).generation, 1);
    }

    #[test]
    fn a_report_becomes_the_catalogs_annotations() {
        let t = tree();
        let empty = Catalog::empty(Epoch(1));
        let mut d = draft(&t, &empty);
        let mut report = NoneApplier::new().apply(&apply_request(&empty, &d));
        report.left_out.push(crate::apply::LeftOut {
            vm: "app".parse().unwrap(),
            code: DiagCode::NameTooLong,
            message: "too long".into(),
        });
        report.restart_pending.insert("net".parse().unwrap());
        let notes = annotations(&report);
        assert_eq!(
            notes.left_out[&VmName::try_from("app").unwrap()],
            [(DiagCode::NameTooLong, "too long".to_string())]
        );
        d.annotate(notes);
        let app = d.entries().find(|e| e.name.as_str() == "app").unwrap();
        assert!(
            app.diagnostics
                .iter()
                .any(|x| x.code == DiagCode::NameTooLong)
        );
        let net = d.entries().find(|e| e.name.as_str() == "net").unwrap();
        assert!(net.restart_pending);
    }
}
