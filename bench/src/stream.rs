//! `stream`: the UI VM transport (frames back to back on a Unix stream, the
//! host side of a guest's hybrid vsock connection) against the host's
//! `SOCK_SEQPACKET` socket, and against a raw stream echo.
//!
//! Fan-out: for 1 / 100 / 1,000 subscribers, a fresh `vm-catalogd`
//! (catalog only, 100 generated definitions, one of them a UI VM) per
//! transport, the readers `vm_catalog::Watch` tasks on `SOCK_SEQPACKET` or
//! on the UI VM's listener; each sample is [`crate::fanout`]'s (toggle one
//! VM, `Rescan`, time the reply, the first and the last reader to get the
//! batch). The stream's cost is its median last/reply over SEQPACKET's.
//!
//! Ping: p50 of `Ping` (48-byte payload) over the UI VM's listener
//! (`vm_catalog::BlockingClient::connect_stream`) against a raw Unix stream
//! echo process (this binary, re-executed with [`ECHO_ARG`]: a thread per
//! connection, blocking `read` then `write_all` of what it read) moving the
//! same bytes, and `Ping` over `SOCK_SEQPACKET` for comparison; runs of
//! the three are interleaved, and figures are the median [min-max] of the
//! runs' p50.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use vm_catalog::{BlockingClient, Client, Endpoint};
use vm_catalog_protocol::{Ping, message};

use crate::daemon::{self, Daemon};
use crate::fanout::{self, CONNECTING, Note, Row, SAMPLE_TIMEOUT};
use crate::stats::{Runs, percentile, us};

/// The hidden first argument that makes this binary the stream echo server.
pub(crate) const ECHO_ARG: &str = "__stream-echo-server";

/// Definitions in the catalog.
const VMS: usize = 100;
/// Subscriber counts measured.
const SUBSCRIBERS: [usize; 3] = [1, 100, 1_000];
/// The UI VM (one of the generated definitions; not the one that changes).
const UI_VM: usize = 3;
/// Bytes of `Ping` payload (a 65-byte frame each way), as in `rpc`.
const PING_PAYLOAD: usize = 48;
/// The target: Ping p50 over the stream within this of the raw echo's.
const TARGET: f64 = 1.2;

/// The transports compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Seqpacket,
    Stream,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Seqpacket => "SOCK_SEQPACKET",
            Transport::Stream => "stream (UI VM)",
        }
    }
}

/// Runs the suite and prints its tables.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    fan_out(quick)?;
    ping(quick)
}

fn fan_out(quick: bool) -> Result<(), String> {
    let samples: usize = if quick { 3 } else { 11 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!(
        "stream fan-out: vm-catalogd (--apply none) with {VMS} VMs, one a UI VM; per transport a \
         fresh daemon; a sample changes one VM on disk, then calls Rescan; ms from just before \
         the call until the Rescan reply, the first and the last subscriber get the batch; \
         readers are vm_catalog::Watch in one 2-worker tokio runtime; {samples} samples after \
         warm-up; median [min-max]"
    );
    println!(
        "{:>11}  {:<16} {:>22} {:>22} {:>22} {:>18}",
        "subscribers", "transport", "Rescan reply", "first received", "last received", "last/reply"
    );
    let mut ratios = Vec::new();
    for n in SUBSCRIBERS {
        let mut rows = Vec::new();
        for t in [Transport::Seqpacket, Transport::Stream] {
            let row = measure(&rt, t, n, samples)?;
            println!(
                "{n:>11}  {:<16} {:>22} {:>22} {:>22} {:>18}",
                t.label(),
                row.reply.show(2),
                row.first.show(2),
                row.last.show(2),
                row.ratio.show(2),
            );
            rows.push(row);
        }
        ratios.push(format!(
            "{n} subscribers {:.2}x",
            rows[1].ratio.median() / rows[0].ratio.median()
        ));
    }
    println!(
        "stream over SOCK_SEQPACKET (median last/reply): {}",
        ratios.join(", ")
    );
    Ok(())
}

/// A daemon whose UI VM takes `connections` connections and as many
/// subscriptions.
fn start_daemon(connections: usize) -> Result<(Daemon, PathBuf), String> {
    let mut d = Daemon::new();
    daemon::definitions(&d, VMS);
    let ui = daemon::vm_name(UI_VM);
    let mut args = d.catalog_only(connections + 8);
    let per_vm = (connections + 8).to_string();
    let extra: [OsString; 6] = [
        "--ui-vm".into(),
        ui.clone().into(),
        "--max-connections-per-vm".into(),
        per_vm.clone().into(),
        "--max-calls-per-vm".into(),
        per_vm.into(),
    ];
    args.extend(extra);
    d.start(&args)?;
    let listener = d.tree().join("vm").join(&ui).join(format!(
        "vsock_{}",
        vm_catalog_protocol::stream::DEFAULT_VSOCK_PORT
    ));
    Ok((d, listener))
}

/// `samples` fan-out samples with `n` readers on `t`.
fn measure(
    rt: &tokio::runtime::Runtime,
    t: Transport,
    n: usize,
    samples: usize,
) -> Result<Row, String> {
    let (daemon, listener) = start_daemon(n)?;
    let endpoint = match t {
        Transport::Seqpacket => Endpoint::Seqpacket(daemon.socket()),
        Transport::Stream => Endpoint::Stream(listener),
    };
    rt.block_on(async {
        let admin = Client::connect(daemon.socket())
            .await
            .map_err(|e| e.to_string())?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut readers = JoinSet::new();
        let gate = Arc::new(Semaphore::new(CONNECTING));
        for _ in 0..n {
            readers.spawn(fanout::reader(endpoint.clone(), gate.clone(), tx.clone()));
        }
        for _ in 0..n {
            match tokio::time::timeout(SAMPLE_TIMEOUT, rx.recv()).await {
                Ok(Some(Note::Synced)) => {}
                Ok(Some(Note::Failed(e))) => return Err(format!("a reader failed: {e}")),
                other => return Err(format!("readers did not connect: {other:?}")),
            }
        }
        let row = fanout::sample(&daemon, &admin, &mut rx, n, samples).await?;
        readers.abort_all();
        while readers.join_next().await.is_some() {}
        Ok(row)
    })
}

fn ping(quick: bool) -> Result<(), String> {
    let runs = if quick { 2 } else { 7 };
    let calls = if quick { 2_000 } else { 20_000 };
    let (daemon, listener) = start_daemon(4)?;
    let echo =
        crate::echo::EchoServer::spawn(ECHO_ARG).map_err(|e| format!("stream echo server: {e}"))?;
    let payload = vec![0xa5; PING_PAYLOAD];
    let frame = message::request(
        1,
        &Ping {
            payload: payload.clone(),
        },
        65536,
    )
    .map_err(|e| e.to_string())?;
    let mut over_stream =
        BlockingClient::connect_stream(&listener).map_err(|e| format!("stream: {e}"))?;
    let mut over_seqpacket =
        BlockingClient::connect(daemon.socket()).map_err(|e| format!("seqpacket: {e}"))?;
    let mut raw = UnixStream::connect(echo.socket()).map_err(|e| e.to_string())?;
    let mut raw_daemon = raw_stream(&listener).map_err(|e| format!("raw stream: {e}"))?;
    let mut buf = vec![0u8; frame.len()];
    println!(
        "stream ping: Ping ({PING_PAYLOAD}-byte payload, a {} B frame each way), 1 client, \
         {calls} sequential calls a run, {runs} interleaved runs; p50 us median [min-max] of \
         the runs' p50; baseline: a raw Unix stream echo process (blocking read, write_all) \
         moving the same bytes",
        frame.len()
    );
    let mut echo_p50 = Runs::default();
    let mut raw_p50 = Runs::default();
    let mut stream_p50 = Runs::default();
    let mut seq_p50 = Runs::default();
    for _ in 0..runs {
        echo_p50.push(us(p50(calls, || {
            raw.write_all(&frame)?;
            raw.read_exact(&mut buf)
        })?));
        raw_p50.push(us(p50(calls, || {
            raw_daemon.write_all(&frame)?;
            raw_daemon.read_exact(&mut buf)
        })?));
        stream_p50.push(us(p50(calls, || {
            over_stream
                .ping(payload.clone())
                .map(drop)
                .map_err(io::Error::other)
        })?));
        seq_p50.push(us(p50(calls, || {
            over_seqpacket
                .ping(payload.clone())
                .map(drop)
                .map_err(io::Error::other)
        })?));
    }
    let ratio = stream_p50.median() / echo_p50.median();
    println!("{:<56} {:>24}", "", "p50 us");
    println!(
        "{:<56} {:>24}",
        "raw Unix stream echo (baseline)",
        echo_p50.show(1)
    );
    println!(
        "{:<56} {:>24}",
        "daemon over the UI VM stream, raw frames",
        raw_p50.show(1)
    );
    println!(
        "{:<56} {:>24}",
        "daemon over the UI VM stream, BlockingClient",
        stream_p50.show(1)
    );
    println!(
        "{:<56} {:>24}",
        "daemon over SOCK_SEQPACKET, BlockingClient",
        seq_p50.show(1)
    );
    println!(
        "target: Ping p50 over the stream within {TARGET}x of the raw stream echo: {ratio:.2}x, {}",
        if ratio <= TARGET { "met" } else { "NOT met" }
    );
    println!(
        "stream over SOCK_SEQPACKET (Ping p50): {:.2}x",
        stream_p50.median() / seq_p50.median()
    );
    Ok(())
}

/// A raw stream connection to the daemon's listener after its handshake.
fn raw_stream(path: &Path) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(path)?;
    let hello = vm_catalog_protocol::Hello {
        client: "bench".into(),
        versions: vm_catalog_protocol::SUPPORTED_VERSIONS,
        max_frame: 65536,
        features: Default::default(),
    };
    s.write_all(&message::hello(&hello).map_err(io::Error::other)?)?;
    let mut header = [0u8; vm_catalog_protocol::HEADER_LEN];
    s.read_exact(&mut header)?;
    let body_len = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    let mut body = vec![0u8; body_len as usize];
    s.read_exact(&mut body)?;
    Ok(s)
}

/// The p50 of `calls` round trips of `once`, after a tenth as many.
fn p50(calls: usize, mut once: impl FnMut() -> io::Result<()>) -> Result<Duration, String> {
    for _ in 0..calls / 10 {
        once().map_err(|e| e.to_string())?;
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        once().map_err(|e| e.to_string())?;
        times.push(t.elapsed());
    }
    Ok(percentile(&mut times, 50.0))
}

/// Serves the echo at `socket` forever (the parent kills us; we die with it).
pub(crate) fn serve_echo(socket: &Path) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let listener = UnixListener::bind(socket)?;
    println!("ready");
    loop {
        let (mut conn, _) = listener.accept()?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
