//! `rescan`, second table: one definition changed (its kernel rewritten,
//! so its fingerprint, its entry and its view change) among 10 / 100 /
//! 1,000 / 10,000, in as many untrusted directory sources as it takes (one
//! source root holds at most 4,096 entries: 4,000 each here). The whole
//! rescan of a daemon's rescan worker (scan, merge, views, apply `none`,
//! diff, publish) told only the changed definition, as a watch event
//! names it (incremental), against the same rescan told that anything may
//! have changed (whole), the same change, in the same run.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_catalog_protocol::{Epoch, RescanTrigger, SourceLabel, Trust};
use vm_catalog_tests::Tree;
use vm_catalogd::apply::none::NoneApplier;
use vm_catalogd::catalog::MergeOptions;
use vm_catalogd::definition::ScanOptions;
use vm_catalogd::definition::watch_targets::{Dirty, WatchSet};
use vm_catalogd::publish::Hub;
use vm_catalogd::rescan::{Pipeline, RealPipeline};
use vm_catalogd::source::SourceSpec;

use crate::rescan::{Stats, show};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const PER_SOURCE: usize = 4_000;

/// `n` definitions in sources of at most [`PER_SOURCE`], each source with
/// a `netvm` that every other definition names as its provider; the
/// source specs.
fn build(n: usize) -> (Tree, Vec<SourceSpec>) {
    let t = Tree::new();
    let mut specs = Vec::new();
    for i in 0..n {
        let src = format!("src{}", i / PER_SOURCE);
        if i % PER_SOURCE == 0 {
            t.vm(&src, "netvm");
            let label = SourceLabel::try_from(src.as_str()).expect("a label");
            specs.push(SourceSpec::directory(label, t.join(&src), Trust::Untrusted));
            continue;
        }
        let name = format!("vm{i:05}");
        t.vm(&src, &name);
        if i % 2 == 0 {
            t.provider(&src, &name, "netvm");
        }
    }
    (t, specs)
}

/// A pipeline over `specs`, applier `none`, views under the tree.
fn pipeline(
    t: &Tree,
    specs: Vec<SourceSpec>,
) -> (RealPipeline, tokio::sync::watch::Receiver<Arc<WatchSet>>) {
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(WatchSet::default()));
    let p = RealPipeline::of_directories(
        specs,
        ScanOptions::default(),
        MergeOptions::plain(t.join("run/vm")),
        (t.join("vm-ids"), 1),
        Box::new(NoneApplier::new()),
        (Hub::new(Epoch(1)), tx),
    );
    (p, rx)
}

/// Rewrites the kernel of `def` (a new size each run), then times one
/// rescan told `dirty`; `runs` times after one warm-up. Fails if a rescan
/// did not change exactly that one VM.
fn changes(
    p: &mut RealPipeline,
    def: &std::path::Path,
    dirty: &Dirty,
    runs: usize,
    size: &mut usize,
) -> Result<Stats, String> {
    let mut t = Vec::with_capacity(runs);
    for run in 0..=runs {
        *size += 1;
        std::fs::write(def.join("vmlinux"), vec![b'k'; *size]).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let r = p
            .rescan_changed(RescanTrigger::Watch, dirty)
            .map_err(|e| e.to_string())?;
        let took = start.elapsed();
        if r.changes.len() != 1 {
            return Err(format!(
                "{} changes for one changed kernel",
                r.changes.len()
            ));
        }
        if run > 0 {
            t.push(took);
        }
    }
    t.sort();
    Ok(Stats {
        median: t[t.len() / 2],
        min: t[0],
        max: t[t.len() - 1],
    })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs the table.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    println!(
        "rescan, one definition changed (kernel rewritten): the rescan worker's rescan (scan, merge, views, apply none, diff, publish); sources of at most {PER_SOURCE} definitions; times in ms (median min max)"
    );
    println!(
        "{:>6} {:>7}  {:>26}  {:>26}  {:>9}  {:>10}",
        "defs", "sources", "whole", "incremental", "whole/inc", "inc us"
    );
    for n in SIZES {
        let (inc_runs, whole_runs) = match (quick, n) {
            (true, _) => (3, 3),
            (false, 10_000) => (31, 5),
            (false, _) => (31, 11),
        };
        let (tree, specs) = build(n);
        let sources = specs.len();
        let label = specs.last().map(|s| s.label.clone()).ok_or("no source")?;
        let name = format!("vm{:05}", (sources - 1) * PER_SOURCE + 1);
        let def: PathBuf = specs
            .last()
            .map(|s| s.root.join(&name))
            .ok_or("no source")?;
        let (mut p, _watched) = pipeline(&tree, specs);
        let first = p
            .rescan_changed(RescanTrigger::Startup, &Dirty::Whole)
            .map_err(|e| e.to_string())?;
        if first.changes.len() != n + sources {
            return Err(format!(
                "{} changes at start-up for {n} definitions",
                first.changes.len()
            ));
        }
        let one = Dirty::Entries(BTreeSet::from([(label, OsString::from(name))]));
        let mut size = 0;
        let whole = changes(&mut p, &def, &Dirty::Whole, whole_runs, &mut size)?;
        let inc = changes(&mut p, &def, &one, inc_runs, &mut size)?;
        println!(
            "{n:>6} {sources:>7}  {}  {}  {:>9.0}  {:>10.1}",
            show(&whole),
            show(&inc),
            whole.median.as_secs_f64() / inc.median.as_secs_f64(),
            us(inc.median),
        );
    }
    println!("whole/inc: median whole over median incremental, same change, same run");
    Ok(())
}
