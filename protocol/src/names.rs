//! Validated names: [`VmName`] and [`SourceLabel`].
//!
//! Both can only be built through [`TryFrom`] (or [`str::parse`]), and their
//! `Deserialize` implementations validate too, so a value of these types is
//! always well-formed, whether it came from a directory name, the command line
//! or the wire.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::Text;

/// Longest VM name or source label, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Prefixes that s6-rc reserves for its own services.
const RESERVED_PREFIXES: [&str; 2] = ["s6rc-", "s6-rc-"];

/// Why a string is not a valid [`VmName`] or [`SourceLabel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {len} bytes long, the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// The name's length in bytes (UTF-8).
        len: usize,
    },
    /// The first byte is not an ASCII letter or digit.
    #[error("name must start with an ASCII letter or digit")]
    BadStart,
    /// A byte outside `[A-Za-z0-9._-]`.
    #[error("name contains {0}, only ASCII letters, digits, '-', '_' and '.' are allowed")]
    BadChar(ByteDisplay),
    /// The name starts with a prefix reserved by s6-rc.
    #[error("name starts with {0:?}, which s6-rc reserves")]
    Reserved(&'static str),
}

/// A byte shown readably in an error message: `'x'`, or `byte 0x0a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteDisplay(pub u8);

impl fmt::Display for ByteDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() || self.0 == b' ' {
            write!(f, "{:?}", self.0 as char)
        } else {
            write!(f, "byte 0x{:02x}", self.0)
        }
    }
}

fn check_charset(bytes: &[u8]) -> Result<(), NameError> {
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: bytes.len() });
    }
    if !bytes[0].is_ascii_alphanumeric() {
        return Err(NameError::BadStart);
    }
    match bytes
        .iter()
        .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    {
        Some(&b) => Err(NameError::BadChar(ByteDisplay(b))),
        None => Ok(()),
    }
}

/// Checks a VM name given as raw bytes (a directory entry need not be UTF-8).
///
/// The rules are those of [`VmName`].
pub fn check_vm_name(bytes: &[u8]) -> Result<(), NameError> {
    check_charset(bytes)?;
    for prefix in RESERVED_PREFIXES {
        if bytes.starts_with(prefix.as_bytes()) {
            return Err(NameError::Reserved(prefix));
        }
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $check:expr, $expecting:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Text);

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, NameError> {
                $check(s.as_bytes())?;
                Ok(Self(Text::new(s)))
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $check(s.as_bytes())?;
                Ok(Self(Text::from_string(s)))
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = NameError;
            fn try_from(b: &[u8]) -> Result<Self, NameError> {
                $check(b)?;
                match std::str::from_utf8(b) {
                    Ok(s) => Ok(Self(Text::new(s))),
                    // Never: the charset check admits ASCII only.
                    Err(e) => Err(NameError::BadChar(ByteDisplay(b[e.valid_up_to()]))),
                }
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::try_from(s)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                self.0.as_str()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.0.as_str()
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0.into()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.0.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::try_from(s).map_err(E::custom)
                    }
                    // The wire's string as bytes: the name's check admits
                    // ASCII only, so no separate UTF-8 check is needed.
                    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<$name, E> {
                        $name::try_from(b).map_err(E::custom)
                    }
                }
                d.deserialize_bytes(V)
            }
        }
    };
}

name_type!(
    /// The name of a VM: its definition directory's name and its s6-rc service name.
    ///
    /// 1–64 bytes of ASCII letters, digits, `-`, `_` and `.`; the first byte is a
    /// letter or a digit; it does not start with `s6rc-` or `s6-rc-` (reserved by
    /// s6-rc).
    ///
    /// ```
    /// use vm_catalog_protocol::VmName;
    /// for good in ["appvm-lynx", "netvm", "vm_2.test", "9p", "s6-foo"] {
    ///     assert!(VmName::try_from(good).is_ok(), "{good}");
    /// }
    /// for bad in ["", ".hidden", "-x", "a:b", "a,b", "a b", "a/b", "a\nb",
    ///             "s6rc-x", "s6-rc-x", "é", &"x".repeat(65)] {
    ///     assert!(VmName::try_from(bad).is_err(), "{bad:?}");
    /// }
    /// ```
    VmName,
    check_vm_name,
    "a VM name"
);

name_type!(
    /// The label of a source of VM definitions (`builtin`, `user`, a PARTUUID, or
    /// a label given on the command line).
    ///
    /// 1–64 bytes of ASCII letters, digits, `-`, `_` and `.`, starting with a
    /// letter or a digit.
    ///
    /// ```
    /// use vm_catalog_protocol::SourceLabel;
    /// assert!(SourceLabel::try_from("builtin").is_ok());
    /// assert!(SourceLabel::try_from("aaaaaaaa-0000-4000-8000-000000000001").is_ok());
    /// assert!(SourceLabel::try_from("usb stick").is_err());
    /// assert!(SourceLabel::try_from("").is_err());
    /// ```
    SourceLabel,
    check_charset,
    "a source label"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_name_errors_say_why() {
        assert_eq!(VmName::try_from("").unwrap_err(), NameError::Empty);
        assert_eq!(VmName::try_from(".x").unwrap_err(), NameError::BadStart);
        assert_eq!(
            VmName::try_from("a:b").unwrap_err().to_string(),
            "name contains ':', only ASCII letters, digits, '-', '_' and '.' are allowed"
        );
        assert_eq!(
            VmName::try_from("a\nb").unwrap_err().to_string(),
            "name contains byte 0x0a, only ASCII letters, digits, '-', '_' and '.' are allowed"
        );
        assert_eq!(
            VmName::try_from("s6rc-x").unwrap_err(),
            NameError::Reserved("s6rc-")
        );
        assert_eq!(
            VmName::try_from("x".repeat(65).as_str()).unwrap_err(),
            NameError::TooLong { len: 65 }
        );
    }

    #[test]
    fn vm_name_from_non_utf8_bytes_is_rejected() {
        assert!(matches!(
            VmName::try_from(&b"vm-\xff"[..]),
            Err(NameError::BadChar(ByteDisplay(0xff)))
        ));
    }

    #[test]
    fn deserialize_validates() {
        let bytes = postcard::to_allocvec("bad name").unwrap();
        assert!(postcard::from_bytes::<VmName>(&bytes).is_err());
        let bytes = postcard::to_allocvec("good").unwrap();
        assert_eq!(
            postcard::from_bytes::<VmName>(&bytes).unwrap().as_str(),
            "good"
        );
    }
}
