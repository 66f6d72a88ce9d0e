//! Untrusted directory sources on a file system that follows symlinks are
//! loud (issue 12, item 10): a warning at start, a `symlinks-followed`
//! diagnostic on the source in `sources`, its code in `status`.

use super::*;
use vm_catalog_tests::loopdev::{in_private_mount_ns, run};
use vm_catalog_tests::require_root;

/// The `user` source's diagnostic codes as `sources` and `status` show them.
async fn user_codes(c: &Client) -> (Vec<DiagCode>, Vec<DiagCode>) {
    let sources = c.sources().await.unwrap();
    let user = sources
        .sources
        .iter()
        .find(|s| s.label.as_str() == "user")
        .unwrap();
    let listed = user.diagnostics.iter().map(|d| d.code).collect();
    let info = c.info().await.unwrap();
    let summary = info
        .sources
        .iter()
        .find(|s| s.label.as_str() == "user")
        .unwrap();
    (listed, summary.diagnostics.clone())
}

/// Regression (issue 12, item 10): an untrusted directory source on a
/// mount without `nosymfollow` (where a swap race can redirect a view's
/// link after the scan) was accepted silently.
#[tokio::test]
async fn an_untrusted_directory_on_a_mount_that_follows_symlinks_is_reported() {
    let mut d = daemon();
    d.user_vm("vm1");
    d.builtin_vm("netvm");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let (listed, summary) = user_codes(&c).await;
    assert_eq!(listed, [DiagCode::SymlinksFollowed]);
    assert_eq!(summary, [DiagCode::SymlinksFollowed]);
    let builtin = c.info().await.unwrap().sources[0].clone();
    assert!(
        builtin.diagnostics.is_empty(),
        "a trusted source is not at risk"
    );
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("nosymfollow") && l.contains("user")),
        "{}",
        d.log()
    );
    let status = std::process::Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("user (directory, ready, 1, symlinks-followed)"),
        "{text}"
    );
    // The VM is still used: the warning is about the mount, not the VM.
    assert_eq!(c.list_vms(false, None).await.unwrap().vms.len(), 2);
}

/// The fix the warning asks for: the same source, bind-mounted onto itself
/// `nosymfollow` (in a private mount namespace), is not reported.
#[tokio::test]
async fn an_untrusted_directory_mounted_nosymfollow_is_not_reported() {
    let Some(()) = require_root("a nosymfollow bind mount") else {
        return;
    };
    if !in_private_mount_ns(
        "nosymfollow::an_untrusted_directory_mounted_nosymfollow_is_not_reported",
    ) {
        return;
    }
    let mut d = daemon();
    d.user_vm("vm1");
    let user = d.user().display().to_string();
    run("mount", &["--bind", &user, &user], None).unwrap();
    run("mount", &["-o", "remount,bind,nosymfollow", &user], None).unwrap();
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    assert_eq!(user_codes(&c).await, (vec![], vec![]));
    assert!(!d.log().contains("nosymfollow"), "{}", d.log());
    drop(c);
    d.stop();
    run("umount", &[&user], None).unwrap();
}
