//! The configuration stage: the command line ([`crate::cli`], low-level
//! arguments) turned into the types each part of the daemon takes, checked
//! and resolved (source order, labels, groups, absolute paths) before
//! anything starts. Nothing here is copied again later: the sources are
//! [`SourceSpec`]s, the partition manager gets its [`PartitionConfig`], the
//! s6-rc applier its [`S6rcConfig`], the s6-instance applier its
//! [`InstanceConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use vm_catalog_protocol::{SourceLabel, Trust, VmName};

use crate::apply::instance::{InstanceConfig, Naming};
use crate::apply::s6rc::S6rcConfig;
use crate::catalog::{Layout, MergeOptions};
use crate::cli::{ApplyKind, DaemonArgs};
use crate::definition::ScanOptions;
use crate::hooks::HookConfig;
use crate::rescan::PipelineConfig;
use crate::rpc::Limits;
use crate::rpc::listener::SocketOptions;
use crate::rpc::ui_vm::{Access, Owner, Parent, SocketTemplate, UiVmConfig, UserTemplate};
use crate::source::SourceSpec;
use crate::source::partition::discover::PRIMARY_LABEL;
use crate::source::partition::{DiskPolicy, ExtSource, PartitionConfig, UeventGroup};

/// Why the command line cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--source` or `--trusted-source` without `LABEL=DIR`.
    #[error("{arg}: expected LABEL=DIR, got {value:?}")]
    SourceSyntax {
        arg: &'static str,
        /// What was given.
        value: String,
    },
    /// An invalid source label.
    #[error("{arg}: invalid label {label:?}")]
    Label {
        arg: &'static str,
        /// What was given.
        label: String,
        #[source]
        source: vm_catalog_protocol::NameError,
    },
    /// Two sources with one label.
    #[error(
        "two sources are labelled {0:?}; labels must be unique (`builtin` is taken, and `user` unless --no-partitions)"
    )]
    DuplicateLabel(SourceLabel),
    /// A relative path that cannot be made absolute (no working directory).
    #[error("{arg}: cannot make {path} absolute")]
    Relative {
        arg: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A group that does not exist.
    #[error("{arg}: no group {group:?}")]
    Group {
        arg: &'static str,
        /// The group.
        group: String,
    },
    /// A trusted target prefix that is not an absolute, normal path.
    #[error("--trusted-target: {0} must be an absolute path without '.' or '..' components")]
    TrustedTarget(PathBuf),
    /// A `--ui-vm` that is not a VM name.
    #[error("--ui-vm: invalid name {name:?}")]
    UiVmName {
        /// What was given.
        name: String,
        #[source]
        source: vm_catalog_protocol::NameError,
    },
    /// A `--ui-vm-socket` template that cannot be used.
    #[error("--ui-vm-socket: {0}")]
    UiVmSocket(#[source] crate::rpc::ui_vm::TemplateError),
    /// `--vm-hook` is not an executable file.
    #[error("--vm-hook: {} is not an executable file", .0.display())]
    VmHook(PathBuf),
    /// A `--ui-vm-socket-owner` template that cannot be used.
    #[error("--ui-vm-socket-owner: {0}")]
    UiVmOwner(#[source] crate::rpc::ui_vm::TemplateError),
    /// A user that does not exist.
    #[error("{arg}: no user {user:?}")]
    User {
        arg: &'static str,
        /// The user.
        user: String,
    },
    /// A prefix s6 cannot take.
    #[error("--prefix: {0:?} must not contain '/' or a newline")]
    Prefix(String),
}

/// Where the socket comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketConfig {
    /// Create it.
    Path(SocketOptions),
    /// Inherited as this file descriptor.
    Fd(i32),
}

pub use crate::apply::ApplyConfig;

impl ApplyConfig {
    /// Which applier this is, as the command line names it.
    pub fn kind(&self) -> ApplyKind {
        match self {
            ApplyConfig::None => ApplyKind::None,
            ApplyConfig::S6rc(_) => ApplyKind::S6rc,
            ApplyConfig::Instance(_) => ApplyKind::S6Instance,
        }
    }
}

/// Everything the daemon needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub socket: SocketConfig,
    /// May rescan besides root.
    pub admin_gid: Option<u32>,
    /// Client limits.
    pub limits: Limits,
    /// What the rescan pipeline is made of: the sources, the partition
    /// manager, the views, the hooks and the applier.
    pub pipeline: PipelineConfig,
    /// Debounce of directory watches; `None`: no watching.
    pub watch: Option<Duration>,
    /// Readiness notification fd.
    pub notify_fd: Option<i32>,
    /// The UI VMs' listeners; `None`: no `--ui-vm`.
    pub ui_vms: Option<UiVmConfig>,
}

impl Config {
    /// Resolves `args`; `matches` gives the relative order of `--source` and
    /// `--trusted-source`.
    pub fn resolve(args: &DaemonArgs, matches: Option<&ArgMatches>) -> Result<Config, ConfigError> {
        let socket = match args.socket_fd {
            Some(fd) => SocketConfig::Fd(fd),
            None => SocketConfig::Path(SocketOptions {
                path: absolute("--socket", &args.socket)?,
                mode: args.socket_mode,
                group: args
                    .socket_group
                    .as_deref()
                    .map(|g| group("--socket-group", g))
                    .transpose()?,
            }),
        };
        let admin_gid = args
            .admin_group
            .as_deref()
            .map(|g| group("--admin-group", g))
            .transpose()?;
        if args.prefix.contains('/') || args.prefix.contains('\n') {
            return Err(ConfigError::Prefix(args.prefix.clone()));
        }
        let state_dir = absolute("--state-dir", &args.state_dir)?;
        let vm_dir = absolute("--vm-dir", &args.vm_dir)?;
        Ok(Config {
            ui_vms: ui_vms(args, &vm_dir)?,
            socket,
            admin_gid,
            limits: Limits {
                max_connections: args.max_connections,
                max_connections_per_uid: args.max_connections_per_uid,
                vm_connections: args.max_connections_per_vm,
                vm_calls: args.max_calls_per_vm,
                ..Limits::default()
            },
            watch: (!args.no_watch).then(|| Duration::from_millis(args.debounce_ms)),
            notify_fd: args.notify_fd,
            pipeline: PipelineConfig {
                sources: sources(args, matches)?,
                scan: ScanOptions {
                    trusted_prefixes: trusted_targets(&args.trusted_targets)?,
                    ..ScanOptions::default()
                },
                partitions: (!args.no_partitions).then(|| partitions(args, &state_dir)),
                apply: match args.apply {
                    ApplyKind::None => ApplyConfig::None,
                    ApplyKind::S6rc => ApplyConfig::S6rc(Box::new(s6rc(args, &state_dir)?)),
                    ApplyKind::S6Instance => {
                        ApplyConfig::Instance(Box::new(instance(args, &state_dir)?))
                    }
                },
                merge: MergeOptions {
                    names: args.names,
                    layout: args.vm_layout,
                    vm_dir,
                    cross_source_providers: args.allow_cross_source_providers,
                },
                ids_file: state_dir.join("vm-ids"),
                vm_hook: vm_hook(args, &state_dir)?,
            },
        })
    }
}

/// The per-VM hook, if one is named: an executable file.
fn vm_hook(args: &DaemonArgs, state_dir: &Path) -> Result<Option<HookConfig>, ConfigError> {
    let Some(p) = &args.vm_hook else {
        return Ok(None);
    };
    let program = absolute("--vm-hook", p)?;
    if !crate::apply::process::executable(&program) {
        return Err(ConfigError::VmHook(program));
    }
    Ok(Some(HookConfig {
        program,
        timeout: Duration::from_secs(args.vm_hook_timeout),
        record: state_dir.join("vm-hooks.json"),
    }))
}

/// The UI VMs' listeners, if any VM is named.
fn ui_vms(args: &DaemonArgs, vm_dir: &Path) -> Result<Option<UiVmConfig>, ConfigError> {
    if args.ui_vms.is_empty() {
        return Ok(None);
    }
    let names = args
        .ui_vms
        .iter()
        .map(|n| {
            VmName::try_from(n.as_str()).map_err(|source| ConfigError::UiVmName {
                name: n.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let socket = match &args.ui_vm_socket {
        Some(t) => SocketTemplate::parse(t).map_err(ConfigError::UiVmSocket)?,
        None => SocketTemplate::default_for(args.vm_layout),
    };
    Ok(Some(UiVmConfig {
        names,
        port: args.vsock_port,
        socket,
        vm_dir: vm_dir.to_owned(),
        access: Access {
            mode: args.ui_vm_socket_mode,
            owner: ui_vm_owner(args.ui_vm_socket_owner.as_deref())?,
            group: args
                .ui_vm_socket_group
                .as_deref()
                .map(|g| group("--ui-vm-socket-group", g))
                .transpose()?,
        },
        parent: match args.vm_layout {
            Layout::Plain => Parent::Create,
            // `/run/vsock/<id>` is the VM's hook's to make.
            Layout::Spectrum => Parent::Existing,
        },
    }))
}

/// `--ui-vm-socket-owner`: a user, or a template with `{id}` or `{name}`.
fn ui_vm_owner(arg: Option<&str>) -> Result<Owner, ConfigError> {
    let Some(u) = arg else {
        return Ok(Owner::Unchanged);
    };
    match UserTemplate::parse(u).map_err(ConfigError::UiVmOwner)? {
        Some(t) => Ok(Owner::PerVm(t)),
        None => user("--ui-vm-socket-owner", u).map(Owner::Uid),
    }
}

/// A user by name or number.
fn user(arg: &'static str, u: &str) -> Result<u32, ConfigError> {
    if let Ok(n) = u.parse::<u32>() {
        return Ok(n);
    }
    let err = || ConfigError::User {
        arg,
        user: u.to_owned(),
    };
    crate::rpc::ui_vm::uid_of(u).ok_or_else(err)
}

/// The partition manager's configuration, mounting under `<state-dir>/mnt`.
fn partitions(args: &DaemonArgs, state_dir: &Path) -> PartitionConfig {
    let mut c = PartitionConfig::new(state_dir.join("mnt"));
    c.sysfs_root = args.sysfs.clone();
    c.disks = if args.all_disks {
        DiskPolicy::All
    } else if args.partition_disks.is_empty() {
        DiskPolicy::RootDisk
    } else {
        DiskPolicy::Named(args.partition_disks.clone())
    };
    c.ext = match &args.ext {
        Some(v) => ExtSource::Value(v.clone()),
        None => ExtSource::Cmdline(args.cmdline.clone()),
    };
    c.fsck = args.fsck;
    c.uevent_group = UeventGroup::from(args.uevent_group);
    c
}

/// The s6-rc applier's configuration, with its state under `<state-dir>/s6-rc`.
fn s6rc(args: &DaemonArgs, state_dir: &Path) -> Result<S6rcConfig, ConfigError> {
    let mut c = S6rcConfig::new(state_dir.join("s6-rc"));
    c.bin_dir = args.s6rc_bindir.clone();
    c.live_dir = absolute("--live", &args.live)?;
    c.scandir = absolute("--scandir", &args.scandir)?;
    c.prefix = args.prefix.clone();
    c.template_dir = args
        .service_template
        .as_deref()
        .map(|t| absolute("--service-template", t))
        .transpose()?;
    c.start_command = absolute("--start-command", &args.start_command)?;
    c.restart_changed = args.restart_changed;
    if let Some(m) = args.max_services {
        c.max_services = m;
    }
    c.timeout = Duration::from_secs(args.program_timeout);
    Ok(c)
}

/// The s6-instance applier's configuration, with its state under
/// `<state-dir>/s6-instance`; instances are named by id in the spectrum
/// layout, by name otherwise.
fn instance(args: &DaemonArgs, state_dir: &Path) -> Result<InstanceConfig, ConfigError> {
    let mut c = InstanceConfig::new(state_dir.join("s6-instance"));
    c.service = absolute("--instance-service", &args.instance_service)?;
    c.bin_dir = args
        .instance_bindir
        .as_deref()
        .map(|d| absolute("--instance-bindir", d))
        .transpose()?;
    c.naming = match args.vm_layout {
        Layout::Spectrum => Naming::Id,
        Layout::Plain => Naming::Name,
    };
    c.start = args.instances_up;
    c.restart_changed = args.restart_changed;
    c.timeout = Duration::from_secs(args.program_timeout);
    Ok(c)
}

fn absolute(arg: &'static str, p: &Path) -> Result<PathBuf, ConfigError> {
    if p.is_absolute() {
        Ok(p.to_owned())
    } else {
        // Relative paths are taken from the working directory once, here,
        // so the daemon never depends on it later.
        std::env::current_dir()
            .map(|d| d.join(p))
            .map_err(|_| ConfigError::Relative {
                arg,
                path: p.to_owned(),
            })
    }
}

fn trusted_targets(prefixes: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    prefixes
        .iter()
        .map(|p| {
            if crate::definition::is_valid_prefix(p) {
                Ok(p.clone())
            } else {
                Err(ConfigError::TrustedTarget(p.clone()))
            }
        })
        .collect()
}

fn sources(
    args: &DaemonArgs,
    matches: Option<&ArgMatches>,
) -> Result<Vec<SourceSpec>, ConfigError> {
    let mut out = vec![builtin(&args.builtin)?];
    // (position on the command line, source)
    let mut extra: Vec<(usize, SourceSpec)> = Vec::new();
    for (arg, id, values, trust) in [
        ("--source", "sources", &args.sources, Trust::Untrusted),
        (
            "--trusted-source",
            "trusted_sources",
            &args.trusted_sources,
            Trust::Trusted,
        ),
    ] {
        let positions: Vec<usize> = matches
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default();
        for (n, value) in values.iter().enumerate() {
            let (label, root) = label_dir(arg, value)?;
            let pos = positions.get(n).copied().unwrap_or(usize::MAX / 2 + n);
            extra.push((pos, SourceSpec::directory(label, root, trust)));
        }
    }
    extra.sort_by_key(|(pos, _)| *pos);
    out.extend(extra.into_iter().map(|(_, s)| s));
    let mut labels: Vec<SourceLabel> = out.iter().map(|s| s.label.clone()).collect();
    if !args.no_partitions {
        labels.push(SourceLabel::try_from(PRIMARY_LABEL).expect("the primary label is valid"));
    }
    labels.sort_unstable();
    if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
        return Err(ConfigError::DuplicateLabel(w[0].clone()));
    }
    Ok(out)
}

/// The built-in source of `--builtin [LABEL=]DIR` (labelled `builtin`
/// unless a label is given).
fn builtin(value: &Path) -> Result<SourceSpec, ConfigError> {
    let text = value.to_string_lossy();
    let labelled = text
        .split_once('=')
        .filter(|(l, _)| SourceLabel::try_from(*l).is_ok());
    Ok(match labelled {
        Some(_) => {
            let (label, root) = label_dir("--builtin", &text)?;
            SourceSpec::builtin(root).with_label(label)
        }
        None => SourceSpec::builtin(absolute("--builtin", value)?),
    })
}

/// A `LABEL=DIR` argument of `arg`: the label, and the directory made
/// absolute.
pub fn label_dir(arg: &'static str, value: &str) -> Result<(SourceLabel, PathBuf), ConfigError> {
    let (label, dir) = value
        .split_once('=')
        .ok_or_else(|| ConfigError::SourceSyntax {
            arg,
            value: value.to_owned(),
        })?;
    let label = SourceLabel::try_from(label).map_err(|source| ConfigError::Label {
        arg,
        label: label.to_owned(),
        source,
    })?;
    Ok((label, absolute(arg, Path::new(dir))?))
}

/// A group by name or number.
fn group(arg: &'static str, g: &str) -> Result<u32, ConfigError> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    let err = || ConfigError::Group {
        arg,
        group: g.to_owned(),
    };
    let name = std::ffi::CString::new(g).map_err(|_| err())?;
    let mut grp: libc::group = unsafe_zeroed_group();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is NUL-terminated,
    // `grp` and `buf` outlive it and `buf.len()` is its size; `result` is
    // written by the call.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(err());
    }
    Ok(grp.gr_gid)
}

fn unsafe_zeroed_group() -> libc::group {
    // SAFETY: `libc::group` is a plain C struct of integers and pointers, for
    // which all-zero bytes are a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests;
