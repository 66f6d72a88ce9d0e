//! The daemon's configuration: the command line, checked and resolved
//! (source order, labels, groups, paths), before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use clap::ArgMatches;
use vm_catalog_protocol::{SourceLabel, Trust};

use crate::cli::{ApplyKind, DaemonArgs};
use crate::rpc::Limits;
use crate::rpc::listener::SocketOptions;

/// Why the command line cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--source` or `--trusted-source` without `LABEL=DIR`.
    #[error("{arg}: expected LABEL=DIR, got {value:?}")]
    SourceSyntax {
        /// The option.
        arg: &'static str,
        /// What was given.
        value: String,
    },
    /// An invalid source label.
    #[error("{arg}: invalid label {label:?}")]
    Label {
        /// The option.
        arg: &'static str,
        /// What was given.
        label: String,
        /// Why.
        #[source]
        source: vm_catalog_protocol::NameError,
    },
    /// Two sources with one label.
    #[error(
        "two sources are labelled {0:?}; labels must be unique (`builtin` is taken, and `user` unless --no-partitions)"
    )]
    DuplicateLabel(String),
    /// A relative path that cannot be made absolute (no working directory).
    #[error("{arg}: cannot make {path} absolute")]
    Relative {
        /// The option.
        arg: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A group that does not exist.
    #[error("{arg}: no group {group:?}")]
    Group {
        /// The option.
        arg: &'static str,
        /// The group.
        group: String,
    },
    /// A trusted target prefix that is not an absolute, normal path.
    #[error("--trusted-target: {0} must be an absolute path without '.' or '..' components")]
    TrustedTarget(PathBuf),
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

/// A directory source, in precedence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSource {
    /// Its label.
    pub label: SourceLabel,
    /// Its root.
    pub root: PathBuf,
    /// Its trust.
    pub trust: Trust,
    /// Whether it is the built-in source.
    pub builtin: bool,
}

/// Partition discovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionConfig {
    /// Disks to look at: empty means the root file system's disk.
    pub disks: Vec<String>,
    /// Every disk.
    pub all_disks: bool,
    /// `ext=` override.
    pub ext: Option<String>,
    /// Where to read `ext=` from.
    pub cmdline: PathBuf,
    /// `fsck -p` first.
    pub fsck: bool,
    /// uevent netlink group.
    pub uevent_group: u32,
    /// The sysfs root.
    pub sysfs: PathBuf,
    /// Where partitions are mounted (`<state-dir>/mnt`).
    pub mount_base: PathBuf,
}

/// s6-rc applier settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S6rcConfig {
    /// Live directory.
    pub live: PathBuf,
    /// Scan directory.
    pub scandir: PathBuf,
    /// Service name prefix in the scan directory.
    pub prefix: String,
    /// Where the s6-rc programs are (`None`: `PATH`).
    pub bindir: Option<PathBuf>,
    /// Service template directory.
    pub template: Option<PathBuf>,
    /// The VM start command.
    pub start_command: PathBuf,
    /// Restart running VMs whose definition changed.
    pub restart_changed: bool,
    /// Most VM services.
    pub max_services: Option<usize>,
    /// Compiled databases and rendered sources (`<state-dir>/s6-rc`).
    pub state: PathBuf,
}

/// Everything the daemon needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The socket.
    pub socket: SocketConfig,
    /// May rescan besides root.
    pub admin_gid: Option<u32>,
    /// Client limits.
    pub limits: Limits,
    /// Directory sources, in precedence order (built-in first).
    pub sources: Vec<DirSource>,
    /// Trusted symlink target prefixes.
    pub trusted_targets: Vec<PathBuf>,
    /// Debounce of directory watches; `None`: no watching.
    pub watch: Option<Duration>,
    /// Partition discovery; `None`: off.
    pub partitions: Option<PartitionConfig>,
    /// The s6-rc applier; `None`: `--apply none`.
    pub s6rc: Option<S6rcConfig>,
    /// Views root.
    pub vm_dir: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Readiness notification fd.
    pub notify_fd: Option<i32>,
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
        Ok(Config {
            socket,
            admin_gid,
            limits: Limits {
                max_connections: args.max_connections,
                max_connections_per_uid: args.max_connections_per_uid,
                ..Limits::default()
            },
            sources: sources(args, matches)?,
            trusted_targets: trusted_targets(&args.trusted_targets)?,
            watch: (!args.no_watch).then(|| Duration::from_millis(args.debounce_ms)),
            partitions: (!args.no_partitions).then(|| PartitionConfig {
                disks: args.partition_disks.clone(),
                all_disks: args.all_disks,
                ext: args.ext.clone(),
                cmdline: args.cmdline.clone(),
                fsck: args.fsck,
                uevent_group: args.uevent_group,
                sysfs: args.sysfs.clone(),
                mount_base: state_dir.join("mnt"),
            }),
            s6rc: match args.apply {
                ApplyKind::None => None,
                ApplyKind::S6rc => Some(S6rcConfig {
                    live: absolute("--live", &args.live)?,
                    scandir: absolute("--scandir", &args.scandir)?,
                    prefix: args.prefix.clone(),
                    bindir: args.s6rc_bindir.clone(),
                    template: args
                        .service_template
                        .as_deref()
                        .map(|t| absolute("--service-template", t))
                        .transpose()?,
                    start_command: absolute("--start-command", &args.start_command)?,
                    restart_changed: args.restart_changed,
                    max_services: args.max_services,
                    state: state_dir.join("s6-rc"),
                }),
            },
            vm_dir: absolute("--vm-dir", &args.vm_dir)?,
            state_dir,
            notify_fd: args.notify_fd,
        })
    }
}

fn absolute(arg: &'static str, p: &std::path::Path) -> Result<PathBuf, ConfigError> {
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

fn sources(args: &DaemonArgs, matches: Option<&ArgMatches>) -> Result<Vec<DirSource>, ConfigError> {
    let mut out = vec![DirSource {
        label: "builtin".parse().expect("valid label"),
        root: absolute("--builtin", &args.builtin)?,
        trust: Trust::Trusted,
        builtin: true,
    }];
    // (position on the command line, source)
    let mut extra: Vec<(usize, DirSource)> = Vec::new();
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
            let (label, dir) = value
                .split_once('=')
                .ok_or_else(|| ConfigError::SourceSyntax {
                    arg,
                    value: value.clone(),
                })?;
            let label = SourceLabel::try_from(label).map_err(|source| ConfigError::Label {
                arg,
                label: label.to_owned(),
                source,
            })?;
            let root = absolute(arg, std::path::Path::new(dir))?;
            let pos = positions.get(n).copied().unwrap_or(usize::MAX / 2 + n);
            extra.push((
                pos,
                DirSource {
                    label,
                    root,
                    trust,
                    builtin: false,
                },
            ));
        }
    }
    extra.sort_by_key(|(pos, _)| *pos);
    out.extend(extra.into_iter().map(|(_, s)| s));
    let mut labels: Vec<&str> = out.iter().map(|s| s.label.as_str()).collect();
    if !args.no_partitions {
        // The primary user partition's label.
        labels.push("user");
    }
    labels.sort_unstable();
    if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
        return Err(ConfigError::DuplicateLabel(w[0].to_owned()));
    }
    Ok(out)
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
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::{CommandFactory, FromArgMatches};

    fn resolve(argv: &[&str]) -> Result<Config, ConfigError> {
        let m = Cli::command().try_get_matches_from(argv).unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        Config::resolve(&cli.daemon, Some(&m))
    }

    #[test]
    fn sources_keep_command_line_order_across_both_options() {
        let c = resolve(&[
            "vm-catalogd",
            "--source",
            "a=/a",
            "--trusted-source",
            "t=/t",
            "--source",
            "b=/b",
        ])
        .unwrap();
        let order: Vec<_> = c
            .sources
            .iter()
            .map(|s| (s.label.as_str(), s.trust))
            .collect();
        assert_eq!(
            order,
            [
                ("builtin", Trust::Trusted),
                ("a", Trust::Untrusted),
                ("t", Trust::Trusted),
                ("b", Trust::Untrusted)
            ]
        );
    }

    #[test]
    fn bad_sources_are_refused_clearly() {
        let e = resolve(&["vm-catalogd", "--source", "nolabel"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--source: expected LABEL=DIR, got \"nolabel\""
        );
        let e = resolve(&["vm-catalogd", "--source", "bad label=/x"]).unwrap_err();
        assert!(e.to_string().starts_with("--source: invalid label"), "{e}");
        let e = resolve(&["vm-catalogd", "--source", "user=/x"]).unwrap_err();
        assert!(matches!(e, ConfigError::DuplicateLabel(l) if l == "user"));
        assert!(resolve(&["vm-catalogd", "--no-partitions", "--source", "user=/x"]).is_ok());
        let e = resolve(&[
            "vm-catalogd",
            "--source",
            "a=/x",
            "--trusted-source",
            "a=/y",
        ])
        .unwrap_err();
        assert!(matches!(e, ConfigError::DuplicateLabel(l) if l == "a"));
    }

    #[test]
    fn trusted_targets_must_be_absolute_and_normal() {
        assert!(resolve(&["vm-catalogd", "--trusted-target", "/opt/img/"]).is_ok());
        for bad in ["img/", "/usr/img/../..", "relative/../x"] {
            let e = resolve(&["vm-catalogd", "--trusted-target", bad]).unwrap_err();
            assert!(matches!(e, ConfigError::TrustedTarget(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(group("--admin-group", "0").unwrap(), 0);
        assert!(group("--admin-group", "root").is_ok());
        assert!(group("--admin-group", "no-such-group-here").is_err());
    }

    #[test]
    fn defaults() {
        let c = resolve(&["vm-catalogd"]).unwrap();
        assert_eq!(
            c.socket,
            SocketConfig::Path(SocketOptions {
                path: "/run/vm-catalog/socket".into(),
                mode: 0o666,
                group: None,
            })
        );
        assert_eq!(c.sources.len(), 1);
        assert_eq!(c.watch, Some(Duration::from_millis(200)));
        assert!(c.partitions.is_some());
        let s = c.s6rc.unwrap();
        assert_eq!(s.live, PathBuf::from("/run/s6-rc.vm"));
        assert_eq!(s.prefix, "vm-");
        assert_eq!(s.state, PathBuf::from("/run/vm-catalog/s6-rc"));
    }
}
