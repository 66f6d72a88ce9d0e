//! The `vm-catalog` command line: list, show, sources, status, rescan, watch,
//! resolve. One file per command; `json.rs` holds the stable JSON shapes,
//! `text.rs` the human-readable ones.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use vm_catalog_protocol::{Cursor, SourceLabel, VmName};

use crate::error::Error;
use crate::{Client, ConnectOptions, Endpoint, VsockAddr};

mod json;
mod list;
mod rescan;
mod resolve;
mod show;
mod sources;
mod status;
mod text;
mod watch;

/// Query and control vm-catalogd, the VM catalog daemon.
///
/// Exit status: 0 success, 1 failure, 2 usage error, 3 no such VM (or not
/// startable), 4 permission denied, 5 daemon unreachable or incompatible.
#[derive(Debug, Parser)]
#[command(name = "vm-catalog", version, max_term_width = 100)]
pub struct Cli {
    /// The daemon's socket on the host.
    #[arg(long, global = true, value_name = "PATH", env = "VM_CATALOG_SOCKET", default_value = crate::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Inside a UI VM: reach the daemon over vsock, on PORT of the host
    /// (CID 2) or of CID (the daemon's default port is 22083).
    #[arg(
        long,
        global = true,
        value_name = "[CID:]PORT",
        conflicts_with = "stream"
    )]
    pub vsock: Option<VsockAddr>,
    /// On the host: a UI VM's stream socket (VM-DIR/NAME/vsock_PORT), as
    /// the VMM connects to it for the guest; shows what that VM sees.
    #[arg(long, global = true, value_name = "PATH")]
    pub stream: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List VMs (active ones; --all adds shadowed, rejected and unavailable definitions).
    List {
        /// Every definition, with the reason it is not active.
        #[arg(long)]
        all: bool,
        /// Only definitions from this source.
        #[arg(long, value_name = "LABEL")]
        source: Option<SourceLabel>,
        /// JSON: {"epoch", "generation", "vms": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Everything about one VM: state, files, providers, diagnostics, and the
    /// definitions of the same name it shadows (or that shadow it).
    Show {
        /// The VM's name, as `list` prints it.
        name: VmName,
        /// JSON: {"epoch", "generation", "vm": {...}, "others": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Print the service (s6-rc service or s6 instance) of a startable VM
    /// (exit 3 if the VM is unknown, rejected or unavailable). For scripts
    /// such as vm-start.
    Resolve {
        /// The VM's name, as `list` prints it (or as vm-start is given it).
        name: VmName,
        /// First print the services of its network providers, transitively,
        /// each before the VMs it provides for (one per line): the order to
        /// start s6 instances in.
        #[arg(long)]
        with_providers: bool,
    },
    /// List the sources of definitions, in precedence order.
    Sources {
        /// JSON: {"epoch", "generation", "sources": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// The daemon's status: versions, generation, last rescan and apply.
    Status {
        /// JSON: {"server_version", "protocol_version", "epoch", "generation",
        /// "applier", "sources": [...], "last_rescan", "last_apply", ...}.
        #[arg(long)]
        json: bool,
    },
    /// Rescan every source now (root or the admin group) and print the changes.
    Rescan {
        /// Compute the changes only; apply and publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// JSON object with the outcome and the changes.
        #[arg(long)]
        json: bool,
    },
    /// Print changes as they happen, one per line; survives daemon restarts.
    Watch {
        /// One JSON object per line, each with "event" and "generation"
        /// (and "name" for VM events).
        #[arg(long)]
        json: bool,
        /// Resume from EPOCH:GENERATION (as printed by `status`).
        #[arg(long, value_name = "EPOCH:GEN")]
        since: Option<Cursor>,
    },
}

impl Cli {
    /// Parses a command line (`args[0]` is the program) as [`Parser`]
    /// does, and refuses `--socket` on the command line together with
    /// `--vsock` or `--stream`, which override `VM_CATALOG_SOCKET` from the
    /// environment.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        if matches.value_source("socket") == Some(ValueSource::CommandLine)
            && (cli.vsock.is_some() || cli.stream.is_some())
        {
            return Err(cmd.error(
                ErrorKind::ArgumentConflict,
                "--socket cannot be used with --vsock or --stream",
            ));
        }
        Ok(cli)
    }

    /// Where to reach the daemon: `--vsock`, `--stream`, else `--socket`.
    pub fn endpoint(&self) -> Endpoint {
        if let Some(addr) = self.vsock {
            Endpoint::Vsock(addr)
        } else if let Some(path) = &self.stream {
            Endpoint::Stream(path.clone())
        } else {
            Endpoint::Seqpacket(self.socket.clone())
        }
    }
}

/// Connects with the default options.
async fn connect(endpoint: &Endpoint) -> Result<Client, Failure> {
    Ok(Client::connect_to(endpoint, &ConnectOptions::default()).await?)
}

/// Exit status: the command did what it was asked.
pub const EXIT_OK: u8 = 0;
/// Exit status: any other failure (a bad answer, a broken connection, a
/// rescan that failed).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: no such VM, or not startable.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit status: permission denied.
pub const EXIT_DENIED: u8 = 4;
/// Exit status: the daemon cannot be reached or is incompatible.
pub const EXIT_UNAVAILABLE: u8 = 5;

/// A command's failure: what to print and the exit status.
#[derive(Debug)]
pub struct Failure {
    /// One line for stderr, after `vm-catalog: `.
    pub message: String,
    /// One of the `EXIT_*` statuses.
    pub code: u8,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = if e.is_not_found() {
            EXIT_NOT_FOUND
        } else if e.is_permission_denied() {
            EXIT_DENIED
        } else if e.is_unavailable() || matches!(e, Error::Incompatible { .. }) {
            EXIT_UNAVAILABLE
        } else {
            EXIT_FAILURE
        };
        Failure {
            message: chain(&e),
            code,
        }
    }
}

/// An error and its sources, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Runs the command line; returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // One connection, one command: a current-thread runtime is enough.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vm-catalog: cannot start a runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let at = cli.endpoint();
    let result = rt.block_on(async move {
        match cli.command {
            Command::List { all, source, json } => list::run(&at, all, source, json).await,
            Command::Show { name, json } => show::run(&at, &name, json).await,
            Command::Resolve {
                name,
                with_providers,
            } => resolve::run(&at, &name, with_providers).await,
            Command::Sources { json } => sources::run(&at, json).await,
            Command::Status { json } => status::run(&at, json).await,
            Command::Rescan { dry_run, json } => rescan::run(&at, dry_run, json).await,
            Command::Watch { json, since } => watch::run(&at, json, since).await,
        }
    });
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(f) => {
            eprintln!("vm-catalog: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Prints a line to stdout; a closed pipe (e.g. `| head`) ends quietly.
fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|_| stdout.flush())
        .is_err()
    {
        std::process::exit(EXIT_OK as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args(std::iter::once("vm-catalog").chain(args.iter().copied()))
    }

    fn endpoint(args: &[&str]) -> Endpoint {
        parse(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .endpoint()
    }

    #[test]
    fn the_endpoint_from_the_command_line() {
        assert_eq!(
            endpoint(&["--vsock", "22083", "watch", "--json"]),
            Endpoint::Vsock(VsockAddr::host(22083))
        );
        assert_eq!(
            endpoint(&["watch", "--vsock", "3:5"]),
            Endpoint::Vsock(VsockAddr { cid: 3, port: 5 }),
            "global: also after the command"
        );
        assert_eq!(
            endpoint(&["--stream", "/run/vm/ui/vsock_22083", "list"]),
            Endpoint::Stream("/run/vm/ui/vsock_22083".into())
        );
        assert_eq!(
            endpoint(&["--socket", "/s", "list"]),
            Endpoint::Seqpacket("/s".into())
        );
        assert_eq!(endpoint(&["list"]), Endpoint::default_socket());
    }

    #[test]
    fn conflicting_or_bad_endpoints_are_usage_errors() {
        for args in [
            &["--socket", "/s", "--vsock", "5", "list"][..],
            &["--stream", "/t", "list", "--socket", "/s"],
            &["--vsock", "5", "--stream", "/t", "list"],
        ] {
            let e = parse(args).map(|c| c.endpoint()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{args:?}");
            assert_eq!(e.exit_code(), 2);
        }
        for (arg, why) in [
            ("x", "invalid vsock port \"x\""),
            ("2:", "invalid vsock port \"\""),
            ("a:5", "invalid vsock CID \"a\""),
            ("4294967295", "the vsock wildcard"),
        ] {
            let e = parse(&["--vsock", arg, "list"])
                .map(|c| c.endpoint())
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{arg}");
            assert!(e.to_string().contains(why), "{arg}: {e}");
        }
    }
}
