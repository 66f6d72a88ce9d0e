//! Regression: a scan that runs out of file descriptors rejected valid
//! definitions ("cannot open the directory: Too many open files"), which a
//! local user who holds many connections could cause; the next apply would
//! then have stopped those VMs. Now the scan is marked exhausted and the
//! rescan plans nothing from it, keeping the catalog as it is.
//!
//! Alone in its test binary: it takes every file descriptor of the process.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use vm_catalog_protocol::Epoch;
use vm_catalog_tests::tree::Tree;
use vm_catalogd::catalog::{Catalog, MergeOptions, VmIds};
use vm_catalogd::definition::{ScanOptions, scan_source};
use vm_catalogd::rescan::{Plan, ScanExhausted};
use vm_catalogd::source::SourceSpec;

#[test]
fn a_scan_out_of_file_descriptors_rejects_nothing() {
    let t = Tree::new();
    t.vm("src", "vm-a");
    t.vm("src", "vm-b");
    let spec = SourceSpec::directory(
        "user".parse().unwrap(),
        t.join("src"),
        vm_catalog_protocol::Trust::Untrusted,
    );
    let ok = scan_source(&spec, &ScanOptions::default());
    assert!(!ok.exhausted);
    assert_eq!(ok.definitions.len(), 2);
    assert!(ok.definitions.iter().all(|d| d.is_valid()));
    let (opts, merge) = (ScanOptions::default(), MergeOptions::plain(t.join("vm")));
    let mut ids = VmIds::new(1);
    let current = Catalog::empty(Epoch(1));
    let fed = Plan::new(
        &current,
        std::slice::from_ref(&spec),
        &opts,
        &merge,
        &mut ids,
    )
    .unwrap();
    assert_eq!(fed.draft().entries().len(), 2);

    // Take every descriptor the process may still open.
    let null = std::fs::File::open("/dev/null").unwrap();
    let mut held: Vec<OwnedFd> = Vec::new();
    loop {
        // SAFETY: dup has no memory preconditions; a new fd is owned below.
        let fd = unsafe { libc::dup(null.as_raw_fd()) };
        if fd < 0 {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EMFILE)
            );
            break;
        }
        // SAFETY: `fd` was just returned by dup and is ours.
        held.push(unsafe { OwnedFd::from_raw_fd(fd) });
        assert!(held.len() < 1 << 20, "no descriptor limit?");
    }
    let starved = scan_source(&spec, &ScanOptions::default());
    let plan = Plan::new(
        &current,
        std::slice::from_ref(&spec),
        &opts,
        &merge,
        &mut ids,
    );
    drop(held);
    assert_eq!(
        plan.unwrap_err(),
        ScanExhausted {
            label: spec.label.clone()
        },
        "a rescan plans nothing from a starved scan"
    );
    assert!(starved.exhausted, "{starved:?}");
    assert!(
        starved.definitions.is_empty(),
        "nothing of a starved scan is used"
    );
    assert!(
        !starved
            .diagnostics
            .iter()
            .any(|d| d.message.contains("vm-a")),
        "no definition was judged: {:?}",
        starved.diagnostics
    );
}
