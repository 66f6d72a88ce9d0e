//! A Spectrum host for one test: a private mount namespace (and pid
//! namespace) with a tmpfs over `/run`, made to look like Spectrum by
//! `spectrum-host` from Spectrum's own tree, and a real `s6-svscan` on
//! `/run/service` supervising Spectrum's `vmm` and `vm-services` services.
//!
//! [`enter`] is called first by each test. In the test process it checks what
//! the suite needs (root, the tools, `SPECTRUM_DIR`, `EXECLINE_BINDIR`), then
//! runs the same test again inside `taskset -c CPU unshare -m --propagation
//! private -p -f --mount-proc` and asserts that it passed there; it returns
//! `None` there, so the test returns. Inside, it builds the host and returns
//! it. The whole namespace runs on one CPU: on this kernel
//! `create-vm-dependencies`' `unshare --mount=FILE` failed with EINVAL about
//! one run in three otherwise (issue 21). The test process is the pid
//! namespace's init, so nothing outlives it; users exist only in the
//! namespace's `/run/etc/passwd`, mounts only in its mount namespace.
//! (`loopdev::in_private_mount_ns` does the first half of this for the
//! partition tests; these need the CPU pinning, the pid namespace and the
//! environment passed on as well.)

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vm_catalog_tests::daemon::workspace_bin;
use vm_catalog_tests::s6::Svscan;
use vm_catalog_tests::{require_root, require_tool, skip};

const NAMESPACE_ENV: &str = "VMC_SPECTRUM_NAMESPACE";
const HERE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/spectrum_e2e");
/// The PATH of everything in the namespace: Spectrum's (`/usr/bin`) after
/// the stand-ins (`/usr/local/bin`).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The hook under test.
pub const VM_HOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/spectrum/vm-hook");

/// The Spectrum host of a test (inside its namespace).
#[derive(Debug)]
pub struct Host {
    _svscan: Svscan,
}

/// Runs the calling test in its own Spectrum host: `None` in the test
/// process (the test ran, and passed, in the namespace; or it cannot run
/// here and said so), the host inside the namespace.
pub fn enter() -> Option<Host> {
    if std::env::var_os(NAMESPACE_ENV).is_some_and(|v| v == "1") {
        return Some(Host::build());
    }
    let env = requirements()?;
    // The daemon is built here (cargo is not in the namespace's PATH).
    let daemon = workspace_bin("vm-catalogd");
    let cli = workspace_bin("vm-catalog");
    let thread = std::thread::current();
    let test = thread.name().expect("a test thread name").to_owned();
    let exe = std::env::current_exe().expect("test executable");
    let out = Command::new("taskset")
        .args([
            "-c",
            &one_cpu(),
            "unshare",
            "-m",
            "--propagation",
            "private",
        ])
        .args(["-p", "-f", "--mount-proc"])
        .arg(&exe)
        .args(["--exact", &test, "--nocapture", "--test-threads=1"])
        .env(NAMESPACE_ENV, "1")
        .env("PATH", PATH)
        .env("VMC_DAEMON", &daemon)
        .env("VMC_CLI", &cli)
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .expect("run the test in a namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with `--nocapture` (measurements the test prints).
    eprint!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in its Spectrum namespace: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    None
}

/// What the suite needs, checked in the test process; the environment to
/// pass on.
fn requirements() -> Option<Vec<(&'static str, PathBuf)>> {
    require_root("Spectrum's scripts (users, mounts, namespaces)")?;
    for tool in [
        "taskset",
        "unshare",
        "nsenter",
        "findmnt",
        "useradd",
        "userdel",
        "groupdel",
        "groupadd",
        "busybox",
        "perl",
        "s6-svscan",
        "s6-instance-create",
        "s6-ipcserver-socketbinder",
        "s6-envuidgid",
        "s6-applyuidgid",
    ] {
        require_tool(tool)?;
    }
    let json_pp = Command::new("perl").args(["-MJSON::PP", "-e1"]).status();
    if !json_pp.is_ok_and(|s| s.success()) {
        skip("perl's JSON::PP (Debian: perl) is not installed");
        return None;
    }
    if !fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("\toverlay\n")) {
        skip("no overlay file system in this kernel");
        return None;
    }
    let spectrum = std::env::var_os("SPECTRUM_DIR").map(PathBuf::from);
    let Some(spectrum) = spectrum.filter(|d| d.join("bin/lsvm").exists()) else {
        skip("SPECTRUM_DIR is not set to a Spectrum build: SPECTRUM_DIR=$(.ci/build-spectrum)");
        return None;
    };
    let execline = std::env::var_os("EXECLINE_BINDIR").map(PathBuf::from);
    let Some(execline) = execline.filter(|d| d.join("execlineb").exists()) else {
        skip("EXECLINE_BINDIR is not set: EXECLINE_BINDIR=$(../shared/tools/build-execline)");
        return None;
    };
    Some(vec![
        ("SPECTRUM_DIR", spectrum),
        ("EXECLINE_BINDIR", execline),
    ])
}

/// One CPU of those this process may run on.
fn one_cpu() -> String {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            for cpu in 0..libc::CPU_SETSIZE as usize {
                if libc::CPU_ISSET(cpu, &set) {
                    return cpu.to_string();
                }
            }
        }
    }
    "0".into()
}

impl Host {
    fn build() -> Host {
        let status = Command::new(Path::new(HERE).join("spectrum-host"))
            .status()
            .expect("run spectrum-host");
        assert!(status.success(), "spectrum-host failed");
        let svscan =
            Svscan::start(Path::new("/run/service"), 500).expect("s6-svscan on /run/service");
        Host { _svscan: svscan }
    }

    /// The daemon binary (built by the test process).
    pub fn daemon_bin(&self) -> PathBuf {
        PathBuf::from(std::env::var_os("VMC_DAEMON").expect("VMC_DAEMON"))
    }

    /// The `vm-catalog` binary (built by the test process).
    pub fn cli_bin(&self) -> PathBuf {
        PathBuf::from(std::env::var_os("VMC_CLI").expect("VMC_CLI"))
    }
}

/// Runs a program and returns its output, whatever its exit.
pub fn run<I, S>(program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// Runs a program that must succeed; its stdout.
pub fn ok<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = run(program, &args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One line of Spectrum's `lsvm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsvmLine {
    pub id: String,
    pub status: String,
    pub names: Vec<String>,
}

/// Spectrum's `lsvm`, parsed (colours dropped), sorted by id.
pub fn lsvm() -> Vec<LsvmLine> {
    let out = ok("lsvm", [] as [&str; 0]);
    let plain = strip_escapes(&out);
    let mut lines = plain.lines();
    assert_eq!(lines.next(), Some("ID     STATUS  NAMES"), "{out}");
    let mut vms: Vec<LsvmLine> = lines
        .map(|l| {
            let mut words = l.split(' ').filter(|w| !w.is_empty());
            LsvmLine {
                id: words.next().expect("an id").to_owned(),
                status: words.next().expect("a status").to_owned(),
                names: words.map(str::to_owned).collect(),
            }
        })
        .collect();
    vms.sort_by(|a, b| a.id.cmp(&b.id));
    vms
}

fn strip_escapes(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The id behind `/run/vm/by-name/NAME`.
pub fn id_of(name: &str) -> String {
    let target = fs::read_link(Path::new("/run/vm/by-name").join(name))
        .unwrap_or_else(|e| panic!("/run/vm/by-name/{name}: {e}"));
    target.file_name().unwrap().to_string_lossy().into_owned()
}

/// Every `/run/vm/by-name` entry: (name, id), sorted by name.
pub fn by_name() -> Vec<(String, String)> {
    let mut v: Vec<_> = fs::read_dir("/run/vm/by-name")
        .expect("/run/vm/by-name")
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let id = id_of(&name);
            (name, id)
        })
        .collect();
    v.sort();
    v
}

/// Waits (s6-svwait, an event) until the VM's vmm instance is up and ready.
pub fn wait_ready(id: &str) {
    ok(
        "s6-svwait",
        [
            "-U",
            "-t",
            "120000",
            &format!("/run/service/vmm/instance/{id}"),
        ],
    );
}

/// The users of `/run/etc/passwd` (Spectrum's `/etc/passwd`) with `id` in
/// their name.
pub fn users_of(id: &str) -> Vec<String> {
    names_in("/run/etc/passwd", id)
}

/// The groups of `/run/etc/group` with `id` in their name.
pub fn groups_of(id: &str) -> Vec<String> {
    names_in("/run/etc/group", id)
}

fn names_in(file: &str, id: &str) -> Vec<String> {
    fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|n| n.contains(id))
        .map(str::to_owned)
        .collect()
}

/// The mount points of this namespace with `id` in their path.
pub fn mounts_of(id: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.contains(id))
        .map(str::to_owned)
        .collect()
}

/// The errno of a connect() to the Unix socket `path` by uid and gid 65534
/// (nobody), 0 if it connected.
pub fn connect_as_nobody(path: &Path) -> i32 {
    let script = "use Socket; socket(my $s, AF_UNIX, SOCK_STREAM, 0) or exit 255; \
                  connect($s, pack_sockaddr_un($ARGV[0])) and exit 0; exit($! + 0)";
    let status = Command::new("perl")
        .args(["-e", script])
        .arg(path)
        .uid(65534)
        .gid(65534)
        .status()
        .expect("run perl as nobody");
    let code = status.code().expect("perl exited");
    assert_ne!(code, 255, "socket() failed");
    code
}

/// `uid` of the owner, and the permission bits, of `path`.
pub fn owner_and_mode(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.mode() & 0o7777)
}

/// The uid of user `name` in Spectrum's `/etc/passwd`.
pub fn uid_of(name: &str) -> u32 {
    fs::read_to_string("/run/etc/passwd")
        .expect("passwd")
        .lines()
        .find_map(|l| {
            let f: Vec<_> = l.split(':').collect();
            (f[0] == name).then(|| f[2].parse().expect("a uid"))
        })
        .unwrap_or_else(|| panic!("no user {name}"))
}
