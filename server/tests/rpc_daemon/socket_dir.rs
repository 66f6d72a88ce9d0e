//! Where the daemon refuses to create its socket (issue 12, item 8).

use std::os::unix::fs::PermissionsExt;

use super::*;

/// Regression (issue 12, item 8): in a socket directory others could
/// write, the daemon opened `socket.lock` through a planted symlink.
#[test]
fn a_socket_directory_anyone_may_write_is_refused_at_start() {
    let mut d = daemon();
    let run = d.tree().dir("run");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let planted = d.tree().join("planted");
    std::os::unix::fs::symlink(&planted, run.join("socket.lock")).unwrap();
    assert!(d.start().is_err(), "the daemon must not start");
    let log = d.log();
    assert!(
        log.contains(&format!(
            "socket directory {} is unsafe: anyone may write it (mode 1777)",
            run.display()
        )),
        "{log}"
    );
    assert!(
        !planted.exists(),
        "nothing created through the planted link"
    );
}
