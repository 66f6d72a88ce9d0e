//! `fanout`: how long a change takes to reach 1, 100 and 1,000 subscribers,
//! and whether one subscriber that never reads slows the others down.
//!
//! The real `vm-catalogd` (catalog only, 100 generated definitions) serves
//! real subscriptions: each reader is a [`vm_catalog::Watch`] (the helper a
//! program uses) in this process's tokio runtime. A sample changes one VM's
//! definition on disk (its network provider, on or off), calls `Rescan` and
//! times, from just before the call, the `Rescan` reply (the baseline: the
//! rescan itself, measured in the same sample), the first and the last
//! subscriber to receive that generation's batch.
//!
//! For each subscriber count, on a fresh daemon, the readers connect and
//! half the samples are taken without the non-reader. Then the non-reader
//! subscribes (a raw connection that never reads) and rescans run until its
//! socket stops filling, i.e. the daemon's sends to it block; the samples
//! with it are taken. Then it disconnects and the other half of the samples
//! without it are taken, so drift hits both alike. The non-reader's effect
//! is compared on last received over the same sample's reply.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use vm_catalog::{Client, Endpoint, Watch, WatchEvent};
use vm_catalog_protocol::Subscribe;

use crate::daemon::{self, Daemon};
use crate::raw::RawClient;
use crate::stats::{Runs, ms};

/// Definitions in the catalog.
const VMS: usize = 100;
/// Subscriber counts measured.
const SUBSCRIBERS: [usize; 3] = [1, 100, 1_000];
/// Samples before the measured ones.
const WARM_UP: usize = 2;
/// Readers connecting at the same time (the daemon's listen backlog is 128).
pub(crate) const CONNECTING: usize = 64;
/// Rescans allowed to fill the non-reader's socket.
const FILL_LIMIT: usize = 5_000;
/// The VM whose definition changes.
const CHANGING: &str = "vm00001";
/// How long a sample may wait for every subscriber.
pub(crate) const SAMPLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a reader task reports.
#[derive(Debug)]
pub(crate) enum Note {
    /// Its first snapshot arrived.
    Synced,
    /// The batch of a generation arrived.
    Got(u64, Instant),
    /// It failed; the suite fails.
    Failed(String),
}

/// Figures of one subscriber count, with or without the non-reader.
#[derive(Debug, Default)]
pub(crate) struct Row {
    pub(crate) reply: Runs,
    pub(crate) first: Runs,
    pub(crate) last: Runs,
    /// Last received over the same sample's reply: the fan-out, free of
    /// drift between the phases.
    pub(crate) ratio: Runs,
}

impl Row {
    /// Adds the samples of `other`.
    fn append(&mut self, other: Row) {
        self.reply.0.extend(other.reply.0);
        self.first.0.extend(other.first.0);
        self.last.0.extend(other.last.0);
        self.ratio.0.extend(other.ratio.0);
    }
}

/// Runs the suite and prints its table.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    let samples: usize = if quick { 3 } else { 11 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!(
        "fanout: vm-catalogd (--apply none) with {VMS} VMs; a sample changes one VM on disk, \
         then calls Rescan; ms from just before the call until the Rescan reply (baseline), \
         the first and the last subscriber get the batch; readers are vm_catalog::Watch in \
         one 2-worker tokio runtime; {samples} samples with the non-reader, {} without it \
         (half before, half after), each set after {WARM_UP} warm-up; median [min-max]",
        2 * samples.div_ceil(2)
    );
    println!(
        "{:>11}  {:<34} {:>22} {:>22} {:>22} {:>18}",
        "subscribers",
        "non-reader",
        "Rescan reply",
        "first received",
        "last received",
        "last/reply"
    );
    let mut effects = Vec::new();
    for n in SUBSCRIBERS {
        let (with, without, blocked) = measure(&rt, n, samples)?;
        for (row, label) in [
            (&without, "none".to_string()),
            (&with, format!("1, blocked after {blocked}")),
        ] {
            println!(
                "{n:>11}  {label:<34} {:>22} {:>22} {:>22} {:>18}",
                row.reply.show(2),
                row.first.show(2),
                row.last.show(2),
                row.ratio.show(2),
            );
        }
        effects.push((n, with.ratio.median() / without.ratio.median()));
    }
    let effects: Vec<String> = effects
        .iter()
        .map(|(n, r)| format!("{n} readers {r:.2}x"))
        .collect();
    println!(
        "last/reply: per sample, last received over the Rescan reply; non-reader effect \
         (median last/reply with it over without it): {}",
        effects.join(", ")
    );
    Ok(())
}

/// One subscriber count on a fresh daemon: with the non-reader, then
/// without; and what filled the non-reader's socket.
fn measure(
    rt: &tokio::runtime::Runtime,
    n: usize,
    samples: usize,
) -> Result<(Row, Row, String), String> {
    let mut daemon = Daemon::new();
    daemon::definitions(&daemon, VMS);
    let args = daemon.catalog_only(n + 8);
    daemon.start(&args)?;
    let socket = daemon.socket();
    rt.block_on(async {
        let admin = Client::connect(&socket).await.map_err(|e| e.to_string())?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut readers = JoinSet::new();
        let gate = Arc::new(Semaphore::new(CONNECTING));
        for _ in 0..n {
            readers.spawn(reader(
                Endpoint::Seqpacket(socket.clone()),
                gate.clone(),
                tx.clone(),
            ));
        }
        for _ in 0..n {
            match tokio::time::timeout(SAMPLE_TIMEOUT, rx.recv()).await {
                Ok(Some(Note::Synced)) => {}
                Ok(Some(Note::Failed(e))) => return Err(format!("a reader failed: {e}")),
                other => return Err(format!("readers did not connect: {other:?}")),
            }
        }
        let half = samples.div_ceil(2);
        let mut without = sample(&daemon, &admin, &mut rx, n, half).await?;
        let silent = silent_subscriber(&socket)?;
        let blocked = fill(&daemon, &admin, &silent).await?;
        let with = sample(&daemon, &admin, &mut rx, n, samples).await?;
        drop(silent);
        wait_subscribers(&admin, n).await?;
        without.append(sample(&daemon, &admin, &mut rx, n, half).await?);
        readers.abort_all();
        while readers.join_next().await.is_some() {}
        Ok((with, without, blocked))
    })
}

/// The non-reader: a raw connection that subscribes and never reads.
fn silent_subscriber(socket: &Path) -> Result<RawClient, String> {
    let mut silent = RawClient::connect(socket).map_err(|e| format!("non-reader: {e}"))?;
    let subscribe = silent
        .request(&Subscribe::default())
        .map_err(|e| e.to_string())?;
    silent.send(&subscribe).map_err(|e| e.to_string())?;
    Ok(silent)
}

/// Rescans with changes until the non-reader's socket stops filling; says
/// after how many rescans and how many bytes.
async fn fill(daemon: &Daemon, admin: &Client, silent: &RawClient) -> Result<String, String> {
    let queued = || silent.socket().queued().map_err(|e| e.to_string());
    let mut last = queued()?;
    let mut still = 0;
    for i in 1..=FILL_LIMIT {
        daemon::toggle_provider(daemon, CHANGING)?;
        admin.rescan(false).await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        let q = queued()?;
        if q == last {
            still += 1;
            if still == 5 {
                return Ok(format!("{i} rescans, {} kB", q / 1000));
            }
        } else {
            still = 0;
            last = q;
        }
    }
    Err(format!(
        "the non-reader's socket still filled after {FILL_LIMIT} rescans"
    ))
}

/// Waits until the daemon counts `n` subscriptions.
async fn wait_subscribers(admin: &Client, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + SAMPLE_TIMEOUT;
    loop {
        let info = admin.info().await.map_err(|e| e.to_string())?;
        if info.subscribers as usize == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{} subscriptions, expected {n}", info.subscribers));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Takes `samples` samples (after the warm-up) with `n` readers.
pub(crate) async fn sample(
    daemon: &Daemon,
    admin: &Client,
    rx: &mut mpsc::UnboundedReceiver<Note>,
    n: usize,
    samples: usize,
) -> Result<Row, String> {
    let mut row = Row::default();
    for i in 0..WARM_UP + samples {
        daemon::toggle_provider(daemon, CHANGING)?;
        let t0 = Instant::now();
        let report = admin.rescan(false).await.map_err(|e| e.to_string())?;
        let reply = t0.elapsed();
        let o = &report.outcome;
        if o.generation == o.generation_before {
            return Err("a rescan after a change made no new generation".into());
        }
        let (mut first, mut last) = (None::<Instant>, t0);
        let mut got = 0;
        while got < n {
            let note = tokio::time::timeout(SAMPLE_TIMEOUT, rx.recv()).await;
            match note {
                Ok(Some(Note::Got(g, at))) if g == o.generation => {
                    got += 1;
                    first = Some(first.map_or(at, |f| f.min(at)));
                    last = last.max(at);
                }
                Ok(Some(Note::Got(..) | Note::Synced)) => {}
                Ok(Some(Note::Failed(e))) => return Err(format!("a reader failed: {e}")),
                _ => {
                    return Err(format!(
                        "{got} of {n} readers got generation {} in {SAMPLE_TIMEOUT:?}",
                        o.generation
                    ));
                }
            }
        }
        if i >= WARM_UP {
            row.reply.push(ms(reply));
            row.first.push(ms(first.unwrap_or(t0) - t0));
            row.last.push(ms(last - t0));
            row.ratio
                .push((last - t0).as_secs_f64() / reply.as_secs_f64());
        }
    }
    Ok(row)
}

/// One reader: a `Watch` that reports its first snapshot and every batch.
/// At most [`CONNECTING`] readers are between connecting and their first
/// snapshot at once.
pub(crate) async fn reader(
    endpoint: Endpoint,
    gate: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Note>,
) {
    let mut permit = gate.acquire_owned().await.ok();
    let mut watch = Watch::new(endpoint);
    loop {
        let note = match watch.next().await {
            Ok(WatchEvent::Reset { reason, .. }) => match permit.take() {
                Some(_) => Note::Synced,
                None => Note::Failed(format!("a reader was reset ({})", reason.as_str())),
            },
            Ok(WatchEvent::Changes { generation, .. }) => Note::Got(generation, Instant::now()),
            Ok(WatchEvent::Resumed { .. }) => continue,
            Ok(WatchEvent::Disconnected { error, .. }) => Note::Failed(error.to_string()),
            Err(e) => Note::Failed(e.to_string()),
        };
        let failed = matches!(note, Note::Failed(_));
        if tx.send(note).is_err() || failed {
            return;
        }
    }
}
