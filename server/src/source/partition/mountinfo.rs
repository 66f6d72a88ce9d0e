//! Parsing `/proc/self/mountinfo`.

use std::path::PathBuf;

use super::host::MountEntry;

/// Parses the text of a mountinfo file; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent maj:min root mount-point options [optional…] - fstype source super-options
    let mut f = line.split(' ');
    let _id = f.next()?;
    let _parent = f.next()?;
    let dev = f.next()?.parse().ok()?;
    let _root = f.next()?;
    let mount_point = PathBuf::from(unescape(f.next()?));
    let options = f.next()?.split(',').map(str::to_owned).collect();
    let fstype = f.find(|&x| x == "-").and_then(|_| f.next())?.to_owned();
    Some(MountEntry {
        dev,
        mount_point,
        options,
        fstype: unescape(&fstype),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, …).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::partition::sysfs::DevId;

    #[test]
    fn parses_lines_with_optional_fields_and_escapes() {
        let text = "\
63 43 259:2 / /run/x/mnt/a\\040b rw,nosuid,nodev,noexec,relatime,nosymfollow shared:5 - ext4 /proc/self/fd/3 rw,errors=remount-ro
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
garbage
";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].dev,
            DevId {
                major: 259,
                minor: 2
            }
        );
        assert_eq!(m[0].mount_point, PathBuf::from("/run/x/mnt/a b"));
        assert_eq!(m[0].fstype, "ext4");
        assert!(m[0].is_hardened());
        assert!(!m[1].is_hardened());
    }

    #[test]
    fn unescape_leaves_odd_backslashes() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\9b\\"), "a\\9b\\");
        assert_eq!(unescape("\\012"), "\n");
    }
}
