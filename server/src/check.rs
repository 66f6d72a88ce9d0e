//! `vm-catalogd check`: validate definition directories offline.

use std::path::PathBuf;

/// Arguments of `vm-catalogd check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Print diagnostics as JSON (one object with a `definitions` array).
    #[arg(long)]
    pub json: bool,
    /// A symlink is accepted when its target is under this prefix (repeatable).
    #[arg(long = "trusted-target", value_name = "PREFIX", default_value = "/usr/img/")]
    pub trusted_targets: Vec<PathBuf>,
    /// Definition directories (`<root>/<vm>`), or source roots holding them.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

/// Runs `check`; returns the process exit code (0: all valid, 1: not).
pub fn run(args: &CheckArgs) -> i32 {
    let _ = args;
    eprintln!("vm-catalogd check: not implemented yet");
    2
}
