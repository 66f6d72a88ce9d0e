//! `vm-catalogd`: the daemon, and `vm-catalogd check`.

use clap::{Parser, Subcommand};

/// One catalog of the host's VMs.
#[derive(Debug, Parser)]
#[command(name = "vm-catalogd", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate VM definition directories offline, as an untrusted source would be read.
    Check(vm_catalogd::check::CheckArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Check(args)) => vm_catalogd::check::run(&args),
        None => {
            eprintln!("vm-catalogd: the daemon is not implemented yet");
            1
        }
    };
    std::process::exit(code);
}
