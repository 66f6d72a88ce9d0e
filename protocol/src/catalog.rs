//! The catalog as it travels on the wire: VM entries, sources, changes and
//! outcomes.
//!
//! Types that appear in lists are encoded as length-delimited records (see
//! [`crate::codec`]) so that they can gain trailing `Option` fields later.

use serde::{Deserialize, Serialize};

use crate::code::DiagCode;
use crate::codec;
use crate::id::VmId;
use crate::names::{SourceLabel, VmName};

pub use crate::cursor::{Cursor, CursorParseError, Epoch};

/// The state of one candidate definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VmState {
    /// Valid, highest precedence for its name: this is the VM.
    Active,
    /// A higher-precedence source claims the name.
    Shadowed,
    /// The definition is invalid (see its diagnostics); it still claims its name.
    Rejected,
    /// Its source went away.
    Unavailable,
}

impl VmState {
    /// Lowercase name, as in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Active => "active",
            VmState::Shadowed => "shadowed",
            VmState::Rejected => "rejected",
            VmState::Unavailable => "unavailable",
        }
    }
}

/// The kind of service a provider gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProviderKind {
    /// `providers/net/NAME`: NAME provides this VM's network.
    Net,
}

impl ProviderKind {
    /// Lowercase name, as in the definition directory.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Net => "net",
        }
    }
}

/// A VM that provides a service to another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Provider {
    /// What it provides (its network: the `providers/<kind>/` directory
    /// of the definition that names it).
    pub kind: ProviderKind,
    /// The providing VM's catalog name.
    pub name: VmName,
}

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// The definition (or source) is rejected because of it.
    Error,
    /// Reported, but nothing is rejected because of it.
    Warning,
}

impl Severity {
    /// The name the CLI and `docs/protocol.md` use: `error`, `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A finding about a definition or a source, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    /// What was found, as a number that never changes meaning (§6 of
    /// `docs/protocol.md` lists them); a number this build does not know
    /// reads as `DiagCode::Other`.
    pub code: DiagCode,
    /// Whether the definition or source is rejected because of it.
    pub severity: Severity,
    /// The file or directory it is about, as a host path; to a UI VM only
    /// the part inside the entry's own directory (`blk/root.img`), or empty.
    pub path: String,
    /// What is wrong, in English, for people (never parse it); to a UI VM,
    /// the code's name.
    pub message: String,
}

/// One candidate definition of a VM, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEntry {
    /// The name clients ask for it by: its directory's name, or
    /// `<label>.<name>` under `--names qualified`; several entries share it
    /// when definitions of several sources claim it.
    pub name: VmName,
    /// The source it comes from.
    pub source: SourceLabel,
    /// Whether this definition is the VM (`active`), or why not
    /// (shadowed, rejected, unavailable).
    pub state: VmState,
    /// The definition directory on the host; empty to a UI VM.
    pub path: String,
    /// The view the VMM reads (`<vm-dir>/<name>/config`, or
    /// `<vm-dir>/by-id/<id>/config`), for active VMs; `None` otherwise and
    /// to a UI VM.
    pub view: Option<String>,
    /// The VM's service once it is live: its s6-rc service name, or its s6
    /// instance's name; `None` before, for inactive entries, and under
    /// `--apply none`.
    pub service: Option<String>,
    /// VMs that provide services to this one.
    #[serde(with = "codec::records")]
    pub providers: Vec<Provider>,
    /// What was found about the definition, errors (why it is rejected)
    /// and warnings.
    #[serde(with = "codec::records")]
    pub diagnostics: Vec<Diagnostic>,
    /// The definition changed while the VM runs; the change applies at its next start.
    pub restart_pending: bool,
    /// For shadowed entries: the source whose definition wins.
    pub shadowed_by: Option<SourceLabel>,
    /// The generation at which this entry last changed.
    pub revision: u64,
    /// The definition's fingerprint: it changes whenever anything the VMM
    /// would see changes (a file replaced or rewritten, its providers), and
    /// stays the same across daemon restarts, so a client can tell a changed
    /// definition across epochs. `None` from daemons that predate it.
    pub fingerprint: Option<u64>,
    /// The definition's id ([`VmId`]); `None` from daemons that predate it.
    pub id: Option<VmId>,
}

/// Where a source's definitions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceKind {
    /// The image's built-in VMs.
    Builtin,
    /// A directory named on the command line.
    Directory,
    /// A user partition.
    Partition,
}

impl SourceKind {
    /// The name the CLI and `docs/protocol.md` use: `builtin`,
    /// `directory`, `partition`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Builtin => "builtin",
            SourceKind::Directory => "directory",
            SourceKind::Partition => "partition",
        }
    }
}

/// Whether a source's symlinks are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Trust {
    /// Symlinks are followed (the built-in images and `--trusted-source`).
    Trusted,
    /// Nothing is followed; symlinks count only when they point under a trusted prefix.
    Untrusted,
}

impl Trust {
    /// The name the CLI and `docs/protocol.md` use: `trusted`, `untrusted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Trusted => "trusted",
            Trust::Untrusted => "untrusted",
        }
    }
}

/// The state of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceState {
    /// Scanned; its definitions are in the catalog (each with its own state).
    Ready,
    /// Its directory does not exist: an empty source, with a warning.
    Missing,
    /// It went away (a partition removed); its VMs are unavailable.
    Unavailable,
    /// It could not be read or mounted (see its diagnostics).
    Failed,
}

impl SourceState {
    /// The name the CLI and `docs/protocol.md` use: `ready`, `missing`,
    /// `unavailable`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Ready => "ready",
            SourceState::Missing => "missing",
            SourceState::Unavailable => "unavailable",
            SourceState::Failed => "failed",
        }
    }
}

/// A source of VM definitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEntry {
    /// Its name in the catalog (`builtin`, a `--source` label, a
    /// partition's label): what `<label>.<name>` references and
    /// `VmEntry::source` name.
    pub label: SourceLabel,
    /// Where its definitions come from.
    pub kind: SourceKind,
    /// Whether its symlinks are followed.
    pub trust: Trust,
    /// The directory holding one subdirectory per VM.
    pub path: String,
    /// The block device, for partitions.
    pub device: Option<String>,
    /// The GPT partition UUID, for partitions.
    pub partuuid: Option<String>,
    /// Whether it was read, and if not, why.
    pub state: SourceState,
    /// The daemon mounted it read-only (partitions; `false` for
    /// directories, which the daemon never writes either).
    pub read_only: bool,
    /// Its rank in precedence order (0 wins).
    pub precedence: u32,
    /// Number of definitions found in it.
    pub definitions: u32,
    /// Errors and warnings about the source itself.
    #[serde(with = "codec::records")]
    pub diagnostics: Vec<Diagnostic>,
    /// The generation at which this entry last changed.
    pub revision: u64,
}

/// What happened to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    /// An entry that was not in the previous generation.
    Added,
    /// The entry is gone; the change carries its last value.
    Removed,
    /// Its definition changed (files, providers, diagnostics, service, …).
    Changed,
    /// Only its state changed (active, shadowed, rejected, unavailable).
    StateChanged,
}

impl ChangeKind {
    /// The name the CLI and `docs/protocol.md` use: `added`, `removed`,
    /// `changed`, `state-changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Changed => "changed",
            ChangeKind::StateChanged => "state-changed",
        }
    }
}

/// The entry a change is about, with its resulting value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeItem {
    /// A VM definition (one entry per source that defines the name).
    Vm(#[serde(with = "codec::record")] VmEntry),
    /// A source of definitions.
    Source(#[serde(with = "codec::record")] SourceEntry),
}

/// One change of one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The generation the change produced.
    pub generation: u64,
    /// Whether the entry came, went, or changed (and how).
    pub kind: ChangeKind,
    /// The entry, as it is after the change (or was, for `Removed`).
    pub item: ChangeItem,
}

/// What the applier did with a catalog generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApplyStatus {
    /// No applier (`--apply none`), or a dry run.
    Disabled,
    /// The rendered database equals the live one: nothing to do.
    Unchanged,
    /// The database was compiled and is live.
    Applied,
    /// Refused before compiling (too many services, a name too long, …).
    Invalid,
    /// Compile or update failed before the switch: the previous database is live.
    FailedBeforeSwitch,
    /// The update failed after the switch and was repaired: the new database is live.
    Repaired,
    /// The update failed after the switch and could not be repaired.
    FailedAfterSwitch,
}

impl ApplyStatus {
    /// The name the CLI and `docs/protocol.md` use (`failed-before-switch`,
    /// …); a UI VM reads it instead of the message.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyStatus::Disabled => "disabled",
            ApplyStatus::Unchanged => "unchanged",
            ApplyStatus::Applied => "applied",
            ApplyStatus::Invalid => "invalid",
            ApplyStatus::FailedBeforeSwitch => "failed-before-switch",
            ApplyStatus::Repaired => "repaired",
            ApplyStatus::FailedAfterSwitch => "failed-after-switch",
        }
    }

    /// Whether the outcome is a failure.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            ApplyStatus::Invalid | ApplyStatus::FailedBeforeSwitch | ApplyStatus::FailedAfterSwitch
        )
    }
}

/// The outcome of one apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// Whether the apply succeeded, and if not, what stays live.
    pub status: ApplyStatus,
    /// The catalog generation that was applied (or tried).
    pub generation: u64,
    /// The compiled database that is live afterwards, if any.
    pub database: Option<String>,
    /// Number of VM services in the database that was applied (or tried).
    pub services: u32,
    /// How long it took, in microseconds.
    pub duration_us: u64,
    /// What happened, in English, for people (never parse it): what went
    /// wrong, what stays live, the VMs left out or pending a restart, what
    /// was wrong with the daemon's state files; to a UI VM, the status's
    /// name.
    pub message: String,
}

/// What caused a rescan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RescanTrigger {
    /// The first rescan, as the daemon starts.
    Startup,
    /// A client's `Rescan` call (`vm-catalog rescan`).
    Request,
    /// `SIGHUP` to the daemon.
    Signal,
    /// A change in a watched directory.
    Watch,
    /// A partition appeared or went away.
    Hotplug,
    /// A retry after a failed apply or hook, or a rescan that shows what
    /// the daemon found since the last one (a UI VM's listener refused).
    Retry,
}

impl RescanTrigger {
    /// The name the CLI, the log and `docs/protocol.md` use: `startup`,
    /// `request`, `signal`, `watch`, `hotplug`, `retry`.
    pub fn as_str(self) -> &'static str {
        match self {
            RescanTrigger::Startup => "startup",
            RescanTrigger::Request => "request",
            RescanTrigger::Signal => "signal",
            RescanTrigger::Watch => "watch",
            RescanTrigger::Hotplug => "hotplug",
            RescanTrigger::Retry => "retry",
        }
    }
}

/// The outcome of one rescan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescanOutcome {
    /// What asked for it; of several requests answered together, a
    /// `Rescan` call wins, and a retry loses to anything else.
    pub trigger: RescanTrigger,
    /// Computed the changes only: nothing was applied or published.
    pub dry_run: bool,
    /// The generation before the rescan.
    pub generation_before: u64,
    /// The generation after it (equal when nothing changed, or on a dry run).
    pub generation: u64,
    /// How many changes the generation's batch holds (0 when nothing
    /// changed; on a dry run, how many it would hold).
    pub changes: u32,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long it took, in microseconds.
    pub duration_us: u64,
    /// What the applier did.
    #[serde(with = "codec::record")]
    pub apply: ApplyOutcome,
}

/// One line of `GetInfo`'s source summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSummary {
    /// The source's label, as in [`SourceEntry::label`].
    pub label: SourceLabel,
    /// Where its definitions come from.
    pub kind: SourceKind,
    /// Whether it was read, and if not, why.
    pub state: SourceState,
    /// Number of definitions found in it.
    pub definitions: u32,
    /// The distinct codes of its diagnostics (errors and warnings), sorted.
    pub diagnostics: Vec<DiagCode>,
}

impl SourceSummary {
    /// The summary of a source.
    pub fn of(s: &SourceEntry) -> SourceSummary {
        let mut diagnostics: Vec<DiagCode> = s.diagnostics.iter().map(|d| d.code).collect();
        diagnostics.sort_by_key(|c| c.number());
        diagnostics.dedup();
        SourceSummary {
            label: s.label.clone(),
            kind: s.kind,
            state: s.state,
            definitions: s.definitions,
            diagnostics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_parses_and_prints() {
        let c: Cursor = "00000000000000ff:12".parse().unwrap();
        assert_eq!(
            c,
            Cursor {
                epoch: Epoch(255),
                generation: 12
            }
        );
        assert_eq!(c.to_string(), "00000000000000ff:12");
        assert!("12".parse::<Cursor>().is_err());
        assert!("zz:1".parse::<Cursor>().is_err());
        assert!("1:x".parse::<Cursor>().is_err());
    }
}
