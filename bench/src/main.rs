//! `vm-catalog-bench`: every benchmark suite, each printing a table.
//!
//! Run all: `cargo run --release -p vm-catalog-bench`; one suite:
//! `cargo run --release -p vm-catalog-bench -- rescan`.

use clap::Parser;

mod rescan;

/// Benchmarks of vm-catalog.
#[derive(Debug, Parser)]
#[command(name = "vm-catalog-bench")]
struct Args {
    /// Suites to run (default: all).
    suites: Vec<String>,
    /// Fewer iterations, for a quick check that the suites still run.
    #[arg(long)]
    quick: bool,
}

/// A suite: its name, and how to run it (`quick` or not).
type Suite = (&'static str, fn(bool));

/// Every suite, by name.
const SUITES: &[Suite] = &[("rescan", rescan::run)];

fn main() {
    let args = Args::parse();
    let chosen: Vec<&str> = if args.suites.is_empty() {
        SUITES.iter().map(|(n, _)| *n).collect()
    } else {
        args.suites.iter().map(String::as_str).collect()
    };
    for name in chosen {
        match SUITES.iter().find(|(n, _)| *n == name) {
            Some((_, run)) => run(args.quick),
            None => {
                let known: Vec<&str> = SUITES.iter().map(|(n, _)| *n).collect();
                eprintln!(
                    "vm-catalog-bench: unknown suite {name:?} (known: {})",
                    known.join(", ")
                );
                std::process::exit(2);
            }
        }
    }
}
