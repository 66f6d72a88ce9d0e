//! `vm-catalog-bench`: every benchmark suite, each printing a table.
//!
//! Run all: `cargo run --release -p vm-catalog-bench`; some:
//! `cargo run --release -p vm-catalog-bench -- rpc fanout`. Every figure is
//! a ratio against a baseline measured in the same run, or a median with
//! min and max over several runs.

mod apply;
mod attack;
mod daemon;
mod echo;
mod fanout;
mod footprint;
mod guest;
mod instances;
mod latency;
mod machine;
mod raw;
mod rescan;
mod rescan_apply;
mod rescan_incr;
mod rpc;
mod stats;
mod stream;

use std::time::Instant;

use clap::Parser;

/// Benchmarks of vm-catalog.
#[derive(Debug, Parser)]
#[command(name = "vm-catalog-bench")]
struct Args {
    /// Suites to run (default: all): rescan, apply, instances,
    /// rescan-apply, rpc, fanout, latency, stream, footprint, attack, guest.
    suites: Vec<String>,
    /// Fewer iterations, for a quick check that the suites still run.
    #[arg(long)]
    quick: bool,
}

/// A suite: its name and its entry point (`quick` → fewer runs).
type Suite = (&'static str, fn(bool) -> Result<(), String>);

/// Every suite, in the order "all" runs them.
const SUITES: &[Suite] = &[
    ("rescan", rescan::run),
    ("apply", apply::run),
    ("instances", instances::run),
    ("rescan-apply", rescan_apply::run),
    ("rpc", rpc::run),
    ("fanout", fanout::run),
    ("latency", latency::run),
    ("stream", stream::run),
    ("footprint", footprint::run),
    ("attack", attack::run),
    ("guest", guest::run),
];

fn main() {
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == echo::ARG) {
        let socket = argv.next().expect("the echo server's socket path");
        if let Err(e) = echo::serve(std::path::Path::new(&socket)) {
            eprintln!("vm-catalog-bench: echo server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == stream::ECHO_ARG) {
        let socket = argv.next().expect("the echo server's socket path");
        if let Err(e) = stream::serve_echo(std::path::Path::new(&socket)) {
            eprintln!("vm-catalog-bench: stream echo server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    raise_open_files();
    let chosen: Vec<&Suite> = if args.suites.is_empty() {
        SUITES.iter().collect()
    } else {
        let mut v = Vec::new();
        for s in &args.suites {
            match SUITES.iter().find(|(name, _)| name == s) {
                Some(suite) => v.push(suite),
                None => {
                    let known: Vec<&str> = SUITES.iter().map(|(n, _)| *n).collect();
                    eprintln!(
                        "vm-catalog-bench: unknown suite {s:?} (known: {})",
                        known.join(", ")
                    );
                    std::process::exit(2);
                }
            }
        }
        v
    };
    daemon::prepare();
    println!("{}", machine::describe());
    let start = Instant::now();
    let mut failed = false;
    for (name, run) in chosen {
        let t = Instant::now();
        if let Err(e) = run(args.quick) {
            eprintln!("vm-catalog-bench: suite {name} failed: {e}");
            failed = true;
        }
        println!("({name}: {:.0} s)\n", t.elapsed().as_secs_f64());
    }
    println!("all: {:.0} s", start.elapsed().as_secs_f64());
    std::process::exit(i32::from(failed));
}

/// Raises the soft limit of open files to the hard one: the fan-out and
/// footprint suites hold a thousand connections, and the daemon they start
/// inherits the limit.
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            eprintln!("vm-catalog-bench: cannot raise the open files limit: {e}");
        }
    }
}
