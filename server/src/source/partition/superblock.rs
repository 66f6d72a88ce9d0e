//! File-system identification from the first bytes of a device: the ext4
//! superblock's magic, UUID and label (for `ext=UUID=`/`LABEL=` and the
//! file-system allowlist).

use std::fmt;
use std::io;

use super::gpt::{ReadAt, read_exact_at};
use super::guid::Guid;

/// Where the ext2/3/4 superblock starts.
const EXT_SUPERBLOCK: u64 = 1024;
/// `s_magic`, at +0x38.
const EXT_MAGIC: u16 = 0xef53;

/// A file-system type the daemon may mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsType {
    /// ext4 (also mounts ext2 and ext3 file systems).
    Ext4,
}

impl FsType {
    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the ext superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtSuperblock {
    /// `s_uuid`, in the byte order `blkid` prints.
    pub uuid: Guid,
    /// `s_volume_name`, up to 16 bytes, without the trailing NULs.
    pub label: Vec<u8>,
}

/// Reads the ext superblock, if there is one.
pub fn read_ext<R: ReadAt + ?Sized>(r: &R) -> io::Result<Option<ExtSuperblock>> {
    let mut sb = [0u8; 0x88];
    match read_exact_at(r, &mut sb, EXT_SUPERBLOCK) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != EXT_MAGIC {
        return Ok(None);
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[0x68..0x78]);
    let name = &sb[0x78..0x88];
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(Some(ExtSuperblock {
        uuid: Guid(uuid),
        label: name[..len].to_vec(),
    }))
}

/// The file-system type of a device, among those this module knows.
pub fn probe<R: ReadAt + ?Sized>(r: &R) -> io::Result<Option<FsType>> {
    Ok(read_ext(r)?.map(|_| FsType::Ext4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::partition::testing::ext_image;

    #[test]
    fn reads_uuid_and_label() {
        let d = ext_image([0x11; 16], b"user-a-fs");
        let sb = read_ext(&d[..]).unwrap().unwrap();
        assert_eq!(sb.uuid.to_string(), "11111111-1111-1111-1111-111111111111");
        assert_eq!(sb.label, b"user-a-fs");
        assert_eq!(probe(&d[..]).unwrap(), Some(FsType::Ext4));
    }

    #[test]
    fn a_full_16_byte_label_has_no_nul() {
        let d = ext_image([0; 16], b"0123456789abcdef");
        assert_eq!(
            read_ext(&d[..]).unwrap().unwrap().label,
            b"0123456789abcdef"
        );
    }

    #[test]
    fn no_magic_or_short_device_is_none() {
        assert_eq!(read_ext(&[0u8; 4096][..]).unwrap(), None);
        assert_eq!(read_ext(&[0u8; 1100][..]).unwrap(), None);
        assert_eq!(probe(&[0u8; 10][..]).unwrap(), None);
    }
}
