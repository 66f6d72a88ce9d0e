//! The committed completions and man pages match the clap definitions.

use std::fs;
use std::path::Path;

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn completions_and_man_pages_are_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    vm_catalog_generate::generate(tmp.path()).unwrap();
    let committed = vm_catalog_generate::contrib_dir();
    for sub in ["completions", "man"] {
        let want = files(&tmp.path().join(sub));
        let have = files(&committed.join(sub));
        let names = |v: &[(String, Vec<u8>)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&have),
            names(&want),
            "contrib/{sub}: run `cargo run -p vm-catalog-generate`"
        );
        for (h, w) in have.iter().zip(&want) {
            assert!(
                h.1 == w.1,
                "contrib/{sub}/{} is out of date: run `cargo run -p vm-catalog-generate`",
                h.0
            );
        }
    }
}
