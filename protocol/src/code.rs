//! Open enumerations carried as numbers: [`ErrorCode`] and [`DiagCode`].
//!
//! Each known value has a stable number (on the wire, a postcard varint) and a
//! stable kebab-case name (in logs and JSON). A number this build does not
//! know decodes as `Other(n)` instead of failing, so a newer daemon can add
//! codes without breaking older clients.

macro_rules! wire_code {
    (
        $(#[$doc:meta])*
        $name:ident {
            $( $(#[$vdoc:meta])* $variant:ident = $num:literal => $text:literal, )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )*
            /// A code this build does not know.
            Other(u16),
        }

        impl $name {
            /// Every known code, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The number on the wire, which never changes meaning.
            pub fn number(self) -> u16 {
                match self {
                    $( $name::$variant => $num, )*
                    $name::Other(n) => n,
                }
            }

            /// The code with this number (`Other` if unknown).
            pub fn from_number(n: u16) -> Self {
                match n {
                    $( $num => $name::$variant, )*
                    n => $name::Other(n),
                }
            }

            /// The stable kebab-case name (`other` for unknown codes).
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Other(_) => "other",
                }
            }

            /// The code with this name.
            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $( $text => Some($name::$variant), )*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $name::Other(n) => write!(f, "other({n})"),
                    c => f.write_str(c.name()),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_u16(self.number())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <u16 as serde::Deserialize>::deserialize(d).map($name::from_number)
            }
        }
    };
}

wire_code! {
    /// The stable code of a wire error (see [`crate::ErrorBody`]).
    ErrorCode {
        /// No VM (or source) of that name.
        NotFound = 1 => "not-found",
        /// The peer's credentials do not allow the call.
        PermissionDenied = 2 => "permission-denied",
        /// The call's parameters could not be decoded or are invalid.
        InvalidRequest = 3 => "invalid-request",
        /// No protocol version in common; the body carries the server's range.
        UnsupportedVersion = 4 => "unsupported-version",
        /// A frame exceeded the maximum; the body carries the maximum.
        FrameTooLarge = 5 => "frame-too-large",
        /// A limit was reached (connections, calls in flight); try again later.
        Busy = 6 => "busy",
        /// The call was cancelled by `Cancel`.
        Cancelled = 7 => "cancelled",
        /// The rescan failed; the message says why.
        RescanFailed = 8 => "rescan-failed",
        /// A bug or an unexpected system error in the daemon.
        Internal = 9 => "internal",
        /// The method id is not one the server knows.
        UnknownMethod = 10 => "unknown-method",
        /// Frames out of order, a malformed header, a reused call id, …
        ProtocolViolation = 11 => "protocol-violation",
        /// The call took too long.
        Timeout = 12 => "timeout",
        /// The daemon is shutting down.
        ShuttingDown = 13 => "shutting-down",
    }
}

wire_code! {
    /// The stable code of a diagnostic about a definition or a source.
    DiagCode {
        /// The directory name is not a valid VM name.
        InvalidName = 1 => "invalid-name",
        /// The definition has no `vmlinux`.
        MissingKernel = 2 => "missing-kernel",
        /// The definition has no disk image: no `blk/*.img`.
        NoDisk = 3 => "no-disk",
        /// A symlink in an untrusted source points outside the trusted prefixes.
        UnsafeSymlink = 4 => "unsafe-symlink",
        /// A FIFO, device node, socket or directory where a regular file is needed.
        NotRegularFile = 5 => "not-regular-file",
        /// A file where a directory is needed.
        NotDirectory = 6 => "not-directory",
        /// A disk image path that the VMM cannot take (it contains `,`).
        InvalidPath = 7 => "invalid-path",
        /// More entries than the scanner reads.
        TooManyEntries = 8 => "too-many-entries",
        /// An entry the definition format does not know (warning).
        UnknownEntry = 9 => "unknown-entry",
        /// A provider that is not in the catalog.
        MissingProvider = 10 => "missing-provider",
        /// Providers that depend on each other in a cycle.
        ProviderCycle = 11 => "provider-cycle",
        /// A provider that is itself rejected or unavailable.
        ProviderUnavailable = 12 => "provider-unavailable",
        /// A higher-precedence source defines the same name.
        Shadowed = 13 => "shadowed",
        /// The definition's source went away.
        SourceUnavailable = 14 => "source-unavailable",
        /// A source directory does not exist (warning; the source is empty).
        SourceMissing = 15 => "source-missing",
        /// An I/O error while reading.
        IoError = 16 => "io-error",
        /// The VM's name makes a service name that is too long for the scan directory.
        NameTooLong = 17 => "name-too-long",
        /// More active VMs than the configured maximum of services.
        TooManyServices = 18 => "too-many-services",
        /// The partition table could not be read or is invalid.
        BadPartitionTable = 19 => "bad-partition-table",
        /// The partition table and the kernel disagree about a partition.
        GeometryMismatch = 20 => "geometry-mismatch",
        /// Mounting the partition failed.
        MountFailed = 21 => "mount-failed",
        /// `fsck` reported errors it could not correct.
        FsckFailed = 22 => "fsck-failed",
        /// The partition is already mounted elsewhere.
        AlreadyMounted = 23 => "already-mounted",
        /// `ext=` matches no device, or more than one.
        AmbiguousExt = 24 => "ambiguous-ext",
        /// The file system type is not allowed.
        UnsupportedFilesystem = 25 => "unsupported-filesystem",
        /// A hidden entry (name starting with `.`) was skipped (warning).
        HiddenEntry = 26 => "hidden-entry",
        /// A file is larger than the scanner accepts.
        TooLarge = 27 => "too-large",
        /// Two devices carry the same partition (or file-system) UUID: neither is mounted.
        DuplicatePartuuid = 28 => "duplicate-partuuid",
        /// The VM's service name is already taken in the s6 scan directory.
        ServiceConflict = 29 => "service-conflict",
        /// More diagnostics or providers than fit in one frame: the rest are
        /// not shown (warning; the message says how many).
        Truncated = 30 => "truncated",
        /// An untrusted directory source on a file system mounted without
        /// `nosymfollow`: a symlink planted there after a scan can redirect a
        /// VMM (warning, on the source).
        SymlinksFollowed = 31 => "symlinks-followed",
        /// The definition's name reads as `<label>.<name>` with the label of
        /// a source, a reference to another definition: it could impersonate
        /// that one, so it is rejected.
        NameReadsAsReference = 32 => "name-reads-as-reference",
        /// A provider from another untrusted source: a VM of an untrusted
        /// source may use providers only from trusted sources and its own,
        /// unless the administrator allows more.
        ProviderUntrusted = 33 => "provider-untrusted",
        /// The VM's `prepare` hook (`--vm-hook`) failed or did not finish in
        /// time: the VM is left out of the apply and tried again later.
        HookFailed = 34 => "hook-failed",
        /// The UI VM's listener (`--ui-vm`) was refused: a link planted on
        /// its path, or a directory there that is not the daemon's or the
        /// VM's own (warning, on the VM: it stays active, with no listener
        /// until that is fixed; the daemon's log says where).
        ListenerRefused = 35 => "listener-refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_unique_and_round_trip() {
        for all in [
            ErrorCode::ALL
                .iter()
                .map(|c| (c.number(), c.name()))
                .collect::<Vec<_>>(),
            DiagCode::ALL
                .iter()
                .map(|c| (c.number(), c.name()))
                .collect::<Vec<_>>(),
        ] {
            let mut nums: Vec<_> = all.iter().map(|x| x.0).collect();
            nums.dedup();
            assert_eq!(nums.len(), all.len(), "numbers are in order and unique");
            let mut names: Vec<_> = all.iter().map(|x| x.1).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), all.len());
        }
        for c in DiagCode::ALL {
            assert_eq!(DiagCode::from_number(c.number()), *c);
            assert_eq!(DiagCode::from_name(c.name()), Some(*c));
        }
    }

    #[test]
    fn unknown_numbers_decode_as_other() {
        let b = postcard::to_allocvec(&999u16).unwrap();
        assert_eq!(
            postcard::from_bytes::<ErrorCode>(&b).unwrap(),
            ErrorCode::Other(999)
        );
        assert_eq!(ErrorCode::Other(999).to_string(), "other(999)");
    }
}
