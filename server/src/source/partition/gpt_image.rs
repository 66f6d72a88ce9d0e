//! Writing GUID partition tables: for tests, fuzz seeds and hostile fixtures.
//!
//! The daemon never writes a partition table. This module builds images
//! whose CRCs are valid even when the rest is absurd (entry size 256,
//! 0xFFFFFFFF entries), which is what a hostile disk looks like to the
//! reader in [`super::gpt`].

use std::io;

use super::gpt::{ENTRY_SIZE, GptEntry, MIN_HEADER_SIZE, REVISION, SIGNATURE};
use super::guid::Guid;

/// Largest entry array this builder writes; larger claims get a truncated array.
const MAX_WRITTEN_ARRAY: u64 = 4 << 20;

/// A table to write.
#[derive(Debug, Clone)]
pub struct GptImage {
    /// Logical sector size.
    pub sector_size: u32,
    /// Disk size in sectors.
    pub disk_sectors: u64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Used entries; each at index `number - 1`.
    pub entries: Vec<GptEntry>,
    /// Entry count written in the headers (128 by default).
    pub entry_count: u32,
    /// Entry size written in the headers (128 by default).
    pub entry_size: u32,
}

impl GptImage {
    /// An empty table with 128 entries of 128 bytes.
    pub fn new(sector_size: u32, disk_sectors: u64) -> GptImage {
        GptImage {
            sector_size,
            disk_sectors,
            disk_guid: Guid([0x5a; 16]),
            entries: Vec::new(),
            entry_count: 128,
            entry_size: ENTRY_SIZE,
        }
    }

    /// Adds an entry.
    pub fn with_entry(mut self, e: GptEntry) -> GptImage {
        self.entries.push(e);
        self
    }

    /// Sectors that the written entry array takes: what the header claims,
    /// capped so that two arrays and the headers fit on the disk.
    pub fn array_sectors(&self) -> u64 {
        self.array_len()
            .div_ceil(u64::from(self.sector_size))
            .max(1)
    }

    fn array_len(&self) -> u64 {
        let claimed = u64::from(self.entry_count) * u64::from(self.entry_size);
        let room = self.disk_sectors.saturating_sub(6) / 2 * u64::from(self.sector_size);
        claimed.min(MAX_WRITTEN_ARRAY).min(room)
    }

    /// First usable LBA (after the primary array).
    pub fn first_usable(&self) -> u64 {
        2 + self.array_sectors()
    }

    /// Last usable LBA (before the backup array).
    pub fn last_usable(&self) -> u64 {
        self.disk_sectors - 2 - self.array_sectors()
    }

    fn array(&self) -> Vec<u8> {
        let mut a = vec![0u8; self.array_len() as usize];
        let esz = (self.entry_size as usize).max(ENTRY_SIZE as usize);
        for e in &self.entries {
            let at = (e.number as usize - 1) * esz;
            if at + ENTRY_SIZE as usize <= a.len() {
                a[at..at + 128].copy_from_slice(&encode_entry(e));
            }
        }
        a
    }

    fn header(&self, my_lba: u64, alternate: u64, array_lba: u64, array_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; self.sector_size as usize];
        h[0..8].copy_from_slice(&SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&MIN_HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.entry_count.to_le_bytes());
        h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..MIN_HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The byte ranges to write: protective MBR, primary header and array,
    /// backup array and header, as `(offset, bytes)`.
    pub fn regions(&self) -> Vec<(u64, Vec<u8>)> {
        let ss = u64::from(self.sector_size);
        let last = self.disk_sectors - 1;
        let array = self.array();
        let crc = crc32fast::hash(&array);
        let backup_array_lba = last - self.array_sectors();
        vec![
            (0, protective_mbr(self.disk_sectors)),
            (ss, self.header(1, last, 2, crc)),
            (2 * ss, array.clone()),
            (backup_array_lba * ss, array),
            (last * ss, self.header(last, 1, backup_array_lba, crc)),
        ]
    }

    /// The whole disk in memory (small disks only).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut disk = vec![0u8; (self.disk_sectors * u64::from(self.sector_size)) as usize];
        for (off, bytes) in self.regions() {
            let off = off as usize;
            disk[off..off + bytes.len()].copy_from_slice(&bytes);
        }
        disk
    }

    /// Writes the table into a disk image file or device.
    pub fn write_to(&self, f: &std::fs::File) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        for (off, bytes) in self.regions() {
            f.write_all_at(&bytes, off)?;
        }
        Ok(())
    }
}

/// Encodes one 128-byte entry.
pub fn encode_entry(e: &GptEntry) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[0..16].copy_from_slice(&e.type_guid.to_gpt_bytes());
    b[16..32].copy_from_slice(&e.part_guid.to_gpt_bytes());
    b[32..40].copy_from_slice(&e.first_lba.to_le_bytes());
    b[40..48].copy_from_slice(&e.last_lba.to_le_bytes());
    b[48..56].copy_from_slice(&e.attributes.to_le_bytes());
    for (i, u) in e.name.encode_utf16().take(36).enumerate() {
        b[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    b
}

fn protective_mbr(disk_sectors: u64) -> Vec<u8> {
    let mut m = vec![0u8; 512];
    let p = 446;
    m[p + 1..p + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    m[p + 4] = 0xee;
    m[p + 5..p + 8].copy_from_slice(&[0xff, 0xff, 0xff]);
    m[p + 8..p + 12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
    m[p + 12..p + 16].copy_from_slice(&size.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// Makes the CRCs of both headers of `image` (and of their entry arrays,
/// when those are inside the image and at most 1 MiB) valid again, whatever
/// else the headers say. Never panics; used by fuzzing and property tests to
/// get past the CRC checks.
pub fn fix_crcs(image: &mut [u8], sector_size: u32) {
    let ss = sector_size as usize;
    if ss == 0 || image.len() < 2 * ss {
        return;
    }
    let last = image.len() / ss - 1;
    for lba in [1, last] {
        let at = lba * ss;
        let Some(h) = image.get(at..at + ss) else {
            continue;
        };
        if h[..8] != SIGNATURE {
            continue;
        }
        let hsz = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
        if !(MIN_HEADER_SIZE as usize..=ss).contains(&hsz) {
            continue;
        }
        let array_lba = u64::from_le_bytes(h[72..80].try_into().unwrap_or([0; 8]));
        let count = u32::from_le_bytes([h[80], h[81], h[82], h[83]]) as u64;
        let size = u32::from_le_bytes([h[84], h[85], h[86], h[87]]) as u64;
        let len = count * size;
        let range = array_lba
            .checked_mul(ss as u64)
            .and_then(|start| Some((start, start.checked_add(len)?)))
            .filter(|&(_, end)| len <= 1 << 20 && end <= image.len() as u64);
        if let Some((start, end)) = range {
            let crc = crc32fast::hash(&image[start as usize..end as usize]);
            image[at + 88..at + 92].copy_from_slice(&crc.to_le_bytes());
        }
        image[at + 16..at + 20].fill(0);
        let crc = crc32fast::hash(&image[at..at + hsz]);
        image[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
    }
}
