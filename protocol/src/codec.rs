//! Body encoding: postcard 1.x, plus the two helpers that make bodies evolvable.
//!
//! * **Compatibility modes** ([`Compat`]): two peers that negotiated the same
//!   protocol version may still be different builds. A newer peer may append
//!   trailing `Option` fields to a body; an older one stops before them. The
//!   decoder is strict between equal peers (every byte must be consumed and
//!   nothing may be missing), ignores a trailing tail from a newer peer, and
//!   reads a missing tail from an older peer as zeros (`None`, `0`, `""`,
//!   empty list).
//! * **Records**: elements of lists that may gain fields (VM entries, sources,
//!   diagnostics, changes) are length-delimited: each is postcard-encoded on
//!   its own and written as a byte string. A reader skips exactly one record
//!   whatever fields it gained, and decodes the part it knows with both
//!   tolerances above. Fields use `#[serde(with = "codec::record")]` or
//!   `#[serde(with = "codec::records")]`.
//!
//! See `docs/protocol.md`, "Evolution rules".

use std::fmt;
use std::marker::PhantomData;

use postcard::de_flavors::Flavor;
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How strictly to decode a body, given the other side's newest protocol revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// Same revision: every byte must be consumed, none may be missing.
    Exact,
    /// The peer is older: a missing tail decodes as zeros.
    PeerOlder,
    /// The peer is newer: trailing bytes (appended fields) are ignored.
    PeerNewer,
    /// Inside a record: both tolerances apply.
    Record,
}

impl Compat {
    /// The mode for reading bodies written by a peer whose newest supported
    /// version is `peer_max`, when ours is `ours_max`.
    pub fn between(ours_max: u16, peer_max: u16) -> Self {
        match peer_max.cmp(&ours_max) {
            std::cmp::Ordering::Equal => Compat::Exact,
            std::cmp::Ordering::Less => Compat::PeerOlder,
            std::cmp::Ordering::Greater => Compat::PeerNewer,
        }
    }

    fn zero_tail(self) -> bool {
        matches!(self, Compat::PeerOlder | Compat::Record)
    }

    fn allow_trailing(self) -> bool {
        matches!(self, Compat::PeerNewer | Compat::Record)
    }
}

/// A body that could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode body: {0}")]
pub struct EncodeError(#[source] pub postcard::Error);

/// A body that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// postcard rejected the bytes (bad varint, bad UTF-8, unknown variant,
    /// an invalid name, a body cut short, …).
    #[error("malformed body")]
    Malformed(#[source] postcard::Error),
    /// The body decoded but bytes were left over.
    #[error("{0} unexpected bytes after the body")]
    TrailingBytes(usize),
}

/// Encodes a body as postcard, the same in every compatibility mode.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    postcard::to_allocvec(value).map_err(EncodeError)
}

/// Appends the encoding of a body to `buf`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(value, taken).map_err(EncodeError)?;
    Ok(())
}

/// The length of `value`'s encoding, without writing it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, EncodeError> {
    postcard::experimental::serialized_size(value).map_err(EncodeError)
}

/// Decodes a body according to `compat`.
pub fn decode<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    compat: Compat,
) -> Result<T, DecodeError> {
    let flavor = ZeroTail {
        input: bytes,
        zeros_left: if compat.zero_tail() {
            ZERO_TAIL_BUDGET
        } else {
            0
        },
        in_varint: false,
    };
    let mut de = postcard::Deserializer::from_flavor(flavor);
    let value = T::deserialize(&mut de).map_err(DecodeError::Malformed)?;
    let rest = de.finalize().map_err(DecodeError::Malformed)?;
    if !rest.is_empty() && !compat.allow_trailing() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// How many zero bytes one decode may read past the end of its input. A
/// missing tail is a few trailing fields, each a byte or so; the bound keeps a
/// hostile body from decoding an endless list out of nothing (a list that
/// claims 2^60 elements would otherwise take each element from the tail).
const ZERO_TAIL_BUDGET: usize = 64;

/// A postcard input flavor that, when allowed, reads past the *end* of its
/// input as zeros, up to [`ZERO_TAIL_BUDGET`] bytes, one byte at a time.
/// Only whole missing trailing fields decode as zeros: a string or byte
/// string whose length was read is never served zeros (its bytes were cut:
/// a whole missing one reads its length, 0, from the tail and takes
/// nothing), and neither is a varint whose last byte read still had its
/// continuation bit set (a body cut inside a varint). No protocol type
/// takes a fixed number of bytes at once (no floats, no arrays), so
/// nothing else needs zeros in bulk.
///
/// The last check relies on this: every single byte a protocol type reads
/// is a varint byte, a `bool` or an `Option` tag (no protocol type has a
/// plain `u8` field; byte strings are read whole), so a byte with its high
/// bit set is always a varint's continuation.
struct ZeroTail<'de> {
    input: &'de [u8],
    zeros_left: usize,
    in_varint: bool,
}

impl<'de> Flavor<'de> for ZeroTail<'de> {
    type Remainder = &'de [u8];
    type Source = &'de [u8];

    fn pop(&mut self) -> postcard::Result<u8> {
        match self.input.split_first() {
            Some((&b, rest)) => {
                self.input = rest;
                self.in_varint = b & 0x80 != 0;
                Ok(b)
            }
            None if self.zeros_left > 0 && !self.in_varint => {
                self.zeros_left -= 1;
                Ok(0)
            }
            None => Err(postcard::Error::DeserializeUnexpectedEnd),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.input.len())
    }

    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'de [u8]> {
        // Regression: a string whose length byte was the
        // last of the body (`01`) read as "\0" from the zero tail, where
        // docs/protocol.md §3 says a length larger than what is left is
        // invalid.
        if ct <= self.input.len() {
            let (head, rest) = self.input.split_at(ct);
            self.input = rest;
            self.in_varint = false;
            Ok(head)
        } else {
            Err(postcard::Error::DeserializeUnexpectedEnd)
        }
    }

    fn finalize(self) -> postcard::Result<&'de [u8]> {
        Ok(self.input)
    }
}

/// A length-delimited record: `T` encoded on its own, then written as a byte string.
struct Record<T>(T);

struct RecordRef<'a, T>(&'a T);

impl<T: Serialize> Serialize for RecordRef<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = postcard::to_allocvec(self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&bytes)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Record<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: DeserializeOwned> Visitor<'_> for V<T> {
            type Value = Record<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a length-delimited record")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Record<T>, E> {
                decode::<T>(b, Compat::Record)
                    .map(Record)
                    .map_err(E::custom)
            }
        }
        d.deserialize_bytes(V(PhantomData))
    }
}

/// `#[serde(with = "codec::record")]`: one field encoded as a record.
pub mod record {
    use super::*;

    /// Serializes `value` as a length-delimited record.
    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        RecordRef(value).serialize(s)
    }

    /// Deserializes a length-delimited record.
    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        Record::<T>::deserialize(d).map(|r| r.0)
    }
}

/// `#[serde(with = "codec::opt_record")]`: an optional field encoded as a record.
pub mod opt_record {
    use super::*;

    /// Serializes `Some(record)` or `None`.
    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_some(&RecordRef(v)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes `Some(record)` or `None`.
    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<Record<T>>::deserialize(d).map(|o| o.map(|r| r.0))
    }
}

/// `#[serde(with = "codec::records")]`: a list whose every element is a record.
pub mod records {
    use super::*;

    /// Serializes a list of length-delimited records.
    pub fn serialize<T: Serialize, S: Serializer>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(RecordRef))
    }

    /// Deserializes a list of length-delimited records.
    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: DeserializeOwned> Visitor<'de> for V<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                // Never trust the announced length for an allocation: every
                // record costs at least one byte of input, and the frame is bounded.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(Record(v)) = seq.next_element::<Record<T>>()? {
                    out.push(v);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        id: u32,
        name: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        id: u32,
        name: String,
        memory_mib: Option<u32>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ListV1 {
        #[serde(with = "records")]
        vms: Vec<V1>,
        generation: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ListV2 {
        #[serde(with = "records")]
        vms: Vec<V2>,
        generation: u64,
    }

    #[test]
    fn exact_rejects_trailing_bytes() {
        let mut b = encode(&V1 {
            id: 1,
            name: "a".into(),
        })
        .unwrap();
        b.push(0);
        assert_eq!(
            decode::<V1>(&b, Compat::Exact),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn exact_rejects_a_missing_tail() {
        let b = encode(&V1 {
            id: 1,
            name: "a".into(),
        })
        .unwrap();
        assert!(decode::<V2>(&b, Compat::Exact).is_err());
    }

    #[test]
    fn newer_reader_of_older_body_sees_none() {
        let b = encode(&V1 {
            id: 7,
            name: "vm".into(),
        })
        .unwrap();
        assert_eq!(
            decode::<V2>(&b, Compat::PeerOlder).unwrap(),
            V2 {
                id: 7,
                name: "vm".into(),
                memory_mib: None
            }
        );
    }

    #[test]
    fn older_reader_of_newer_body_ignores_the_tail() {
        let b = encode(&V2 {
            id: 7,
            name: "vm".into(),
            memory_mib: Some(512),
        })
        .unwrap();
        assert_eq!(
            decode::<V1>(&b, Compat::PeerNewer).unwrap(),
            V1 {
                id: 7,
                name: "vm".into()
            }
        );
    }

    #[test]
    fn records_inside_lists_evolve_both_ways() {
        let new = ListV2 {
            vms: vec![
                V2 {
                    id: 1,
                    name: "a".into(),
                    memory_mib: Some(300),
                },
                V2 {
                    id: 2,
                    name: "b".into(),
                    memory_mib: None,
                },
            ],
            generation: 9,
        };
        let old: ListV1 = decode(&encode(&new).unwrap(), Compat::Exact).unwrap();
        assert_eq!(
            old,
            ListV1 {
                vms: vec![
                    V1 {
                        id: 1,
                        name: "a".into()
                    },
                    V1 {
                        id: 2,
                        name: "b".into()
                    }
                ],
                generation: 9
            }
        );
        let back: ListV2 = decode(&encode(&old).unwrap(), Compat::Exact).unwrap();
        assert_eq!(back.vms[0].memory_mib, None);
        assert_eq!(back.generation, 9);
    }

    /// Regression (found by the `frame_decode` fuzz target): a list claiming a
    /// huge length at the end of a body from an older peer took every element
    /// from the zero tail and grew until memory ran out.
    #[test]
    fn zero_tail_cannot_fill_a_huge_list() {
        let mut b = Vec::new();
        encode_into(&u64::MAX, &mut b).unwrap(); // the announced length
        assert!(decode::<Vec<Option<u8>>>(&b, Compat::PeerOlder).is_err());
        assert!(decode::<Vec<Option<u8>>>(&b, Compat::Record).is_err());
    }

    #[test]
    fn a_string_cut_short_is_still_an_error() {
        // "vm" is 02 76 6d: a body cut inside the string must not decode, even
        // with the zero tail, or a cut body could pass as a shorter one.
        let b = [0x02, 0x76];
        assert!(decode::<String>(&b, Compat::PeerOlder).is_err());
    }

    /// Regression: a body cut inside a varint decoded
    /// with the zero tail, as if the varint's missing bytes were zeros (and
    /// so did the `Hello`, which is read that way before its version is
    /// known).
    #[test]
    fn a_body_cut_inside_a_varint_is_an_error_even_with_the_zero_tail() {
        // 300 is ac 02: cut after ac.
        let b = [0xac];
        for compat in [Compat::PeerOlder, Compat::Record, Compat::Exact] {
            assert!(decode::<u32>(&b, compat).is_err(), "{compat:?}");
        }
        // A whole missing field still reads as zero.
        let v1 = encode(&V1 {
            id: 300,
            name: "a".into(),
        })
        .unwrap();
        let v2: V2 = decode(&v1, Compat::PeerOlder).unwrap();
        assert_eq!(v2.memory_mib, None);
        // Cut inside the id: not a V1 with a zero id.
        assert!(decode::<V1>(&v1[..1], Compat::PeerOlder).is_err());
    }
}
