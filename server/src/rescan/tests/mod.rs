//! The differential test of incremental rescans: random sequences of
//! changes to three directory sources, each followed by a rescan told only
//! the [`Dirty`] set those changes' watch events marked (through the real
//! [`Dirty::mark`] and the real scopes of the last rescan's watch targets,
//! `world.rs`), compared after every step with a whole rescan of the same
//! tree by a second pipeline that has seen the same history: the
//! published catalog and change batch, the views on disk, the apply
//! request and the directories to watch must be the same. Shrinking gives
//! a minimal failing sequence. A second run drops events at random (the
//! overflow path: the whole set is marked).

mod world;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use tokio::sync::watch;
use vm_catalog_protocol::{Epoch, RescanTrigger};

use super::{Pipeline, RealPipeline, RescanResult};
use crate::apply::none::NoneApplier;
use crate::apply::{Applier, ApplyReport, ApplyRequest, ServiceName};
use crate::catalog::{Layout, MergeOptions, Names};
use crate::definition::ScanOptions;
use crate::definition::watch_targets::{Dirty, WatchSet};
use crate::publish::Hub;
use world::{NAMES, SOURCES, World};

/// The `none` applier, giving each VM a service named after it, and
/// keeping the last request.
struct Recording {
    last: Arc<Mutex<Option<ApplyRequest>>>,
}

impl Applier for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn apply(&mut self, request: &ApplyRequest) -> ApplyReport {
        *self.last.lock().unwrap() = Some(request.clone());
        let mut report = NoneApplier::new().apply(request);
        report.services = request
            .vms
            .iter()
            .map(|v| (v.name.clone(), ServiceName::from(v.name.clone())))
            .collect();
        report
    }
}

/// One pipeline, its views and what it published.
struct Side {
    pipeline: RealPipeline,
    hub: Arc<Hub>,
    vm_dir: PathBuf,
    last: Arc<Mutex<Option<ApplyRequest>>>,
    watched: watch::Receiver<Arc<WatchSet>>,
}

/// How the catalog names VMs and lays out views, for one sequence.
#[derive(Debug, Clone, Copy)]
struct Mode {
    names: Names,
    layout: Layout,
    cross_source: bool,
}

impl Side {
    fn new(world: &World, name: &str, mode: Mode) -> Side {
        let base = world.dir.path().join(name);
        std::fs::create_dir_all(&base).unwrap();
        let vm_dir = base.join("vm");
        let merge = MergeOptions {
            names: mode.names,
            layout: mode.layout,
            vm_dir: vm_dir.clone(),
            cross_source_providers: mode.cross_source,
        };
        let scan = ScanOptions {
            trusted_prefixes: vec![world.img()],
            max_source_entries: 3,
            ..ScanOptions::default()
        };
        let hub = Hub::new(Epoch(7));
        let (tx, watched) = watch::channel(Arc::new(WatchSet::default()));
        let last = Arc::new(Mutex::new(None));
        let applier = Box::new(Recording { last: last.clone() });
        let pipeline = RealPipeline::of_directories(
            world.specs(),
            scan,
            merge,
            (base.join("vm-ids"), 42),
            applier,
            (hub.clone(), tx),
        );
        Side {
            pipeline,
            hub,
            vm_dir,
            last,
            watched,
        }
    }

    fn rescan(&mut self, dirty: &Dirty) -> RescanResult {
        self.pipeline
            .rescan_changed(RescanTrigger::Watch, dirty)
            .expect("a rescan")
    }

    /// `s` with this side's VM directory written `<vm>`.
    fn norm(&self, s: String) -> String {
        s.replace(self.vm_dir.to_str().unwrap(), "<vm>")
    }

    /// What the two sides must agree on after a rescan that gave `r`.
    fn seen(&self, r: &RescanResult) -> Vec<(&'static str, String)> {
        let p = self.hub.current();
        vec![
            ("changes", self.norm(format!("{:#?}", r.changes))),
            ("cursor", format!("{:?}", p.cursor)),
            ("vms", self.norm(format!("{:#?}", p.vms))),
            ("sources", self.norm(format!("{:#?}", p.sources))),
            ("views", self.norm(tree(&self.vm_dir))),
            (
                "request",
                self.norm(format!("{:#?}", self.last.lock().unwrap())),
            ),
            ("watch", format!("{:#?}", self.watched.borrow().targets)),
        ]
    }
}

/// Every file, directory and link under `dir`, with link targets and file
/// contents, in order.
fn tree(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = rd.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if meta.is_symlink() {
            let to = std::fs::read_link(&p).unwrap();
            out.push_str(&format!("{name} -> {}\n", to.display()));
        } else if meta.is_dir() {
            out.push_str(&format!("{name}/\n"));
            for line in tree(&p).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            out.push_str(&format!("{name}: {text:?}\n"));
        }
    }
    out
}

/// A change to the tree; indices pick a source and a name.
#[derive(Debug, Clone)]
enum Op {
    /// A definition with a kernel and a disk.
    Add(usize, usize),
    Remove(usize, usize),
    /// A definition moved, within a source or to another.
    Rename((usize, usize), (usize, usize)),
    /// A new kernel.
    Kernel(usize, usize),
    /// The kernel as a link into the trusted prefix, to a file that is
    /// there (true) or not (a broken link).
    Link(usize, usize, bool),
    /// `providers/net/<name>` added (true) or removed.
    Provider(usize, usize, usize, bool),
    /// A plain file in the root, not a definition.
    Junk(usize, usize),
    /// The source's root moved away.
    Gone(usize),
    /// The source's root back (or made empty).
    Back(usize),
}

impl Op {
    fn run(&self, w: &mut World) {
        let def = |w: &World, s: usize, n: usize| w.root(s).join(NAMES[n]);
        match *self {
            Op::Add(s, n) => {
                let d = def(w, s, n);
                w.mkdir(&d);
                w.write_kernel(&d.join("vmlinux"));
                w.mkdir(&d.join("blk"));
                w.write(&d.join("blk/root.img"), b"disk");
            }
            Op::Remove(s, n) => w.remove(&def(w, s, n)),
            Op::Rename((s, n), (t, m)) => w.rename(&def(w, s, n), &def(w, t, m)),
            Op::Kernel(s, n) => w.write_kernel(&def(w, s, n).join("vmlinux")),
            Op::Link(s, n, ok) => {
                let to = w.img().join(if ok { "vmlinux" } else { "missing" });
                w.symlink(&to, &def(w, s, n).join("vmlinux"));
            }
            Op::Provider(s, n, p, add) => {
                let d = def(w, s, n);
                if !d.is_dir() {
                    return;
                }
                let file = d.join("providers/net").join(NAMES[p]);
                if add {
                    w.mkdir(&d.join("providers"));
                    w.mkdir(&d.join("providers/net"));
                    w.write(&file, b"");
                } else {
                    w.remove(&file);
                }
            }
            Op::Junk(s, n) => w.write(&def(w, s, n), b"junk"),
            Op::Gone(s) => w.rename(&w.root(s), &w.away(s)),
            Op::Back(s) => {
                w.rename(&w.away(s), &w.root(s));
                w.mkdir(&w.root(s));
            }
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..SOURCES.len();
    let n = 0..NAMES.len();
    prop_oneof![
        4 => (s.clone(), n.clone()).prop_map(|(s, n)| Op::Add(s, n)),
        2 => (s.clone(), n.clone()).prop_map(|(s, n)| Op::Remove(s, n)),
        2 => ((s.clone(), n.clone()), (s.clone(), n.clone())).prop_map(|(a, b)| Op::Rename(a, b)),
        2 => (s.clone(), n.clone()).prop_map(|(s, n)| Op::Kernel(s, n)),
        2 => (s.clone(), n.clone(), any::<bool>()).prop_map(|(s, n, ok)| Op::Link(s, n, ok)),
        4 => (s.clone(), n.clone(), n.clone(), any::<bool>())
            .prop_map(|(s, n, p, add)| Op::Provider(s, n, p, add)),
        1 => (s.clone(), n.clone()).prop_map(|(s, n)| Op::Junk(s, n)),
        1 => s.clone().prop_map(Op::Gone),
        1 => s.prop_map(Op::Back),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(q, spectrum, cross_source)| Mode {
        names: if q { Names::Qualified } else { Names::Plain },
        layout: if spectrum {
            Layout::Spectrum
        } else {
            Layout::Plain
        },
        cross_source,
    })
}

/// Runs `steps` (each an operation, and whether its events were lost),
/// rescanning incrementally on one side and whole on the other after
/// each, and compares them.
fn differential(mode: Mode, steps: &[(Op, bool)]) -> Result<(), TestCaseError> {
    let mut world = World::new();
    let mut inc = Side::new(&world, "inc", mode);
    let mut whole = Side::new(&world, "whole", mode);
    let _ = inc.rescan(&Dirty::Whole);
    let _ = whole.rescan(&Dirty::Whole);
    world.watch(&inc.watched.borrow());
    for (i, (op, lost)) in steps.iter().enumerate() {
        op.run(&mut world);
        let mut dirty = std::mem::take(&mut world.dirty);
        if *lost {
            dirty.mark_whole();
        }
        let a = inc.rescan(&dirty);
        let b = whole.rescan(&Dirty::Whole);
        for ((what, x), (_, y)) in inc.seen(&a).into_iter().zip(whole.seen(&b)) {
            prop_assert_eq!(
                x,
                y,
                "step {} ({:?}, marked {}): {} differ",
                i,
                op,
                dirty,
                what
            );
        }
        world.watch(&inc.watched.borrow());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn an_incremental_rescan_gives_what_a_whole_one_gives(
        mode in mode(),
        ops in proptest::collection::vec(op(), 1..32),
    ) {
        let steps: Vec<(Op, bool)> = ops.into_iter().map(|o| (o, false)).collect();
        differential(mode, &steps)?;
    }

    #[test]
    fn with_events_lost_an_incremental_rescan_still_gives_what_a_whole_one_gives(
        mode in mode(),
        steps in proptest::collection::vec((op(), proptest::bool::weighted(0.3)), 1..32),
    ) {
        differential(mode, &steps)?;
    }
}
