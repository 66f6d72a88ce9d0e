//! [`BlockHost`] for real: rustix system calls on a Linux kernel.
//!
//! Devices are opened relative to the /dev root with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`,
//! `O_NOFOLLOW`; plain `openat` where `openat2` is missing), checked with
//! `fstat` and `BLKGETDISKSEQ`, and mounted through `/proc/self/fd/N` with the
//! new mount API (`fsopen`, `fsconfig` with `FSCONFIG_CMD_CREATE_EXCL` so an
//! already-mounted file system is refused even from another mount namespace,
//! `fsmount`, `move_mount`), falling back to `mount(2)` on older kernels.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use super::host::{
    BlockHost, FsckOutcome, MountEntry, MountError, MountRequest, OpenError, Unmounted,
};
use super::mountinfo;
use super::sysfs::DevId;

/// `BLKGETDISKSEQ`: `_IOR(0x12, 128, __u64)`.
const BLKGETDISKSEQ: rustix::ioctl::Opcode = rustix::ioctl::opcode::read::<u64>(0x12, 128);
/// The most fsck output kept for a diagnostic.
const FSCK_OUTPUT: usize = 512;

/// The real host.
#[derive(Debug, Clone)]
pub struct SystemHost {
    dev_root: PathBuf,
    classic_mount: bool,
}

impl SystemHost {
    /// Device nodes are looked up under `dev_root` (`/dev`).
    pub fn new(dev_root: PathBuf) -> SystemHost {
        SystemHost {
            dev_root,
            classic_mount: false,
        }
    }

    /// Always mounts with `mount(2)`, as on kernels without the new mount
    /// API (the fallback path, for tests).
    pub fn classic_mount_only(mut self) -> SystemHost {
        self.classic_mount = true;
        self
    }
}

/// The disk sequence number of an open block device; `None` when the
/// kernel has none (before 5.15).
pub fn disk_seq(fd: impl AsFd) -> io::Result<Option<u64>> {
    // SAFETY: BLKGETDISKSEQ writes exactly one u64 through its argument,
    // which is what `Getter<_, u64>` provides.
    let r = unsafe { rustix::ioctl::ioctl(fd, rustix::ioctl::Getter::<BLKGETDISKSEQ, u64>::new()) };
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NOTTY) | Err(Errno::INVAL) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn open_beneath(dir: &OwnedFd, name: &str) -> rustix::io::Result<OwnedFd> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(dir, name, flags, Mode::empty(), resolve) {
        Err(Errno::NOSYS) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        r => r,
    }
}

/// Reads the messages a file-system context left for us (`e …`, `w …`).
fn fs_log(fs: &OwnedFd) -> Option<String> {
    let mut msgs = Vec::new();
    let mut buf = [0u8; 256];
    for _ in 0..8 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => msgs.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned()),
            _ => break,
        }
    }
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

fn failed(what: &'static str, detail: Option<String>) -> impl FnOnce(Errno) -> MountError {
    move |e| MountError::Failed {
        what,
        detail,
        source: e.into(),
    }
}

impl SystemHost {
    fn mount_new_api(
        &self,
        dev: &File,
        target: &Path,
        req: &MountRequest,
    ) -> Result<(), MountError> {
        let fs = rustix::mount::fsopen(req.fstype.name(), FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(failed("fsopen", None))?;
        let source = format!("/proc/self/fd/{}", dev.as_raw_fd());
        rustix::mount::fsconfig_set_string(&fs, "source", &source)
            .map_err(|e| failed("fsconfig source", fs_log(&fs))(e))?;
        for (k, v) in req.fs_options() {
            let r = match v {
                Some(v) => rustix::mount::fsconfig_set_string(&fs, k, v),
                None => rustix::mount::fsconfig_set_flag(&fs, k),
            };
            r.map_err(|e| failed("fsconfig option", fs_log(&fs))(e))?;
        }
        if req.read_only {
            rustix::mount::fsconfig_set_flag(&fs, "ro")
                .map_err(|e| failed("fsconfig ro", fs_log(&fs))(e))?;
        }
        match rustix::mount::fsconfig_create_exclusive(&fs) {
            Ok(()) => {}
            Err(Errno::BUSY) => return Err(MountError::AlreadyMounted),
            // Before 6.6 there is no FSCONFIG_CMD_CREATE_EXCL.
            Err(Errno::OPNOTSUPP) | Err(Errno::INVAL) => rustix::mount::fsconfig_create(&fs)
                .map_err(|e| failed("fsconfig create", fs_log(&fs))(e))?,
            Err(e) => return Err(failed("fsconfig create", fs_log(&fs))(e)),
        }
        let mut attrs = MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC
            | MountAttrFlags::MOUNT_ATTR_NOSYMFOLLOW;
        if req.read_only {
            attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
        }
        let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| failed("fsmount", fs_log(&fs))(e))?;
        let dir = rustix::fs::open(
            target,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(failed("open mount point", None))?;
        rustix::mount::move_mount(
            &mnt,
            "",
            &dir,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(failed("move_mount", None))
    }

    fn mount_classic(
        &self,
        dev: &File,
        target: &Path,
        req: &MountRequest,
    ) -> Result<(), MountError> {
        let mut flags =
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::NOSYMFOLLOW;
        if req.read_only {
            flags |= MountFlags::RDONLY;
        }
        let data = std::ffi::CString::new(req.fs_data()).expect("no NUL in fixed options");
        let source = format!("/proc/self/fd/{}", dev.as_raw_fd());
        rustix::mount::mount(
            source.as_str(),
            target,
            req.fstype.name(),
            flags,
            data.as_c_str(),
        )
        .map_err(failed("mount", None))
    }
}

impl BlockHost for SystemHost {
    type Device = File;

    fn open_block(
        &self,
        devname: &str,
        expect: DevId,
        diskseq: Option<u64>,
    ) -> Result<File, OpenError> {
        let node = self.dev_root.join(devname);
        let io_err = |e: Errno| OpenError::Io {
            node: node.clone(),
            source: e.into(),
        };
        let dir = rustix::fs::open(
            &self.dev_root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err)?;
        let fd = open_beneath(&dir, devname).map_err(io_err)?;
        let st = rustix::fs::fstat(&fd).map_err(io_err)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice {
            return Err(OpenError::NotBlock(node));
        }
        let found = DevId::from_raw(st.st_rdev);
        if found != expect {
            return Err(OpenError::WrongDevice {
                node,
                expected: expect,
                found,
            });
        }
        if let Some(expected) = diskseq {
            let seq = disk_seq(&fd).map_err(|e| OpenError::Io {
                node: node.clone(),
                source: e,
            })?;
            if let Some(found) = seq.filter(|&s| s != expected) {
                return Err(OpenError::DiskseqChanged {
                    node,
                    expected,
                    found,
                });
            }
        }
        Ok(File::from(fd))
    }

    fn root_dev(&self) -> io::Result<DevId> {
        Ok(DevId::from_raw(rustix::fs::stat("/")?.st_dev))
    }

    fn block_dev_at(&self, path: &Path) -> io::Result<Option<DevId>> {
        let st = rustix::fs::stat(path)?;
        Ok(
            (FileType::from_raw_mode(st.st_mode) == FileType::BlockDevice)
                .then(|| DevId::from_raw(st.st_rdev)),
        )
    }

    fn mounts(&self) -> io::Result<Vec<MountEntry>> {
        Ok(mountinfo::parse(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    fn fsck(&self, program: &Path, dev: &File) -> io::Result<FsckOutcome> {
        let raw = dev.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.arg("-p")
            .arg("/proc/self/fd/3")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir("/")
            .stdin(Stdio::null());
        // SAFETY: between fork and exec the closure only calls dup2 and fcntl,
        // which are async-signal-safe, and touches no memory but its copy of `raw`.
        unsafe {
            cmd.pre_exec(move || {
                let r = if raw == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, 3)
                };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output()?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        let tail: String = {
            let start = text.len().saturating_sub(FSCK_OUTPUT);
            let start = (start..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            text[start..].to_owned()
        };
        Ok(match out.status.code() {
            Some(0) => FsckOutcome::Clean,
            Some(c) if c & !3 == 0 => FsckOutcome::Corrected,
            code => FsckOutcome::Failed { code, output: tail },
        })
    }

    fn mount(&self, dev: &File, target: &Path, req: &MountRequest) -> Result<(), MountError> {
        if self.classic_mount {
            return self.mount_classic(dev, target, req);
        }
        match self.mount_new_api(dev, target, req) {
            Err(MountError::Failed {
                what: "fsopen",
                source,
                ..
            }) if source.raw_os_error() == Some(libc::ENOSYS) => {
                self.mount_classic(dev, target, req)
            }
            r => r,
        }
    }

    fn unmount(&self, target: &Path) -> io::Result<Unmounted> {
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => Ok(Unmounted::Clean),
            Err(Errno::BUSY) => {
                rustix::mount::unmount(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)?;
                Ok(Unmounted::Detached)
            }
            Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(Unmounted::NotMounted),
            Err(e) => Err(e.into()),
        }
    }
}
