//! The command line of `vm-catalogd` (clap): the low-level arguments, as
//! typed. [`crate::config`] turns them into the types each part of the
//! daemon takes; the man page and shell completions in `contrib/` are
//! generated from these definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::apply::instance::config as instance;
use crate::apply::s6rc::config as s6rc;
use crate::catalog::{Layout, Names};
use crate::logging::LogFormat;

/// One catalog of the host's VMs: the VM catalog daemon.
///
/// Scans the built-in VM directory, extra directories and user partitions for
/// VM definitions, merges them into one catalog, keeps one s6-rc database of
/// VM services (or one s6 instance per VM) in step with it, and serves the catalog on a SOCK_SEQPACKET
/// socket (see vm-catalog(1)). SIGHUP rescans; SIGTERM and SIGINT stop the
/// daemon cleanly (mounted partitions stay mounted).
#[derive(Debug, Parser)]
#[command(name = "vm-catalogd", version, max_term_width = 100)]
pub struct Cli {
    /// The daemon's options (when no subcommand is given).
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// A subcommand instead of running the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate VM definition directories offline, as an untrusted source would be read.
    Check(crate::check::CheckArgs),
}

/// Which applier keeps the VM services in step with the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApplyKind {
    /// One s6-rc database of VM services, compiled and swapped in atomically.
    #[value(name = "s6-rc")]
    S6rc,
    /// Each VM an instance of one templated s6 service (--instance-service).
    #[value(name = "s6-instance")]
    S6Instance,
    /// Catalog only: no services.
    None,
}

impl ApplyKind {
    /// Its name, as on the command line and in `GetInfo`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyKind::S6rc => "s6-rc",
            ApplyKind::S6Instance => "s6-instance",
            ApplyKind::None => "none",
        }
    }
}

/// Options of the daemon.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    // ── Socket ──
    /// Listen on this SOCK_SEQPACKET socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/vm-catalog/socket",
        help_heading = "Socket"
    )]
    pub socket: PathBuf,
    /// Use this inherited, already listening socket instead of creating one.
    #[arg(
        long,
        value_name = "FD",
        conflicts_with = "socket",
        help_heading = "Socket"
    )]
    pub socket_fd: Option<i32>,
    /// Mode of the socket (octal). Anyone who can connect may list and
    /// subscribe; rescans need root or --admin-group.
    #[arg(long, value_name = "MODE", default_value = "0666", value_parser = parse_mode, help_heading = "Socket")]
    pub socket_mode: u32,
    /// Group of the socket (name or number).
    #[arg(long, value_name = "GROUP", help_heading = "Socket")]
    pub socket_group: Option<String>,
    /// Members of this group (name or number) may rescan, besides root.
    #[arg(long, value_name = "GROUP", help_heading = "Socket")]
    pub admin_group: Option<String>,
    /// Open connections in all.
    #[arg(long, value_name = "N", default_value_t = 256, help_heading = "Socket")]
    pub max_connections: u32,
    /// Open connections per user.
    #[arg(long, value_name = "N", default_value_t = 32, help_heading = "Socket")]
    pub max_connections_per_uid: u32,

    // ── UI VMs ──
    /// Serve this VM as a UI VM: while it is active, listen for its VMM's
    /// hybrid vsock connections (repeatable; a name as the catalog names
    /// it, or a qualified reference LABEL.NAME). A VM peer is read-only and
    /// sees no host paths.
    #[arg(long = "ui-vm", value_name = "NAME", help_heading = "UI VMs")]
    pub ui_vms: Vec<String>,
    /// The vsock port UI VMs connect to on the host (CID 2).
    #[arg(long, value_name = "PORT", default_value_t = vm_catalog_protocol::stream::DEFAULT_VSOCK_PORT, help_heading = "UI VMs")]
    pub vsock_port: u32,
    /// Where each UI VM's listener goes, with {vm-dir}, {name}, {id} and
    /// {port}; default {vm-dir}/{name}/vsock_{port} (beside the view), or
    /// /run/vsock/{id}/vsock_{port} with --vm-layout spectrum.
    #[arg(long, value_name = "TEMPLATE", help_heading = "UI VMs")]
    pub ui_vm_socket: Option<String>,
    /// Mode of the UI VM listeners (octal): the VMM's user must be able to
    /// connect.
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode, help_heading = "UI VMs")]
    pub ui_vm_socket_mode: u32,
    /// Open connections of one UI VM (its own: none of the host's).
    #[arg(long, value_name = "N", default_value_t = 8, help_heading = "UI VMs")]
    pub max_connections_per_vm: u32,
    /// Streaming calls in flight of one UI VM, over all its connections.
    #[arg(long, value_name = "N", default_value_t = 32, help_heading = "UI VMs")]
    pub max_calls_per_vm: u32,
    /// Owner of the UI VM listeners (name or number), or one user per VM
    /// with {id} or {name} (Spectrum: vmm-{id}), looked up when the VM's
    /// listener is made.
    #[arg(long, value_name = "USER", help_heading = "UI VMs")]
    pub ui_vm_socket_owner: Option<String>,
    /// Group of the UI VM listeners (name or number).
    #[arg(long, value_name = "GROUP", help_heading = "UI VMs")]
    pub ui_vm_socket_group: Option<String>,

    // ── Sources ──
    /// The built-in VM definitions (trusted: symlinks are followed), labelled
    /// `builtin` unless LABEL= is given (Spectrum: sys=/usr/lib/spectrum/vm).
    /// A missing directory is an empty source with a warning.
    #[arg(
        long,
        value_name = "[LABEL=]DIR",
        default_value = crate::source::dir::DEFAULT_BUILTIN_ROOT,
        help_heading = "Sources"
    )]
    pub builtin: PathBuf,
    /// An extra untrusted source of definitions (repeatable). Extra sources
    /// rank after the built-in one and before partitions, in command-line order.
    #[arg(long = "source", value_name = "LABEL=DIR", help_heading = "Sources")]
    pub sources: Vec<String>,
    /// An extra trusted source (repeatable; symlinks are followed).
    #[arg(
        long = "trusted-source",
        value_name = "LABEL=DIR",
        help_heading = "Sources"
    )]
    pub trusted_sources: Vec<String>,
    /// In untrusted sources, a symlink counts only if its target is under
    /// this prefix (repeatable).
    #[arg(
        long = "trusted-target",
        value_name = "PREFIX",
        default_value = "/usr/img/",
        help_heading = "Sources"
    )]
    pub trusted_targets: Vec<PathBuf>,
    /// How VMs are named: `plain`, a definition's directory name (the
    /// highest-precedence definition of a name wins, the others are
    /// shadowed), or `qualified`, `<source label>.<directory name>`
    /// (Spectrum's `sys.netvm`: nothing is shadowed).
    #[arg(long, value_enum, default_value = "plain", help_heading = "Sources")]
    pub names: Names,
    /// Let a VM of an untrusted source use a VM of another untrusted source
    /// as its provider (by default only VMs of trusted sources and of its
    /// own source: a stick's "netvm" cannot carry another partition's VMs'
    /// traffic; such a VM is rejected with `provider-untrusted`).
    #[arg(long, help_heading = "Sources")]
    pub allow_cross_source_providers: bool,
    /// Do not watch source directories (rescan only on request, SIGHUP or hotplug).
    #[arg(long, help_heading = "Sources")]
    pub no_watch: bool,
    /// Wait this long after the last change in a watched directory before rescanning.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 200,
        help_heading = "Sources"
    )]
    pub debounce_ms: u64,

    // ── Partitions ──
    /// Do not look for user partitions.
    #[arg(long, help_heading = "Partitions")]
    pub no_partitions: bool,
    /// Look for user partitions on this disk only (a name under /sys/class/block,
    /// e.g. loop3; repeatable). Default: the disk that holds the root file system.
    #[arg(
        long = "partition-disk",
        value_name = "DISK",
        help_heading = "Partitions"
    )]
    pub partition_disks: Vec<String>,
    /// Look for user partitions on every disk.
    #[arg(long, conflicts_with = "partition_disks", help_heading = "Partitions")]
    pub all_disks: bool,
    /// The primary user partition (/dev/NAME, NAME, UUID=, PARTUUID=, LABEL=);
    /// overrides ext= on the kernel command line.
    #[arg(long, value_name = "SPEC", help_heading = "Partitions")]
    pub ext: Option<String>,
    /// Where to read ext= from.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/proc/cmdline",
        help_heading = "Partitions"
    )]
    pub cmdline: PathBuf,
    /// Run `fsck -p` on a partition before mounting it.
    #[arg(long, help_heading = "Partitions")]
    pub fsck: bool,
    /// Netlink group for block device uevents: 1 is the kernel's; mdevd -O
    /// rebroadcasts to another.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Partitions"
    )]
    pub uevent_group: u32,
    /// The sysfs root (for tests).
    #[arg(long, value_name = "DIR", default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,

    // ── Applying ──
    /// How the catalog is applied.
    #[arg(long, value_enum, default_value = "s6-rc", help_heading = "Applying")]
    pub apply: ApplyKind,
    /// The s6-rc live directory of the VM database.
    #[arg(
        long,
        value_name = "DIR",
        default_value = s6rc::DEFAULT_LIVE_DIR,
        help_heading = "Applying"
    )]
    pub live: PathBuf,
    /// The s6-svscan scan directory.
    #[arg(
        long,
        value_name = "DIR",
        default_value = s6rc::DEFAULT_SCANDIR,
        help_heading = "Applying"
    )]
    pub scandir: PathBuf,
    /// Prefix of the VM services' names in the scan directory.
    #[arg(
        long,
        value_name = "P",
        default_value = s6rc::DEFAULT_PREFIX,
        help_heading = "Applying"
    )]
    pub prefix: String,
    /// Where s6-rc-compile, s6-rc-init, s6-rc-update and s6-rc are (default: PATH).
    #[arg(
        long,
        value_name = "DIR",
        env = "S6RC_BINDIR",
        help_heading = "Applying"
    )]
    pub s6rc_bindir: Option<PathBuf>,
    /// A service template directory (@VM_NAME@, @VM_VIEW@ … placeholders);
    /// default: a built-in longrun that execs the start command.
    #[arg(long, value_name = "DIR", help_heading = "Applying")]
    pub service_template: Option<PathBuf>,
    /// The command a VM service runs, with the VM name as its argument.
    #[arg(
        long,
        value_name = "PATH",
        default_value = s6rc::DEFAULT_START_COMMAND,
        help_heading = "Applying"
    )]
    pub start_command: PathBuf,
    /// Restart running VMs whose definition changed (default: mark them restart-pending).
    #[arg(long, help_heading = "Applying")]
    pub restart_changed: bool,
    /// With --apply s6-instance: the templated service directory (made with
    /// s6-instance-maker, supervised); each active VM is one instance of it.
    #[arg(
        long,
        value_name = "DIR",
        default_value = instance::DEFAULT_INSTANCE_SERVICE,
        help_heading = "Applying"
    )]
    pub instance_service: PathBuf,
    /// With --apply s6-instance: start a new instance at once, as vm-import
    /// does (default: created down).
    #[arg(long, help_heading = "Applying")]
    pub instances_up: bool,
    /// Where s6-instance-create, -delete, -list, -status and -control are
    /// (default: PATH).
    #[arg(long, value_name = "DIR", help_heading = "Applying")]
    pub instance_bindir: Option<PathBuf>,
    /// Kill any s6-rc or s6-instance program still running after this many
    /// seconds, and report the apply as failed.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Applying"
    )]
    pub program_timeout: u64,
    /// The most VM services the database may hold.
    #[arg(long, value_name = "N", help_heading = "Applying")]
    pub max_services: Option<usize>,
    /// Where each active VM's view is built.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/run/vm",
        help_heading = "Applying"
    )]
    pub vm_dir: PathBuf,
    /// How views are laid out under --vm-dir: `plain`, `<DIR>/<name>/config`,
    /// or `spectrum`, `<DIR>/by-id/<id>/config` with `<DIR>/by-name/<name>`
    /// linking to `<DIR>/by-id/<id>` (ids kept in the state directory).
    #[arg(long, value_enum, default_value = "plain", help_heading = "Applying")]
    pub vm_layout: Layout,
    /// A program run for each VM, libvirt's way: `PROGRAM prepare ID NAME`
    /// once its view exists and before its service is created, `PROGRAM
    /// release ID NAME` after its service is deleted and before its
    /// directory goes; VM_ID, VM_NAME, VM_SOURCE, VM_SOURCE_ROOT, VM_PATH,
    /// VM_DIR and VM_VIEW in its environment. A VM whose prepare fails is
    /// left out (hook-failed) and tried again.
    #[arg(long, value_name = "PROGRAM", help_heading = "Applying")]
    pub vm_hook: Option<PathBuf>,
    /// Kill a --vm-hook run (with its process group) still running after
    /// this many seconds, and count it as failed.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = crate::hooks::DEFAULT_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Applying"
    )]
    pub vm_hook_timeout: u64,

    // ── Daemon ──
    /// State: compiled databases, partition mount points, VM ids.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/run/vm-catalog",
        help_heading = "Daemon"
    )]
    pub state_dir: PathBuf,
    /// Write a newline to this file descriptor once the socket listens and
    /// the first scan and apply are done (s6 readiness notification).
    #[arg(long, value_name = "FD", help_heading = "Daemon")]
    pub notify_fd: Option<i32>,
    /// Log filter: a level (error, warn, info, debug, trace) or RUST_LOG-style
    /// directives; RUST_LOG wins when set.
    #[arg(
        long,
        value_name = "LEVEL",
        default_value = "info",
        help_heading = "Daemon"
    )]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", help_heading = "Daemon")]
    pub log_format: LogFormat,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode such as 0660"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn applier_names_are_the_command_lines() {
        for kind in [ApplyKind::S6rc, ApplyKind::S6Instance, ApplyKind::None] {
            let value = kind.to_possible_value().expect("not skipped");
            assert_eq!(value.get_name(), kind.as_str());
        }
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("666"), Ok(0o666));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("01777").is_err());
    }
}
