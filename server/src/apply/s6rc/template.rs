//! The service template: the files of one VM's s6-rc source directory, with
//! placeholders.
//!
//! A template is a directory (loaded once, at start-up) or the built-in
//! default. Its regular files and symlink targets may contain placeholders:
//!
//! | placeholder  | replaced by                                      |
//! |--------------|--------------------------------------------------|
//! | `@VM_NAME@`  | the VM's name (also its s6-rc service name)      |
//! | `@VM_VIEW@`  | the VM's view directory, `<vm-dir>/<name>/config` |
//! | `@VM_START@` | the configured VM start command                  |
//!
//! Any other `@UPPER_CASE@` word is an error, so that a typo does not reach
//! a run script. The daemon writes `dependencies.d/` itself (one entry per
//! provider), so a template may not contain it.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Most entries a template directory may hold.
pub const MAX_ENTRIES: usize = 256;
/// Largest file in a template, in bytes. Everything in a template is copied
/// into the compiled database and again into the live directory at every
/// update, for every VM (s6rc.md §3.12): keep it tiny.
pub const MAX_FILE_SIZE: u64 = 64 * 1024;
/// Deepest nesting of directories in a template.
pub const MAX_DEPTH: usize = 8;

/// Top-level entries that a template may not contain, and why.
const RESERVED: &[(&str, &str)] = &[
    (
        "dependencies",
        "the daemon writes dependencies.d from the VM's providers",
    ),
    (
        "dependencies.d",
        "the daemon writes dependencies.d from the VM's providers",
    ),
    ("contents", "a VM service is a longrun, not a bundle"),
    ("contents.d", "a VM service is a longrun, not a bundle"),
    (
        "flag-essential",
        "s6-rc-update stops essential services anyway, and s6-rc -d refuses to",
    ),
    ("producer-for", "VM services are not pipelines"),
    ("consumer-for", "VM services are not pipelines"),
    ("pipeline-name", "VM services are not pipelines"),
];

/// The built-in template: a longrun that `exec`s the start command.
///
/// `execlineb -P` execs its command line, so the supervised process is the
/// VMM itself and s6-supervise's SIGTERM reaches it (s6rc.md §3.14).
/// `timeout-kill` makes s6-supervise SIGKILL a VMM that ignores SIGTERM
/// after 5 s, and `timeout-down` bounds a stop that still cannot complete
/// (a process stuck in the kernel): without both, one hung VM blocks every
/// database update (s6rc.md §2.10, §3.10).
pub const BUILTIN: &[(&str, &str)] = &[
    ("type", "longrun\n"),
    ("run", "#!/bin/execlineb -P\n@VM_START@ @VM_NAME@\n"),
    ("notification-fd", "3\n"),
    ("timeout-kill", "5000\n"),
    ("timeout-down", "15000\n"),
];

/// A value that a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `@VM_NAME@`.
    Name,
    /// `@VM_VIEW@`.
    View,
    /// `@VM_START@`.
    Start,
}

impl Placeholder {
    fn from_word(w: &[u8]) -> Option<Placeholder> {
        match w {
            b"VM_NAME" => Some(Placeholder::Name),
            b"VM_VIEW" => Some(Placeholder::View),
            b"VM_START" => Some(Placeholder::Start),
            _ => None,
        }
    }
}

/// The values of the placeholders for one VM.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// `@VM_NAME@`.
    pub name: &'a str,
    /// `@VM_VIEW@`.
    pub view: &'a str,
    /// `@VM_START@`.
    pub start: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Hole(Placeholder),
}

/// Bytes with placeholders, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<Piece>);

impl Pattern {
    /// Parses `text`; an unknown `@WORD@` is returned as an error.
    fn parse(text: &[u8]) -> Result<Pattern, String> {
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let hole = if text[i] == b'@' {
                placeholder_len(&text[i + 1..])
            } else {
                None
            };
            if let Some(len) = hole {
                let word = &text[i + 1..i + 1 + len];
                let Some(p) = Placeholder::from_word(word) else {
                    return Err(String::from_utf8_lossy(word).into_owned());
                };
                if !lit.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Hole(p));
                i += len + 2;
            } else {
                lit.push(text[i]);
                i += 1;
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Pattern(pieces))
    }

    /// Appends the text with every placeholder replaced to `out`.
    pub fn render_into(&self, v: &Values<'_>, out: &mut Vec<u8>) {
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Hole(Placeholder::Name) => out.extend_from_slice(v.name.as_bytes()),
                Piece::Hole(Placeholder::View) => out.extend_from_slice(v.view.as_bytes()),
                Piece::Hole(Placeholder::Start) => out.extend_from_slice(v.start.as_bytes()),
            }
        }
    }

    /// The text with every placeholder replaced.
    pub fn render(&self, v: &Values<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(v, &mut out);
        out
    }
}

/// If `rest` starts with `WORD@` where WORD is `[A-Z][A-Z0-9_]*`, WORD's length.
fn placeholder_len(rest: &[u8]) -> Option<usize> {
    let first = *rest.first()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    let len = rest
        .iter()
        .position(|b| !(b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_'))?;
    (rest[len] == b'@').then_some(len)
}

/// One entry of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file; `executable` when any execute bit is set.
    File {
        contents: Pattern,
        /// Written with mode 0755 rather than 0644.
        executable: bool,
    },
    Dir,
    /// A symbolic link (not followed), with this target.
    Symlink(Pattern),
}

/// A parsed service template: entries sorted by relative path, parents
/// before their children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    entries: Vec<(PathBuf, Node)>,
}

/// Why a template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Reading the template failed.
    #[error("cannot read template entry {path}")]
    Read {
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The template root is not a directory.
    #[error("template {0} is not a directory")]
    NotADirectory(PathBuf),
    /// A FIFO, socket or device in the template.
    #[error("template entry {0} is neither a regular file, a directory nor a symlink")]
    Unsupported(PathBuf),
    /// An unknown `@WORD@`.
    #[error(
        "template entry {path} uses unknown placeholder @{word}@ (known: @VM_NAME@, @VM_VIEW@, @VM_START@)"
    )]
    UnknownPlaceholder {
        path: PathBuf,
        /// The word between the `@`.
        word: String,
    },
    /// An entry the daemon owns or that makes no sense for a VM.
    #[error("template may not contain {path}: {why}")]
    Reserved {
        path: PathBuf,
        /// Why not.
        why: &'static str,
    },
    /// No `type` file, or not `longrun`.
    #[error("template type must be longrun, found {0:?}")]
    NotLongrun(String),
    /// No `run` regular file.
    #[error("template has no run file")]
    MissingRun,
    /// A file over [`MAX_FILE_SIZE`].
    #[error("template entry {path} is larger than {MAX_FILE_SIZE} bytes")]
    TooLarge { path: PathBuf },
    /// More than [`MAX_ENTRIES`] entries, or deeper than [`MAX_DEPTH`].
    #[error("template has more than {MAX_ENTRIES} entries or is nested deeper than {MAX_DEPTH}")]
    TooBig,
}

impl Template {
    /// The built-in template ([`BUILTIN`]).
    pub fn builtin() -> Template {
        let entries = BUILTIN
            .iter()
            .map(|(name, text)| {
                let contents = Pattern::parse(text.as_bytes()).expect("built-in template parses");
                let executable = *name == "run";
                (
                    PathBuf::from(name),
                    Node::File {
                        contents,
                        executable,
                    },
                )
            })
            .collect();
        let t = Template::sorted(entries);
        t.check().expect("built-in template is valid");
        t
    }

    /// Loads a template directory. Symlinks inside it are kept as symlinks
    /// (their targets may hold placeholders); entries starting with `.` are
    /// skipped, as s6-rc-compile skips them.
    pub fn load(dir: &Path) -> Result<Template, TemplateError> {
        let meta = fs::metadata(dir).map_err(|source| TemplateError::Read {
            path: dir.into(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(TemplateError::NotADirectory(dir.into()));
        }
        let mut entries = Vec::new();
        walk(dir, Path::new(""), 0, &mut entries)?;
        let t = Template::sorted(entries);
        t.check()?;
        Ok(t)
    }

    fn sorted(mut entries: Vec<(PathBuf, Node)>) -> Template {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Template { entries }
    }

    fn check(&self) -> Result<(), TemplateError> {
        for (path, _) in &self.entries {
            let top = path.components().next().map(|c| c.as_os_str().as_bytes());
            if let Some(&(_, why)) = RESERVED.iter().find(|(r, _)| Some(r.as_bytes()) == top) {
                return Err(TemplateError::Reserved {
                    path: path.clone(),
                    why,
                });
            }
        }
        let file = |name: &str| {
            self.entries.iter().find_map(|(p, n)| match n {
                Node::File { contents, .. } if p == Path::new(name) => Some(contents),
                _ => None,
            })
        };
        let ty = file("type").map(|p| p.0.clone());
        match ty.as_deref() {
            Some([Piece::Text(t)]) if t.strip_suffix(b"\n").unwrap_or(t) == b"longrun" => {}
            Some([Piece::Text(t)]) => {
                return Err(TemplateError::NotLongrun(
                    String::from_utf8_lossy(t).into_owned(),
                ));
            }
            Some(_) => return Err(TemplateError::NotLongrun("a placeholder".into())),
            None => return Err(TemplateError::NotLongrun("no type file".into())),
        }
        if file("run").is_none() {
            return Err(TemplateError::MissingRun);
        }
        Ok(())
    }

    /// The entries, sorted, parents first.
    pub fn entries(&self) -> &[(PathBuf, Node)] {
        &self.entries
    }
}

fn walk(
    root: &Path,
    rel: &Path,
    depth: usize,
    out: &mut Vec<(PathBuf, Node)>,
) -> Result<(), TemplateError> {
    if depth > MAX_DEPTH {
        return Err(TemplateError::TooBig);
    }
    let dir = root.join(rel);
    let read = |source| TemplateError::Read {
        path: dir.clone(),
        source,
    };
    for e in fs::read_dir(&dir).map_err(read)? {
        let e = e.map_err(read)?;
        let name = e.file_name();
        if name.as_bytes().starts_with(b".") {
            continue;
        }
        if out.len() >= MAX_ENTRIES {
            return Err(TemplateError::TooBig);
        }
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let err = |source| TemplateError::Read {
            path: path.clone(),
            source,
        };
        let meta = fs::symlink_metadata(&path).map_err(err)?;
        let ft = meta.file_type();
        let pattern = |bytes: &[u8]| {
            Pattern::parse(bytes).map_err(|word| TemplateError::UnknownPlaceholder {
                path: rel_path.clone(),
                word,
            })
        };
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(err)?;
            let node = Node::Symlink(pattern(target.as_os_str().as_bytes())?);
            out.push((rel_path.clone(), node));
        } else if ft.is_dir() {
            out.push((rel_path.clone(), Node::Dir));
            walk(root, &rel_path, depth + 1, out)?;
        } else if ft.is_file() {
            if meta.len() > MAX_FILE_SIZE {
                return Err(TemplateError::TooLarge { path: rel_path });
            }
            let bytes = fs::read(&path).map_err(err)?;
            let executable = meta.permissions().mode() & 0o111 != 0;
            let node = Node::File {
                contents: pattern(&bytes)?,
                executable,
            };
            out.push((rel_path.clone(), node));
        } else {
            return Err(TemplateError::Unsupported(rel_path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const V: Values<'static> = Values {
        name: "netvm",
        view: "/run/vm/netvm/config",
        start: "/x",
    };

    fn text(t: &Template, name: &str) -> String {
        let (_, node) = t
            .entries()
            .iter()
            .find(|(p, _)| p == Path::new(name))
            .unwrap();
        match node {
            Node::File { contents, .. } | Node::Symlink(contents) => {
                String::from_utf8(contents.render(&V)).unwrap()
            }
            Node::Dir => panic!("{name} is a directory"),
        }
    }

    #[test]
    fn builtin_runs_the_start_command_with_the_name() {
        let t = Template::builtin();
        assert_eq!(text(&t, "run"), "#!/bin/execlineb -P\n/x netvm\n");
        assert_eq!(text(&t, "type"), "longrun\n");
        assert_eq!(text(&t, "notification-fd"), "3\n");
        assert_eq!(text(&t, "timeout-kill"), "5000\n");
    }

    #[test]
    fn pattern_replaces_known_words_and_keeps_other_at_signs() {
        let p = Pattern::parse(b"a @VM_NAME@ b@VM_VIEW@ $@ user@host @lower@ @@").unwrap();
        assert_eq!(
            p.render(&V),
            b"a netvm b/run/vm/netvm/config $@ user@host @lower@ @@".to_vec()
        );
        assert_eq!(Pattern::parse(b"@VM_NAMES@"), Err("VM_NAMES".to_string()));
    }

    #[test]
    fn load_reads_files_dirs_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("type"), "longrun\n").unwrap();
        fs::write(
            d.path().join("run"),
            "#!/bin/sh\nexec @VM_START@ @VM_NAME@\n",
        )
        .unwrap();
        fs::set_permissions(d.path().join("run"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(d.path().join("data")).unwrap();
        symlink("@VM_VIEW@", d.path().join("data/config")).unwrap();
        fs::write(d.path().join(".swp"), "ignored").unwrap();
        let t = Template::load(d.path()).unwrap();
        let names: Vec<_> = t
            .entries()
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(names, ["data", "data/config", "run", "type"]);
        assert_eq!(text(&t, "data/config"), "/run/vm/netvm/config");
        assert!(matches!(
            t.entries()[2].1,
            Node::File {
                executable: true,
                ..
            }
        ));
    }

    #[test]
    fn load_refuses_what_the_daemon_owns_or_cannot_use() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("type"), "longrun\n").unwrap();
        assert!(matches!(
            Template::load(d.path()),
            Err(TemplateError::MissingRun)
        ));
        fs::write(d.path().join("run"), "@VM_NAEM@").unwrap();
        let e = Template::load(d.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "template entry run uses unknown placeholder @VM_NAEM@ \
             (known: @VM_NAME@, @VM_VIEW@, @VM_START@)"
        );
        fs::write(d.path().join("run"), "ok").unwrap();
        fs::create_dir(d.path().join("dependencies.d")).unwrap();
        assert!(matches!(
            Template::load(d.path()),
            Err(TemplateError::Reserved { .. })
        ));
        fs::remove_dir(d.path().join("dependencies.d")).unwrap();
        fs::write(d.path().join("type"), "oneshot\n").unwrap();
        assert!(
            matches!(Template::load(d.path()), Err(TemplateError::NotLongrun(t)) if t == "oneshot\n")
        );
    }
}
