//! `ext=`: the kernel command-line parameter that names the primary user
//! partition, as Spectrum's `ext=` does: `/dev/NAME`, a bare `NAME` (under
//! `/dev`), `UUID=` and `LABEL=` (of the ext4 file system), `PARTUUID=` (of
//! the GPT entry).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::guid::Guid;
use super::sysfs::valid_devname;

/// How `ext=` names the primary partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtSpec {
    /// `/dev/NAME` or `NAME`: the device node name under the /dev root.
    Node(String),
    /// `/dev/…` that is not a plain kernel name (a symlink such as
    /// `/dev/disk/by-partuuid/…`): resolved by the device number it points to.
    Path(String),
    /// `UUID=`: the ext4 file-system UUID.
    Uuid(Guid),
    /// `PARTUUID=`: the GPT partition GUID.
    PartUuid(Guid),
    /// `LABEL=`: the ext4 volume label (at most 16 bytes).
    Label(Vec<u8>),
}

/// Why an `ext=` value is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ext={value:?} is not /dev/NAME, NAME, UUID=, PARTUUID= or LABEL=")]
pub struct ExtSpecError {
    /// The value.
    pub value: String,
}

impl FromStr for ExtSpec {
    type Err = ExtSpecError;

    fn from_str(s: &str) -> Result<ExtSpec, ExtSpecError> {
        let err = || ExtSpecError {
            value: s.to_owned(),
        };
        let guid = |v: &str| v.parse::<Guid>().map_err(|_| err());
        if let Some(v) = s.strip_prefix("UUID=") {
            return Ok(ExtSpec::Uuid(guid(v)?));
        }
        if let Some(v) = s.strip_prefix("PARTUUID=") {
            return Ok(ExtSpec::PartUuid(guid(v)?));
        }
        if let Some(v) = s.strip_prefix("LABEL=") {
            if v.is_empty() || v.len() > 16 {
                return Err(err());
            }
            return Ok(ExtSpec::Label(v.as_bytes().to_vec()));
        }
        if let Some(v) = s.strip_prefix("/dev/") {
            if !valid_devname(v) {
                return Err(err());
            }
            // A kernel name has no directory part; anything else is a link to resolve.
            return Ok(if v.contains('/') {
                ExtSpec::Path(v.to_owned())
            } else {
                ExtSpec::Node(v.to_owned())
            });
        }
        if !s.contains('/') && !s.contains('=') && valid_devname(s) {
            return Ok(ExtSpec::Node(s.to_owned()));
        }
        Err(err())
    }
}

impl fmt::Display for ExtSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtSpec::Node(n) => write!(f, "/dev/{n}"),
            ExtSpec::Path(p) => write!(f, "/dev/{p}"),
            ExtSpec::Uuid(g) => write!(f, "UUID={g}"),
            ExtSpec::PartUuid(g) => write!(f, "PARTUUID={g}"),
            ExtSpec::Label(l) => write!(f, "LABEL={}", String::from_utf8_lossy(l)),
        }
    }
}

/// The value of the last `ext=` on a kernel command line (the kernel's
/// rule: the last one wins), before any `--`. Double quotes group words.
pub fn ext_from_cmdline(cmdline: &str) -> Option<String> {
    let mut found = None;
    for word in split_cmdline(cmdline) {
        if word == "--" {
            break;
        }
        if let Some(v) = word.strip_prefix("ext=") {
            found = Some(v.to_owned());
        }
    }
    found
}

fn split_cmdline(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// Reads `ext=` from a command-line file such as `/proc/cmdline` (at most
/// 64 KiB). A missing file means no `ext=`.
pub fn ext_from_cmdline_file(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut s = String::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            f.take(64 << 10).read_to_string(&mut s)?;
            Ok(ext_from_cmdline(&s))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("vda".parse(), Ok(ExtSpec::Node("vda".into())));
        assert_eq!("/dev/vdb".parse(), Ok(ExtSpec::Node("vdb".into())));
        assert_eq!(
            "/dev/disk/by-label/x".parse(),
            Ok(ExtSpec::Path("disk/by-label/x".into()))
        );
        assert_eq!(
            "UUID=11111111-1111-1111-1111-111111111111".parse(),
            Ok(ExtSpec::Uuid(Guid([0x11; 16])))
        );
        assert_eq!(
            "PARTUUID=AAAAAAAA-0000-4000-8000-000000000001"
                .parse::<ExtSpec>()
                .unwrap()
                .to_string(),
            "PARTUUID=aaaaaaaa-0000-4000-8000-000000000001"
        );
        assert_eq!(
            "LABEL=user fs".parse(),
            Ok(ExtSpec::Label(b"user fs".to_vec()))
        );
    }

    #[test]
    fn rejects_the_rest() {
        for bad in [
            "",
            "/dev/../etc/passwd",
            "/dev/",
            "/etc/passwd",
            "a/b",
            "UUID=nope",
            "PARTUUID=",
            "LABEL=",
            "LABEL=seventeen-bytes-x",
            "FOO=bar",
        ] {
            assert!(bad.parse::<ExtSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cmdline_last_wins_and_stops_at_double_dash() {
        assert_eq!(
            ext_from_cmdline("quiet ext=vda ro ext=/dev/vdb").as_deref(),
            Some("/dev/vdb")
        );
        assert_eq!(ext_from_cmdline("quiet -- ext=vda"), None);
        assert_eq!(
            ext_from_cmdline("a \"ext=LABEL=my disk\" b").as_deref(),
            Some("LABEL=my disk")
        );
        assert_eq!(ext_from_cmdline("next=vda extra=1"), None);
    }

    #[test]
    fn cmdline_file_missing_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(ext_from_cmdline_file(&d.path().join("nope")).unwrap(), None);
        std::fs::write(
            d.path().join("cmdline"),
            "ro ext=PARTUUID=aaaaaaaa-0000-4000-8000-000000000001\n",
        )
        .unwrap();
        assert_eq!(
            ext_from_cmdline_file(&d.path().join("cmdline"))
                .unwrap()
                .as_deref(),
            Some("PARTUUID=aaaaaaaa-0000-4000-8000-000000000001")
        );
    }
}
