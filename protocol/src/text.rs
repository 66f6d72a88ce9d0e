//! [`Text`]: the string inside a validated name ([`crate::VmName`],
//! [`crate::SourceLabel`], [`crate::VmId`]), kept inline when short.
//!
//! Names are short ASCII (a VM name is at most 64 bytes, most are under
//! 23), and a client decodes thousands of them: a name of up to
//! [`INLINE`] bytes lives in the value itself, so decoding or cloning it
//! allocates nothing, and a longer one is one boxed string. The value is
//! as large as a `String` (24 bytes). It compares, orders and hashes as
//! its string.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// The longest text kept inline.
pub(crate) const INLINE: usize = 22;

/// A short string, inline when it fits. Built only from text its owner
/// validated.
#[derive(Clone)]
pub(crate) enum Text {
    /// `len` bytes at the start of the array.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Longer text.
    Boxed(Box<str>),
}

impl Text {
    /// The text `s`.
    pub(crate) fn new(s: &str) -> Text {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Text::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Text::Boxed(s.into())
        }
    }

    /// The text `s`, reusing its buffer when it is too long to be inline.
    pub(crate) fn from_string(s: String) -> Text {
        if s.len() <= INLINE {
            Text::new(&s)
        } else {
            Text::Boxed(s.into_boxed_str())
        }
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Text::Inline { len, bytes } => {
                // Only ever copied from a `&str`, whole: always UTF-8.
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Text::Boxed(s) => s,
        }
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        match t {
            Text::Inline { .. } => t.as_str().to_owned(),
            Text::Boxed(s) => s.into_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;

    use super::*;

    fn hash(v: &impl Hash) -> u64 {
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    #[test]
    fn text_is_as_large_as_a_string() {
        assert_eq!(std::mem::size_of::<Text>(), std::mem::size_of::<String>());
        assert_eq!(
            std::mem::size_of::<Option<Text>>(),
            std::mem::size_of::<String>()
        );
    }

    #[test]
    fn short_and_long_texts_keep_their_string_and_compare_as_it() {
        let short = "x".repeat(INLINE);
        let long = "x".repeat(INLINE + 1);
        for s in ["", "a", short.as_str(), long.as_str()] {
            let t = Text::new(s);
            assert_eq!(t.as_str(), s);
            assert_eq!(Text::from_string(s.to_owned()).as_str(), s);
            assert_eq!(String::from(t.clone()), s);
            assert_eq!(hash(&t), hash(&s), "{s:?}");
        }
        assert!(matches!(Text::new(&short), Text::Inline { .. }));
        assert!(matches!(Text::new(&long), Text::Boxed(_)));
        // Orders as the strings do, across the two kinds.
        let mut v = [Text::new(&long), Text::new("b"), Text::new(&short)];
        v.sort();
        let got: Vec<&str> = v.iter().map(Text::as_str).collect();
        assert_eq!(got, ["b", short.as_str(), long.as_str()]);
        assert_eq!(Text::new(&short), Text::from_string(short.clone()));
    }
}
