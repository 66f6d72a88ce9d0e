//! The hook stage with real programs: shell scripts written to a temp dir.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::apply::none::NoneApplier;
use crate::apply::{ActiveVm, Applier};

struct Rig {
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A hook that logs `ACTION ID NAME VM_*...` to `log`, then runs
    /// `body` (with `$1`..`$3` its arguments).
    fn hook(&self, body: &str) -> HookConfig {
        let program = self.path("hook");
        let log = self.path("log");
        std::fs::write(
            &program,
            format!(
                "#!/bin/sh\necho \"$1 $2 $3 id=$VM_ID name=$VM_NAME source=$VM_SOURCE \
                 root=$VM_SOURCE_ROOT path=$VM_PATH dir=$VM_DIR view=$VM_VIEW\" >> {}\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        HookConfig {
            program,
            timeout: Duration::from_secs(30),
            record: self.path("state/vm-hooks.json"),
        }
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(" id=").next().unwrap().to_string())
            .collect()
    }

    fn full_log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }
}

fn id(name: &str) -> VmId {
    // A 6-character id from the name.
    format!("{name:x<6}")[..6].parse().unwrap()
}

fn vm(name: &str, providers: &[&str]) -> ActiveVm {
    ActiveVm {
        name: name.parse().unwrap(),
        view: PathBuf::from(format!("/run/vm/by-id/{}/config", id(name))),
        providers: providers.iter().map(|p| p.parse().unwrap()).collect(),
        fingerprint: 1,
        id: id(name),
    }
}

/// A request of `vms`, sorted by name as the draft makes them.
fn request(vms: &[ActiveVm]) -> ApplyRequest {
    let mut vms = vms.to_vec();
    vms.sort_by(|a, b| a.name.cmp(&b.name));
    ApplyRequest { generation: 1, vms }
}

fn facts(vms: &[ActiveVm]) -> BTreeMap<VmName, VmFacts> {
    vms.iter()
        .map(|v| {
            (
                v.name.clone(),
                VmFacts {
                    id: v.id.clone(),
                    name: v.name.clone(),
                    source: "user".parse().unwrap(),
                    source_root: PathBuf::from("/src"),
                    path: Path::new("/src").join(v.name.as_str()),
                    dir: v.view.parent().unwrap().to_path_buf(),
                    view: v.view.clone(),
                },
            )
        })
        .collect()
}

fn names(r: &ApplyRequest) -> Vec<&str> {
    r.vms.iter().map(|v| v.name.as_str()).collect()
}

fn applied(r: &ApplyRequest) -> ApplyReport {
    NoneApplier::new().apply(r)
}

#[test]
fn prepare_runs_once_per_vm_with_its_facts_in_the_environment() {
    let rig = Rig::new();
    let mut h = Hooks::open(rig.hook(""));
    let vms = [vm("netvm", &[]), vm("app", &["netvm"])];
    let mut r = request(&vms);
    assert!(h.prepare(&mut r, |_| facts(&vms)).is_empty());
    assert_eq!(names(&r), ["app", "netvm"]);
    let mut log = rig.log();
    log.sort();
    assert_eq!(
        log,
        [
            format!("prepare {} app", id("app")),
            format!("prepare {} netvm", id("netvm"))
        ]
    );
    let netvm = id("netvm");
    assert!(rig.full_log().contains(&format!(
        "id={netvm} name=netvm source=user root=/src path=/src/netvm \
         dir=/run/vm/by-id/{netvm} view=/run/vm/by-id/{netvm}/config"
    )));
    assert!(!h.needs_retry());
    // Prepared VMs are not prepared again, by this daemon or the next.
    let mut r = request(&vms);
    h.prepare(&mut r, |_| facts(&vms));
    let mut h = Hooks::open(rig.hook(""));
    h.prepare(&mut r, |_| facts(&vms));
    assert_eq!(rig.log().len(), 2, "{:?}", rig.log());
    assert_eq!(names(&r), ["app", "netvm"]);
}

#[test]
fn a_failed_prepare_leaves_out_its_vm_and_dependants_and_is_retried() {
    let rig = Rig::new();
    let flag = rig.path("fail");
    std::fs::write(&flag, b"").unwrap();
    let config = rig.hook(&format!(
        "[ \"$3\" = netvm ] && [ -e {} ] && {{ echo cannot make users >&2; exit 1; }}; exit 0",
        flag.display()
    ));
    let mut h = Hooks::open(config);
    let vms = [
        vm("netvm", &[]),
        vm("app", &["netvm"]),
        vm("deep", &["app"]),
        vm("other", &[]),
    ];
    let mut r = request(&vms);
    let out = h.prepare(&mut r, |_| facts(&vms));
    assert_eq!(names(&r), ["other"]);
    let got: Vec<(&str, DiagCode)> = out.iter().map(|l| (l.vm.as_str(), l.code)).collect();
    assert_eq!(
        got,
        [
            ("netvm", DiagCode::HookFailed),
            ("app", DiagCode::ProviderUnavailable),
            ("deep", DiagCode::ProviderUnavailable),
        ]
    );
    assert!(
        out[0]
            .message
            .contains("prepare hook exited with code 1: cannot make users"),
        "{}",
        out[0].message
    );
    assert!(h.needs_retry());
    assert!(!h.is_prepared(&id("netvm")));
    assert!(
        h.is_prepared(&id("app")),
        "a dependant is prepared all the same"
    );
    // Tried again: this time it works, and only netvm is prepared.
    std::fs::remove_file(&flag).unwrap();
    let before = rig.log().len();
    let mut r = request(&vms);
    assert!(h.prepare(&mut r, |_| facts(&vms)).is_empty());
    assert_eq!(names(&r), ["app", "deep", "netvm", "other"]);
    assert_eq!(
        rig.log()[before..],
        [format!("prepare {} netvm", id("netvm"))]
    );
    assert!(!h.needs_retry());
}

#[test]
fn a_hung_prepare_is_killed_at_its_deadline_and_holds_up_no_other_hook() {
    let rig = Rig::new();
    let mut config = rig.hook("[ \"$3\" = slow ] && exec sleep 1000; exit 0");
    // A real child's clock: 2 s, a margin that load cannot eat for the
    // quick hook to finish in (500 ms could).
    config.timeout = Duration::from_secs(2);
    let mut h = Hooks::open(config);
    let vms = [vm("slow", &[]), vm("quick", &[])];
    let mut r = request(&vms);
    let out = h.prepare(&mut r, |_| facts(&vms));
    assert_eq!(names(&r), ["quick"]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code, DiagCode::HookFailed);
    assert!(
        out[0].message.contains("did not finish within 2 s"),
        "{}",
        out[0].message
    );
    assert!(h.is_prepared(&id("quick")));
}

#[test]
fn release_runs_after_a_vm_leaves_and_its_directory_stays_until_it_succeeds() {
    let rig = Rig::new();
    let flag = rig.path("fail");
    let config = rig.hook(&format!(
        "[ \"$1\" = release ] && [ -e {} ] && exit 1; exit 0",
        flag.display()
    ));
    let mut h = Hooks::open(config.clone());
    let vms = [vm("a", &[]), vm("b", &[])];
    let mut r = request(&vms);
    h.prepare(&mut r, |_| facts(&vms));
    // b leaves, but the apply failed: its service may be there still.
    let mut r = request(&vms[..1]);
    h.prepare(&mut r, |_| facts(&vms));
    let mut report = applied(&r);
    report.outcome.status = vm_catalog_protocol::ApplyStatus::FailedBeforeSwitch;
    let b_dir = PathBuf::from(format!("/run/vm/by-id/{}", id("b")));
    assert_eq!(h.release(&report), BTreeSet::from([b_dir.clone()]));
    assert!(!rig.log().iter().any(|l| l.starts_with("release")));
    // The apply succeeds, the release fails: the directory stays.
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(h.release(&applied(&r)), BTreeSet::from([b_dir.clone()]));
    assert!(h.needs_retry());
    assert!(h.is_prepared(&id("b")));
    // It stays prepared across a restart, and is released then.
    std::fs::remove_file(&flag).unwrap();
    let mut h = Hooks::open(config);
    h.prepare(&mut r, |_| facts(&vms));
    assert!(h.release(&applied(&r)).is_empty());
    assert!(!h.is_prepared(&id("b")));
    assert!(!h.needs_retry());
    let releases: Vec<_> = rig
        .log()
        .into_iter()
        .filter(|l| l.starts_with("release"))
        .collect();
    assert_eq!(releases, vec![format!("release {} b", id("b")); 2]);
    // Nothing left to release.
    assert!(h.release(&applied(&r)).is_empty());
    assert_eq!(rig.log().len(), 4);
}

/// Regression: a VM left out because its provider's prepare failed was
/// released at once (it was not in the request the applier got), and
/// prepared again at the next rescan.
#[test]
fn a_vm_left_out_for_its_provider_is_not_released() {
    let rig = Rig::new();
    let config = rig.hook("[ \"$1 $3\" = 'prepare netvm' ] && exit 1; exit 0");
    let mut h = Hooks::open(config);
    let vms = [vm("netvm", &[]), vm("app", &["netvm"])];
    for _ in 0..2 {
        let mut r = request(&vms);
        h.prepare(&mut r, |_| facts(&vms));
        assert!(r.vms.is_empty());
        assert!(h.release(&applied(&r)).is_empty());
    }
    assert!(h.is_prepared(&id("app")));
    let log = rig.log();
    assert_eq!(
        log.iter().filter(|l| l.ends_with(" app")).count(),
        1,
        "{log:?}"
    );
}

#[test]
fn without_a_hook_nothing_runs_and_nothing_is_held() {
    let mut h = Hooks::none();
    let vms = [vm("a", &[])];
    let mut r = request(&vms);
    assert!(h.prepare(&mut r, |_| facts(&vms)).is_empty());
    assert_eq!(names(&r), ["a"]);
    assert!(h.release(&applied(&r)).is_empty());
    assert!(!h.needs_retry());
}

#[test]
fn a_hook_gets_no_descriptor_of_the_daemons_but_its_stdio() {
    let rig = Rig::new();
    let listing = rig.path("fds");
    let config = rig.hook(&format!("ls /proc/$$/fd > {}", listing.display()));
    // A descriptor without close-on-exec, as an inherited one is.
    let file = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: dup of a valid descriptor (at 300 or above, out of the
    // shell's way); the copy is closed below.
    let fd = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_DUPFD, 300) };
    assert!(fd >= 300);
    let mut h = Hooks::open(config);
    let vms = [vm("a", &[])];
    let mut r = request(&vms);
    assert!(h.prepare(&mut r, |_| facts(&vms)).is_empty());
    // SAFETY: closes the copy made above.
    unsafe { libc::close(fd) };
    let mut fds: Vec<u32> = std::fs::read_to_string(&listing)
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    fds.sort();
    // Stdio and the shell's own (its script, saved redirections).
    assert!(fds.starts_with(&[0, 1, 2]), "{fds:?}");
    assert!(!fds.contains(&(fd as u32)), "{fds:?} has the daemon's {fd}");
}

#[test]
fn what_must_go_before_a_release_is_told_first() {
    let rig = Rig::new();
    let order = rig.path("log");
    let mut h = Hooks::open(rig.hook(""));
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let t = told.clone();
    let log = order.clone();
    h.before_release(Box::new(move |vm: &VmName| {
        // The hook has not run yet: its log has no release line.
        let seen = std::fs::read_to_string(&log).unwrap_or_default();
        t.lock()
            .unwrap()
            .push((vm.to_string(), seen.contains("release")));
    }));
    let vms = [vm("a", &[]), vm("b", &[])];
    let mut r = request(&vms);
    h.prepare(&mut r, |_| facts(&vms));
    let mut r = request(&vms[..1]);
    h.prepare(&mut r, |_| facts(&vms));
    assert!(h.release(&applied(&r)).is_empty());
    assert_eq!(*told.lock().unwrap(), [("b".to_string(), false)]);
    assert!(rig.log().contains(&format!("release {} b", id("b"))));
}
