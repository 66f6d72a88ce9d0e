//! `rescan`: scan + merge time of an untrusted directory source with 10 to
//! 10,000 definitions, cold (into an empty catalog) and unchanged (the
//! common rescan: nothing changed, the generation stays), against a bare
//! `readdir` + `fstatat` walk of the same tree measured in the same run;
//! then one definition changed, incremental against whole
//! (`rescan_incr.rs`).

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Dir, Mode, OFlags};
use vm_catalog_protocol::{Epoch, SourceLabel, Trust};
use vm_catalog_tests::Tree;
use vm_catalogd::catalog::{Catalog, merge};
use vm_catalogd::definition::{ScanOptions, scan_source};
use vm_catalogd::source::SourceSpec;
use vm_catalogd::views;

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

/// Median, min and max of a few runs.
pub(crate) struct Stats {
    pub(crate) median: Duration,
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

pub(crate) fn measure(runs: usize, mut f: impl FnMut()) -> Stats {
    f(); // warm up caches
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    Stats {
        median: t[t.len() / 2],
        min: t[0],
        max: t[t.len() - 1],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn show(s: &Stats) -> String {
    format!("{:8.2} {:8.2} {:8.2}", ms(s.median), ms(s.min), ms(s.max))
}

/// `n` definitions like Spectrum's: `vmlinux`, `blk/root.img`, and every
/// other one with `providers/net/netvm` (a `netvm` is defined too).
fn build(n: usize) -> Tree {
    let t = Tree::new();
    t.vm("src", "netvm");
    for i in 1..n {
        let name = format!("vm{i:05}");
        t.vm("src", &name);
        if i % 2 == 0 {
            t.provider("src", &name, "netvm");
        }
    }
    t
}

fn open_dir(at: impl rustix::fd::AsFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The baseline: the fewest syscalls that see the same files — readdir of
/// every directory and one `fstatat` per entry, no checks, no allocation
/// beyond the names. Returns the number of entries seen.
fn bare_walk(dir: &Path) -> rustix::io::Result<usize> {
    fn walk(fd: OwnedFd, depth: usize) -> rustix::io::Result<usize> {
        let mut d = Dir::new(fd)?;
        let mut names = Vec::new();
        while let Some(e) = d.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        let dfd = d.fd()?;
        let mut seen = names.len();
        for n in names {
            let n = OsStr::from_bytes(&n);
            let st = rustix::fs::statat(dfd, n, AtFlags::SYMLINK_NOFOLLOW)?;
            if depth < 3 && rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() {
                seen += walk(open_dir(dfd, n)?, depth + 1)?;
            }
        }
        Ok(seen)
    }
    walk(open_dir(rustix::fs::CWD, dir.as_os_str())?, 0)
}

/// The file system a path is on, for the table's title: readdir and lookup
/// costs are the file system's.
pub(crate) fn fs_name(p: &Path) -> String {
    match rustix::fs::statfs(p).map(|s| s.f_type as u64) {
        Ok(0xef53) => "ext4".into(),
        Ok(0x0102_1994) => "tmpfs".into(),
        Ok(0x9123_683e) => "btrfs".into(),
        Ok(0x5846_5342) => "xfs".into(),
        Ok(0x794c_7630) => "overlayfs".into(),
        Ok(0xe0f5_e1e2) => "erofs".into(),
        Ok(t) => format!("fs type {t:#x}"),
        Err(e) => format!("unknown fs ({e})"),
    }
}

/// Runs the suite and prints its table; an error if the catalog does not
/// come out as expected (every definition active, nothing changed).
pub(crate) fn run(quick: bool) -> Result<(), String> {
    let probe = Tree::new();
    println!(
        "rescan: one untrusted directory source on {} ({}); times in ms (median min max)",
        fs_name(probe.path()),
        std::env::temp_dir().display()
    );
    println!(
        "{:>6}  {:>26}  {:>26}  {:>26}  {:>6}  {:>8}  {:>26}  {:>26}",
        "defs",
        "baseline readdir+fstatat",
        "scan+merge, cold",
        "scan+merge, no change",
        "ratio",
        "us/def",
        "views: sync (read back)",
        "views: Views::sync"
    );
    let label = SourceLabel::try_from("bench").map_err(|e| e.to_string())?;
    for n in SIZES {
        let runs = match (quick, n) {
            (true, _) => 3,
            (false, 10_000) => 5,
            (false, _) => 11,
        };
        let tree = build(n);
        let spec = SourceSpec::directory(label.clone(), tree.join("src"), Trust::Untrusted);
        let opts = ScanOptions {
            max_source_entries: 20_000,
            ..ScanOptions::default()
        };
        let vm_dir = tree.join("run/vm");
        let empty = Catalog::empty(Epoch(1));
        let scan_merge = |prev: &Catalog| merge(prev, vec![scan_source(&spec, &opts)], &vm_dir);

        let src = tree.join("src");
        let seen = bare_walk(&src).map_err(|e| format!("baseline walk: {e}"))?;
        if seen < 4 * n {
            return Err(format!(
                "the baseline walk saw {seen} entries for {n} definitions"
            ));
        }
        let baseline = measure(runs, || {
            std::hint::black_box(bare_walk(&src).ok());
        });
        let cold = measure(runs, || {
            let d = scan_merge(&empty);
            std::hint::black_box(empty.successor(d));
        });
        let (current, _) = empty
            .successor(scan_merge(&empty))
            .ok_or("no first generation")?;
        if current.active().count() != n {
            return Err(format!(
                "{} of {n} definitions active",
                current.active().count()
            ));
        }
        let mut changed = false;
        let unchanged = measure(runs, || {
            let d = scan_merge(&current);
            changed |= current.successor(d).is_some();
        });
        if changed {
            return Err("an unchanged rescan changed the catalog".into());
        }
        let mut remembered = views::Views::new(&vm_dir);
        let report = remembered.sync(current.active());
        if let Some(e) = report.errors.first() {
            return Err(format!("views: {e}"));
        }
        let mut rewritten = false;
        let view_read = measure(runs, || {
            let r = views::sync(&vm_dir, current.active());
            rewritten |= r.unchanged.len() != n;
        });
        let view_mem = measure(runs, || {
            let r = remembered.sync(current.active());
            rewritten |= r.unchanged.len() != n;
        });
        if rewritten {
            return Err("an unchanged view was rewritten".into());
        }
        println!(
            "{n:>6}  {}  {}  {}  {:>6.2}  {:>8.2}  {}  {}",
            show(&baseline),
            show(&cold),
            show(&unchanged),
            unchanged.median.as_secs_f64() / baseline.median.as_secs_f64(),
            unchanged.median.as_secs_f64() * 1e6 / n as f64,
            show(&view_read),
            show(&view_mem),
        );
    }
    println!(
        "ratio: no-change scan+merge / baseline (medians); us/def: no-change median per definition"
    );
    crate::rescan_incr::run(quick)
}
