//! The calls of protocol version 1: one table of method → parameters → reply.
//!
//! | id | method        | parameters      | reply                                  |
//! |----|---------------|-----------------|----------------------------------------|
//! | 1  | `Ping`        | [`Ping`]        | [`Pong`]                               |
//! | 2  | `GetInfo`     | [`GetInfo`]     | [`Info`]                               |
//! | 3  | `ListVms`     | [`ListVms`]     | stream of [`VmPage`], end [`ListEnd`]  |
//! | 4  | `GetVm`       | [`GetVm`]       | [`VmDetail`]                           |
//! | 5  | `ListSources` | [`ListSources`] | [`SourceList`]                         |
//! | 6  | `Rescan`      | [`Rescan`]      | stream of [`ChangePage`], end [`RescanOutcome`] |
//! | 7  | `Subscribe`   | [`Subscribe`]   | stream of [`Event`], end [`SubscriptionEnd`] |
//! | 8  | `Cancel`      | [`Cancel`]      | [`CancelReply`]                        |
//!
//! The method id travels in the frame header, outside the body, so an unknown
//! method gets a typed `UnknownMethod` error rather than a decode failure.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::catalog::{
    ApplyOutcome, Change, Cursor, RescanOutcome, SourceEntry, SourceSummary, VmEntry,
};
use crate::codec::{self, Compat, DecodeError};
use crate::names::{SourceLabel, VmName};

/// A method: its number is the request frame's `method` field (§5 of
/// `docs/protocol.md`), never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Method {
    /// Liveness and latency check.
    Ping = 1,
    /// The daemon's status: its version, catalog position, sources, last
    /// rescan and apply (`vm-catalog status`).
    GetInfo = 2,
    /// The catalog, in pages.
    ListVms = 3,
    /// One VM with every definition of its name.
    GetVm = 4,
    /// Every source of definitions, in precedence order.
    ListSources = 5,
    /// Rescan every source now (admin only).
    Rescan = 6,
    /// A snapshot, then every change.
    Subscribe = 7,
    /// Cancel a call in flight on this connection.
    Cancel = 8,
}

impl Method {
    /// Every method, by id.
    pub const ALL: [Method; 8] = [
        Method::Ping,
        Method::GetInfo,
        Method::ListVms,
        Method::GetVm,
        Method::ListSources,
        Method::Rescan,
        Method::Subscribe,
        Method::Cancel,
    ];

    /// The method with this id.
    pub fn from_id(id: u16) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.id() == id)
    }

    /// The number sent in a request frame's `method` field.
    pub fn id(self) -> u16 {
        self as u16
    }

    /// The name, as in logs.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ping => "Ping",
            Method::GetInfo => "GetInfo",
            Method::ListVms => "ListVms",
            Method::GetVm => "GetVm",
            Method::ListSources => "ListSources",
            Method::Rescan => "Rescan",
            Method::Subscribe => "Subscribe",
            Method::Cancel => "Cancel",
        }
    }

    /// Whether the reply is a stream (items, then an end frame).
    pub fn is_streaming(self) -> bool {
        matches!(self, Method::ListVms | Method::Rescan | Method::Subscribe)
    }
}

/// The parameters of a call, tied to their method.
pub trait Call: Serialize + DeserializeOwned {
    /// The method whose request frames carry these parameters.
    const METHOD: Method;
}

/// A call answered by one `Reply` frame.
pub trait Unary: Call {
    /// What the `Reply` frame's body decodes as.
    type Reply: Serialize + DeserializeOwned;
}

/// A call answered by `StreamItem` frames and one `StreamEnd` frame.
pub trait Streaming: Call {
    /// The body of each item.
    type Item: Serialize + DeserializeOwned;
    /// The body of the end frame.
    type End: Serialize + DeserializeOwned;
}

macro_rules! unary {
    ($params:ty, $method:ident, $reply:ty) => {
        impl Call for $params {
            const METHOD: Method = Method::$method;
        }
        impl Unary for $params {
            type Reply = $reply;
        }
    };
}

macro_rules! streaming {
    ($params:ty, $method:ident, $item:ty, $end:ty) => {
        impl Call for $params {
            const METHOD: Method = Method::$method;
        }
        impl Streaming for $params {
            type Item = $item;
            type End = $end;
        }
    };
}

unary!(Ping, Ping, Pong);
unary!(GetInfo, GetInfo, Info);
streaming!(ListVms, ListVms, VmPage, ListEnd);
unary!(GetVm, GetVm, VmDetail);
unary!(ListSources, ListSources, SourceList);
streaming!(Rescan, Rescan, ChangePage, RescanOutcome);
streaming!(Subscribe, Subscribe, Event, SubscriptionEnd);
unary!(Cancel, Cancel, CancelReply);

/// `Ping`: the server echoes the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Any bytes (benchmarks use it to size the round trip).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Reply to `Ping`: its payload, unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The payload of the `Ping`.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// `GetInfo`: no parameters (an empty body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GetInfo {}

/// Reply to `GetInfo`: the daemon's status as the call is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The daemon's version string.
    pub server_version: String,
    /// The protocol version of this connection.
    pub protocol_version: u16,
    /// The current catalog position.
    pub cursor: Cursor,
    /// The last generation that the applier made live (0: none yet).
    pub applied_generation: u64,
    /// Which applier keeps the VMs' services in step: `s6-rc`,
    /// `s6-instance` or `none` (`--apply`).
    pub applier: String,
    /// Number of active VMs.
    pub active_vms: u32,
    /// Number of candidate definitions (every state).
    pub definitions: u32,
    /// The sources, in precedence order.
    #[serde(with = "codec::records")]
    pub sources: Vec<SourceSummary>,
    /// The last rescan (dry runs included).
    #[serde(with = "codec::opt_record")]
    pub last_rescan: Option<RescanOutcome>,
    /// The last apply attempt.
    #[serde(with = "codec::opt_record")]
    pub last_apply: Option<ApplyOutcome>,
    /// Connections on the host socket that hold a connection slot, the
    /// asking one included (a UI VM's are not counted); 0 to a UI VM.
    pub connections: u32,
    /// `Subscribe` calls in flight, on every connection, UI VMs' included;
    /// 0 to a UI VM.
    pub subscribers: u32,
    /// When the daemon started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
}

/// `ListVms`: the catalog, streamed in pages, all from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ListVms {
    /// Include shadowed, rejected and unavailable definitions.
    pub include_inactive: bool,
    /// Only definitions from this source.
    pub source: Option<SourceLabel>,
}

/// One page of `ListVms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPage {
    /// Entries, sorted by name, then by precedence.
    #[serde(with = "codec::records")]
    pub vms: Vec<VmEntry>,
}

/// End of `ListVms`: where its pages came from, and how many entries
/// they held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEnd {
    /// The snapshot the pages came from.
    pub cursor: Cursor,
    /// Number of entries sent.
    pub total: u32,
}

/// `GetVm`: one VM by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetVm {
    /// A catalog name, or `<label>.<name>` for that source's definition
    /// (`docs/catalog.md` §4).
    pub name: VmName,
}

/// Reply to `GetVm`: the definition the name means, and the others of
/// that name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDetail {
    /// The snapshot it came from.
    pub cursor: Cursor,
    /// The definition that claims the name (active, rejected, or unavailable).
    #[serde(with = "codec::record")]
    pub vm: VmEntry,
    /// Every other definition of the name, in precedence order.
    #[serde(with = "codec::records")]
    pub others: Vec<VmEntry>,
}

/// `ListSources`: no parameters (an empty body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ListSources {}

/// Reply to `ListSources`: every source, from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceList {
    /// The snapshot it came from.
    pub cursor: Cursor,
    /// The sources, in precedence order.
    #[serde(with = "codec::records")]
    pub sources: Vec<SourceEntry>,
}

/// `Rescan`: rescan every source now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Rescan {
    /// Compute the changes only; apply and publish nothing.
    pub dry_run: bool,
}

/// One page of a rescan's changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePage {
    /// Some of the rescan's changes, in the order of the generation's
    /// batch; together, its pages hold them all.
    #[serde(with = "codec::records")]
    pub changes: Vec<Change>,
}

/// `Subscribe`: a snapshot (or the changes since `since`), then every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Subscribe {
    /// The last position the client has seen, to resume from.
    pub since: Option<Cursor>,
}

/// Why a subscription starts over from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResetReason {
    /// No `since` was given.
    Initial,
    /// `since` is from another daemon run.
    NewEpoch,
    /// `since` is older than the retained history.
    TooOld,
    /// The subscriber fell behind and its backlog was dropped.
    Lagged,
    /// `since` is newer than the catalog (a client bug, or a lost daemon state).
    Unknown,
}

impl ResetReason {
    /// The name the CLI, the log and `docs/protocol.md` use: `initial`,
    /// `new-epoch`, `too-old`, `lagged`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Initial => "initial",
            ResetReason::NewEpoch => "new-epoch",
            ResetReason::TooOld => "too-old",
            ResetReason::Lagged => "lagged",
            ResetReason::Unknown => "unknown",
        }
    }
}

/// One item of a subscription.
///
/// The stream is: either `Reset`, `SnapshotPage`*, `Synced` (a full
/// snapshot), or `Resumed`, `Batch`*, `Synced` (only what was missed); then
/// one `Batch` per generation, forever. A `Reset` may come again at any time
/// (`Lagged`): the client drops what it has and takes the new snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A snapshot follows; drop all state.
    Reset {
        /// The position of the snapshot that follows.
        cursor: Cursor,
        /// Why the subscription starts over from a snapshot.
        reason: ResetReason,
    },
    /// Part of the snapshot.
    SnapshotPage {
        /// Some of the VM definitions (every state); together, the pages
        /// hold every entry.
        #[serde(with = "codec::records")]
        vms: Vec<VmEntry>,
        /// Some of the sources (every state); together, the pages hold
        /// every source.
        #[serde(with = "codec::records")]
        sources: Vec<SourceEntry>,
    },
    /// Missed batches follow, starting after `from`.
    Resumed {
        /// The position the client gave.
        from: Cursor,
    },
    /// The client is up to date at `cursor`; live batches follow.
    Synced {
        /// Where the client now is: the snapshot's position, or the last
        /// missed generation's.
        cursor: Cursor,
    },
    /// The changes of one generation. A generation too large for one frame
    /// comes in several parts; apply it when `last` is set.
    Batch {
        /// The generation these changes made (of the subscription's epoch).
        generation: u64,
        /// This part's changes, in the batch's order.
        #[serde(with = "codec::records")]
        changes: Vec<Change>,
        /// The last part of this generation.
        last: bool,
    },
}

/// End of a subscription (after `Cancel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionEnd {
    /// The last position sent.
    pub cursor: Cursor,
}

/// `Cancel`: end a call in flight on this connection. The cancelled call ends
/// with a `Cancelled` error (a rescan that already started still completes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// The call to cancel.
    pub call_id: u32,
}

/// Reply to `Cancel` (the cancelled call ends on its own, with
/// `cancelled`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    /// Whether a call with that id was in flight.
    pub found: bool,
}

/// Any call's parameters: what the server decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// [`Method::Ping`]'s parameters.
    Ping(Ping),
    /// [`Method::GetInfo`]'s (none).
    GetInfo(GetInfo),
    /// [`Method::ListVms`]'s.
    ListVms(ListVms),
    /// [`Method::GetVm`]'s.
    GetVm(GetVm),
    /// [`Method::ListSources`]'s (none).
    ListSources(ListSources),
    /// [`Method::Rescan`]'s.
    Rescan(Rescan),
    /// [`Method::Subscribe`]'s.
    Subscribe(Subscribe),
    /// [`Method::Cancel`]'s.
    Cancel(Cancel),
}

/// Why a request body could not be turned into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The method id is unknown.
    #[error("unknown method {0}")]
    UnknownMethod(u16),
    /// The body does not decode as the method's parameters.
    #[error("invalid parameters for {method}")]
    Invalid {
        /// The method's name ([`Method::name`]).
        method: &'static str,
        /// Where the body stopped making sense.
        #[source]
        source: DecodeError,
    },
}

impl Request {
    /// The method these are the parameters of.
    pub fn method(&self) -> Method {
        match self {
            Request::Ping(_) => Method::Ping,
            Request::GetInfo(_) => Method::GetInfo,
            Request::ListVms(_) => Method::ListVms,
            Request::GetVm(_) => Method::GetVm,
            Request::ListSources(_) => Method::ListSources,
            Request::Rescan(_) => Method::Rescan,
            Request::Subscribe(_) => Method::Subscribe,
            Request::Cancel(_) => Method::Cancel,
        }
    }

    /// Decodes the body of a `Request` frame.
    pub fn decode(method: u16, body: &[u8], compat: Compat) -> Result<Request, RequestError> {
        let m = Method::from_id(method).ok_or(RequestError::UnknownMethod(method))?;
        fn d<T: DeserializeOwned>(m: Method, b: &[u8], c: Compat) -> Result<T, RequestError> {
            codec::decode(b, c).map_err(|source| RequestError::Invalid {
                method: m.name(),
                source,
            })
        }
        Ok(match m {
            Method::Ping => Request::Ping(d(m, body, compat)?),
            Method::GetInfo => Request::GetInfo(d(m, body, compat)?),
            Method::ListVms => Request::ListVms(d(m, body, compat)?),
            Method::GetVm => Request::GetVm(d(m, body, compat)?),
            Method::ListSources => Request::ListSources(d(m, body, compat)?),
            Method::Rescan => Request::Rescan(d(m, body, compat)?),
            Method::Subscribe => Request::Subscribe(d(m, body, compat)?),
            Method::Cancel => Request::Cancel(d(m, body, compat)?),
        })
    }
}

#[cfg(test)]
mod tests;
