//! The handshake: `Hello` from the client, then `Welcome` (or an
//! `UnsupportedVersion` error and a close) from the server.

use serde::{Deserialize, Serialize};

use crate::catalog::Epoch;
use crate::frame::{LIMIT_MAX_FRAME, MIN_MAX_FRAME};

/// The newest protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest protocol version this crate speaks.
pub const OLDEST_PROTOCOL_VERSION: u16 = 1;
/// The versions this crate speaks.
pub const SUPPORTED_VERSIONS: VersionRange = VersionRange {
    min: OLDEST_PROTOCOL_VERSION,
    max: PROTOCOL_VERSION,
};
/// Longest client name a server accepts, in bytes.
pub const MAX_CLIENT_NAME: usize = 128;

/// An inclusive range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionRange {
    /// The oldest version spoken.
    pub min: u16,
    /// The newest version spoken; a range with `min > max` is empty (a
    /// daemon answers it `unsupported-version`).
    pub max: u16,
}

impl VersionRange {
    /// The highest version in both ranges.
    ///
    /// ```
    /// use vm_catalog_protocol::VersionRange;
    /// let ours = VersionRange { min: 1, max: 3 };
    /// assert_eq!(ours.negotiate(VersionRange { min: 2, max: 5 }), Some(3));
    /// assert_eq!(ours.negotiate(VersionRange { min: 4, max: 5 }), None);
    /// assert_eq!(ours.negotiate(VersionRange { min: 3, max: 1 }), None);
    /// ```
    pub fn negotiate(self, theirs: VersionRange) -> Option<u16> {
        let lo = self.min.max(theirs.min);
        let hi = self.max.min(theirs.max);
        (lo <= hi).then_some(hi)
    }
}

/// Optional behaviours, as a bit set. The server answers the intersection of
/// what it offers and what the client understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Features(pub u64);

impl Features {
    /// The daemon applies the catalog (an s6-rc database, or s6 instances):
    /// entries carry service names and `vm-start` can bring them up.
    pub const APPLIER: Features = Features(1 << 0);
    /// The daemon discovers and mounts user partitions.
    pub const PARTITIONS: Features = Features(1 << 1);
    /// Every feature this build knows.
    pub const KNOWN: Features = Features(Self::APPLIER.0 | Self::PARTITIONS.0);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// Bits set in both.
    pub fn intersect(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }
}

impl std::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, rhs: Features) -> Features {
        Features(self.0 | rhs.0)
    }
}

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Who is calling, for the server's logs (e.g. `vm-catalog/0.1.0`).
    pub client: String,
    /// The protocol versions the client speaks.
    pub versions: VersionRange,
    /// The largest frame the client wants to receive and send.
    pub max_frame: u32,
    /// The features the client understands.
    pub features: Features,
}

/// The server's acceptance of a handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version chosen for this connection.
    pub version: u16,
    /// The daemon's version string (e.g. `vm-catalogd 0.1.0`).
    pub server: String,
    /// The daemon run; generations are comparable within it.
    pub epoch: Epoch,
    /// The largest frame either side may send on this connection.
    pub max_frame: u32,
    /// The features in effect.
    pub features: Features,
    /// The versions the server speaks.
    pub supported: VersionRange,
}

/// The max frame size a server grants for a requested size, given its own limit.
///
/// ```
/// use vm_catalog_protocol::{negotiate_max_frame, MIN_MAX_FRAME, LIMIT_MAX_FRAME};
/// assert_eq!(negotiate_max_frame(1, LIMIT_MAX_FRAME), MIN_MAX_FRAME);
/// assert_eq!(negotiate_max_frame(65536, LIMIT_MAX_FRAME), 65536);
/// assert_eq!(negotiate_max_frame(u32::MAX, LIMIT_MAX_FRAME), LIMIT_MAX_FRAME);
/// ```
pub fn negotiate_max_frame(requested: u32, server_limit: u32) -> u32 {
    let limit = server_limit.clamp(MIN_MAX_FRAME, LIMIT_MAX_FRAME);
    requested.clamp(MIN_MAX_FRAME, limit)
}

/// The body of a `Goodbye` frame: the server closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Why (e.g. `shutting down`).
    pub reason: String,
}
