//! The fuzz seeds of `fuzz/fuzz_targets/gpt.rs` (`fuzz/seeds/gpt/`) are what
//! they claim to be. `UPDATE_SEEDS=1` rewrites them.
//!
//! A seed is one mode byte (bit 0: the target fixes CRCs; bit 1: 4096-byte
//! sectors) followed by a disk image.

use std::path::PathBuf;

use vm_catalogd::source::partition::gpt::{GptEntry, GptError, HeaderProblem, Which, read_gpt};
use vm_catalogd::source::partition::gpt_image::GptImage;
use vm_catalogd::source::partition::guid::{Guid, USER_PARTITION_TYPE};

fn entry(number: u32, first: u64, last: u64, attributes: u64) -> GptEntry {
    GptEntry {
        number,
        type_guid: USER_PARTITION_TYPE,
        part_guid: Guid([0xa0 + number as u8; 16]),
        first_lba: first,
        last_lba: last,
        attributes,
        name: format!("user-{number}"),
    }
}

/// A table of 4 entries (one array sector) on a 12-sector disk: usable
/// sectors 3..=9.
fn base(ss: u32) -> GptImage {
    let mut img = GptImage::new(ss, 12);
    img.entry_count = 4;
    img.with_entry(entry(1, 3, 5, 0))
        .with_entry(entry(3, 6, 9, GptEntry::ATTR_READ_ONLY))
}

fn seeds() -> Vec<(&'static str, u8, Vec<u8>)> {
    let mut esz256 = base(512);
    esz256.entry_size = 256;
    let mut huge = base(512);
    huge.entry_count = u32::MAX;
    let mut backup_only = base(512).to_bytes();
    backup_only[512..1024].fill(0);
    vec![
        ("valid-512", 0, base(512).to_bytes()),
        ("valid-4096", 2, base(4096).to_bytes()),
        ("backup-only", 0, backup_only),
        ("esz256-fixcrc", 1, esz256.to_bytes()),
        ("huge-count", 0, huge.to_bytes()),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/gpt")
}

#[test]
fn fuzz_seeds_are_current_and_read_as_intended() {
    let update = std::env::var_os("UPDATE_SEEDS").is_some();
    for (name, mode, image) in seeds() {
        let mut bytes = vec![mode];
        bytes.extend_from_slice(&image);
        let path = dir().join(name);
        if update {
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_SEEDS=1)", path.display()));
        assert_eq!(on_disk, bytes, "{name} is stale (run with UPDATE_SEEDS=1)");

        let ss = if mode & 2 != 0 { 4096 } else { 512 };
        let got = read_gpt(&image[..], image.len() as u64, ss);
        match name {
            "valid-512" | "valid-4096" => {
                let t = got.unwrap();
                assert_eq!(t.from, Which::Primary);
                assert_eq!(t.entries.len(), 2);
                assert!(t.entry(3).unwrap().read_only());
            }
            "backup-only" => assert_eq!(got.unwrap().from, Which::Backup),
            _ => assert!(
                matches!(
                    got,
                    Err(GptError::Invalid {
                        primary: HeaderProblem::ArrayGeometry { .. },
                        ..
                    })
                ),
                "{name}: {got:?}"
            ),
        }
    }
}
