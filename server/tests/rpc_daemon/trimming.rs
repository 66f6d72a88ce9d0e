//! A definition whose diagnostics do not fit one record (issue 12, item 6).

use super::*;

/// Regression (issue 12, item 6): a definition with no kernel among
/// hundreds of unknown entries was listed with only `unknown-entry`
/// warnings and `truncated`, and an empty REASON.
#[test]
fn a_missing_kernel_among_hundreds_of_unknown_entries_is_still_the_reason() {
    let mut d = daemon();
    let def = d.user().join("nokernel");
    std::fs::create_dir_all(def.join("blk")).unwrap();
    std::fs::write(def.join("blk/root.img"), b"disk").unwrap();
    for i in 0..600 {
        std::fs::write(def.join(format!("unknown-entry-{i:03}")), b"").unwrap();
    }
    d.start().unwrap();
    let out = cli(&d, &["list", "--all"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("nokernel"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("rejected"), "{row}");
    assert!(row.trim_end().ends_with("missing-kernel"), "{row}");
    let out = cli(&d, &["show", "nokernel", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let json = String::from_utf8(out.stdout).unwrap();
    let first = json.find("\"code\":").expect("diagnostics");
    assert!(
        json[first..].starts_with("\"code\":\"missing-kernel\""),
        "the error comes first: {}",
        &json[first..first + 80]
    );
    assert!(
        json.contains("\"code\":\"truncated\""),
        "and the rest is noted"
    );
}

/// Regression (issue 12, item 6): REASON repeated `missing-provider` for
/// every missing provider.
#[test]
fn reason_names_a_missing_provider_once_however_many_are_missing() {
    let mut d = daemon();
    d.user_vm("appvm");
    for i in 0..30 {
        d.tree().provider("user", "appvm", &format!("netvm{i:02}"));
    }
    d.start().unwrap();
    let out = cli(&d, &["list", "--all"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text.lines().find(|l| l.starts_with("appvm")).unwrap();
    assert_eq!(row.matches("missing-provider").count(), 1, "{row}");
}
