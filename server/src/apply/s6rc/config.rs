//! The s6-rc applier's configuration, its defaults and their reasons.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vm_catalog_protocol::MAX_NAME_LEN;

use super::render::{MAX_SCANDIR_NAME, is_safe_path};

/// Default live directory of the VM database.
pub const DEFAULT_LIVE_DIR: &str = "/run/s6-rc.vm";
/// Default scan directory (shared with the host's own services).
pub const DEFAULT_SCANDIR: &str = "/run/service";
/// Default scan-directory prefix: VM `netvm` is linked as `vm-netvm`.
pub const DEFAULT_PREFIX: &str = "vm-";
/// Default VM start command, run as `START NAME`.
pub const DEFAULT_START_COMMAND: &str = "/bin/start-vmm";

/// Default maximum of VM services.
///
/// s6-svscan 2.11 supervises at most 500 entries of the scan directory by
/// default (`-c`), and that counts the host's own services and s6-rc's two
/// internal services of this database too. Past it, s6-rc-init waits forever
/// and s6-rc-update fails *after* the switch with every link removed
/// (s6rc.md §2.6, §2.7). 400 leaves 98 entries for the host.
pub const DEFAULT_MAX_SERVICES: usize = 400;

/// The hard ceiling of VM services: s6 ≤ 2.12 waits for at most 1000 new
/// supervisors in one init or update (FTRIGR_MAX), every down service counts,
/// and s6-rc adds two internal longruns (s6rc.md §2.7).
pub const MAX_SERVICES_LIMIT: usize = 998;

/// Default time s6-rc-init waits for its supervisors (`-t`).
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default deadline of every s6-rc program the applier runs, and of its
/// wait at start-up for s6-rc programs already working on the live
/// directory.
///
/// An update normally takes seconds even at 998 VMs (s6rc.md §2.8); it
/// waits longer only for someone's `s6-rc` holding the live lock, or for a
/// VM that will not stop (without `timeout-down`) or start (without
/// `timeout-up`). Past the deadline the program is killed and the apply
/// reports it, rather than blocking every later rescan.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How the s6-rc applier is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S6rcConfig {
    /// Directory of `s6-rc-compile`, `s6-rc-init`, `s6-rc-update`, `s6-rc`
    /// and `s6-rc-db`; `None` searches `PATH`. It goes first on the `PATH`
    /// of every s6-rc program the applier runs.
    pub bin_dir: Option<PathBuf>,
    /// The live directory (`-l`). Default [`DEFAULT_LIVE_DIR`].
    pub live_dir: PathBuf,
    /// The scan directory that s6-svscan watches. Default [`DEFAULT_SCANDIR`].
    pub scandir: PathBuf,
    /// The scan-directory prefix (`s6-rc-init -p`). Default
    /// [`DEFAULT_PREFIX`]. It is fixed when the live directory is created.
    pub prefix: String,
    /// Where compiled databases, rendered sources and `state.json` live;
    /// the daemon passes `<state-dir>/s6-rc`.
    pub state_dir: PathBuf,
    /// A service template directory; `None` uses the built-in one.
    pub template_dir: Option<PathBuf>,
    /// The VM start command (`@VM_START@`). Default
    /// [`DEFAULT_START_COMMAND`].
    pub start_command: PathBuf,
    /// Most VM services in the database. Default [`DEFAULT_MAX_SERVICES`],
    /// at most [`MAX_SERVICES_LIMIT`].
    pub max_services: usize,
    /// Restart running VMs whose definition changed, through the conversion
    /// file. Default `false`: they are reported restart-pending instead.
    pub restart_changed: bool,
    /// How long s6-rc-init waits for the supervisors. Default
    /// [`DEFAULT_INIT_TIMEOUT`].
    pub init_timeout: Duration,
    /// How long any other s6-rc program may run before it is killed, and
    /// how long the applier waits at start-up for s6-rc programs already
    /// working on the live directory. Default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
}

impl S6rcConfig {
    /// The defaults, with compiled databases under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> S6rcConfig {
        S6rcConfig {
            bin_dir: None,
            live_dir: DEFAULT_LIVE_DIR.into(),
            scandir: DEFAULT_SCANDIR.into(),
            prefix: DEFAULT_PREFIX.into(),
            state_dir: state_dir.into(),
            template_dir: None,
            start_command: DEFAULT_START_COMMAND.into(),
            max_services: DEFAULT_MAX_SERVICES,
            restart_changed: false,
            init_timeout: DEFAULT_INIT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Checks everything that does not need the file system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (what, p) in [
            ("live_dir", &self.live_dir),
            ("scandir", &self.scandir),
            ("state_dir", &self.state_dir),
        ] {
            if !p.is_absolute() {
                return Err(ConfigError::NotAbsolute(what, p.clone()));
            }
        }
        if let Some(d) = self.bin_dir.as_ref().filter(|d| !d.is_absolute()) {
            return Err(ConfigError::NotAbsolute("bin_dir", d.clone()));
        }
        if self.live_dir.file_name().is_none() || self.live_dir == Path::new("/") {
            return Err(ConfigError::NotAbsolute("live_dir", self.live_dir.clone()));
        }
        check_prefix(&self.prefix)?;
        let start = self.start_command.to_str().unwrap_or_default();
        if !is_safe_path(start) {
            return Err(ConfigError::StartCommand(self.start_command.clone()));
        }
        if self.max_services == 0 || self.max_services > MAX_SERVICES_LIMIT {
            return Err(ConfigError::MaxServices(self.max_services));
        }
        if self.init_timeout.is_zero() {
            return Err(ConfigError::InitTimeout);
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Timeout);
        }
        Ok(())
    }
}

/// The longest prefix that leaves room for every valid VM name.
pub const MAX_PREFIX_LEN: usize = MAX_SCANDIR_NAME - MAX_NAME_LEN;

fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    let bad = |why| Err(ConfigError::Prefix(prefix.to_owned(), why));
    if prefix.len() > MAX_PREFIX_LEN {
        return bad("it leaves no room for 64-byte vm names in 251 bytes");
    }
    if prefix.starts_with('.') {
        return bad("s6-svscan ignores scan directory entries that start with '.'");
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A path that must be absolute is not.
    #[error("{0} must be an absolute path, not {1:?}")]
    NotAbsolute(&'static str, PathBuf),
    /// The prefix is unusable.
    #[error("prefix {0:?} is unusable: {1}")]
    Prefix(String, &'static str),
    /// The start command is not a plain absolute path.
    #[error(
        "start command {0:?} must be an absolute path of ASCII letters, digits and ._/+- (use a template for more)"
    )]
    StartCommand(PathBuf),
    /// The maximum of services is out of range.
    #[error("max_services {0} is out of range 1..={MAX_SERVICES_LIMIT}")]
    MaxServices(usize),
    /// A zero init timeout.
    #[error("init_timeout must not be zero")]
    InitTimeout,
    /// A zero timeout.
    #[error("timeout must not be zero")]
    Timeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = S6rcConfig::new("/var/lib/vm-catalogd/s6-rc");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.live_dir, Path::new("/run/s6-rc.vm"));
        assert_eq!(c.scandir, Path::new("/run/service"));
        assert_eq!(c.prefix, "vm-");
        assert!(!c.restart_changed);
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let ok = S6rcConfig::new("/s");
        let mut c = ok.clone();
        c.state_dir = "rel".into();
        assert_eq!(
            c.validate(),
            Err(ConfigError::NotAbsolute("state_dir", "rel".into()))
        );
        let mut c = ok.clone();
        c.prefix = ".vm-".into();
        assert!(c.validate().unwrap_err().to_string().contains("ignores"));
        c.prefix = "vm/".into();
        assert!(c.validate().is_err());
        c.prefix = "p".repeat(MAX_PREFIX_LEN + 1);
        assert!(c.validate().is_err());
        c.prefix = "p".repeat(MAX_PREFIX_LEN);
        assert_eq!(c.validate(), Ok(()));
        let mut c = ok.clone();
        c.start_command = "/bin/start vmm".into();
        assert!(matches!(c.validate(), Err(ConfigError::StartCommand(_))));
        let mut c = ok.clone();
        c.max_services = MAX_SERVICES_LIMIT + 1;
        assert_eq!(c.validate(), Err(ConfigError::MaxServices(999)));
        let mut c = ok.clone();
        c.timeout = Duration::ZERO;
        assert_eq!(c.validate(), Err(ConfigError::Timeout));
    }
}
