//! `latency`: from a VM definition renamed into a watched source until a
//! `vm_catalog::Watch` subscriber holds its `added` event, through the real
//! daemon's inotify trigger, its debounce, its rescan, its apply and its
//! fan-out.
//!
//! Cases: `--apply none` at 100 and 10,000 definitions, and
//! `--apply s6-instance` (a real `s6-svscan`, a templated service made by
//! `s6-instance-maker`, instances created down) at 100 and 500. A source
//! root holds at most 4,096 entries, so 10,000 definitions are spread over
//! three sources (`--source dN=…`). A sample renames one prepared
//! definition from a staging directory on the same file system into a
//! source, and times until the watch reports it; it is then renamed back
//! out (that removal's event is waited for, not timed). The first sample
//! of each case is a warm-up.
//!
//! The debounce is shown apart from the work: the daemon runs with
//! `--debounce-ms` [`DEBOUNCE_MS`], so "− debounce" is the median minus
//! it; and after each event the bench asks `GetInfo` for the rescan that
//! made that generation, whose own duration (scan to publish, apply
//! included) is the "rescan" column. The count of inotify watches the
//! daemon holds (one line per watch in its inotify descriptor's `fdinfo`)
//! is printed per case.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vm_catalog::{BlockingClient, Watch, WatchEvent};
use vm_catalog_protocol::{ChangeItem, ChangeKind, RescanTrigger};
use vm_catalog_tests::Tree;
use vm_catalog_tests::s6::InstanceScan;

use crate::daemon::{Killed, workspace_bin};
use crate::raw::RawClient;
use crate::stats::{Runs, us};

/// The daemon's debounce, in ms.
const DEBOUNCE_MS: u64 = 50;
/// Definitions per source root (a root holds at most 4,096 entries).
const PER_SOURCE: usize = 4_000;
/// How long one sample's event may take before the suite fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The applier of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apply {
    None,
    Instance,
}

impl Apply {
    fn name(self) -> &'static str {
        match self {
            Apply::None => "none",
            Apply::Instance => "s6-instance",
        }
    }
}

/// The cases, in table order, with each one's target over the debounce.
const CASES: [(Apply, usize, Option<f64>); 4] = [
    (Apply::None, 100, None),
    (Apply::None, 10_000, Some(5.0)),
    (Apply::Instance, 100, None),
    (Apply::Instance, 500, Some(20.0)),
];

/// One case's figures, in ms.
#[derive(Default)]
struct Row {
    total: Runs,
    over: Runs,
    rescan: Runs,
    watches: usize,
    sources: usize,
    scopes: Vec<String>,
}

/// Runs the suite and prints its table.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    let samples = if quick { 4 } else { 21 };
    println!(
        "latency: a definition renamed into a watched source until a vm_catalog::Watch \
         subscriber holds its `added` event; vm-catalogd --debounce-ms {DEBOUNCE_MS}; \
         {} timed samples per case after 1 warm-up; ms, median [min-max]; \"- debounce\": \
         the median minus {DEBOUNCE_MS} ms; \"rescan\": that generation's rescan as GetInfo \
         reports it (scan to publish, apply included)",
        samples - 1
    );
    println!(
        "  {:<12} {:>6} {:>7} {:>8} {:>24} {:>11} {:>24}  rescans told",
        "apply", "defs", "sources", "watches", "file to event", "- debounce", "rescan"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut targets = Vec::new();
    for (apply, defs, target) in CASES {
        if apply == Apply::Instance && vm_catalog_tests::which("s6-instance-maker").is_none() {
            println!(
                "  {:<12} {defs:>6}  SKIP: s6-instance tools not installed (Debian package s6)",
                apply.name()
            );
            continue;
        }
        let row = measure(&rt, apply, defs, samples)?;
        let whole = row.scopes.iter().filter(|s| *s == "whole").count();
        let scopes = format!(
            "{whole} whole, {} naming what changed",
            row.scopes.len() - whole
        );
        println!(
            "  {:<12} {defs:>6} {:>7} {:>8} {:>24} {:>10.2} {:>24}  {}",
            apply.name(),
            row.sources,
            row.watches,
            row.total.show(2),
            row.over.median(),
            row.rescan.show(2),
            scopes
        );
        if let Some(t) = target {
            targets.push((apply, defs, t, row.over.median()));
        }
    }
    for (apply, defs, t, got) in targets {
        println!(
            "target: file to event within debounce + {t} ms, --apply {}, {defs} definitions: \
             debounce + {got:.2} ms, {}",
            apply.name(),
            if got <= t { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

/// One case on a fresh daemon.
fn measure(
    rt: &tokio::runtime::Runtime,
    apply: Apply,
    defs: usize,
    samples: usize,
) -> Result<Row, String> {
    let tree = Tree::new();
    tree.dir("builtin");
    tree.dir("staging");
    let sources = defs.div_ceil(PER_SOURCE).max(1);
    let source = |i: usize| format!("d{}", i % sources);
    for s in 0..sources {
        tree.dir(source(s));
    }
    for i in 0..defs {
        tree.vm(source(i), &format!("vm{i:05}"));
    }
    for i in 0..samples {
        tree.vm("staging", &format!("lat{i:03}"));
    }
    let scan = match apply {
        Apply::None => None,
        Apply::Instance => Some(InstanceScan::start(|_| {}).ok_or("s6-instance tools missing")?),
    };
    let run = tempfile::tempdir().map_err(|e| e.to_string())?;
    let socket = run.path().join("socket");
    let log_path = run.path().join("daemon.log");
    let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(workspace_bin("vm-catalogd")?);
    cmd.arg("--socket")
        .arg(&socket)
        .arg("--builtin")
        .arg(tree.join("builtin"))
        .args(["--no-partitions", "--log-level", "info"])
        .args(["--apply", apply.name()])
        .args(["--debounce-ms", &DEBOUNCE_MS.to_string()])
        .arg("--state-dir")
        .arg(run.path().join("state"))
        .arg("--vm-dir")
        .arg(run.path().join("vm"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: between fork and exec only one raw prctl system call, which
    // is async-signal-safe: if the bench dies, the daemon stops too.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
                .map_err(Into::into)
        });
    }
    for s in 0..sources {
        cmd.arg("--source")
            .arg(format!("{}={}", source(s), tree.join(source(s)).display()));
    }
    if let Some(scan) = &scan {
        cmd.arg("--instance-service").arg(&scan.service);
    }
    let daemon = Killed(cmd.spawn().map_err(|e| format!("vm-catalogd: {e}"))?);
    wait_ready(&socket, Duration::from_secs(600))?;

    let (tx, events) = mpsc::channel::<(Instant, String, ChangeKind)>();
    let endpoint = socket.clone();
    let watcher = rt.spawn(async move {
        let mut watch = Watch::new(endpoint);
        loop {
            let Ok(event) = watch.next().await else {
                return;
            };
            let t = Instant::now();
            let changes = match event {
                WatchEvent::Changes { changes, .. } | WatchEvent::Reset { changes, .. } => changes,
                _ => continue,
            };
            for c in changes {
                if let ChangeItem::Vm(e) = c.item
                    && tx.send((t, e.name.to_string(), c.kind)).is_err()
                {
                    return;
                }
            }
        }
    });
    let mut client = BlockingClient::connect(&socket).map_err(|e| e.to_string())?;
    let wait = |name: &str, kind: ChangeKind| -> Result<Instant, String> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok((t, n, k)) if n == name && k == kind => return Ok(t),
                Ok(_) => continue,
                Err(_) => return Err(format!("no {kind:?} event for {name}")),
            }
        }
    };
    // The initial snapshot's entries.
    wait(&format!("vm{:05}", defs - 1), ChangeKind::Added)?;

    let mut row = Row {
        sources,
        ..Row::default()
    };
    for i in 0..samples {
        let name = format!("lat{i:03}");
        let from = tree.join("staging").join(&name);
        let to = tree.join(source(i)).join(&name);
        let t0 = Instant::now();
        fs::rename(&from, &to).map_err(|e| e.to_string())?;
        let t = wait(&name, ChangeKind::Added)?;
        let info = client.info().map_err(|e| e.to_string())?;
        let ms = (t - t0).as_secs_f64() * 1e3;
        if i > 0 {
            row.total.push(ms);
            row.over.push(ms - DEBOUNCE_MS as f64);
            if let Some(r) = info.last_rescan
                && r.trigger == RescanTrigger::Watch
            {
                row.rescan
                    .push(us(Duration::from_micros(r.duration_us)) / 1e3);
            }
        }
        fs::rename(&to, &from).map_err(|e| e.to_string())?;
        wait(&name, ChangeKind::Removed)?;
        if i == 0 {
            // The watches are added after each rescan, by the inotify task:
            // counted once their number stays put.
            row.watches = settled_watch_count(daemon.0.id());
        }
    }
    watcher.abort();
    drop(daemon);
    row.scopes = scopes(&log_path);
    drop(scan);
    Ok(row)
}

/// What each inotify-triggered rescan was told changed (the `changed`
/// field of its `rescan` span in the daemon's log): `whole`, or the
/// definitions and source entries the events named. (Until rescans are
/// incremental, every rescan still reads everything whatever it was told.)
fn scopes(log: &Path) -> Vec<String> {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("rescan{trigger=\"watch\"") && l.contains("rescan done"))
        .filter_map(|l| {
            let rest = &l[l.find(" changed=")? + " changed=".len()..];
            Some(rest.split([' ', '}']).next()?.to_owned())
        })
        .collect()
}

/// Waits until the daemon answers a `Hello` (after its first scan and apply).
fn wait_ready(socket: &Path, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match RawClient::connect(socket) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("the daemon did not start: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The inotify watches process `pid` holds: one `inotify wd:` line per
/// watch in the `fdinfo` of each of its inotify descriptors.
fn watch_count(pid: u32) -> usize {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify"))
        .filter_map(|fd| {
            fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()
        })
        .map(|text| {
            text.lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

/// [`watch_count`] once it has not changed for a second (at most a minute).
fn settled_watch_count(pid: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = watch_count(pid);
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = watch_count(pid);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}
