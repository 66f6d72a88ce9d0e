//! Property test: random hostile trees never make the untrusted scanner
//! accept (or open) anything outside its source or the trusted prefixes,
//! hang on a FIFO, or return more than its caps allow.

mod catalog_common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use catalog_common::{no_hang, untrusted};
use proptest::prelude::*;
use rustix::fs::inotify;
use vm_catalog_protocol::{DiagCode, SourceState};
use vm_catalog_tests::Tree;
use vm_catalogd::definition::{Definition, FileRef, ScanOptions, scan_source};

const MAX_SOURCE: usize = 8;
const MAX_DIR: usize = 6;

/// Where a generated symlink points.
#[derive(Debug, Clone)]
enum Target {
    /// The secret file, absolute.
    Secret,
    /// The secret file, through `..`.
    SecretRelative,
    /// A device.
    DevZero,
    /// A regular file under the trusted prefix.
    PrefixFile,
    /// A FIFO under the trusted prefix.
    PrefixFifo,
    /// A directory under the trusted prefix.
    PrefixDir,
    /// A link under the trusted prefix that points at the secret.
    PrefixEscape,
    /// The prefix, spelled with `..` back out to the secret.
    PrefixDotDot,
    /// Nothing.
    Dangling,
    /// `/`.
    Root,
}

#[derive(Debug, Clone)]
enum Leaf {
    File,
    Fifo,
    Dir,
    Link(Target),
}

#[derive(Debug, Clone)]
enum Node {
    Leaf(Leaf),
    Dir(BTreeMap<OsString, Node>),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Secret),
        Just(Target::SecretRelative),
        Just(Target::DevZero),
        Just(Target::PrefixFile),
        Just(Target::PrefixFifo),
        Just(Target::PrefixDir),
        Just(Target::PrefixEscape),
        Just(Target::PrefixDotDot),
        Just(Target::Dangling),
        Just(Target::Root),
    ]
}

fn leaf() -> impl Strategy<Value = Leaf> {
    prop_oneof![
        3 => Just(Leaf::File),
        1 => Just(Leaf::Fifo),
        1 => Just(Leaf::Dir),
        3 => target().prop_map(Leaf::Link),
    ]
}

/// Names: the layout's own, plausible ones, and hostile bytes.
fn name() -> impl Strategy<Value = OsString> {
    let bytes = proptest::collection::vec(any::<u8>(), 1..24).prop_map(|mut v| {
        v.retain(|&b| b != b'/' && b != 0);
        if v.is_empty() || v == b"." || v == b".." {
            v = b"x".to_vec();
        }
        v
    });
    prop_oneof![
        2 => prop_oneof![Just("vmlinux"), Just("blk"), Just("providers"), Just("net"), Just("fs")]
            .prop_map(|s| s.as_bytes().to_vec()),
        2 => "[a-z][a-z0-9.,:_-]{0,8}(\\.img)?".prop_map(String::into_bytes),
        2 => bytes,
        1 => (200usize..=255).prop_map(|n| vec![b'a'; n]),
    ]
    .prop_map(|v| OsStr::from_bytes(&v).to_os_string())
}

fn tree(depth: u32) -> impl Strategy<Value = BTreeMap<OsString, Node>> {
    let node =
        leaf()
            .prop_map(Node::Leaf)
            .prop_recursive(depth, 64, MAX_SOURCE as u32 + 2, |inner| {
                proptest::collection::btree_map(name(), inner, 0..MAX_SOURCE + 3)
                    .prop_map(Node::Dir)
            });
    proptest::collection::btree_map(name(), node, 0..MAX_SOURCE + 3)
}

struct World {
    tree: Tree,
    source: PathBuf,
    prefix: PathBuf,
    secret_dir: PathBuf,
    secret: PathBuf,
}

fn link_target(w: &World, t: &Target, at: &Path) -> PathBuf {
    match t {
        Target::Secret => w.secret.clone(),
        Target::SecretRelative => {
            let depth = at.strip_prefix(w.tree.path()).unwrap().components().count();
            let mut p = PathBuf::new();
            for _ in 1..depth {
                p.push("..");
            }
            p.join("outside/secret")
        }
        Target::DevZero => PathBuf::from("/dev/zero"),
        Target::PrefixFile => w.prefix.join("file"),
        Target::PrefixFifo => w.prefix.join("fifo"),
        Target::PrefixDir => w.prefix.join("dir"),
        Target::PrefixEscape => w.prefix.join("escape"),
        Target::PrefixDotDot => w.prefix.join("../outside/secret"),
        Target::Dangling => w.prefix.join("nothing"),
        Target::Root => PathBuf::from("/"),
    }
}

fn build(w: &World, dir: &Path, nodes: &BTreeMap<OsString, Node>) {
    for (n, node) in nodes {
        let p = dir.join(n);
        match node {
            Node::Leaf(Leaf::File) => std::fs::write(&p, b"x").unwrap(),
            Node::Leaf(Leaf::Fifo) => {
                w.tree.fifo(&p);
            }
            Node::Leaf(Leaf::Dir) => std::fs::create_dir(&p).unwrap(),
            Node::Leaf(Leaf::Link(t)) => {
                std::os::unix::fs::symlink(link_target(w, t, &p), &p).unwrap()
            }
            Node::Dir(children) => {
                std::fs::create_dir(&p).unwrap();
                build(w, &p, children);
            }
        }
    }
}

fn world(nodes: &BTreeMap<OsString, Node>) -> World {
    let tree = Tree::new();
    let w = World {
        source: tree.dir("src"),
        prefix: tree.dir("img"),
        secret_dir: tree.dir("outside"),
        secret: tree.file("outside/secret", b"secret"),
        tree,
    };
    w.tree.file("img/file", b"trusted");
    w.tree.fifo("img/fifo");
    w.tree.fifo("outside/fifo");
    w.tree.dir("img/dir");
    w.tree.symlink("img/escape", &w.secret);
    build(&w, &w.source, nodes);
    w
}

/// Whether `path` is `base/...` with no symlink on the way below `base`.
fn plainly_under(path: &Path, base: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(base) else {
        return false;
    };
    let mut cur = base.to_path_buf();
    for c in rest.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if !m.file_type().is_symlink() => {}
            _ => return false,
        }
    }
    !rest.as_os_str().is_empty()
}

fn check_file(w: &World, f: &FileRef, dir: bool) -> Result<(), TestCaseError> {
    prop_assert!(
        plainly_under(&f.path, &w.source) || plainly_under(&f.path, &w.prefix),
        "accepted {:?}, outside the source and the prefix",
        f.path
    );
    let m = std::fs::symlink_metadata(&f.path).unwrap();
    prop_assert_eq!(
        (m.dev(), m.ino()),
        (f.id.dev, f.id.ino),
        "the final path is the file that was checked"
    );
    if dir {
        prop_assert!(m.is_dir());
    } else {
        prop_assert!(
            m.file_type().is_file(),
            "{:?} is not a regular file",
            f.path
        );
    }
    Ok(())
}

fn check_definition(w: &World, d: &Definition) -> Result<(), TestCaseError> {
    prop_assert!(d.dir.starts_with(&w.source));
    prop_assert!(d.disks.len() <= MAX_DIR && d.providers.len() <= MAX_DIR);
    // Each entry of each of the (at most 4) directories read yields at most
    // one diagnostic, plus a few about the layout.
    prop_assert!(
        d.diagnostics.len() <= 4 * MAX_DIR + 4,
        "{} diagnostics",
        d.diagnostics.len()
    );
    if d.is_valid() {
        prop_assert!(d.kernel.is_some() && !d.disks.is_empty());
    }
    for f in d
        .kernel
        .iter()
        .chain(&d.disks)
        .chain(d.providers.iter().map(|p| &p.file))
    {
        check_file(w, f, false)?;
    }
    if let Some(fs) = &d.fs {
        check_file(w, fs, true)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn hostile_trees_stay_contained(nodes in tree(3)) {
        let w = world(&nodes);
        let secret = std::fs::metadata(&w.secret).unwrap();
        let watch = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
        inotify::add_watch(&watch, &w.secret_dir, inotify::WatchFlags::OPEN | inotify::WatchFlags::ACCESS).unwrap();

        let spec = untrusted(&w.tree, "src");
        let opts = ScanOptions {
            trusted_prefixes: vec![w.prefix.clone()],
            max_source_entries: MAX_SOURCE,
            max_dir_entries: MAX_DIR,
        };
        let scan = no_hang(move || scan_source(&spec, &opts));

        let mut buf = [0u8; 4096];
        match rustix::io::read(&watch, &mut buf) {
            Err(rustix::io::Errno::AGAIN) => {}
            other => prop_assert!(false, "something outside the source was opened: {other:?}"),
        }
        prop_assert!(scan.definitions.len() <= MAX_SOURCE);
        prop_assert!(scan.diagnostics.len() <= MAX_SOURCE + 1);
        if nodes.len() > MAX_SOURCE {
            prop_assert_eq!(scan.state, SourceState::Failed);
            prop_assert_eq!(scan.diagnostics[0].code, DiagCode::TooManyEntries);
        } else {
            prop_assert_eq!(scan.state, SourceState::Ready);
        }
        for d in &scan.definitions {
            check_definition(&w, d)?;
            for f in d.kernel.iter().chain(&d.disks) {
                prop_assert_ne!((f.id.dev, f.id.ino), (secret.dev(), secret.ino()));
            }
        }
    }
}
