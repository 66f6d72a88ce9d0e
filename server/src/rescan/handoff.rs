//! Where the catalog meets the applier, and only here: the catalog's active
//! set becomes the applier's [`ApplyRequest`], and the applier's
//! [`ApplyReport`] becomes the catalog's own [`Annotations`]. The catalog
//! imports nothing of the appliers, nor they of the catalog.

use std::collections::BTreeMap;

use crate::apply::{ActiveVm, ApplyReport, ApplyRequest};
use crate::catalog::{Annotations, Candidate, Catalog, Draft};

/// The active set as the applier sees it, sorted by name (as `active` is).
fn active_vms<'a>(active: impl Iterator<Item = &'a std::sync::Arc<Candidate>>) -> Vec<ActiveVm> {
    active
        .map(|c| {
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
        })
        .collect()
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
