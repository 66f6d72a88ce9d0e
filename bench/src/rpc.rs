//! `rpc`: round trips per second and p50/p99 latency of `Ping`, `GetVm` and
//! a `ListVms` of 100 VMs, for one client and 16 concurrent clients, against
//! the raw `SOCK_SEQPACKET` echo of the same datagram sizes measured in the
//! same run (the physical floor, [`crate::echo`]).
//!
//! The real `vm-catalogd` (catalog only, 100 generated definitions) is
//! driven two ways: raw frames over blocking syscalls, exactly like the
//! echo's client (so the difference is the daemon's), and the real client
//! library: `vm_catalog::BlockingClient`, and `vm_catalog::Client` on a
//! current-thread tokio runtime (what a
//! program gets). Each client is a thread with its own connection; calls are
//! sequential on it.
//!
//! A run of one configuration makes `calls` round trips split over the
//! clients, after a warm-up of a tenth as many; runs of every configuration
//! are interleaved, so drift hits all of them alike. Figures are the median
//! [min-max] over the runs; ratios are of medians.

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use vm_catalog::Client;
use vm_catalog_protocol::{FrameKind, GetVm, ListVms, Ping, VmName};

use crate::daemon::{self, Daemon};
use crate::echo::EchoServer;
use crate::raw::{RawClient, Seqpacket};
use crate::stats::{Runs, percentile, us};

/// Definitions in the catalog.
const VMS: usize = 100;
/// Bytes of `Ping` payload (a 65-byte frame each way).
const PING_PAYLOAD: usize = 48;
/// Concurrent clients measured.
const CLIENTS: [usize; 2] = [1, 16];
/// The ways a round trip is made, in table order.
const WAYS: [Way; 4] = [Way::Echo, Way::Raw, Way::Blocking, Way::Client];

/// How a round trip is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Raw frames-sized datagrams to the echo server.
    Echo,
    /// Raw frames to the daemon.
    Raw,
    /// `vm_catalog::BlockingClient` to the daemon.
    Blocking,
    /// `vm_catalog::Client` to the daemon.
    Client,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Echo => "raw echo (baseline)",
            Way::Raw => "daemon, raw frames",
            Way::Blocking => "daemon, vm_catalog::BlockingClient",
            Way::Client => "daemon, vm_catalog::Client",
        }
    }
}

/// A call measured.
#[derive(Debug, Clone)]
enum Msg {
    Ping(Vec<u8>),
    GetVm(VmName),
    ListVms,
}

/// What a call moves: its request frame and the frames of its answer.
#[derive(Debug, Clone)]
struct Shape {
    request: usize,
    answer: Vec<usize>,
}

/// One run of one configuration.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs the suite and prints its table.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    let runs = if quick { 2 } else { 7 };
    let mut daemon = Daemon::new();
    daemon::definitions(&daemon, VMS);
    let args = daemon.catalog_only(2 * CLIENTS[1]);
    daemon.start(&args)?;
    let socket = daemon.socket();
    let echo = EchoServer::start().map_err(|e| format!("echo server: {e}"))?;
    let name: VmName = daemon::vm_name(VMS / 2)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let msgs = [
        Msg::Ping(vec![0xa5; PING_PAYLOAD]),
        Msg::GetVm(name),
        Msg::ListVms,
    ];
    let shapes = msgs
        .iter()
        .map(|m| probe(&socket, m))
        .collect::<Result<Vec<_>, _>>()?;
    check_client(&socket)?;

    // results[msg][clients][way]
    let mut results = vec![vec![vec![Vec::<Sample>::new(); WAYS.len()]; CLIENTS.len()]; msgs.len()];
    for _ in 0..runs {
        for (mi, msg) in msgs.iter().enumerate() {
            let calls = match (msg, quick) {
                (Msg::ListVms, false) => 4_000,
                (Msg::ListVms, true) => 400,
                (_, false) => 20_000,
                (_, true) => 2_000,
            };
            for (ci, &clients) in CLIENTS.iter().enumerate() {
                for (wi, &way) in WAYS.iter().enumerate() {
                    let env = Env {
                        socket: &socket,
                        echo: &echo,
                        msg,
                        shape: &shapes[mi],
                        way,
                    };
                    results[mi][ci][wi].push(env.measure(clients, calls)?);
                }
            }
        }
    }
    print(runs, &msgs, &shapes, &results);
    Ok(())
}

fn label(msg: &Msg, shape: &Shape) -> String {
    let name = match msg {
        Msg::Ping(_) => "Ping".to_string(),
        Msg::GetVm(n) => format!("GetVm {n}"),
        Msg::ListVms => format!("ListVms of {VMS} VMs"),
    };
    let answer: usize = shape.answer.iter().sum();
    format!(
        "{name}: request {} B, answer {} B in {} frame(s)",
        shape.request,
        answer,
        shape.answer.len()
    )
}

fn print(runs: usize, msgs: &[Msg], shapes: &[Shape], results: &[Vec<Vec<Vec<Sample>>>]) {
    println!(
        "rpc: vm-catalogd (--apply none) with {VMS} VMs against a raw SOCK_SEQPACKET echo \
         process (blocking recv/send, thread per connection) of the same datagram sizes; \
         {runs} interleaved runs per row; median [min-max] over the runs; \"x echo\" = \
         median over the echo's median"
    );
    println!(
        "  {:<36} {:>24} {:>22} {:>22} {:>11} {:>11}",
        "", "round trips/s", "p50 us", "p99 us", "p50 x echo", "p99 x echo"
    );
    let mut ping_ratios = Vec::new();
    for (mi, msg) in msgs.iter().enumerate() {
        for (ci, clients) in CLIENTS.iter().enumerate() {
            println!(
                "{}, {clients} client{}",
                label(msg, &shapes[mi]),
                if *clients == 1 { "" } else { "s" }
            );
            let summary = |wi: usize| {
                let s = &results[mi][ci][wi];
                (
                    Runs(s.iter().map(|x| x.rate).collect()),
                    Runs(s.iter().map(|x| us(x.p50)).collect()),
                    Runs(s.iter().map(|x| us(x.p99)).collect()),
                )
            };
            let (_, floor50, floor99) = summary(0);
            for (wi, way) in WAYS.iter().enumerate() {
                let (rate, p50, p99) = summary(wi);
                let r50 = p50.median() / floor50.median();
                let r99 = p99.median() / floor99.median();
                if matches!(msg, Msg::Ping(_)) && *way != Way::Echo {
                    ping_ratios.push((*clients, *way, r50));
                }
                println!(
                    "  {:<36} {:>24} {:>22} {:>22} {:>10.2}x {:>10.2}x",
                    way.label(),
                    rate.show(0),
                    p50.show(1),
                    p99.show(1),
                    r50,
                    r99
                );
            }
        }
    }
    println!(
        "  (16 clients: 16 client threads share the 2 CPUs with the echo's 16 threads, or \
         with the daemon's 2 workers, so the echo is no floor there: compare round trips/s)"
    );
    for (clients, way, r) in ping_ratios {
        println!(
            "target: Ping p50 within 1.3x of the raw echo, {clients} client(s), {}: {r:.2}x, {}",
            way.label(),
            if r <= 1.3 { "met" } else { "NOT met" }
        );
    }
}

/// One configuration: a message, a way, and where to send it.
struct Env<'a> {
    socket: &'a Path,
    echo: &'a EchoServer,
    msg: &'a Msg,
    shape: &'a Shape,
    way: Way,
}

impl Env<'_> {
    /// One run: `calls` round trips split over `clients` threads.
    fn measure(&self, clients: usize, calls: usize) -> Result<Sample, String> {
        let per = calls / clients;
        let barrier = Barrier::new(clients + 1);
        let (wall, lat) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|_| s.spawn(|| self.client(per, &barrier)))
                .collect();
            barrier.wait();
            let t0 = Instant::now();
            let lat: Result<Vec<Vec<Duration>>, String> = handles
                .into_iter()
                .map(|h| h.join().map_err(|_| "a client panicked".to_string())?)
                .collect();
            (t0.elapsed(), lat)
        });
        let mut lat: Vec<Duration> = lat?.into_iter().flatten().collect();
        Ok(Sample {
            rate: lat.len() as f64 / wall.as_secs_f64(),
            p50: percentile(&mut lat, 50.0),
            p99: percentile(&mut lat, 99.0),
        })
    }

    /// One client: connects, warms up, waits for the others, then times
    /// `calls` round trips.
    fn client(&self, calls: usize, barrier: &Barrier) -> Result<Vec<Duration>, String> {
        let warm = (calls / 10).max(10);
        match self.way {
            Way::Echo => {
                let conn = self.echo.connect(&self.shape.answer).map_err(e);
                let request = vec![0u8; self.shape.request];
                let mut buf = vec![0u8; 256 * 1024];
                timed(conn, warm, calls, barrier, |c: &mut Seqpacket| {
                    c.send(&request).map_err(e)?;
                    for &size in &self.shape.answer {
                        if c.recv(&mut buf).map_err(e)? != size {
                            return Err("the echo answered the wrong size".into());
                        }
                    }
                    Ok(())
                })
            }
            Way::Raw => {
                let conn = RawClient::connect(self.socket).map_err(e);
                let conn = conn.and_then(|mut c| {
                    let frame = request(&mut c, self.msg)?;
                    Ok((c, frame))
                });
                timed(conn, warm, calls, barrier, |(c, frame)| {
                    c.renumber(frame);
                    c.send(frame).map_err(e)?;
                    c.finish_call(|_, _| {}).map_err(e)
                })
            }
            Way::Blocking => {
                let conn = vm_catalog::BlockingClient::connect(self.socket).map_err(e);
                timed(conn, warm, calls, barrier, |c| blocking_call(c, self.msg))
            }
            Way::Client => {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(err) => {
                        barrier.wait();
                        return Err(e(err));
                    }
                };
                rt.block_on(async {
                    let ready = async {
                        let c = Client::connect(self.socket).await.map_err(e)?;
                        for _ in 0..warm {
                            call(&c, self.msg).await?;
                        }
                        Ok::<_, String>(c)
                    }
                    .await;
                    barrier.wait();
                    let c = ready?;
                    let mut lat = Vec::with_capacity(calls);
                    for _ in 0..calls {
                        let t = Instant::now();
                        call(&c, self.msg).await?;
                        lat.push(t.elapsed());
                    }
                    Ok(lat)
                })
            }
        }
    }
}

/// Warms up on `state`, waits at `barrier` (even after an error, so the
/// others do not wait forever), then times `calls` calls of `once`.
fn timed<S>(
    state: Result<S, String>,
    warm: usize,
    calls: usize,
    barrier: &Barrier,
    mut once: impl FnMut(&mut S) -> Result<(), String>,
) -> Result<Vec<Duration>, String> {
    let state = state.and_then(|mut s| {
        for _ in 0..warm {
            once(&mut s)?;
        }
        Ok(s)
    });
    barrier.wait();
    let mut s = state?;
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        once(&mut s)?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

/// The request frame of `msg`.
fn request(c: &mut RawClient, msg: &Msg) -> Result<Vec<u8>, String> {
    match msg {
        Msg::Ping(payload) => c.request(&Ping {
            payload: payload.clone(),
        }),
        Msg::GetVm(name) => c.request(&GetVm { name: name.clone() }),
        Msg::ListVms => c.request(&ListVms::default()),
    }
    .map_err(e)
}

/// One call through the blocking client.
fn blocking_call(c: &mut vm_catalog::BlockingClient, msg: &Msg) -> Result<(), String> {
    match msg {
        Msg::Ping(payload) => c.ping(payload.clone()).map(drop),
        Msg::GetVm(name) => c.get_vm(name).map(drop),
        Msg::ListVms => c.list_vms(false, None).map(drop),
    }
    .map_err(e)
}

/// One call through the client library.
async fn call(c: &Client, msg: &Msg) -> Result<(), String> {
    match msg {
        Msg::Ping(payload) => c.ping(payload.clone()).await.map(drop),
        Msg::GetVm(name) => c.get_vm(name).await.map(drop),
        Msg::ListVms => c.list_vms(false, None).await.map(drop),
    }
    .map_err(e)
}

/// The frame sizes of `msg`'s request and answer, from one raw call.
fn probe(socket: &Path, msg: &Msg) -> Result<Shape, String> {
    let mut c = RawClient::connect(socket).map_err(e)?;
    let frame = request(&mut c, msg)?;
    c.send(&frame).map_err(e)?;
    let mut answer = Vec::new();
    let mut kinds = Vec::new();
    c.finish_call(|k, n| {
        kinds.push(k);
        answer.push(n);
    })
    .map_err(|err| format!("probing {msg:?}: {err}"))?;
    let want_stream = matches!(msg, Msg::ListVms);
    let last = kinds.last().copied();
    if want_stream != (last == Some(FrameKind::StreamEnd)) {
        return Err(format!("{msg:?} was answered with {kinds:?}"));
    }
    Ok(Shape {
        request: frame.len(),
        answer,
    })
}

/// The client library sees what the suite expects: every VM, the one asked for.
fn check_client(socket: &Path) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(e)?;
    rt.block_on(async {
        let c = Client::connect(socket).await.map_err(e)?;
        let list = c.list_vms(false, None).await.map_err(e)?;
        if list.vms.len() != VMS {
            return Err(format!("ListVms returned {} of {VMS} VMs", list.vms.len()));
        }
        Ok(())
    })
}
