//! Scanning real directory trees: layouts, states and exact diagnostic codes.

mod catalog_common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use catalog_common::{codes, def, names, opts, scan, trusted, untrusted, want};
use vm_catalog_protocol::{ProviderKind, SourceKind, SourceState};
use vm_catalog_tests::Tree;
use vm_catalogd::definition::ScanOptions;
use vm_catalogd::source::{Presence, SourceSpec};

#[test]
fn scan_reads_a_complete_definition_with_final_paths() {
    let t = Tree::new();
    let d = t.vm("src", "appvm-lynx");
    t.file("src/appvm-lynx/blk/data.img", b"data");
    t.provider("src", "appvm-lynx", "netvm");
    t.dir("src/appvm-lynx/fs/share");
    let s = scan(untrusted(&t, "src"), opts(&t));
    assert_eq!(s.state, SourceState::Ready);
    assert!(s.diagnostics.is_empty(), "{:?}", s.diagnostics);
    let v = def(&s, "appvm-lynx");
    assert!(v.diagnostics.is_empty(), "{:?}", v.diagnostics);
    assert!(v.is_valid());
    assert_eq!(v.dir, d);
    assert_eq!(v.kernel.as_ref().unwrap().path, d.join("vmlinux"));
    let disks: Vec<&Path> = v.disks.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(disks, [d.join("blk/data.img"), d.join("blk/root.img")]);
    assert_eq!(v.providers.len(), 1);
    assert_eq!(v.providers[0].provider.kind, ProviderKind::Net);
    assert_eq!(v.providers[0].provider.name.as_str(), "netvm");
    assert_eq!(v.fs.as_ref().unwrap().path, d.join("fs"));
    assert_eq!(v.kernel.as_ref().unwrap().id.size, 6);
}

#[test]
fn scan_reports_missing_kernel_and_no_disk() {
    let t = Tree::new();
    t.dir("src/empty");
    t.file("src/noimg/vmlinux", b"k");
    t.file("src/noimg/blk/README", b"");
    let s = scan(untrusted(&t, "src"), opts(&t));
    assert_eq!(
        codes(&t, &def(&s, "empty").diagnostics),
        want(&[
            ("no-disk", "src/empty/blk"),
            ("missing-kernel", "src/empty/vmlinux")
        ])
    );
    assert!(!def(&s, "empty").is_valid());
    assert_eq!(
        codes(&t, &def(&s, "noimg").diagnostics),
        want(&[
            ("no-disk", "src/noimg/blk"),
            ("unknown-entry (warning)", "src/noimg/blk/README")
        ])
    );
}

#[test]
fn scan_rejects_fifo_socket_and_directory_kernels_without_hanging() {
    let t = Tree::new();
    t.vm("src", "fifo");
    std::fs::remove_file(t.join("src/fifo/vmlinux")).unwrap();
    t.fifo("src/fifo/vmlinux");
    t.vm("src", "sock");
    std::fs::remove_file(t.join("src/sock/blk/root.img")).unwrap();
    t.socket("src/sock/blk/root.img");
    t.vm("src", "dirk");
    std::fs::remove_file(t.join("src/dirk/vmlinux")).unwrap();
    t.dir("src/dirk/vmlinux");
    let s = scan(untrusted(&t, "src"), opts(&t));
    assert_eq!(
        codes(&t, &def(&s, "fifo").diagnostics),
        want(&[("not-regular-file", "src/fifo/vmlinux")])
    );
    assert_eq!(
        codes(&t, &def(&s, "sock").diagnostics),
        want(&[("not-regular-file", "src/sock/blk/root.img")])
    );
    assert_eq!(
        codes(&t, &def(&s, "dirk").diagnostics),
        want(&[("not-regular-file", "src/dirk/vmlinux")])
    );
}

#[test]
fn scan_rejects_device_nodes() {
    if vm_catalog_tests::require_root("creating device nodes").is_none() {
        return;
    }
    let t = Tree::new();
    t.vm("src", "chr");
    std::fs::remove_file(t.join("src/chr/vmlinux")).unwrap();
    t.device("src/chr/vmlinux", true, 1, 3)
        .expect("mknod as root");
    t.vm("src", "blkdev");
    std::fs::remove_file(t.join("src/blkdev/blk/root.img")).unwrap();
    t.device("src/blkdev/blk/root.img", false, 7, 0)
        .expect("mknod as root");
    let s = scan(untrusted(&t, "src"), opts(&t));
    assert_eq!(
        codes(&t, &def(&s, "chr").diagnostics),
        want(&[("not-regular-file", "src/chr/vmlinux")])
    );
    assert_eq!(
        codes(&t, &def(&s, "blkdev").diagnostics),
        want(&[("not-regular-file", "src/blkdev/blk/root.img")])
    );
}

#[test]
fn scan_accepts_symlinks_under_the_trusted_prefix_only() {
    let t = Tree::new();
    let k = t.file("img/appvm/vmlinux", b"kernel!");
    let img = t.file("img/appvm/blk/root.img", b"root");
    t.symlink("img/appvm/alias", "vmlinux");
    t.symlink("img/etc", "/etc");
    t.dir("src/good/blk");
    t.symlink("src/good/vmlinux", &k);
    t.symlink("src/good/blk/root.img", &img);
    // A link under the prefix whose target leaves it: a bad hop.
    t.symlink("img/appvm/out", "/etc/passwd");
    let bad: [(&str, PathBuf); 6] = [
        ("abs-outside", PathBuf::from("/etc/passwd")),
        ("dev", PathBuf::from("/dev/sda")),
        ("relative", PathBuf::from("../../etc/shadow")),
        ("dotdot", t.join("img/../../../etc/shadow")),
        ("via-link", t.join("img/etc/passwd")),
        ("hop-out", t.join("img/appvm/out")),
    ];
    // A link to a link under the prefix is followed to the file.
    t.vm("src", "to-link");
    std::fs::remove_file(t.join("src/to-link/vmlinux")).unwrap();
    t.symlink("src/to-link/vmlinux", t.join("img/appvm/alias"));
    for (name, target) in &bad {
        t.vm("src", name);
        std::fs::remove_file(t.join(format!("src/{name}/vmlinux"))).unwrap();
        t.symlink(format!("src/{name}/vmlinux"), target);
    }
    t.vm("src", "disk-dev");
    std::fs::remove_file(t.join("src/disk-dev/blk/root.img")).unwrap();
    t.symlink("src/disk-dev/blk/root.img", "/dev/sda");
    let s = scan(untrusted(&t, "src"), opts(&t));
    let good = def(&s, "good");
    assert!(good.diagnostics.is_empty(), "{:?}", good.diagnostics);
    assert_eq!(good.kernel.as_ref().unwrap().path, k);
    assert_eq!(
        good.kernel.as_ref().unwrap().id.size,
        7,
        "the target's identity, not the link's"
    );
    assert_eq!(good.disks[0].path, img);
    let to_link = def(&s, "to-link");
    assert!(to_link.diagnostics.is_empty(), "{:?}", to_link.diagnostics);
    assert_eq!(to_link.kernel.as_ref().unwrap().path, k, "the final path");
    let hop_out = &def(&s, "hop-out").diagnostics[0].message;
    assert!(
        hop_out.contains(&t.join("img/appvm/out").display().to_string()),
        "the message names the hop: {hop_out}"
    );
    for (name, _) in &bad {
        let path = format!("src/{name}/vmlinux");
        assert_eq!(
            codes(&t, &def(&s, name).diagnostics),
            want(&[("unsafe-symlink", path.as_str())]),
            "{name}"
        );
    }
    assert_eq!(
        codes(&t, &def(&s, "disk-dev").diagnostics),
        want(&[("unsafe-symlink", "src/disk-dev/blk/root.img")])
    );
}

#[test]
fn scan_reports_dangling_and_wrong_type_symlink_targets() {
    let t = Tree::new();
    t.dir("img/adir");
    t.vm("src", "dangling");
    std::fs::remove_file(t.join("src/dangling/vmlinux")).unwrap();
    t.symlink("src/dangling/vmlinux", t.join("img/nope"));
    t.vm("src", "todir");
    std::fs::remove_file(t.join("src/todir/vmlinux")).unwrap();
    t.symlink("src/todir/vmlinux", t.join("img/adir"));
    t.vm("src", "fsdir");
    t.symlink("src/fsdir/fs", t.join("img/adir"));
    let s = scan(untrusted(&t, "src"), opts(&t));
    assert_eq!(
        codes(&t, &def(&s, "dangling").diagnostics),
        want(&[("io-error", "src/dangling/vmlinux")])
    );
    assert_eq!(
        codes(&t, &def(&s, "todir").diagnostics),
        want(&[("not-regular-file", "src/todir/vmlinux")])
    );
    let fsdir = def(&s, "fsdir");
    assert!(fsdir.diagnostics.is_empty(), "{:?}", fsdir.diagnostics);
    assert_eq!(fsdir.fs.as_ref().unwrap().path, t.join("img/adir"));
}

#[test]
fn scan_never_follows_symlinked_directories_in_untrusted_sources() {
    let t = Tree::new();
    t.file("img/blk/root.img", b"r");
    t.vm("img/defs", "target");
    t.vm("src", "blklink");
    std::fs::remove_dir_all(t.join("src/blklink/blk")).unwrap();
    t.symlink("src/blklink/blk", t.join("img/blk"));
    t.vm("src", "provlink");
    t.dir("img/providers/net");
    t.symlink("src/provlink/providers", t.join("img/providers"));
    t.symlink("src/deflink", t.join("img/defs/target"));
    let s = scan(untrusted(&t, "src"), opts(&t));
    assert_eq!(names(&s), ["blklink", "provlink"]);
    assert_eq!(
        codes(&t, &def(&s, "blklink").diagnostics),
        want(&[("unsafe-symlink", "src/blklink/blk")])
    );
    assert_eq!(
        codes(&t, &def(&s, "provlink").diagnostics),
        want(&[("unsafe-symlink", "src/provlink/providers")])
    );
    assert_eq!(
        codes(&t, &s.diagnostics),
        want(&[("unsafe-symlink", "src/deflink")])
    );
}

#[test]
fn scan_rejects_odd_names_with_their_escaped_path() {
    let t = Tree::new();
    for name in [
        &b"bad\nname"[..],
        b"bad:colon",
        b"bad,comma",
        b"vm-\xff",
        b"s6rc-x",
        b"-dash",
        b"a b",
    ] {
        t.vm("src", "x");
        std::fs::rename(t.join("src/x"), t.join("src").join(OsStr::from_bytes(name))).unwrap();
    }
    t.vm("src", ".hidden");
    t.vm("src", "ok");
    let s = scan(untrusted(&t, "src"), opts(&t));
    assert_eq!(names(&s), ["ok"]);
    assert_eq!(
        codes(&t, &s.diagnostics),
        want(&[
            ("invalid-name", "src/-dash"),
            ("hidden-entry (warning)", "src/.hidden"),
            ("invalid-name", "src/a b"),
            ("invalid-name", "src/bad\\nname"),
            ("invalid-name", "src/bad,comma"),
            ("invalid-name", "src/bad:colon"),
            ("invalid-name", "src/s6rc-x"),
            ("invalid-name", "src/vm-\\xff"),
        ])
    );
}

#[test]
fn scan_rejects_bad_disk_and_provider_names() {
    let t = Tree::new();
    t.vm("src", "vm");
    t.file("src/vm/blk/a,b.img", b"");
    t.file("src/vm/blk/new\nline.img", b"");
    t.file(
        Path::new("src/vm/blk").join(OsStr::from_bytes(b"\xfe.img")),
        b"",
    );
    t.provider("src", "vm", "bad:provider");
    t.provider("src", "vm", "netvm");
    let s = scan(untrusted(&t, "src"), opts(&t));
    let v = def(&s, "vm");
    assert_eq!(
        codes(&t, &v.diagnostics),
        want(&[
            ("invalid-path", "src/vm/blk/\\xfe.img"),
            ("invalid-path", "src/vm/blk/a,b.img"),
            ("invalid-path", "src/vm/blk/new\\nline.img"),
            ("invalid-name", "src/vm/providers/net/bad:provider"),
        ])
    );
    assert_eq!(v.disks.len(), 1, "root.img is still found");
    assert_eq!(v.providers.len(), 1);
}

#[test]
fn scan_rejects_a_comma_anywhere_in_a_disk_path() {
    let t = Tree::new();
    t.vm("so,urce", "vm");
    let spec = SourceSpec::directory(
        catalog_common::label("s"),
        t.join("so,urce"),
        vm_catalog_protocol::Trust::Untrusted,
    );
    let s = scan(spec, opts(&t));
    assert_eq!(
        codes(&t, &def(&s, "vm").diagnostics),
        want(&[("invalid-path", "so,urce/vm/blk/root.img")])
    );
}

#[test]
fn scan_keeps_unknown_and_hidden_entries_as_warnings() {
    let t = Tree::new();
    t.vm("src", "vm");
    t.file("src/vm/README", b"");
    t.file("src/vm/blk/notes.txt", b"");
    t.file("src/vm/blk/.keep", b"");
    t.file("src/vm/providers/usb/x", b"");
    t.file("src/vm/.DS_Store", b"");
    t.file("src/stray-file", b"");
    let s = scan(untrusted(&t, "src"), opts(&t));
    let v = def(&s, "vm");
    assert!(v.is_valid());
    assert_eq!(
        codes(&t, &v.diagnostics),
        want(&[
            ("hidden-entry (warning)", "src/vm/.DS_Store"),
            ("unknown-entry (warning)", "src/vm/README"),
            ("hidden-entry (warning)", "src/vm/blk/.keep"),
            ("unknown-entry (warning)", "src/vm/blk/notes.txt"),
            ("unknown-entry (warning)", "src/vm/providers/usb"),
        ])
    );
    assert_eq!(
        codes(&t, &s.diagnostics),
        want(&[("not-directory (warning)", "src/stray-file")])
    );
}

#[test]
fn scan_reports_files_where_directories_are_needed() {
    let t = Tree::new();
    t.file("src/vm/vmlinux", b"k");
    t.file("src/vm/blk", b"not a dir");
    t.file("src/vm/providers", b"");
    t.file("src/vm/fs", b"");
    let s = scan(untrusted(&t, "src"), opts(&t));
    assert_eq!(
        codes(&t, &def(&s, "vm").diagnostics),
        want(&[
            ("not-directory", "src/vm/blk"),
            ("not-directory", "src/vm/fs"),
            ("not-directory", "src/vm/providers")
        ])
    );
}

#[test]
fn scan_caps_entries_per_directory_and_per_source() {
    let t = Tree::new();
    t.vm("src", "many");
    for i in 0..5 {
        t.file(format!("src/many/blk/{i}.img"), b"");
    }
    t.vm("src", "few");
    let o = ScanOptions {
        max_dir_entries: 4,
        ..opts(&t)
    };
    let s = scan(untrusted(&t, "src"), o.clone());
    assert_eq!(
        codes(&t, &def(&s, "many").diagnostics),
        want(&[("too-many-entries", "src/many/blk")])
    );
    assert!(
        def(&s, "few").is_valid(),
        "one bad definition never hides the others"
    );

    let o = ScanOptions {
        max_source_entries: 1,
        ..o
    };
    let s = scan(untrusted(&t, "src"), o);
    assert_eq!(s.state, SourceState::Failed);
    assert!(
        s.definitions.is_empty(),
        "nothing of a partial listing is used"
    );
    assert_eq!(
        codes(&t, &s.diagnostics),
        want(&[("too-many-entries", "src")])
    );
}

#[test]
fn scan_states_for_missing_failed_gone_and_non_directory_sources() {
    let t = Tree::new();
    let s = scan(SourceSpec::builtin(t.join("no/such/builtin")), opts(&t));
    assert_eq!(s.state, SourceState::Missing);
    assert_eq!(s.spec.kind, SourceKind::Builtin);
    assert!(s.definitions.is_empty());
    assert_eq!(
        codes(&t, &s.diagnostics),
        want(&[("source-missing (warning)", "no/such/builtin")])
    );

    t.file("afile", b"");
    let s = scan(untrusted(&t, "afile"), opts(&t));
    assert_eq!(s.state, SourceState::Failed);
    assert_eq!(
        codes(&t, &s.diagnostics),
        want(&[("not-directory", "afile")])
    );

    t.vm("src", "vm");
    let mut gone = untrusted(&t, "src");
    gone.presence = Presence::Gone;
    let s = scan(gone, opts(&t));
    assert_eq!(s.state, SourceState::Unavailable);
    assert!(s.definitions.is_empty(), "a gone source is not read");

    let mut failed = untrusted(&t, "src");
    failed.presence = Presence::Failed;
    failed.diagnostics.push(vm_catalog_protocol::Diagnostic {
        code: vm_catalog_protocol::DiagCode::MountFailed,
        severity: vm_catalog_protocol::Severity::Error,
        path: "/dev/x".into(),
        message: "mount failed".into(),
    });
    let s = scan(failed, opts(&t));
    assert_eq!(s.state, SourceState::Failed);
    assert!(s.definitions.is_empty());
    assert_eq!(
        codes(&t, &s.diagnostics),
        want(&[("mount-failed", "/dev/x")])
    );
}

#[test]
fn scan_refuses_a_partition_root_through_a_symlink() {
    let t = Tree::new();
    t.vm("real/data", "vm");
    t.symlink("mnt/svc", t.join("real"));
    let mut spec = untrusted(&t, "mnt");
    spec.kind = SourceKind::Partition;
    spec.root = t.join("mnt/svc/data");
    let s = scan(spec, opts(&t));
    assert_eq!(s.state, SourceState::Failed);
    assert_eq!(
        codes(&t, &s.diagnostics),
        want(&[("unsafe-symlink", "mnt/svc/data")])
    );
}

#[test]
fn scan_follows_symlinks_in_trusted_sources_to_their_final_paths() {
    let t = Tree::new();
    let k = t.file("elsewhere/vmlinux", b"k");
    t.file("elsewhere/blk/root.img", b"r");
    t.dir("builtin/appvm");
    t.symlink("builtin/appvm/vmlinux", &k);
    t.symlink("builtin/appvm/blk", t.join("elsewhere/blk"));
    t.symlink("builtin/linked", t.join("builtin/appvm"));
    t.vm("builtin", "dangling");
    std::fs::remove_file(t.join("builtin/dangling/vmlinux")).unwrap();
    t.symlink("builtin/dangling/vmlinux", t.join("nowhere"));
    let s = scan(trusted(&t, "builtin"), opts(&t));
    assert_eq!(names(&s), ["appvm", "dangling", "linked"]);
    for name in ["appvm", "linked"] {
        let v = def(&s, name);
        assert!(v.diagnostics.is_empty(), "{name}: {:?}", v.diagnostics);
        assert_eq!(v.kernel.as_ref().unwrap().path, k);
        assert_eq!(v.disks[0].path, t.join("elsewhere/blk/root.img"));
    }
    assert_eq!(
        codes(&t, &def(&s, "dangling").diagnostics),
        want(&[("io-error", "builtin/dangling/vmlinux")])
    );
}

#[test]
fn scan_fingerprint_is_stable_and_follows_what_the_vmm_sees() {
    let t = Tree::new();
    t.vm("src", "vm");
    let fp = || def(&scan(untrusted(&t, "src"), opts(&t)), "vm").fingerprint;
    let first = fp();
    assert_eq!(fp(), first, "an unchanged rescan has the same fingerprint");

    t.file("src/vm/README", b"");
    assert_eq!(fp(), first, "an unknown entry is not seen by the VMM");

    let img = t.join("src/vm/blk/root.img");
    std::fs::write(t.join("src/vm/blk/new"), b"disk").unwrap();
    std::fs::rename(t.join("src/vm/blk/new"), &img).unwrap();
    let replaced = fp();
    assert_ne!(
        replaced, first,
        "a replaced image (same content) changes it"
    );

    std::fs::write(&img, b"disk, but longer").unwrap();
    let rewritten = fp();
    assert_ne!(rewritten, replaced, "a rewritten image changes it");

    t.provider("src", "vm", "netvm");
    let with_provider = fp();
    assert_ne!(with_provider, rewritten, "a provider changes it");

    t.file("src/vm/blk/data.img", b"");
    assert_ne!(fp(), with_provider, "a new disk changes it");
}
