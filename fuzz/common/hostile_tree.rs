//! A hostile definition tree built from bytes, scanned, and every scanner
//! rule checked against the tree itself.
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/scan_tree.rs` and by
//! `server/tests/scan_hostile_tree.rs` (which writes and checks the seeds in
//! `fuzz/seeds/scan_tree/`), through `#[path]`: it needs nothing but `std`,
//! `rustix`, `vm_catalogd` and `vm_catalog_protocol`.
//!
//! # Layout
//!
//! A fresh directory `base` (canonical) holds `src/` (the source root),
//! `img/` (the trusted prefix of the scan) and `out/` (a directory outside
//! both). Symlink targets may name any of them, the host (`/etc/passwd`,
//! `/proc/self/root`, …), the link itself, or raw bytes.
//!
//! # Input
//!
//! `[flags, source_cap, dir_cap, op…]`. `flags` bit 0: the untrusted scan
//! reads the source as a partition (its root must not go through a link)
//! rather than a directory. A cap byte with bit 7 set means the default
//! cap; otherwise the cap is `1 + (byte & 0x3f)`. Then ops until the input
//! ends (a missing byte reads as 0); an op that the file system refuses
//! (a name with `/`, a duplicate, a socket path too long) creates nothing.
//!
//! | op % 7 | bytes after it            | creates                                  |
//! |--------|---------------------------|------------------------------------------|
//! | 0      | parent, name              | a directory                              |
//! | 1      | parent, name, size        | a regular file of `size` bytes           |
//! | 2      | parent, name, target      | a symlink                                |
//! | 3      | parent, name              | a FIFO                                   |
//! | 4      | parent, name              | a Unix socket                            |
//! | 5      | parent, count, style      | `count` entries (`style % 4`: files `fN`, files `dN.img`, dirs `vmN`, FIFOs `pN`) |
//! | 6      | parent, name              | a valid definition: `name/vmlinux`, `name/blk/root.img` |
//!
//! `parent` is a byte modulo the number of directories made so far (`src`,
//! `img`, `out` first). A name byte below `0xc0` picks from [`NAMES`];
//! from `0xc0` on, the next byte is a length (0 reads as 1) and that many
//! raw bytes follow. A target starts with a byte whose value modulo 10
//! picks: 0 the absolute path of a node (a byte modulo the number of
//! nodes), 1 that path made unnormalized (a byte picks `/`, `//x`, `/./x`,
//! `/../x` appended), 2 that node's path relative to the link, 3 a host
//! path from [`HOST_TARGETS`], 4 the link's own path (a loop), 5 raw bytes
//! (a length byte, then bytes), 6 `img/<name>`, 7 an existing link's path
//! then `/<name>`, 8 `.` or `..`, 9 the trusted prefix itself.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use vm_catalog_protocol::{DiagCode, Severity, SourceKind, SourceLabel, SourceState, Trust};
use vm_catalogd::definition::{
    Definition, FileRef, ScanOptions, SourceScan, display_path, fingerprint_of,
    scan_definition_dir, scan_source,
};
use vm_catalogd::source::{Presence, SourceSpec};

/// Names a name byte below `0xc0` picks from.
pub(crate) const NAMES: &[&[u8]] = &[
    b"vmlinux",
    b"blk",
    b"providers",
    b"net",
    b"fs",
    b"root.img",
    b"data.img",
    b"vm",
    b"netvm",
    b"sys.netvm",
    b".hidden",
    b".img",
    b"a,b.img",
    b"ctl\n.img",
    b"\xff.img",
    b"\xc3\xa9.img",
    b"s6rc-vm",
    b"-dash",
    b"Up_per.1",
    b"x",
    b"\xff",
    b"tab\tname",
    b"0123456789012345678901234567890123456789012345678901234567890123",
    b"01234567890123456789012345678901234567890123456789012345678901234",
    b"back\\slash",
    b"..x",
];

/// Host paths a target may name (only ever read by a trusted scan).
pub(crate) const HOST_TARGETS: &[&[u8]] = &[
    b"/",
    b"/etc/passwd",
    b"/dev/null",
    b"/proc/self/root",
    b"/proc/self/fd/0",
    b"/usr/img/vmlinux",
    b"/nonexistent/vmlinux",
    b"/proc/self/cwd",
];

/// Most entries one input may create (besides the layout).
const MAX_CREATED: usize = 3000;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
    Fifo,
    Socket,
}

/// The three directories of a tree.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The canonical base directory.
    pub base: PathBuf,
    /// The source root (`base/src`).
    pub root: PathBuf,
    /// The trusted prefix (`base/img`).
    pub prefix: PathBuf,
    /// A directory outside both (`base/out`).
    pub outside: PathBuf,
}

/// The tree built from one input, and how to scan it.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    /// Its directories.
    pub layout: Layout,
    /// Whether the untrusted scan reads it as a partition.
    pub as_partition: bool,
    /// The scan options (the trusted prefix is `layout.prefix`).
    pub opts: ScanOptions,
    /// Entries created.
    pub created: usize,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn more(&self) -> bool {
        self.pos < self.data.len()
    }
}

fn cap(b: u8, default: usize) -> usize {
    if b & 0x80 != 0 {
        default
    } else {
        1 + usize::from(b & 0x3f)
    }
}

fn name(r: &mut Reader<'_>) -> Vec<u8> {
    let n = r.byte();
    if n < 0xc0 {
        NAMES[usize::from(n) % NAMES.len()].to_vec()
    } else {
        let len = usize::from(r.byte()).max(1);
        r.bytes(len)
    }
}

/// A path from `from_dir` to `to`, both absolute and normalized.
fn relative(from_dir: &Path, to: &Path) -> Vec<u8> {
    let a: Vec<_> = from_dir.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out.into_os_string().into_vec()
}

struct Builder<'a> {
    layout: &'a Layout,
    nodes: Vec<(PathBuf, Kind)>,
    dirs: Vec<PathBuf>,
    created: usize,
}

impl Builder<'_> {
    fn parent(&self, b: u8) -> PathBuf {
        self.dirs[usize::from(b) % self.dirs.len()].clone()
    }

    /// `parent/name`, if `name` is one path component.
    fn child(parent: &Path, name: &[u8]) -> Option<PathBuf> {
        if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
            return None;
        }
        if name == b"." || name == b".." {
            return None;
        }
        Some(parent.join(OsStr::from_bytes(name)))
    }

    fn add(&mut self, path: PathBuf, kind: Kind) {
        self.created += 1;
        if kind == Kind::Dir {
            self.dirs.push(path.clone());
        }
        self.nodes.push((path, kind));
    }

    fn make(&mut self, path: &Path, kind: Kind, size: u8, target: &[u8]) -> bool {
        if self.created >= MAX_CREATED {
            return false;
        }
        let ok = match kind {
            Kind::Dir => fs::create_dir(path).is_ok(),
            // Never opens what is there already (a FIFO would block).
            Kind::File => fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, &vec![b'k'; usize::from(size)]))
                .is_ok(),
            Kind::Link => {
                !target.is_empty()
                    && std::os::unix::fs::symlink(OsStr::from_bytes(target), path).is_ok()
            }
            Kind::Fifo => rustix::fs::mknodat(
                rustix::fs::CWD,
                path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o644),
                0,
            )
            .is_ok(),
            Kind::Socket => std::os::unix::net::UnixListener::bind(path).is_ok(),
        };
        if ok {
            self.add(path.to_path_buf(), kind);
        }
        ok
    }

    fn target(&mut self, r: &mut Reader<'_>, link: &Path) -> Vec<u8> {
        let pick = r.byte() % 10;
        let node = |r: &mut Reader<'_>, nodes: &[(PathBuf, Kind)]| {
            nodes[usize::from(r.byte()) % nodes.len()].0.clone()
        };
        match pick {
            0 => node(r, &self.nodes).into_os_string().into_vec(),
            1 => {
                let mut t = node(r, &self.nodes).into_os_string().into_vec();
                let tail: &[u8] = match r.byte() % 4 {
                    0 => b"/",
                    1 => b"//x",
                    2 => b"/./x",
                    _ => b"/../x",
                };
                t.extend_from_slice(tail);
                t
            }
            2 => {
                let to = node(r, &self.nodes);
                relative(link.parent().unwrap_or(Path::new("/")), &to)
            }
            3 => HOST_TARGETS[usize::from(r.byte()) % HOST_TARGETS.len()].to_vec(),
            4 => link.as_os_str().as_bytes().to_vec(),
            5 => {
                let len = usize::from(r.byte());
                r.bytes(len)
            }
            6 => {
                let mut t = self.layout.prefix.as_os_str().as_bytes().to_vec();
                t.push(b'/');
                t.extend_from_slice(&name(r));
                t
            }
            7 => {
                let links: Vec<PathBuf> = self
                    .nodes
                    .iter()
                    .filter(|(_, k)| *k == Kind::Link)
                    .map(|(p, _)| p.clone())
                    .collect();
                let b = r.byte();
                let mut t = if links.is_empty() {
                    self.layout.prefix.as_os_str().as_bytes().to_vec()
                } else {
                    links[usize::from(b) % links.len()]
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                };
                t.push(b'/');
                t.extend_from_slice(&name(r));
                t
            }
            8 => {
                if r.byte() & 1 == 0 {
                    b".".to_vec()
                } else {
                    b"..".to_vec()
                }
            }
            _ => self.layout.prefix.as_os_str().as_bytes().to_vec(),
        }
    }

    fn op(&mut self, r: &mut Reader<'_>) {
        let op = r.byte() % 7;
        let parent = self.parent(r.byte());
        match op {
            0 | 3 | 4 => {
                let n = name(r);
                let kind = match op {
                    0 => Kind::Dir,
                    3 => Kind::Fifo,
                    _ => Kind::Socket,
                };
                if let Some(p) = Self::child(&parent, &n) {
                    self.make(&p, kind, 0, b"");
                }
            }
            1 => {
                let n = name(r);
                let size = r.byte();
                if let Some(p) = Self::child(&parent, &n) {
                    self.make(&p, Kind::File, size, b"");
                }
            }
            2 => {
                let n = name(r);
                if let Some(p) = Self::child(&parent, &n) {
                    let t = self.target(r, &p);
                    self.make(&p, Kind::Link, 0, &t);
                } else {
                    let _ = self.target(r, &parent);
                }
            }
            5 => {
                let count = r.byte();
                let style = r.byte() % 4;
                for i in 0..count {
                    let (n, kind) = match style {
                        0 => (format!("f{i}"), Kind::File),
                        1 => (format!("d{i}.img"), Kind::File),
                        2 => (format!("vm{i}"), Kind::Dir),
                        _ => (format!("p{i}"), Kind::Fifo),
                    };
                    if !self.make(&parent.join(n), kind, 1, b"") {
                        break;
                    }
                }
            }
            _ => {
                let n = name(r);
                if let Some(p) = Self::child(&parent, &n)
                    && self.make(&p, Kind::Dir, 0, b"")
                {
                    self.make(&p.join("vmlinux"), Kind::File, 1, b"");
                    if self.make(&p.join("blk"), Kind::Dir, 0, b"") {
                        self.make(&p.join("blk/root.img"), Kind::File, 1, b"");
                    }
                }
            }
        }
    }
}

/// Builds the tree of `data` in `base`, an empty canonical directory.
pub(crate) fn build(base: &Path, data: &[u8]) -> Built {
    let layout = Layout {
        base: base.to_path_buf(),
        root: base.join("src"),
        prefix: base.join("img"),
        outside: base.join("out"),
    };
    for d in [&layout.root, &layout.prefix, &layout.outside] {
        fs::create_dir(d).expect("create the layout");
    }
    let mut r = Reader { data, pos: 0 };
    let flags = r.byte();
    let defaults = ScanOptions::default();
    let opts = ScanOptions {
        trusted_prefixes: vec![layout.prefix.clone()],
        max_source_entries: cap(r.byte(), defaults.max_source_entries),
        max_dir_entries: cap(r.byte(), defaults.max_dir_entries),
    };
    let mut b = Builder {
        layout: &layout,
        nodes: vec![
            (layout.root.clone(), Kind::Dir),
            (layout.prefix.clone(), Kind::Dir),
            (layout.outside.clone(), Kind::Dir),
            (layout.base.clone(), Kind::Dir),
        ],
        dirs: vec![
            layout.root.clone(),
            layout.prefix.clone(),
            layout.outside.clone(),
        ],
        created: 0,
    };
    while r.more() {
        b.op(&mut r);
    }
    let created = b.created;
    Built {
        layout,
        as_partition: flags & 1 != 0,
        opts,
        created,
    }
}

/// What `lstat` says of every path under `base`: type, inode, size, mode,
/// mtime, and a link's target.
type Snapshot = BTreeMap<PathBuf, (u32, u64, u64, i64, i64, Option<OsString>)>;

fn snapshot(dir: &Path, out: &mut Snapshot) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let link = fs::read_link(&p).ok().map(PathBuf::into_os_string);
        out.insert(
            p.clone(),
            (m.mode(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), link),
        );
        if m.file_type().is_dir() {
            snapshot(&p, out);
        }
    }
}

fn spec(root: &Path, trust: Trust, kind: SourceKind) -> SourceSpec {
    SourceSpec {
        label: SourceLabel::try_from("fuzz").expect("a valid label"),
        kind,
        trust,
        root: root.to_path_buf(),
        device: None,
        partuuid: None,
        read_only: false,
        presence: Presence::Present,
        diagnostics: Vec::new(),
    }
}

/// The scans of one tree, for the seed tests' own assertions.
#[derive(Debug)]
pub(crate) struct Scans {
    /// The untrusted scan.
    pub untrusted: SourceScan,
    /// The trusted scan.
    pub trusted: SourceScan,
}

/// Scans `built` as untrusted and as trusted (each twice), and with
/// `scan_definition_dir` for every entry of the root, and checks every rule.
pub(crate) fn scan_and_check(built: &Built) -> Result<Scans, String> {
    let l = &built.layout;
    let mut before = Snapshot::new();
    snapshot(&l.base, &mut before);

    let kind = if built.as_partition {
        SourceKind::Partition
    } else {
        SourceKind::Directory
    };
    let untrusted_spec = spec(&l.root, Trust::Untrusted, kind);
    let untrusted = scan_source(&untrusted_spec, &built.opts);
    if scan_source(&untrusted_spec, &built.opts) != untrusted {
        return Err("two untrusted scans of the same tree differ".into());
    }
    check_source(built, &untrusted, Trust::Untrusted)?;

    let trusted_spec = spec(&l.root, Trust::Trusted, SourceKind::Directory);
    let trusted = scan_source(&trusted_spec, &built.opts);
    if scan_source(&trusted_spec, &built.opts) != trusted {
        return Err("two trusted scans of the same tree differ".into());
    }
    check_source(built, &trusted, Trust::Trusted)?;

    check_dirs(built)?;

    let mut after = Snapshot::new();
    snapshot(&l.base, &mut after);
    if before != after {
        let changed: Vec<_> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .collect();
        return Err(format!("the scans changed the tree: {changed:?}"));
    }
    Ok(Scans { untrusted, trusted })
}

/// `vm-catalogd check` on every entry of the root that resolves inside the
/// base directory: the definition it reads obeys the untrusted rules.
fn check_dirs(built: &Built) -> Result<(), String> {
    let l = &built.layout;
    let Ok(entries) = fs::read_dir(&l.root) else {
        return Err("the root cannot be listed".into());
    };
    for e in entries.flatten().take(64) {
        let path = e.path();
        let Ok(canon) = fs::canonicalize(&path) else {
            continue;
        };
        if !canon.starts_with(&l.base) || canon == l.base {
            continue;
        }
        let check = scan_definition_dir(&path, &built.opts);
        if let Some(def) = &check.definition {
            let parent = canon.parent().expect("not the base");
            if def.dir != canon {
                return Err(format!("check of {path:?} read {:?}", def.dir));
            }
            check_definition(built, def, parent, Trust::Untrusted)?;
        }
        for d in &check.diagnostics {
            check_text(&d.path, &d.message)?;
        }
    }
    Ok(())
}

fn is_hidden(name: &[u8]) -> bool {
    name.first() == Some(&b'.')
}

fn count_entries(dir: &Path) -> Option<usize> {
    fs::read_dir(dir).ok().map(|d| d.count())
}

/// Neither a path nor a message may break a log line.
fn check_text(path: &str, message: &str) -> Result<(), String> {
    if path.chars().chain(message.chars()).any(char::is_control) {
        return Err(format!(
            "a diagnostic holds a control character: {path:?} {message:?}"
        ));
    }
    Ok(())
}

fn check_source(built: &Built, scan: &SourceScan, trust: Trust) -> Result<(), String> {
    let l = &built.layout;
    let opts = &built.opts;
    let ctx = |m: String| format!("{trust:?} scan: {m}");
    if scan.exhausted {
        return Err(ctx("exhausted".into()));
    }
    let shown_root = display_path(&l.root);
    for d in &scan.diagnostics {
        check_text(&d.path, &d.message).map_err(ctx)?;
        if !d.path.starts_with(&shown_root) {
            return Err(ctx(format!("a diagnostic outside the source: {d:?}")));
        }
    }
    let names: Vec<OsString> = fs::read_dir(&l.root)
        .map_err(|e| ctx(format!("cannot list the root: {e}")))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| ctx(format!("cannot list the root: {e}")))?;
    if names.len() > opts.max_source_entries {
        let flagged = scan
            .diagnostics
            .iter()
            .any(|d| d.code == DiagCode::TooManyEntries && d.severity == Severity::Error);
        if scan.state != SourceState::Failed || !scan.definitions.is_empty() || !flagged {
            return Err(ctx(format!(
                "{} entries over a cap of {}: state {:?}, {} definitions, flagged {flagged}",
                names.len(),
                opts.max_source_entries,
                scan.state,
                scan.definitions.len()
            )));
        }
        return Ok(());
    }
    if scan.state != SourceState::Ready {
        return Err(ctx(format!("state {:?} for a readable root", scan.state)));
    }
    // Exactly the valid-named, visible directories become definitions
    // (for a trusted source, reached through links too).
    let mut expected: Vec<&OsStr> = names
        .iter()
        .map(OsString::as_os_str)
        .filter(|n| !is_hidden(n.as_bytes()))
        .filter(|n| vm_catalog_protocol::check_vm_name(n.as_bytes()).is_ok())
        .filter(|n| {
            let p = l.root.join(n);
            let m = match trust {
                Trust::Untrusted => fs::symlink_metadata(&p),
                Trust::Trusted => fs::metadata(&p),
            };
            m.is_ok_and(|m| m.is_dir())
        })
        .collect();
    expected.sort();
    let got: Vec<&str> = scan.definitions.iter().map(|d| d.name.as_str()).collect();
    let want: Vec<&str> = expected
        .iter()
        .map(|n| n.to_str().expect("valid names are ASCII"))
        .collect();
    if got != want {
        return Err(ctx(format!("definitions {got:?}, expected {want:?}")));
    }
    for def in &scan.definitions {
        let entry = l.root.join(def.name.as_str());
        let dir = match trust {
            Trust::Untrusted => entry,
            Trust::Trusted => fs::canonicalize(&entry)
                .map_err(|e| ctx(format!("cannot resolve {entry:?}: {e}")))?,
        };
        if def.dir != dir {
            return Err(ctx(format!(
                "{} read from {:?}, not {dir:?}",
                def.name, def.dir
            )));
        }
        check_definition(built, def, &l.root, trust).map_err(ctx)?;
    }
    Ok(())
}

/// Where a file of a definition is named: its entry path.
fn entries_of(def: &Definition) -> Vec<(PathBuf, &FileRef, bool)> {
    let mut out = Vec::new();
    if let Some(k) = &def.kernel {
        out.push((def.dir.join("vmlinux"), k, false));
    }
    for d in &def.disks {
        out.push((def.dir.join("blk").join(&d.name), d, false));
    }
    for p in &def.providers {
        out.push((
            def.dir.join("providers/net").join(&p.file.name),
            &p.file,
            false,
        ));
    }
    if let Some(f) = &def.fs {
        out.push((def.dir.join("fs"), f, true));
    }
    out
}

/// `path` is `base/…` reached without any symlink: every component below
/// `base` is a real directory, the last one of the wanted type.
fn reached_without_links(base: &Path, path: &Path, want_dir: bool) -> Result<fs::Metadata, String> {
    let rest = path
        .strip_prefix(base)
        .map_err(|_| format!("{path:?} is not under {base:?}"))?;
    let parts: Vec<_> = rest.components().collect();
    if parts.is_empty() || parts.iter().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("{path:?} is not strictly under {base:?}"));
    }
    let mut at = base.to_path_buf();
    for (i, c) in parts.iter().enumerate() {
        at.push(c.as_os_str());
        let m = fs::symlink_metadata(&at).map_err(|e| format!("{at:?}: {e}"))?;
        let last = i + 1 == parts.len();
        let ok = if !last || want_dir {
            m.file_type().is_dir()
        } else {
            m.file_type().is_file()
        };
        if !ok {
            return Err(format!(
                "{at:?} is {:?} on the way to {path:?}",
                m.file_type()
            ));
        }
        if last {
            return Ok(m);
        }
    }
    unreachable!("parts is not empty")
}

fn same_file(f: &FileRef, m: &fs::Metadata) -> Result<(), String> {
    if (f.id.dev, f.id.ino, f.id.size) != (m.dev(), m.ino(), m.size()) {
        return Err(format!("{:?}: its identity is not the file's", f.path));
    }
    Ok(())
}

fn check_definition(
    built: &Built,
    def: &Definition,
    root: &Path,
    trust: Trust,
) -> Result<(), String> {
    let opts = &built.opts;
    let prefix = &built.layout.prefix;
    let name = def.name.as_str();
    let fail = |m: String| Err(format!("definition {name}: {m}"));
    if vm_catalog_protocol::check_vm_name(name.as_bytes()).is_err() || is_hidden(name.as_bytes()) {
        return fail("invalid name".into());
    }
    // A trusted definition may be a link to any directory; an untrusted
    // one is the real directory of its name.
    if trust == Trust::Untrusted {
        if def.dir.file_name().map(OsStr::as_bytes) != Some(name.as_bytes()) {
            return fail(format!("read from {:?}", def.dir));
        }
        reached_without_links(root, &def.dir, true).map_err(|e| format!("{name}: {e}"))?;
    }
    if def.fingerprint != fingerprint_of(def) {
        return fail("stale fingerprint".into());
    }
    let shown_root = display_path(root);
    for d in &def.diagnostics {
        check_text(&d.path, &d.message)?;
        if trust == Trust::Untrusted && !d.path.starts_with(&shown_root) {
            return fail(format!("a diagnostic outside the source: {d:?}"));
        }
    }
    let too_many = def
        .diagnostics
        .iter()
        .any(|d| d.code == DiagCode::TooManyEntries);
    // A directory the scan lists (the definition's, then `blk`,
    // `providers`, `providers/net` when they open as directories) with
    // more entries than the cap is flagged at its own path.
    let opens = |d: &Path| match trust {
        Trust::Untrusted => fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()),
        Trust::Trusted => fs::metadata(d).is_ok_and(|m| m.is_dir()),
    };
    let over = |d: &Path| count_entries(d).is_some_and(|n| n > opts.max_dir_entries);
    let flagged = |d: &Path| {
        let shown = match trust {
            Trust::Untrusted => display_path(d),
            Trust::Trusted => display_path(&fs::canonicalize(d).unwrap_or_default()),
        };
        def.diagnostics
            .iter()
            .any(|x| x.code == DiagCode::TooManyEntries && x.path == shown)
    };
    let mut listed = vec![def.dir.clone()];
    if !over(&def.dir) {
        for sub in ["blk", "providers"] {
            listed.push(def.dir.join(sub));
        }
        let providers = def.dir.join("providers");
        if opens(&providers) && !over(&providers) {
            listed.push(providers.join("net"));
        }
    }
    for dir in listed {
        if opens(&dir) && over(&dir) && !flagged(&dir) {
            return fail(format!("{dir:?} is over the cap and not flagged"));
        }
    }
    if def.disks.len() > opts.max_dir_entries || def.providers.len() > opts.max_dir_entries {
        return fail("more files than the cap".into());
    }
    if def.is_valid() {
        if def.kernel.is_none() || def.disks.is_empty() {
            return fail("valid without a kernel or a disk".into());
        }
        if too_many {
            return fail("valid although a directory is over the cap".into());
        }
    }
    if def.kernel.as_ref().is_some_and(|k| k.name != "vmlinux") {
        return fail("a kernel not named vmlinux".into());
    }
    for d in &def.disks {
        let n = d.name.as_bytes();
        let Ok(text) = std::str::from_utf8(n) else {
            return fail(format!("a disk name that is not UTF-8: {n:?}"));
        };
        if is_hidden(n)
            || !n.ends_with(b".img")
            || text.chars().any(char::is_control)
            || n.contains(&b',')
            || d.path.as_os_str().as_bytes().contains(&b',')
        {
            return fail(format!("a disk the VMM cannot take: {:?}", d.path));
        }
    }
    for p in &def.providers {
        if p.file.name.as_bytes() != p.provider.name.as_bytes() {
            return fail(format!(
                "provider {} read from {:?}",
                p.provider.name, p.file.name
            ));
        }
    }
    for (entry, f, want_dir) in entries_of(def) {
        if f.name.as_os_str() != entry.file_name().unwrap_or_default() {
            return fail(format!("{:?} is not named by {entry:?}", f.name));
        }
        match trust {
            Trust::Untrusted => {
                check_untrusted_file(def, &entry, f, want_dir, prefix).or_else(fail)?
            }
            Trust::Trusted => {
                let canon = fs::canonicalize(&entry).map_err(|e| format!("{entry:?}: {e}"))?;
                if f.path != canon {
                    return fail(format!("{entry:?} gave {:?}, not {canon:?}", f.path));
                }
                let m = fs::metadata(&canon).map_err(|e| format!("{canon:?}: {e}"))?;
                let ok = if want_dir { m.is_dir() } else { m.is_file() };
                if !ok {
                    return fail(format!("{canon:?} is {:?}", m.file_type()));
                }
                same_file(f, &m)?;
            }
        }
    }
    Ok(())
}

/// The most links a chain may go through, the definition's own included
/// (the scanner's bound; a checker bound, not a rule).
const MAX_HOPS: usize = 8;

/// A hop's target as the scanner takes it: an absolute one as it is, a
/// relative one (allowed after the first hop) from its link's directory,
/// `.` and `..` taken out lexically.
fn hop_path(link: &Path, target: &[u8], first: bool) -> Result<PathBuf, String> {
    if target.starts_with(b"/") {
        return Ok(PathBuf::from(OsStr::from_bytes(target)));
    }
    if first {
        return Err(format!(
            "{link:?}: a relative first target {target:?} was followed"
        ));
    }
    let mut out = link.parent().unwrap_or(Path::new("/")).to_path_buf();
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// A file of an untrusted definition is either the entry itself, a real
/// file reached from the root without a link, or what the entry's link
/// leads to (each target read as data): a chain of links, every hop an
/// absolute, normalized path under the trusted prefix reached from it
/// without following a link, ending at a real file of the right kind.
fn check_untrusted_file(
    def: &Definition,
    entry: &Path,
    f: &FileRef,
    want_dir: bool,
    prefix: &Path,
) -> Result<(), String> {
    let m = fs::symlink_metadata(entry).map_err(|e| format!("{entry:?}: {e}"))?;
    let ft = m.file_type();
    if !ft.is_symlink() {
        if f.path != entry {
            return Err(format!("{entry:?} used as {:?}", f.path));
        }
        let m = reached_without_links(&def.dir, entry, want_dir)?;
        if ft.is_fifo() || ft.is_socket() {
            return Err(format!("{entry:?} is a FIFO or a socket"));
        }
        return same_file(f, &m);
    }
    let mut link = entry.to_path_buf();
    for hop in 0..MAX_HOPS {
        let target = fs::read_link(&link).map_err(|e| format!("{link:?}: {e}"))?;
        let path = hop_path(&link, target.as_os_str().as_bytes(), hop == 0)?;
        // The first target must be normalized as written; later ones are
        // normalized lexically first (`hop_path`).
        let bytes = path.as_os_str().as_bytes();
        let normalized = bytes.strip_prefix(b"/").is_some_and(|rest| {
            rest.split(|&b| b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b"..")
        });
        if !normalized {
            return Err(format!(
                "{link:?}: the unnormalized target {target:?} was followed"
            ));
        }
        let under = path.starts_with(prefix) && path != prefix;
        if !under {
            return Err(format!(
                "{entry:?}: hop {link:?} -> {target:?} leaves the trusted prefix, and was followed"
            ));
        }
        let m = fs::symlink_metadata(&path).map_err(|e| format!("{path:?}: {e}"))?;
        if m.file_type().is_symlink() {
            // Every directory on the way is real; the link itself is the
            // next hop.
            let parent = path.parent().expect("under the prefix");
            if parent != prefix {
                reached_without_links(prefix, parent, true)?;
            }
            link = path;
            continue;
        }
        if path != f.path {
            return Err(format!("{entry:?} leads to {path:?}, used {:?}", f.path));
        }
        let m = reached_without_links(prefix, &f.path, want_dir)?;
        return same_file(f, &m);
    }
    Err(format!(
        "{entry:?}: a chain of more than {MAX_HOPS} links was followed"
    ))
}
