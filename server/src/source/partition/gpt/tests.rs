//! Tests of the strict GPT reader: good tables, every rejection, hostile
//! tables that crash the public crates, and property tests.

use proptest::prelude::*;

use super::*;
use crate::source::partition::gpt_image::{GptImage, fix_crcs};
use crate::source::partition::guid::USER_PARTITION_TYPE;

fn entry(number: u32, first: u64, last: u64) -> GptEntry {
    GptEntry {
        number,
        type_guid: USER_PARTITION_TYPE,
        part_guid: Guid([number as u8; 16]),
        first_lba: first,
        last_lba: last,
        attributes: 0,
        name: format!("part-{number}"),
    }
}

fn small() -> GptImage {
    GptImage::new(512, 200)
        .with_entry(entry(1, 34, 99))
        .with_entry(entry(3, 100, 150))
}

#[test]
fn reads_a_table_it_wrote() {
    let disk = small().to_bytes();
    let t = read_gpt(&disk[..], disk.len() as u64, 512).unwrap();
    assert_eq!(t.from, Which::Primary);
    assert_eq!(t.entries, vec![entry(1, 34, 99), entry(3, 100, 150)]);
    assert_eq!(t.entry(3).unwrap().name, "part-3");
    assert!(t.entry(2).is_none());
}

#[test]
fn reads_4k_sectors() {
    let img = GptImage::new(4096, 64).with_entry(entry(1, 10, 20));
    let disk = img.to_bytes();
    let t = read_gpt(&disk[..], disk.len() as u64, 4096).unwrap();
    assert_eq!(t.entries, vec![entry(1, 10, 20)]);
    // The same disk read with the wrong sector size has no table.
    assert_eq!(
        read_gpt(&disk[..], disk.len() as u64, 512),
        Err(GptError::NotGpt)
    );
}

#[test]
fn falls_back_to_the_backup_when_the_primary_crc_is_bad() {
    let mut disk = small().to_bytes();
    disk[512 + 60] ^= 1; // disk guid byte: header CRC now wrong
    let t = read_gpt(&disk[..], disk.len() as u64, 512).unwrap();
    assert_eq!(t.from, Which::Backup);
    assert_eq!(t.primary_problem, Some(HeaderProblem::HeaderCrc));
    assert_eq!(t.entries.len(), 2);
}

#[test]
fn falls_back_to_the_backup_when_the_primary_array_is_bad() {
    let mut disk = small().to_bytes();
    disk[2 * 512 + 40] ^= 1;
    let t = read_gpt(&disk[..], disk.len() as u64, 512).unwrap();
    assert_eq!(t.from, Which::Backup);
    assert_eq!(t.primary_problem, Some(HeaderProblem::ArrayCrc));
}

#[test]
fn no_signature_is_not_gpt() {
    let disk = vec![0u8; 100 * 512];
    assert_eq!(
        read_gpt(&disk[..], disk.len() as u64, 512),
        Err(GptError::NotGpt)
    );
}

#[test]
fn tiny_disks_and_odd_sector_sizes_are_refused() {
    let disk = vec![0u8; 4096];
    assert_eq!(
        read_gpt(&disk[..], 2560, 512),
        Err(GptError::TooSmall(2560))
    );
    assert_eq!(read_gpt(&disk[..], 3072, 512), Err(GptError::NotGpt));
    assert_eq!(
        read_gpt(&disk[..], 4096, 520),
        Err(GptError::SectorSize(520))
    );
    assert_eq!(
        read_gpt(&disk[..], 4096, 8192),
        Err(GptError::SectorSize(8192))
    );
}

#[test]
fn a_disk_shorter_than_it_claims_is_an_io_problem_not_a_panic() {
    let disk = small().to_bytes();
    let err = read_gpt(&disk[..1024], disk.len() as u64, 512).unwrap_err();
    assert!(matches!(
        err,
        GptError::Invalid {
            backup: HeaderProblem::Io(_),
            ..
        }
    ));
}

fn hostile(count: u32, size: u32) -> GptError {
    let mut img = small();
    img.entry_count = count;
    img.entry_size = size;
    img.disk_sectors = 20_000;
    let disk = img.to_bytes();
    read_gpt(&disk[..], disk.len() as u64, 512).unwrap_err()
}

fn is_geometry(e: &GptError) -> bool {
    matches!(
        e,
        GptError::Invalid {
            primary: HeaderProblem::ArrayGeometry { .. },
            backup: HeaderProblem::ArrayGeometry { .. },
        }
    )
}

#[test]
fn hostile_entry_size_256_is_rejected() {
    // Legal per UEFI, CRC-valid: `gpt` 4.1 and `gptman` 3.1 panic on it.
    assert!(is_geometry(&hostile(128, 256)));
}

#[test]
fn hostile_huge_entry_count_is_rejected() {
    // 0xFFFFFFFF entries: `gptman` aborts trying to allocate 600 GB.
    assert!(is_geometry(&hostile(u32::MAX, 128)));
}

#[test]
fn hostile_overflowing_count_times_size_is_rejected() {
    assert!(is_geometry(&hostile(0x0200_0001, 128)));
    assert!(is_geometry(&hostile(0x0100_0000, 0x100)));
    assert!(is_geometry(&hostile(0, 128)));
    assert!(is_geometry(&hostile(1025, 128)));
}

#[test]
fn header_checks_each_refuse() {
    let base = small().to_bytes();
    let ss = 512;
    // (offset in header, new bytes, expected problem)
    type Case = (usize, Vec<u8>, fn(&HeaderProblem) -> bool);
    let cases: Vec<Case> = vec![
        (8, 0x0002_0000u32.to_le_bytes().to_vec(), |p| {
            matches!(p, HeaderProblem::Revision(_))
        }),
        (12, 91u32.to_le_bytes().to_vec(), |p| {
            matches!(p, HeaderProblem::HeaderSize(91))
        }),
        (12, 513u32.to_le_bytes().to_vec(), |p| {
            matches!(p, HeaderProblem::HeaderSize(513))
        }),
        (24, 5u64.to_le_bytes().to_vec(), |p| {
            matches!(p, HeaderProblem::MyLba { claimed: 5, .. })
        }),
        (40, 1u64.to_le_bytes().to_vec(), |p| {
            matches!(p, HeaderProblem::UsableRange { .. })
        }),
        (48, 199u64.to_le_bytes().to_vec(), |p| {
            matches!(p, HeaderProblem::UsableRange { .. })
        }),
        (40, 167u64.to_le_bytes().to_vec(), |p| {
            matches!(
                p,
                HeaderProblem::UsableRange {
                    first: 167,
                    last: 166
                }
            )
        }),
        (72, 50u64.to_le_bytes().to_vec(), |p| {
            matches!(p, HeaderProblem::ArrayGeometry { .. }) // array inside usable range
        }),
        (72, 1u64.to_le_bytes().to_vec(), |p| {
            matches!(p, HeaderProblem::ArrayGeometry { .. }) // array over the header
        }),
        (72, u64::MAX.to_le_bytes().to_vec(), |p| {
            matches!(p, HeaderProblem::ArrayGeometry { .. })
        }),
    ];
    for (off, bytes, want) in cases {
        let mut disk = base.clone();
        disk[ss + off..ss + off + bytes.len()].copy_from_slice(&bytes);
        fix_crcs(&mut disk[..2 * ss], 512); // fix the primary only
        // Remove the backup so that the primary's problem is reported.
        let last = disk.len() - ss;
        disk[last..].fill(0);
        match read_gpt(&disk[..], disk.len() as u64, 512) {
            Err(GptError::Invalid { primary, .. }) => {
                assert!(want(&primary), "offset {off}: {primary:?}")
            }
            other => panic!("offset {off}: {other:?}"),
        }
    }
}

#[test]
fn entries_outside_the_usable_range_are_skipped_but_keep_their_number() {
    let img = GptImage::new(512, 200)
        .with_entry(entry(1, 2, 99)) // starts before first usable (34)
        .with_entry(entry(2, 100, 150))
        .with_entry(entry(3, 120, 199)); // ends after last usable
    let disk = img.to_bytes();
    let t = read_gpt(&disk[..], disk.len() as u64, 512).unwrap();
    assert_eq!(t.entries, vec![entry(2, 100, 150)]);
}

#[test]
fn names_are_decoded_lossily() {
    let mut img = small();
    img.entries[0].name = "caf\u{e9}/../etc".into();
    let mut disk = img.to_bytes();
    // An unpaired surrogate after the name.
    let at = 2 * 512 + 56 + 2 * 11;
    disk[at..at + 2].copy_from_slice(&0xd800u16.to_le_bytes());
    fix_crcs(&mut disk, 512);
    let t = read_gpt(&disk[..], disk.len() as u64, 512).unwrap();
    assert_eq!(t.entries[0].name, "caf\u{e9}/../etc\u{fffd}");
}

#[test]
fn attribute_bits() {
    let mut e = entry(1, 34, 40);
    e.attributes = GptEntry::ATTR_NO_AUTO;
    assert!(e.no_auto() && !e.read_only());
    e.attributes = GptEntry::ATTR_READ_ONLY;
    assert!(!e.no_auto() && e.read_only());
}

fn arb_entries() -> impl Strategy<Value = Vec<GptEntry>> {
    // Up to 8 non-overlapping partitions in 34..=900, at distinct numbers.
    proptest::collection::btree_map(
        1u32..=128,
        (
            1u64..50,
            any::<u64>(),
            any::<[u8; 16]>(),
            "[a-zA-Z0-9 \u{e9}\u{fc}-]{0,36}",
        ),
        0..8,
    )
    .prop_map(|m| {
        let mut next = 34u64;
        m.into_iter()
            .map(|(number, (len, attrs, uuid, name))| {
                let e = GptEntry {
                    number,
                    type_guid: if number % 2 == 0 {
                        Guid([7; 16])
                    } else {
                        USER_PARTITION_TYPE
                    },
                    part_guid: Guid(uuid),
                    first_lba: next,
                    last_lba: next + len - 1,
                    attributes: attrs,
                    name,
                };
                next += len;
                e
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8192), ss in prop_oneof![Just(512u32), Just(4096u32), any::<u32>()]) {
        let _ = read_gpt(&bytes[..], bytes.len() as u64, ss);
        // Claiming a bigger disk than the bytes only makes reads fail.
        let _ = read_gpt(&bytes[..], u64::MAX, ss);
    }

    #[test]
    fn crc_fixed_garbage_headers_never_panic_and_results_are_in_bounds(
        fields in proptest::collection::vec((0usize..92, any::<u8>()), 1..40),
    ) {
        let mut disk = small().to_bytes();
        for (off, b) in fields {
            disk[512 + off] = b;
        }
        fix_crcs(&mut disk, 512);
        if let Ok(t) = read_gpt(&disk[..], disk.len() as u64, 512) {
            prop_assert!(t.entries.len() <= MAX_ENTRIES as usize);
            for e in &t.entries {
                prop_assert!(e.first_lba >= t.first_usable && e.last_lba <= t.last_usable);
                prop_assert!(t.last_usable < 199);
            }
        }
    }

    #[test]
    fn round_trip(entries in arb_entries(), ss in prop_oneof![Just(512u32), Just(4096u32)]) {
        let mut img = GptImage::new(ss, 1000);
        img.entries = entries.clone();
        let disk = img.to_bytes();
        let t = read_gpt(&disk[..], disk.len() as u64, ss).unwrap();
        prop_assert_eq!(t.from, Which::Primary);
        prop_assert_eq!(&t.entries, &entries);
        // Destroy the primary header: the backup gives the same table.
        let mut broken = disk.clone();
        broken[ss as usize..2 * ss as usize].fill(0);
        let b = read_gpt(&broken[..], broken.len() as u64, ss).unwrap();
        prop_assert_eq!(b.from, Which::Backup);
        prop_assert_eq!(&b.entries, &entries);
    }
}
