#![no_main]
//! Arbitrary disks through the strict GPT reader.
//!
//! The first byte picks a mode: bit 0 makes both headers' CRCs (and their
//! entry arrays' CRCs) valid before reading, so that mutations reach the
//! checks behind the CRCs; bit 1 reads with 4096-byte sectors instead of 512.
//! Seeds: `fuzz/seeds/gpt/` (checked by `server/tests/partition_gpt_seeds.rs`).
//! libFuzzer writes new inputs into the first directory it is given, so name
//! a scratch corpus first to keep the seeds clean:
//! `cargo fuzz run -s none gpt fuzz/corpus/gpt fuzz/seeds/gpt`.

use libfuzzer_sys::fuzz_target;
use vm_catalogd::source::partition::gpt::{MAX_ENTRIES, read_gpt};
use vm_catalogd::source::partition::gpt_image::fix_crcs;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, disk)) = data.split_first() else {
        return;
    };
    let sector_size = if mode & 2 != 0 { 4096 } else { 512 };
    let mut fixed;
    let disk = if mode & 1 != 0 {
        fixed = disk.to_vec();
        fix_crcs(&mut fixed, sector_size);
        &fixed[..]
    } else {
        disk
    };
    if let Ok(t) = read_gpt(disk, disk.len() as u64, sector_size) {
        let sectors = disk.len() as u64 / u64::from(sector_size);
        assert!(t.entries.len() <= MAX_ENTRIES as usize);
        assert!(t.first_usable <= t.last_usable && t.last_usable < sectors);
        for e in &t.entries {
            assert!(e.first_lba >= t.first_usable && e.last_lba <= t.last_usable);
            assert!(e.number >= 1 && e.number <= MAX_ENTRIES);
        }
    }
    // A disk that claims to be larger than the bytes only makes reads fail.
    let _ = read_gpt(disk, u64::MAX, sector_size);
});
