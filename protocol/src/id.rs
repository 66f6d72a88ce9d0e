//! [`VmId`]: the id of a definition, validated.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::text::Text;

/// Why a string is not a valid [`VmId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a VM id is 1 to {MAX_VM_ID_LEN} ASCII letters and digits")]
pub struct VmIdError;

/// Longest [`VmId`], in bytes.
pub const MAX_VM_ID_LEN: usize = 32;

/// The id of a definition: short, unique among the definitions the daemon
/// knows, valid as a file name and as an s6 instance name, and stable for a
/// definition (a source label and a directory name) across rescans and
/// daemon restarts. The daemon makes 6 random letters and digits, as
/// Spectrum's `vm-import` does; readers accept 1–32.
///
/// ```
/// use vm_catalog_protocol::VmId;
/// assert!("a1B2c3".parse::<VmId>().is_ok());
/// for bad in ["", "a-b", "a/b", ".x", &"x".repeat(33)] {
///     assert!(bad.parse::<VmId>().is_err(), "{bad:?}");
/// }
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId(Text);

impl VmId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<&str> for VmId {
    type Error = VmIdError;
    fn try_from(s: &str) -> Result<Self, VmIdError> {
        if s.is_empty() || s.len() > MAX_VM_ID_LEN || !s.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(VmIdError);
        }
        Ok(VmId(Text::new(s)))
    }
}

impl FromStr for VmId {
    type Err = VmIdError;
    fn from_str(s: &str) -> Result<Self, VmIdError> {
        VmId::try_from(s)
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl Serialize for VmId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for VmId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = VmId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a VM id")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<VmId, E> {
                VmId::try_from(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}
