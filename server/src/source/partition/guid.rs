//! GUIDs as GPT stores them (mixed-endian) and as people write them
//! (canonical, lowercase, hyphenated).

use std::fmt;
use std::str::FromStr;

/// A GUID in canonical byte order (the order of its textual form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

/// The GPT partition type of user partitions.
pub const USER_PARTITION_TYPE: Guid = Guid([
    0x92, 0x93, 0xe1, 0xff, 0xce, 0xe4, 0x46, 0x58, 0x88, 0xbe, 0x89, 0x8e, 0xc8, 0x63, 0x94, 0x4f,
]);

/// Why a string is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a guid (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
pub struct GuidParseError;

impl Guid {
    /// The all-zero GUID (an unused GPT entry has this type).
    pub const NIL: Guid = Guid([0; 16]);

    /// Decodes the 16 bytes of a GPT field: the first three groups are
    /// little-endian on disk.
    pub fn from_gpt_bytes(b: &[u8; 16]) -> Guid {
        let mut c = *b;
        c[0..4].reverse();
        c[4..6].reverse();
        c[6..8].reverse();
        Guid(c)
    }

    /// Encodes as a GPT field (inverse of [`Guid::from_gpt_bytes`]).
    pub fn to_gpt_bytes(self) -> [u8; 16] {
        let mut c = self.0;
        c[0..4].reverse();
        c[4..6].reverse();
        c[6..8].reverse();
        c
    }

    /// Whether this is the nil GUID.
    pub fn is_nil(self) -> bool {
        self == Guid::NIL
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Guid {
    type Err = GuidParseError;

    /// Parses the canonical form, in either case.
    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(GuidParseError);
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return Err(GuidParseError);
                }
                i += 1;
                continue;
            }
            let hi = hex(b[i]).ok_or(GuidParseError)?;
            let lo = hex(b[i + 1]).ok_or(GuidParseError)?;
            out[n] = hi << 4 | lo;
            n += 1;
            i += 2;
        }
        Ok(Guid(out))
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_type_formats_canonically() {
        assert_eq!(
            USER_PARTITION_TYPE.to_string(),
            "9293e1ff-cee4-4658-88be-898ec863944f"
        );
        assert_eq!(
            "9293E1FF-CEE4-4658-88BE-898EC863944F"
                .parse::<Guid>()
                .unwrap(),
            USER_PARTITION_TYPE
        );
    }

    #[test]
    fn gpt_bytes_are_mixed_endian() {
        // As sfdisk writes the user type on disk.
        let disk = [
            0xff, 0xe1, 0x93, 0x92, 0xe4, 0xce, 0x58, 0x46, 0x88, 0xbe, 0x89, 0x8e, 0xc8, 0x63,
            0x94, 0x4f,
        ];
        assert_eq!(Guid::from_gpt_bytes(&disk), USER_PARTITION_TYPE);
        assert_eq!(USER_PARTITION_TYPE.to_gpt_bytes(), disk);
    }

    #[test]
    fn parse_rejects_malformed() {
        for s in [
            "",
            "9293e1ff-cee4-4658-88be-898ec863944",
            "9293e1ff-cee4-4658-88be-898ec863944fx",
            "9293e1ffxcee4-4658-88be-898ec863944f",
            "g293e1ff-cee4-4658-88be-898ec863944f",
            "9293e1ff-cee4-4658-88be-898ec86394é",
        ] {
            assert_eq!(s.parse::<Guid>(), Err(GuidParseError), "{s:?}");
        }
    }
}
