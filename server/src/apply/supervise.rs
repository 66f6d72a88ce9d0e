//! Reading s6 supervision without running a program, shared by the
//! appliers: whether an `s6-svscan` reads a scan directory, and the pid a
//! supervisor's status file records.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Size of a `supervise/status` file in s6 2.11, with the pid as a
/// big-endian u64 at offset 24.
const STATUS_SIZE: usize = 35;
const STATUS_PID_OFFSET: usize = 24;

/// Whether an `s6-svscan` reads the control FIFO of `scandir`.
///
/// Opening a FIFO for writing without blocking fails with `ENXIO` when
/// nobody reads it. Nothing is written.
pub fn scanner_listens(scandir: &Path) -> bool {
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(scandir.join(".s6-svscan/control"))
        .is_ok()
}

/// The pid in the status file of the service directory `dir`: `Some(None)`
/// when it says the service is down, `None` when the file cannot be read or
/// is not in s6 2.11's layout (ask `s6-svstat` then).
pub fn status_pid(dir: &Path) -> Option<Option<u32>> {
    let mut buf = Vec::with_capacity(64);
    let n = fs::File::open(dir.join("supervise/status"))
        .and_then(|f| f.take(256).read_to_end(&mut buf))
        .ok()?;
    if n != STATUS_SIZE {
        return None;
    }
    let raw = buf.get(STATUS_PID_OFFSET..STATUS_PID_OFFSET + 8)?;
    let pid = u64::from_be_bytes(raw.try_into().ok()?);
    Some(u32::try_from(pid).ok().filter(|&p| p != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_pid_reads_s6_2_11_status_files() {
        let d = tempfile::tempdir().unwrap();
        let sup = d.path().join("supervise");
        fs::create_dir_all(&sup).unwrap();
        let mut status = vec![0u8; STATUS_SIZE];
        status[STATUS_PID_OFFSET..STATUS_PID_OFFSET + 8].copy_from_slice(&4242u64.to_be_bytes());
        fs::write(sup.join("status"), &status).unwrap();
        assert_eq!(status_pid(d.path()), Some(Some(4242)));
        status[STATUS_PID_OFFSET..STATUS_PID_OFFSET + 8].copy_from_slice(&0u64.to_be_bytes());
        fs::write(sup.join("status"), &status).unwrap();
        assert_eq!(status_pid(d.path()), Some(None), "pid 0 is down");
        fs::write(sup.join("status"), b"short").unwrap();
        assert_eq!(status_pid(d.path()), None, "another layout: unknown");
        assert_eq!(status_pid(&d.path().join("nothing")), None);
        assert!(!scanner_listens(d.path()));
    }
}
