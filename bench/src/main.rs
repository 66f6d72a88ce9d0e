//! `vm-catalog-bench`: every benchmark suite, each printing a table.
//!
//! Run all: `cargo run --release -p vm-catalog-bench`; one suite:
//! `cargo run --release -p vm-catalog-bench -- rescan` (or `apply`).

mod apply;
mod rescan;

use clap::Parser;

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

/// A suite: its name and its entry point (`quick` → fewer runs).
type Suite = (&'static str, fn(bool) -> Result<(), String>);

/// Every suite, in the order "all" runs them.
const SUITES: &[Suite] = &[("rescan", rescan::run), ("apply", apply::run)];

fn main() {
    let args = Args::parse();
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
    let mut failed = false;
    for (name, run) in chosen {
        if let Err(e) = run(args.quick) {
            eprintln!("vm-catalog-bench: suite {name} failed: {e}");
            failed = true;
        }
    }
    std::process::exit(i32::from(failed));
}
