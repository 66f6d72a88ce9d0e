//! Instance names: what `s6-instance-create` accepts, and which name each
//! VM's instance gets.
//!
//! `s6-instance-create` refuses an empty name, one that starts with `.`
//! (s6-svscan would ignore it) and one with a `/`; a name longer than a
//! file name (255 bytes) fails when its directory is made. A VM's instance
//! is named by its id ([`Naming::Id`], the spectrum layout) or by its
//! catalog name ([`Naming::Name`]). Neither a [`VmId`] (1–32 letters and
//! digits) nor a [`VmName`] (1–64 bytes, first a letter or a digit, no `/`)
//! can break these rules today; the check stays, so that a VM whose name
//! cannot be an instance name is left out with `invalid-name` rather than
//! failing at `s6-instance-create`.
//!
//! [`VmId`]: vm_catalog_protocol::VmId

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use vm_catalog_protocol::{DiagCode, VmName};

use super::config::Naming;
use crate::apply::applier::{ActiveVm, LeftOut};

/// Longest instance name: the longest file name.
pub const MAX_INSTANCE_NAME: usize = 255;

/// A name `s6-instance-create` accepts.
///
/// ```
/// use vm_catalogd::apply::instance::InstanceName;
/// assert!(InstanceName::new("a1B2c3").is_ok());
/// assert!(InstanceName::new("sys.netvm").is_ok());
/// for bad in ["", ".x", "a/b", "a\nb", &"x".repeat(256)] {
///     assert!(InstanceName::new(bad).is_err(), "{bad:?}");
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct InstanceName(String);

/// Why a string cannot be an instance name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadInstanceName {
    /// Empty.
    #[error("an instance name cannot be empty")]
    Empty,
    /// Longer than a file name.
    #[error("an instance name is at most {MAX_INSTANCE_NAME} bytes")]
    TooLong,
    /// Starts with `.` (s6-svscan ignores such entries).
    #[error("an instance name cannot start with '.'")]
    Dot,
    /// Holds a `/`, a NUL or a control character.
    #[error("an instance name cannot hold '/' or control characters")]
    Character,
}

impl InstanceName {
    /// Checks `s`.
    pub fn new(s: &str) -> Result<InstanceName, BadInstanceName> {
        if s.is_empty() {
            return Err(BadInstanceName::Empty);
        }
        if s.len() > MAX_INSTANCE_NAME {
            return Err(BadInstanceName::TooLong);
        }
        if s.starts_with('.') {
            return Err(BadInstanceName::Dot);
        }
        if s.chars().any(|c| c == '/' || c.is_control()) {
            return Err(BadInstanceName::Character);
        }
        Ok(InstanceName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<InstanceName> for crate::apply::applier::ServiceName {
    /// An instance name follows the rules of a service name.
    fn from(name: InstanceName) -> crate::apply::applier::ServiceName {
        crate::apply::applier::ServiceName::new(name.as_str())
            .expect("an instance name is a service name")
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for InstanceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        InstanceName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The instance name of `vm`, or why it has none.
pub fn instance_name(vm: &ActiveVm, naming: Naming) -> Result<InstanceName, LeftOut> {
    let raw = match naming {
        Naming::Id => vm.id.as_str(),
        Naming::Name => vm.name.as_str(),
    };
    InstanceName::new(raw).map_err(|e| left_out(&vm.name, raw, e))
}

fn left_out(vm: &VmName, raw: &str, e: BadInstanceName) -> LeftOut {
    LeftOut {
        vm: vm.clone(),
        code: match e {
            BadInstanceName::TooLong => DiagCode::NameTooLong,
            BadInstanceName::Empty | BadInstanceName::Dot | BadInstanceName::Character => {
                DiagCode::InvalidName
            }
        },
        message: format!("{raw:?} cannot be an s6 instance name: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, id: &str) -> ActiveVm {
        ActiveVm {
            name: name.parse().unwrap(),
            view: "/run/vm/x/config".into(),
            providers: vec![],
            fingerprint: 1,
            id: id.parse().unwrap(),
        }
    }

    #[test]
    fn instances_are_named_by_id_or_by_name() {
        let v = vm("sys.netvm", "AbC123");
        assert_eq!(instance_name(&v, Naming::Id).unwrap().as_str(), "AbC123");
        assert_eq!(
            instance_name(&v, Naming::Name).unwrap().as_str(),
            "sys.netvm"
        );
    }

    #[test]
    fn names_that_cannot_be_instances_are_left_out_with_a_code() {
        let v = vm("netvm", "AbC123");
        let l = left_out(&v.name, ".x", BadInstanceName::Dot);
        assert_eq!(l.code, DiagCode::InvalidName);
        assert_eq!(
            l.message,
            "\".x\" cannot be an s6 instance name: an instance name cannot start with '.'"
        );
        assert_eq!(
            left_out(&v.name, "", BadInstanceName::TooLong).code,
            DiagCode::NameTooLong
        );
        assert_eq!(
            InstanceName::new(&"x".repeat(255)).map(|n| n.0.len()),
            Ok(255)
        );
        assert_eq!(
            InstanceName::new(&"x".repeat(256)),
            Err(BadInstanceName::TooLong)
        );
        let json = serde_json::to_string(&InstanceName::new("a").unwrap()).unwrap();
        assert_eq!(json, "\"a\"");
        assert!(serde_json::from_str::<InstanceName>("\"a/b\"").is_err());
    }
}
