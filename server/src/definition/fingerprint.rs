//! A stable 64-bit hash for definition fingerprints: FNV-1a.
//!
//! `std`'s `DefaultHasher` may change between Rust releases, and a
//! fingerprint is compared across daemon builds (the applier stores it), so
//! the algorithm is fixed here. FNV-1a is not collision resistant against an
//! adversary, and need not be: a fingerprint only tells the daemon that
//! something changed, from inputs (paths, inode numbers, sizes, times) that
//! the same party controls anyway.

use std::os::unix::ffi::OsStrExt;

use super::{Definition, FileRef};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// An FNV-1a (64-bit) hasher over explicitly framed fields.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(OFFSET)
    }
}

impl Fnv1a {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds raw bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
        self
    }

    /// Feeds a byte string with its length first, so that `("ab", "c")` and
    /// `("a", "bc")` hash differently.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.u64(bytes.len() as u64).bytes(bytes)
    }

    /// Feeds a number (little-endian).
    pub fn u64(&mut self, n: u64) -> &mut Self {
        self.bytes(&n.to_le_bytes())
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The fingerprint of a definition: everything the VMM would see. The name,
/// the directory, and for each file its role, entry name, final path,
/// device, inode, size and modification time; providers by kind and name.
/// File contents are never read (disk images can be many GiB); a file
/// replaced or rewritten changes its inode or its size and mtime.
pub fn fingerprint_of(def: &Definition) -> u64 {
    let mut h = Fnv1a::new();
    h.field(b"vm-catalog definition v1");
    h.field(def.name.as_bytes())
        .field(def.dir.as_os_str().as_bytes());
    let file = |h: &mut Fnv1a, role: &[u8], f: &FileRef| {
        h.field(role)
            .field(f.name.as_bytes())
            .field(f.path.as_os_str().as_bytes())
            .u64(f.id.dev)
            .u64(f.id.ino)
            .u64(f.id.size)
            .u64(f.id.mtime_sec as u64)
            .u64(f.id.mtime_nsec as u64);
    };
    if let Some(k) = &def.kernel {
        file(&mut h, b"kernel", k);
    }
    for d in &def.disks {
        file(&mut h, b"disk", d);
    }
    for p in &def.providers {
        h.field(p.provider.kind.as_str().as_bytes())
            .field(p.provider.name.as_bytes());
        file(&mut h, b"provider", &p.file);
    }
    if let Some(fs) = &def.fs {
        // A directory's mtime changes whenever a file is added to it; the
        // VMM shares it live, so only its identity counts.
        h.field(b"fs")
            .field(fs.path.as_os_str().as_bytes())
            .u64(fs.id.dev)
            .u64(fs.id.ino);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_published_test_vectors() {
        assert_eq!(Fnv1a::new().finish(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv1a::new().bytes(b"a").finish(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            Fnv1a::new().bytes(b"foobar").finish(),
            0x8594_4171_f739_67e8
        );
    }

    #[test]
    fn fields_are_framed() {
        let a = Fnv1a::new().field(b"ab").field(b"c").finish();
        let b = Fnv1a::new().field(b"a").field(b"bc").finish();
        assert_ne!(a, b);
    }
}
