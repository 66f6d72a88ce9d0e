//! `vm-catalogd check`, run as the real binary.

use std::process::{Command, Output};

use vm_catalog_tests::Tree;

fn check(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vm-catalogd"))
        .arg("check")
        .args(args)
        .output()
        .expect("run vm-catalogd check")
}

fn os(s: &impl AsRef<std::ffi::OsStr>) -> &std::ffi::OsStr {
    s.as_ref()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn check_accepts_a_valid_definition_and_prints_its_warnings() {
    let t = Tree::new();
    let d = t.vm("src", "appvm");
    t.file("src/appvm/README", b"");
    let o = check(&[os(&d)]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("appvm ({}): valid, 1 warning", d.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("warning unknown-entry  {}/README", d.display())),
        "{text}"
    );
    assert!(
        text.ends_with("checked 1 definition: 1 valid, 0 invalid\n"),
        "{text}"
    );
}

#[test]
fn check_rejects_what_an_untrusted_source_would_reject() {
    let t = Tree::new();
    let bad = t.vm("src", "bad");
    std::fs::remove_file(bad.join("vmlinux")).unwrap();
    t.symlink("src/bad/vmlinux", "/etc/shadow");
    t.fifo("src/bad/blk/fifo.img");
    let good = t.vm("src", "good");
    let o = check(&[os(&bad), os(&good)]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("bad ({}): INVALID, 2 errors", bad.display())),
        "{text}"
    );
    assert!(text.contains("unsafe-symlink"), "{text}");
    assert!(text.contains("not-regular-file"), "{text}");
    assert!(
        text.contains("checked 2 definitions: 1 valid, 1 invalid"),
        "{text}"
    );
}

#[test]
fn check_accepts_links_under_a_given_trusted_target() {
    let t = Tree::new();
    let k = t.file("img/vmlinux", b"k");
    let d = t.vm("src", "vm");
    std::fs::remove_file(d.join("vmlinux")).unwrap();
    t.symlink("src/vm/vmlinux", &k);
    assert_eq!(
        check(&[os(&d)]).status.code(),
        Some(1),
        "not under /usr/img/"
    );
    let prefix = t.join("img");
    let o = check(&[os(&"--trusted-target"), os(&prefix), os(&d)]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn check_sources_mode_reads_every_definition_and_bad_names() {
    let t = Tree::new();
    t.vm("src", "one");
    t.vm("src", "two");
    t.vm("src", "bad:name");
    let src = t.join("src");
    let o = check(&[os(&"--sources"), os(&src)]);
    assert_eq!(o.status.code(), Some(1), "an invalid name is an error");
    let text = stdout(&o);
    assert!(text.contains("invalid-name"), "{text}");
    assert!(
        text.contains("checked 2 definitions: 2 valid, 0 invalid"),
        "{text}"
    );
    std::fs::remove_dir_all(t.join("src/bad:name")).unwrap();
    assert_eq!(check(&[os(&"--sources"), os(&src)]).status.code(), Some(0));
    assert_eq!(
        check(&[os(&"--sources"), os(&t.join("nope"))])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn check_json_is_one_object_with_stable_codes() {
    let t = Tree::new();
    let d = t.vm("src", "vm");
    std::fs::remove_file(d.join("vmlinux")).unwrap();
    t.provider("src", "vm", "netvm");
    let o = check(&[os(&"--json"), os(&d), os(&t.join("missing"))]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["valid"], false);
    let def = &v["definitions"][0];
    assert_eq!(def["name"], "vm");
    assert_eq!(def["valid"], false);
    assert_eq!(def["kernel"], serde_json::Value::Null);
    assert_eq!(
        def["disks"][0],
        d.join("blk/root.img").display().to_string()
    );
    assert_eq!(def["providers"][0]["kind"], "net");
    assert_eq!(def["providers"][0]["name"], "netvm");
    assert_eq!(def["diagnostics"][0]["code"], "missing-kernel");
    assert_eq!(def["diagnostics"][0]["severity"], "error");
    assert_eq!(
        def["diagnostics"][0]["path"],
        d.join("vmlinux").display().to_string()
    );
    assert_eq!(v["diagnostics"][0]["code"], "io-error");
}

#[test]
fn check_usage_errors_exit_2() {
    let t = Tree::new();
    let d = t.vm("src", "vm");
    assert_eq!(check(&[]).status.code(), Some(2));
    assert_eq!(
        check(&[os(&"--trusted-target"), os(&"relative/"), os(&d)])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        check(&[os(&"--no-such-flag"), os(&d)]).status.code(),
        Some(2)
    );
}

/// Regression (issue 12, item 7): `check --sources` passed provider
/// cycles, self-providers and missing providers, which the daemon rejects.
/// It now merges the sources as the daemon's rescan does.
#[test]
fn check_sources_gives_the_daemons_verdict_on_providers() {
    let t = Tree::new();
    for vm in ["a", "b", "selfish", "lonely", "netvm", "client"] {
        t.vm("src", vm);
    }
    t.provider("src", "a", "b");
    t.provider("src", "b", "a");
    t.provider("src", "selfish", "selfish");
    t.provider("src", "lonely", "nosuch");
    t.provider("src", "client", "netvm");
    let src = t.join("src");
    let o = check(&[os(&"--sources"), os(&src)]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    for (vm, code) in [
        ("a", "provider-cycle"),
        ("b", "provider-cycle"),
        ("selfish", "provider-cycle"),
        ("lonely", "missing-provider"),
    ] {
        let line = text
            .lines()
            .skip_while(|l| !l.starts_with(&format!("{vm} (")))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            line.contains("INVALID") && line.contains(code),
            "{vm}: {text}"
        );
    }
    assert!(
        text.contains(&format!("client ({}/client): valid", src.display())),
        "{text}"
    );
    assert!(
        text.contains("checked 6 definitions: 2 valid, 4 invalid"),
        "{text}"
    );
    // The same in JSON, with each definition's state.
    let o = check(&[os(&"--json"), os(&"--sources"), os(&src)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let state = |name: &str| {
        v["definitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| (d["state"].clone(), d["valid"].clone()))
            .unwrap()
    };
    assert_eq!(state("selfish"), ("rejected".into(), false.into()));
    assert_eq!(state("client"), ("active".into(), true.into()));
}

/// Several roots are merged in order, as the daemon's sources are: the
/// first claims a name, later ones are shadowed, and a provider from
/// another untrusted root is refused unless cross-source providers are
/// allowed, as the daemon does.
#[test]
fn check_sources_merges_roots_in_order() {
    let t = Tree::new();
    t.vm("sys", "netvm");
    t.vm("usr", "netvm");
    t.vm("usr", "app");
    t.provider("usr", "app", "netvm");
    let (sys, usr) = (t.join("sys"), t.join("usr"));
    let roots = [os(&"--sources"), os(&sys), os(&usr)];
    let o = check(&roots);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("shadowed by dir1"), "{text}");
    assert!(text.contains("provider-untrusted"), "{text}");
    let mut allowed = roots.to_vec();
    allowed.push(os(&"--allow-cross-source-providers"));
    let o = check(&allowed);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains("checked 3 definitions: 3 valid, 0 invalid"),
        "{text}"
    );
}
