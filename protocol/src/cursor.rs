//! A position in the catalog's history: a [`Cursor`] is a generation of an
//! [`Epoch`] (one daemon run), written `EPOCH:GENERATION` (16 hex digits,
//! a colon, a decimal number).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A random number chosen at each daemon start. Generations are only
/// comparable within one epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({self})")
    }
}

impl FromStr for Epoch {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(Epoch)
    }
}

/// A point in the catalog's history: `generation` of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Cursor {
    /// The daemon run it belongs to: a new random epoch at every start, so
    /// generations compare only within one.
    pub epoch: Epoch,
    /// The catalog generation within that run.
    pub generation: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.generation)
    }
}

/// Why a string is not an `EPOCH:GENERATION` cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected EPOCH:GENERATION (16 hex digits, a colon, a decimal number)")]
pub struct CursorParseError;

impl FromStr for Cursor {
    type Err = CursorParseError;
    fn from_str(s: &str) -> Result<Self, CursorParseError> {
        let (e, g) = s.split_once(':').ok_or(CursorParseError)?;
        Ok(Cursor {
            epoch: e.parse().map_err(|_| CursorParseError)?,
            generation: g.parse().map_err(|_| CursorParseError)?,
        })
    }
}
