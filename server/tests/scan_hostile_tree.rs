//! The scanner on hostile trees, through the fuzz target's own builder and
//! checker (`fuzz/common/hostile_tree.rs`): the seeds of
//! `fuzz/fuzz_targets/scan_tree.rs` (`fuzz/seeds/scan_tree/`) are current,
//! pass every rule, and scan as each one intends. `UPDATE_SEEDS=1` rewrites
//! them.

#[path = "../../fuzz/common/hostile_tree.rs"]
#[allow(dead_code)]
mod hostile_tree;

use std::path::PathBuf;

use hostile_tree::{HOST_TARGETS, NAMES, Scans};
use vm_catalog_protocol::{DiagCode, SourceState};
use vm_catalogd::definition::Definition;

/// Index of the first directory an input creates (after `src`, `img`, `out`).
const SRC: u8 = 0;
const IMG: u8 = 1;
const OUT: u8 = 2;
/// Node indices of the layout (`src`, `img`, `out`, the base dir).
const N_IMG: u8 = 1;
const N_OUT: u8 = 2;

/// A target, as `hostile_tree` decodes it.
enum T<'a> {
    Node(u8),
    Unnormalized(u8, u8),
    Relative(u8),
    Host(&'a [u8]),
    Itself,
    Raw(&'a [u8]),
    InPrefix(&'a [u8]),
    ThroughLink(u8, &'a [u8]),
}

/// An input, written op by op.
struct Seed(Vec<u8>);

fn name(n: &[u8]) -> Vec<u8> {
    match NAMES.iter().position(|x| *x == n) {
        Some(i) => vec![i as u8],
        None => {
            let mut v = vec![0xc0, n.len() as u8];
            v.extend_from_slice(n);
            v
        }
    }
}

impl Seed {
    /// Caps: `None` for the default, else the cap (1..=64).
    fn new(partition: bool, source_cap: Option<u8>, dir_cap: Option<u8>) -> Seed {
        let cap = |c: Option<u8>| c.map_or(0x80, |c| c - 1);
        Seed(vec![u8::from(partition), cap(source_cap), cap(dir_cap)])
    }
    fn op(mut self, op: u8, parent: u8, rest: &[u8]) -> Seed {
        self.0.push(op);
        self.0.push(parent);
        self.0.extend_from_slice(rest);
        self
    }
    fn dir(self, parent: u8, n: &[u8]) -> Seed {
        self.op(0, parent, &name(n))
    }
    fn file(self, parent: u8, n: &[u8]) -> Seed {
        let mut rest = name(n);
        rest.push(3);
        self.op(1, parent, &rest)
    }
    fn link(self, parent: u8, n: &[u8], t: T<'_>) -> Seed {
        let mut rest = name(n);
        match t {
            T::Node(i) => rest.extend([0, i]),
            T::Unnormalized(i, how) => rest.extend([1, i, how]),
            T::Relative(i) => rest.extend([2, i]),
            T::Host(h) => {
                rest.extend([3, HOST_TARGETS.iter().position(|x| *x == h).unwrap() as u8])
            }
            T::Itself => rest.push(4),
            T::Raw(b) => {
                rest.extend([5, b.len() as u8]);
                rest.extend_from_slice(b);
            }
            T::InPrefix(n) => {
                rest.push(6);
                rest.extend(name(n));
            }
            T::ThroughLink(i, n) => {
                rest.extend([7, i]);
                rest.extend(name(n));
            }
        }
        self.op(2, parent, &rest)
    }
    fn fifo(self, parent: u8, n: &[u8]) -> Seed {
        self.op(3, parent, &name(n))
    }
    fn socket(self, parent: u8, n: &[u8]) -> Seed {
        self.op(4, parent, &name(n))
    }
    fn many(self, parent: u8, count: u8, style: u8) -> Seed {
        self.op(5, parent, &[count, style])
    }
    /// A valid definition: 4 nodes (the dir, `vmlinux`, `blk`,
    /// `blk/root.img`), 2 directories (the dir, `blk`).
    fn def(self, parent: u8, n: &[u8]) -> Seed {
        self.op(6, parent, &name(n))
    }
}

fn def<'a>(s: &'a Scans, untrusted: bool, name: &str) -> &'a Definition {
    let scan = if untrusted { &s.untrusted } else { &s.trusted };
    scan.definitions
        .iter()
        .find(|d| d.name.as_str() == name)
        .unwrap_or_else(|| panic!("no definition {name}"))
}

fn has(d: &Definition, code: DiagCode) -> bool {
    d.diagnostics.iter().any(|x| x.code == code)
}

/// Directory and node indices after `def(SRC, "vm")` as the first op.
const VM: u8 = 3;
const VM_BLK: u8 = 4;

/// A definition `vm` whose `vmlinux` is a link (target `t`), with a disk:
/// nodes 4 (`vm`), 5 (`k` in `img`), 6 (`k` in `out`), 7 (the link).
fn kernel_link(t: T<'_>) -> Seed {
    Seed::new(false, None, None)
        .dir(SRC, b"vm")
        .file(IMG, b"k")
        .file(OUT, b"k")
        .link(VM, b"vmlinux", t)
        .dir(VM, b"blk")
        .file(VM + 1, b"root.img")
}

type Expect = fn(&Scans);

fn seeds() -> Vec<(&'static str, Seed, Expect)> {
    vec![
        ("valid", Seed::new(false, None, None).def(SRC, b"vm"), |s| {
            assert!(def(s, true, "vm").is_valid());
            assert!(def(s, false, "vm").is_valid());
        }),
        (
            "valid-partition",
            Seed::new(true, None, None).def(SRC, b"vm"),
            |s| assert!(def(s, true, "vm").is_valid()),
        ),
        ("kernel-in-prefix", kernel_link(T::Node(5)), |s| {
            let d = def(s, true, "vm");
            assert!(d.is_valid(), "{:?}", d.diagnostics);
            assert!(d.kernel.as_ref().unwrap().path.ends_with("img/k"));
        }),
        ("kernel-outside-prefix", kernel_link(T::Node(6)), |s| {
            let d = def(s, true, "vm");
            assert!(!d.is_valid() && has(d, DiagCode::UnsafeSymlink));
            assert!(def(s, false, "vm").is_valid());
        }),
        ("kernel-relative", kernel_link(T::Relative(5)), |s| {
            let d = def(s, true, "vm");
            assert!(!d.is_valid() && has(d, DiagCode::UnsafeSymlink));
            assert!(def(s, false, "vm").is_valid());
        }),
        (
            "kernel-unnormalized",
            kernel_link(T::Unnormalized(N_IMG, 3)),
            |s| assert!(has(def(s, true, "vm"), DiagCode::UnsafeSymlink)),
        ),
        (
            "kernel-missing-in-prefix",
            kernel_link(T::InPrefix(b"..x")),
            |s| assert!(!def(s, true, "vm").is_valid()),
        ),
        (
            "kernel-through-link-in-prefix",
            // img/sub -> out; vmlinux -> img/sub/k (out/k exists).
            Seed::new(false, None, None)
                .dir(SRC, b"vm")
                .file(OUT, b"k")
                .link(IMG, b"sub", T::Node(N_OUT))
                .link(VM, b"vmlinux", T::ThroughLink(0, b"k"))
                .dir(VM, b"blk")
                .file(VM + 1, b"root.img"),
            |s| {
                let d = def(s, true, "vm");
                assert!(!d.is_valid() && has(d, DiagCode::UnsafeSymlink));
                assert!(def(s, false, "vm").is_valid());
            },
        ),
        ("kernel-loop", kernel_link(T::Itself), |s| {
            assert!(!def(s, true, "vm").is_valid());
            assert!(!def(s, false, "vm").is_valid());
        }),
        ("kernel-host", kernel_link(T::Host(b"/etc/passwd")), |s| {
            assert!(has(def(s, true, "vm"), DiagCode::UnsafeSymlink))
        }),
        ("kernel-raw", kernel_link(T::Raw(b"/\xff\n/..//x")), |s| {
            assert!(!def(s, true, "vm").is_valid())
        }),
        (
            "definition-links",
            // src/a -> out (a directory), src/b -> itself, src/c -> /,
            // src/d -> /proc/self/root, src/e -> img.
            Seed::new(false, None, None)
                .def(OUT, b"vm")
                .link(SRC, b"a", T::Node(4))
                .link(SRC, b"b", T::Itself)
                .link(SRC, b"c", T::Host(b"/"))
                .link(SRC, b"d", T::Host(b"/proc/self/root"))
                .link(SRC, b"e", T::Node(N_IMG)),
            |s| {
                assert!(s.untrusted.definitions.is_empty());
                assert!(
                    s.untrusted
                        .diagnostics
                        .iter()
                        .filter(|d| d.code == DiagCode::UnsafeSymlink)
                        .count()
                        == 5
                );
                assert!(def(s, false, "a").is_valid());
            },
        ),
        (
            "fifos-and-sockets",
            Seed::new(false, None, None)
                .dir(SRC, b"vm")
                .fifo(VM, b"vmlinux")
                .dir(VM, b"blk")
                .fifo(VM + 1, b"root.img")
                .socket(VM + 1, b"data.img")
                .fifo(SRC, b"x")
                .socket(SRC, b"netvm"),
            |s| {
                let d = def(s, true, "vm");
                assert!(d.kernel.is_none() && d.disks.is_empty());
                assert!(has(d, DiagCode::NotRegularFile));
                assert_eq!(s.untrusted.definitions.len(), 1);
            },
        ),
        (
            "odd-names",
            Seed::new(false, None, None)
                .def(SRC, b"\xff")
                .def(SRC, b".hidden")
                .def(SRC, b"s6rc-vm")
                .def(SRC, b"-dash")
                .def(SRC, NAMES[22])
                .def(SRC, NAMES[23])
                .def(SRC, b"ctl\n.img")
                .def(SRC, b"Up_per.1"),
            |s| {
                let names: Vec<_> = s
                    .untrusted
                    .definitions
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect();
                assert_eq!(names, [std::str::from_utf8(NAMES[22]).unwrap(), "Up_per.1"]);
                assert!(
                    s.untrusted
                        .diagnostics
                        .iter()
                        .any(|d| d.code == DiagCode::InvalidName)
                );
            },
        ),
        (
            "odd-disk-names",
            Seed::new(false, None, None)
                .def(SRC, b"vm")
                .file(VM_BLK, b"a,b.img")
                .file(VM_BLK, b"ctl\n.img")
                .file(VM_BLK, b"\xff.img")
                .file(VM_BLK, b"\xc3\xa9.img")
                .file(VM_BLK, b".img"),
            |s| {
                let d = def(s, true, "vm");
                assert!(!d.is_valid() && has(d, DiagCode::InvalidPath));
                let disks: Vec<_> = d.disks.iter().map(|f| f.name.clone()).collect();
                assert_eq!(disks, ["root.img", "\u{e9}.img"]);
            },
        ),
        (
            "source-over-cap",
            Seed::new(false, Some(4), None).many(SRC, 5, 2),
            |s| {
                assert_eq!(s.untrusted.state, SourceState::Failed);
                assert_eq!(s.trusted.state, SourceState::Failed);
            },
        ),
        (
            "source-at-cap",
            Seed::new(false, Some(5), None).many(SRC, 5, 2),
            |s| assert_eq!(s.untrusted.definitions.len(), 5),
        ),
        (
            "blk-over-cap",
            Seed::new(false, None, Some(4))
                .def(SRC, b"vm")
                .many(VM_BLK, 4, 1),
            |s| {
                let d = def(s, true, "vm");
                assert!(!d.is_valid() && has(d, DiagCode::TooManyEntries));
            },
        ),
        (
            "many-entries",
            Seed::new(false, None, None)
                .def(SRC, b"vm")
                .many(VM_BLK, 255, 1)
                .many(SRC, 255, 2)
                .many(SRC, 255, 3),
            |s| {
                assert_eq!(s.untrusted.definitions.len(), 256);
                assert_eq!(def(s, true, "vm").disks.len(), 256);
            },
        ),
        (
            "providers",
            Seed::new(false, None, None)
                .def(SRC, b"vm")
                .dir(VM, b"providers")
                .dir(VM + 2, b"net")
                .file(VM + 3, b"netvm")
                .link(VM + 3, b"sys.netvm", T::InPrefix(b"x"))
                .file(IMG, b"x")
                .file(VM + 3, b"-dash")
                .link(VM + 3, b"vm", T::Node(N_OUT)),
            |s| {
                for untrusted in [true, false] {
                    let d = def(s, untrusted, "vm");
                    let p: Vec<_> = d
                        .providers
                        .iter()
                        .map(|p| p.provider.name.as_str())
                        .collect();
                    assert_eq!(p, ["netvm", "sys.netvm"]);
                    assert!(!d.is_valid() && has(d, DiagCode::InvalidName));
                }
            },
        ),
        (
            "fs",
            Seed::new(false, None, None)
                .def(SRC, b"vm")
                .dir(IMG, b"share")
                .link(VM, b"fs", T::Node(8)),
            |s| {
                let d = def(s, true, "vm");
                assert!(d.is_valid(), "{:?}", d.diagnostics);
                assert!(d.fs.as_ref().unwrap().path.ends_with("img/share"));
            },
        ),
        (
            "blk-link",
            // vm/blk -> img/b (a directory with a disk).
            Seed::new(false, None, None)
                .dir(SRC, b"vm")
                .file(VM, b"vmlinux")
                .dir(IMG, b"b")
                .file(VM + 1, b"root.img")
                .link(VM, b"blk", T::Node(6)),
            |s| {
                let d = def(s, true, "vm");
                assert!(has(d, DiagCode::UnsafeSymlink) && !d.is_valid());
                assert!(def(s, false, "vm").is_valid());
            },
        ),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/scan_tree")
}

#[test]
fn fuzz_seeds_are_current_pass_every_rule_and_scan_as_intended() {
    let update = std::env::var_os("UPDATE_SEEDS").is_some();
    if update {
        std::fs::create_dir_all(dir()).unwrap();
    }
    for (name, seed, expect) in seeds() {
        let path = dir().join(name);
        if update {
            std::fs::write(&path, &seed.0).unwrap();
        }
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_SEEDS=1)", path.display()));
        assert_eq!(on_disk, seed.0, "{name} is stale (run with UPDATE_SEEDS=1)");

        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let built = hostile_tree::build(&base, &seed.0);
        let scans = hostile_tree::scan_and_check(&built).unwrap_or_else(|e| panic!("{name}: {e}"));
        expect(&scans);
    }
}

#[test]
fn truncated_and_garbage_inputs_pass_every_rule() {
    // Every prefix of every seed, and a few byte patterns.
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for (_, seed, _) in seeds() {
        let step = (seed.0.len() / 6).max(1);
        for cut in (0..seed.0.len()).step_by(step) {
            inputs.push(seed.0[..cut].to_vec());
        }
    }
    inputs.push(vec![0xff; 300]);
    inputs.push((0..=255).collect());
    inputs.push((0..=255).rev().collect());
    for input in inputs {
        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let built = hostile_tree::build(&base, &input);
        if let Err(e) = hostile_tree::scan_and_check(&built) {
            panic!("input {input:?}: {e}");
        }
    }
}

/// The input `scan_tree` stopped on (`fuzz/artifacts/…/crash-af2fa146…`):
/// `src/vm/vmlinux`, and `src/vm/blk` a link to `img/s6rc-vm/../x`, which
/// does not exist.
const DANGLING_BLK: &[u8] = &[
    0x00, 0x80, 0x80, 0x00, 0x00, 0x07, 0x01, 0x03, 0x00, 0x03, 0x00, 0x01, 0x2a, 0x01, 0x95, 0x62,
    0x01, 0x04, 0x05, 0x03, 0x02, 0x03, 0x01, 0x01, 0x06, 0x5f, 0x57, 0x5f, 0x5f, 0x5f, 0x5f,
];

/// Fuzz finding (`scan_tree`): in a trusted source, a definition
/// whose `blk` is a dangling symlink was valid, with no disk and no
/// diagnostic: `read_blk` takes a `blk` that cannot be opened for one whose
/// failure was reported (`blk_failed`), and `subdir` reports nothing when
/// the open finds nothing. The same holds, in any source, for a `blk`
/// removed between the listing and the open. Minimal tree: `vm/vmlinux` (a
/// file) and `vm/blk -> /nonexistent`, scanned as a trusted source.
#[test]
fn a_trusted_definition_whose_blk_is_a_dangling_link_is_not_valid() {
    use vm_catalog_protocol::{SourceKind, SourceLabel, Trust};
    use vm_catalogd::definition::{ScanOptions, scan_source};
    use vm_catalogd::source::{Presence, SourceSpec};

    let t = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(t.path()).unwrap();
    std::fs::create_dir(root.join("vm")).unwrap();
    std::fs::write(root.join("vm/vmlinux"), b"k").unwrap();
    std::os::unix::fs::symlink("/nonexistent/blk", root.join("vm/blk")).unwrap();
    let spec = SourceSpec {
        label: SourceLabel::try_from("sys").unwrap(),
        kind: SourceKind::Builtin,
        trust: Trust::Trusted,
        root: root.clone(),
        device: None,
        partuuid: None,
        read_only: true,
        presence: Presence::Present,
        diagnostics: Vec::new(),
    };
    let scan = scan_source(&spec, &ScanOptions::default());
    let vm = &scan.definitions[0];
    assert!(vm.disks.is_empty());
    assert!(!vm.is_valid(), "valid without a disk: {:?}", vm.diagnostics);

    // And the fuzz input itself passes every rule.
    let t = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(t.path()).unwrap();
    let built = hostile_tree::build(&base, DANGLING_BLK);
    hostile_tree::scan_and_check(&built).unwrap();
}
