//! A strict reader of GUID partition tables, for hostile disks.
//!
//! It checks what libblkid checks (signature, revision, header size, header
//! CRC, `my_lba`, the usable range, entry size 128, the entry-array CRC) and
//! adds hard caps: at most [`MAX_ENTRIES`] entries, so the entry array it
//! reads is at most 128 KiB whatever the header says. Nothing it allocates is
//! sized by a value read from the disk beyond those caps. The backup header
//! (last LBA) is used only when the primary (LBA 1) is unusable. Entry names
//! are decoded lossily and are for display only: never build a path from one.

use std::io;

use super::guid::Guid;

/// Most entries accepted in a table (the UEFI minimum array is 128).
pub const MAX_ENTRIES: u32 = 1024;
/// The only entry size accepted.
pub const ENTRY_SIZE: u32 = 128;
/// Smallest header size (UEFI).
pub const MIN_HEADER_SIZE: u32 = 92;
/// `EFI PART`.
pub const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Revision 1.0.
pub const REVISION: u32 = 0x0001_0000;

/// Positioned reads, as `pread(2)` does them.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let Some(src) = self.get(start..) else {
            return Ok(0);
        };
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// Fills `buf` from `offset`, or fails with `UnexpectedEof`.
pub fn read_exact_at<R: ReadAt + ?Sized>(r: &R, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let off = offset
            .checked_add(done as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        match r.read_at(&mut buf[done..], off) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Which header a table was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// LBA 1.
    Primary,
    /// The last LBA.
    Backup,
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Which::Primary => "primary",
            Which::Backup => "backup",
        })
    }
}

/// What is wrong with one header (or its entry array).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    /// No `EFI PART` signature.
    #[error("no gpt signature")]
    NoSignature,
    /// Not revision 1.0.
    #[error("unsupported revision {0:#010x}")]
    Revision(u32),
    /// Header size out of range.
    #[error("header size {0} out of range")]
    HeaderSize(u32),
    /// Header CRC mismatch.
    #[error("header crc mismatch")]
    HeaderCrc,
    /// `my_lba` is not where the header was read.
    #[error("header claims lba {claimed}, read at {actual}")]
    MyLba {
        /// What the header says.
        claimed: u64,
        /// Where it was read.
        actual: u64,
    },
    /// The usable range is inverted, outside the disk, or covers the header.
    #[error("usable range {first}..={last} is invalid")]
    UsableRange {
        /// First usable LBA.
        first: u64,
        /// Last usable LBA.
        last: u64,
    },
    /// Entry size or count out of bounds, or the array outside its place.
    #[error("entry array geometry: {count} entries of {size} bytes at lba {lba}")]
    ArrayGeometry {
        /// Entry count.
        count: u32,
        /// Entry size.
        size: u32,
        /// First LBA of the array.
        lba: u64,
    },
    /// Entry-array CRC mismatch.
    #[error("entry array crc mismatch")]
    ArrayCrc,
    #[error("read failed: {0}")]
    Io(String),
}

/// Why no table could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    /// Neither header has the signature: the disk has no GPT.
    #[error("no gpt")]
    NotGpt,
    /// The sector size is not a power of two in 512..=4096.
    #[error("unsupported sector size {0}")]
    SectorSize(u32),
    /// The disk is too small to hold a table.
    #[error("disk of {0} bytes is too small for a gpt")]
    TooSmall(u64),
    /// Both headers are unusable.
    #[error("primary gpt: {primary}; backup gpt: {backup}")]
    Invalid {
        /// The primary header's problem.
        primary: HeaderProblem,
        /// The backup header's problem.
        backup: HeaderProblem,
    },
}

/// One used entry of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptEntry {
    /// 1-based index in the entry array (the kernel's partition number).
    pub number: u32,
    /// Partition type.
    pub type_guid: Guid,
    /// Unique partition GUID (the PARTUUID).
    pub part_guid: Guid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
    /// The name, decoded lossily; for display only.
    pub name: String,
}

impl GptEntry {
    /// Attribute bit 60: mount read-only.
    pub const ATTR_READ_ONLY: u64 = 1 << 60;
    /// Attribute bit 63: do not mount automatically.
    pub const ATTR_NO_AUTO: u64 = 1 << 63;

    /// Whether bit 60 is set.
    pub fn read_only(&self) -> bool {
        self.attributes & Self::ATTR_READ_ONLY != 0
    }

    /// Whether bit 63 is set.
    pub fn no_auto(&self) -> bool {
        self.attributes & Self::ATTR_NO_AUTO != 0
    }
}

/// A table that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptTable {
    /// The disk GUID.
    pub disk_guid: Guid,
    /// Where it was read from.
    pub from: Which,
    /// What was wrong with the primary when `from` is the backup.
    pub primary_problem: Option<HeaderProblem>,
    /// Sector size used.
    pub sector_size: u32,
    /// First usable LBA.
    pub first_usable: u64,
    /// Last usable LBA.
    pub last_usable: u64,
    /// Used entries inside the usable range, by number.
    pub entries: Vec<GptEntry>,
}

impl GptTable {
    /// The entry with this 1-based number.
    pub fn entry(&self, number: u32) -> Option<&GptEntry> {
        self.entries.iter().find(|e| e.number == number)
    }
}

/// Reads the table of a disk of `disk_bytes` bytes with logical sectors of
/// `sector_size` bytes.
pub fn read_gpt<R: ReadAt + ?Sized>(
    r: &R,
    disk_bytes: u64,
    sector_size: u32,
) -> Result<GptTable, GptError> {
    if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
        return Err(GptError::SectorSize(sector_size));
    }
    let ss = u64::from(sector_size);
    let sectors = disk_bytes / ss;
    // Protective MBR, header, one array sector, one usable sector, backup array, backup header.
    if sectors < 6 {
        return Err(GptError::TooSmall(disk_bytes));
    }
    let last = sectors - 1;
    let primary = match read_at_lba(r, 1, sectors, sector_size) {
        Ok(t) => return Ok(t),
        Err(p) => p,
    };
    match read_at_lba(r, last, sectors, sector_size) {
        Ok(mut t) => {
            t.primary_problem = Some(primary);
            Ok(t)
        }
        Err(backup) => {
            if primary == HeaderProblem::NoSignature && backup == HeaderProblem::NoSignature {
                Err(GptError::NotGpt)
            } else {
                Err(GptError::Invalid { primary, backup })
            }
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Guid::from_gpt_bytes(&a)
}

/// The parsed fields of a header that passed its own checks.
struct Header {
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    array_lba: u64,
    count: u32,
    array_crc: u32,
}

fn read_at_lba<R: ReadAt + ?Sized>(
    r: &R,
    lba: u64,
    sectors: u64,
    sector_size: u32,
) -> Result<GptTable, HeaderProblem> {
    let ss = u64::from(sector_size);
    let mut sector = [0u8; 4096];
    let sector = &mut sector[..sector_size as usize];
    read_exact_at(r, sector, lba * ss).map_err(|e| HeaderProblem::Io(e.to_string()))?;
    let h = parse_header(sector, lba, sectors)?;

    let array_len = h.count as usize * ENTRY_SIZE as usize; // <= 128 KiB by the checks
    let mut array = vec![0u8; array_len];
    read_exact_at(r, &mut array, h.array_lba * ss).map_err(|e| HeaderProblem::Io(e.to_string()))?;
    if crc32fast::hash(&array) != h.array_crc {
        return Err(HeaderProblem::ArrayCrc);
    }
    let entries = array
        .chunks_exact(ENTRY_SIZE as usize)
        .zip(1u32..)
        .filter_map(|(e, number)| parse_entry(e, number))
        .filter(|e| e.first_lba >= h.first_usable && e.last_lba <= h.last_usable)
        .collect();
    Ok(GptTable {
        disk_guid: h.disk_guid,
        from: if lba == 1 {
            Which::Primary
        } else {
            Which::Backup
        },
        primary_problem: None,
        sector_size,
        first_usable: h.first_usable,
        last_usable: h.last_usable,
        entries,
    })
}

fn parse_header(sector: &[u8], lba: u64, sectors: u64) -> Result<Header, HeaderProblem> {
    if sector[..8] != SIGNATURE {
        return Err(HeaderProblem::NoSignature);
    }
    let revision = le32(sector, 8);
    if revision != REVISION {
        return Err(HeaderProblem::Revision(revision));
    }
    let hsz = le32(sector, 12);
    if hsz < MIN_HEADER_SIZE || hsz as usize > sector.len() {
        return Err(HeaderProblem::HeaderSize(hsz));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&sector[..16]);
    crc.update(&[0; 4]);
    crc.update(&sector[20..hsz as usize]);
    if crc.finalize() != le32(sector, 16) {
        return Err(HeaderProblem::HeaderCrc);
    }
    let my_lba = le64(sector, 24);
    if my_lba != lba {
        return Err(HeaderProblem::MyLba {
            claimed: my_lba,
            actual: lba,
        });
    }
    let first = le64(sector, 40);
    let last = le64(sector, 48);
    if first < 2 || first > last || last >= sectors - 1 || (first..=last).contains(&lba) {
        return Err(HeaderProblem::UsableRange { first, last });
    }
    let array_lba = le64(sector, 72);
    let count = le32(sector, 80);
    let size = le32(sector, 84);
    let geometry = HeaderProblem::ArrayGeometry {
        count,
        size,
        lba: array_lba,
    };
    if size != ENTRY_SIZE || count == 0 || count > MAX_ENTRIES {
        return Err(geometry);
    }
    let ss = sector.len() as u64;
    let array_sectors = (u64::from(count) * u64::from(size)).div_ceil(ss);
    let Some(array_end) = array_lba.checked_add(array_sectors) else {
        return Err(geometry);
    };
    // Inside the disk, after the protective MBR, off the header and the usable range.
    let off_usable = array_end <= first || array_lba > last;
    let off_header = array_end <= lba || array_lba > lba;
    if array_lba < 1 || array_end > sectors || !off_usable || !off_header {
        return Err(geometry);
    }
    Ok(Header {
        first_usable: first,
        last_usable: last,
        disk_guid: guid_at(sector, 56),
        array_lba,
        count,
        array_crc: le32(sector, 88),
    })
}

fn parse_entry(e: &[u8], number: u32) -> Option<GptEntry> {
    let type_guid = guid_at(e, 0);
    if type_guid.is_nil() {
        return None;
    }
    let first_lba = le64(e, 32);
    let last_lba = le64(e, 40);
    if first_lba > last_lba {
        return None;
    }
    let units = e[56..128]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0);
    let name = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    Some(GptEntry {
        number,
        type_guid,
        part_guid: guid_at(e, 16),
        first_lba,
        last_lba,
        attributes: le64(e, 48),
        name,
    })
}

#[cfg(test)]
mod tests;
