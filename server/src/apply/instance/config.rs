//! The s6-instance applier's configuration, its defaults and their reasons.

use std::path::PathBuf;
use std::time::Duration;

/// Default templated service: Spectrum's `/run/service/vmm`.
pub const DEFAULT_INSTANCE_SERVICE: &str = "/run/service/vmm";

/// Default deadline of every `s6-instance-*` program. A create or delete
/// takes milliseconds; a delete waits for the VMM to stop, which a VMM
/// without a `timeout-kill` may delay. Past the deadline the program is
/// killed and the apply reports it (and retries later).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What an instance is named after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The VM's id (`--vm-layout spectrum`, as `vm-import` does).
    Id,
    /// The VM's catalog name.
    Name,
}

/// How the s6-instance applier is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// The templated service directory (made with `s6-instance-maker`,
    /// supervised: linked in a scan directory of a running `s6-svscan`).
    /// Default [`DEFAULT_INSTANCE_SERVICE`].
    pub service: PathBuf,
    /// Where `state.json` lives; the daemon passes `<state-dir>/s6-instance`.
    pub state_dir: PathBuf,
    /// Directory of the `s6-instance-*` programs; `None` searches `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// What instances are named after.
    pub naming: Naming,
    /// Start a new instance at once (`vm-import`'s way); default `false`:
    /// new instances are created down (with a `down` file).
    pub start: bool,
    /// Restart running VMs whose definition changed
    /// (`s6-instance-control -r`). Default `false`: restart-pending.
    pub restart_changed: bool,
    /// How long any program may run before it is killed. Default
    /// [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
}

impl InstanceConfig {
    /// The defaults, with the state under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> InstanceConfig {
        InstanceConfig {
            service: DEFAULT_INSTANCE_SERVICE.into(),
            state_dir: state_dir.into(),
            bin_dir: None,
            naming: Naming::Name,
            start: false,
            restart_changed: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Checks everything that does not need the file system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (what, p) in [("service", &self.service), ("state_dir", &self.state_dir)] {
            if !p.is_absolute() || p.file_name().is_none() {
                return Err(ConfigError::NotAbsolute(what, p.clone()));
            }
        }
        if let Some(d) = self.bin_dir.as_ref().filter(|d| !d.is_absolute()) {
            return Err(ConfigError::NotAbsolute("bin_dir", d.clone()));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Timeout);
        }
        Ok(())
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A path that must be absolute (and not `/`) is not.
    #[error("{0} must be an absolute path below /, not {1:?}")]
    NotAbsolute(&'static str, PathBuf),
    /// A zero timeout.
    #[error("timeout must not be zero")]
    Timeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_refused() {
        let c = InstanceConfig::new("/var/lib/vm-catalogd/s6-instance");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.service, PathBuf::from("/run/service/vmm"));
        assert!(!c.start && !c.restart_changed);
        let mut bad = c.clone();
        bad.service = "vmm".into();
        assert_eq!(
            bad.validate(),
            Err(ConfigError::NotAbsolute("service", "vmm".into()))
        );
        bad.service = "/".into();
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.timeout = Duration::ZERO;
        assert_eq!(bad.validate(), Err(ConfigError::Timeout));
    }
}
