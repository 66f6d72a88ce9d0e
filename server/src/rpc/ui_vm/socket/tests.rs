use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;

const PERMS: Perms = Perms {
    mode: 0o660,
    owner: None,
    group: None,
};

#[test]
fn the_socket_appears_with_its_mode_replacing_a_stale_one() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ui/vsock_22083");
    let (_l1, first) = bind(&path, PERMS, Parent::Create).unwrap();
    // A stale socket (a daemon killed earlier) is replaced.
    let (_l2, second) = bind(&path, PERMS, Parent::Create).unwrap();
    let m = fs::symlink_metadata(&path).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.mode() & 0o777, 0o660);
    assert_eq!(
        fs::read_dir(tmp.path().join("ui")).unwrap().count(),
        1,
        "no leftovers"
    );
    first.remove();
    assert!(path.exists(), "not the first one's any more");
    std::os::unix::net::UnixStream::connect(&path).unwrap();
    second.remove();
    assert!(!path.exists());
    assert!(
        !tmp.path().join("ui").exists(),
        "its own emptied directory goes too"
    );
}

/// Regression: the listener's parent directory was removed when empty,
/// although the daemon had not made it (a non-root VMM could then no
/// longer create its own socket there).
#[test]
fn a_directory_the_daemon_did_not_create_is_never_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vsock/a1b2");
    fs::create_dir_all(&dir).unwrap();
    let mut modes = vec![Parent::Existing];
    if rustix::process::geteuid().is_root() {
        // Another user's (a VMM's): not the daemon's, in either mode.
        std::os::unix::fs::chown(&dir, Some(4242), Some(4242)).unwrap();
        modes.push(Parent::Create);
    }
    for parent in modes {
        let (_l, bound) = bind(&dir.join("vsock_5"), PERMS, parent).unwrap();
        bound.remove();
        assert!(dir.is_dir(), "{parent:?}");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "{parent:?}");
    }
}

#[test]
fn a_missing_directory_is_left_to_whoever_makes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vsock/a1b2/vsock_5");
    let e = bind(&path, PERMS, Parent::Existing).unwrap_err();
    assert!(matches!(e, BindError::Missing(_)), "{e}");
    assert!(!tmp.path().join("vsock").exists(), "nothing made");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let (_l, bound) = bind(&path, PERMS, Parent::Existing).unwrap();
    assert!(path.exists());
    bound.remove();
}

/// Regression: a `/run/vsock/<id>` planted as a symbolic link was
/// followed, and the listener made where it pointed.
#[test]
fn a_planted_symlink_on_the_way_is_refused_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::create_dir(tmp.path().join("vsock")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, tmp.path().join("vsock/a1b2")).unwrap();
    for parent in [Parent::Existing, Parent::Create] {
        let e = bind(&tmp.path().join("vsock/a1b2/vsock_5"), PERMS, parent).unwrap_err();
        assert!(matches!(e, BindError::Symlink(_)), "{parent:?}: {e}");
        assert_eq!(
            e.to_string(),
            format!(
                "{} is a symbolic link: refused, not followed",
                tmp.path().join("vsock/a1b2").display()
            )
        );
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0, "{parent:?}");
    }
    // Higher up too.
    let e = bind(
        &tmp.path().join("vsock/a1b2/deeper/vsock_5"),
        PERMS,
        Parent::Create,
    )
    .unwrap_err();
    assert!(matches!(e, BindError::Symlink(_)), "{e}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// The attacking thread takes `uid`'s credentials (this thread only: raw
/// system calls, not the C library's process-wide ones).
fn become_user(uid: u32) {
    // SAFETY: raw credential system calls on this thread only.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
            0
        );
        assert_eq!(libc::syscall(libc::SYS_setresgid, -1, uid, -1), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, -1, uid, -1), 0);
    }
}

/// Regression: the owner of the listener's directory swapped the daemon's
/// private bind directory, then its socket, for symbolic links, and the
/// daemon's chmod followed them (a root-owned 0644 file got the listener's
/// mode in up to 15 of 100 re-binds).
#[test]
fn swapping_the_staging_directory_and_socket_for_links_never_changes_another_file() {
    const ATTACKER: u32 = 4242;
    let as_root = rustix::process::geteuid().is_root();
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let vsock = tmp.path().join("vsock");
    fs::create_dir(&vsock).unwrap();
    let shadow = tmp.path().join("shadow");
    fs::write(&shadow, "secret").unwrap();
    fs::set_permissions(&shadow, fs::Permissions::from_mode(0o644)).unwrap();
    // A directory whose `socket` is a link to the planted file.
    let decoy = tmp.path().join("decoy");
    fs::create_dir(&decoy).unwrap();
    std::os::unix::fs::symlink(&shadow, decoy.join("socket")).unwrap();
    // As root, the attacker is another user who owns the directory (a
    // VMM's user); otherwise it races as the same user.
    if as_root {
        std::os::unix::fs::chown(&vsock, Some(ATTACKER), Some(ATTACKER)).unwrap();
    }
    let planted = fs::metadata(&shadow).unwrap();
    let path = vsock.join("vsock_5");
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let attacker = std::thread::spawn({
        let (vsock, shadow, decoy, path, stop, swaps) = (
            vsock.clone(),
            shadow.clone(),
            decoy.clone(),
            path.clone(),
            stop.clone(),
            swaps.clone(),
        );
        move || {
            if as_root {
                become_user(ATTACKER);
            }
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(entries) = fs::read_dir(&vsock) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name();
                    let at = vsock.join(&name);
                    if name.to_string_lossy().starts_with(".vm-catalogd-bind-") {
                        n += 1;
                        let away = vsock.join(format!("stolen-{n}"));
                        if fs::rename(&at, &away).is_ok() {
                            let _ = std::os::unix::fs::symlink(&decoy, &at);
                            swaps.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // The socket itself, for a link to the planted file.
                n += 1;
                let link = vsock.join(format!("link-{n}"));
                if std::os::unix::fs::symlink(&shadow, &link).is_ok()
                    && fs::rename(&link, &path).is_ok()
                {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    // The attacker is at work before the first bind.
    while swaps.load(Ordering::Relaxed) == 0 && !attacker.is_finished() {
        std::thread::yield_now();
    }
    let perms = Perms {
        mode: 0o666,
        owner: None,
        group: None,
    };
    let mut bound_n = 0;
    for _ in 0..1000 {
        if let Ok((_l, bound)) = bind(&path, perms, Parent::Existing) {
            bound_n += 1;
            bound.remove();
        }
        let m = fs::metadata(&shadow).unwrap();
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (0o644, planted.uid(), planted.gid()),
            "the planted file"
        );
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    let swaps = swaps.load(Ordering::Relaxed);
    eprintln!("{bound_n} of 1000 binds succeeded, {swaps} swaps");
    assert_eq!(fs::read_to_string(&shadow).unwrap(), "secret");
    let decoy_entries: Vec<_> = fs::read_dir(&decoy).unwrap().flatten().collect();
    assert_eq!(decoy_entries.len(), 1, "nothing bound in the decoy");
    assert!(
        fs::symlink_metadata(decoy.join("socket"))
            .unwrap()
            .is_symlink()
    );
    let top: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(top.len(), 3, "{top:?}");
}
