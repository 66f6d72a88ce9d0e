//! `vm-catalogd`: the daemon, and `vm-catalogd check`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;
use vm_catalogd::cli::{Cli, Command};
use vm_catalogd::config::{Config, SocketConfig};
use vm_catalogd::rpc::listener;
use vm_catalogd::{check, daemon, logging};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Some(Command::Check(args)) = &cli.command {
        return ExitCode::from(check::run(args) as u8);
    }
    let config = match Config::resolve(&cli.daemon, Some(&matches)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vm-catalogd: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&cli.daemon.log_level, cli.daemon.log_format);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("vm-catalogd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // Two workers: the daemon is I/O-bound; rescans run on their own thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let (l, bound) = match &config.socket {
            SocketConfig::Path(opts) => listener::bind(opts),
            SocketConfig::Fd(fd) => listener::from_fd(*fd),
        }
        .context("cannot listen")?;
        daemon::run(config, l, bound, CancellationToken::new()).await?;
        Ok(())
    })
}
