//! Sources of VM definitions: what they are, where they are, how far they
//! are trusted. Scanning them is `definition`'s job; finding and mounting
//! user partitions is `partition`'s.

use std::path::PathBuf;

use vm_catalog_protocol::{Diagnostic, SourceKind, SourceLabel, Trust};

pub mod dir;
pub mod partition;

/// One source, in precedence order within a [`Vec`] (index 0 wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// Its label (`builtin`, `user`, a PARTUUID, or given on the command line).
    pub label: SourceLabel,
    /// Built-in, directory or partition.
    pub kind: SourceKind,
    /// Whether symlinks are followed.
    pub trust: Trust,
    /// The directory holding one subdirectory per VM.
    pub root: PathBuf,
    /// The block device, for partitions.
    pub device: Option<PathBuf>,
    /// The GPT partition UUID, for partitions.
    pub partuuid: Option<String>,
    /// Mounted read-only.
    pub read_only: bool,
    /// Whether the source is there to be scanned.
    pub presence: Presence,
    /// Findings about the source itself (mount failures, …).
    pub diagnostics: Vec<Diagnostic>,
}

/// Whether a source can be scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Scan it.
    Present,
    /// It went away (a partition removed): its definitions stay in the
    /// catalog as `unavailable`, until the daemon forgets the source.
    Gone,
    /// It could not be made ready (mount failed, …): see its diagnostics.
    Failed,
}
