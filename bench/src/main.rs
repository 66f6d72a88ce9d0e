//! `vm-catalog-bench`: every benchmark suite, each printing a table.
//!
//! Run all: `cargo run --release -p vm-catalog-bench`; one suite:
//! `cargo run --release -p vm-catalog-bench -- rescan`.

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

fn main() {
    let args = Args::parse();
    let _ = args;
}
