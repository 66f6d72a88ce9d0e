//! `vm-catalogd check`: validate definition directories offline, exactly as
//! the daemon reads an untrusted source (a user partition), printing every
//! diagnostic. This is what someone building a custom user partition runs
//! before shipping it.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;
use vm_catalog_protocol::{Diagnostic, SourceLabel, SourceState, Trust};

use crate::definition::{
    Definition, ScanOptions, display_path, has_error, is_valid_prefix, scan_definition_dir,
    scan_source,
};
use crate::source::SourceSpec;

const AFTER_HELP: &str = "\
Each DIR is one definition directory (`<root>/<vm>`: vmlinux, blk/*.img, \
providers/net/NAME, fs/), or with --sources a source root holding one \
definition directory per VM (like `svc/data` on a user partition).

Nothing below DIR is followed: a symlink counts only when its target is an \
absolute path under a --trusted-target prefix and is a regular file there.

JSON output (--json) is one object:
  {\"valid\": BOOL,
   \"definitions\": [{\"name\", \"path\", \"valid\", \"kernel\", \"disks\": [PATH],
                    \"providers\": [{\"kind\", \"name\"}], \"fs\", \"diagnostics\": [DIAG]}],
   \"diagnostics\": [DIAG]}
where DIAG is {\"code\", \"severity\", \"path\", \"message\"}, `code` a stable \
kebab-case diagnostic code, and the top-level `diagnostics` are about the DIRs \
themselves (missing, not a directory, entries that cannot be definitions).

Exit status: 0 when every definition is valid and nothing is an error, 1 \
otherwise, 2 on a usage error.";

/// Arguments of `vm-catalogd check`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct CheckArgs {
    /// Print one JSON object (see --help) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Each DIR is a source root holding definition directories, not a
    /// definition directory itself.
    #[arg(long)]
    pub sources: bool,
    /// A symlink is accepted when its target is under this prefix (repeatable).
    #[arg(
        long = "trusted-target",
        value_name = "PREFIX",
        default_value = "/usr/img/"
    )]
    pub trusted_targets: Vec<PathBuf>,
    /// Definition directories (`<root>/<vm>`), or with --sources source roots.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

/// What was found, over every DIR.
#[derive(Debug, Default)]
struct Findings {
    definitions: Vec<Definition>,
    /// (DIR, diagnostics about it).
    dirs: Vec<(PathBuf, Vec<Diagnostic>)>,
}

impl Findings {
    fn valid(&self) -> bool {
        self.definitions.iter().all(Definition::is_valid)
            && self.dirs.iter().all(|(_, d)| !has_error(d))
    }
}

fn collect(args: &CheckArgs, opts: &ScanOptions) -> Findings {
    let mut f = Findings::default();
    let label = SourceLabel::try_from("check").expect("a valid label");
    for dir in &args.dirs {
        if args.sources {
            let scan = scan_source(
                &SourceSpec::directory(label.clone(), dir, Trust::Untrusted),
                opts,
            );
            let mut diags = scan.diagnostics;
            if scan.state == SourceState::Missing {
                // An empty source is fine for the daemon, not for a check.
                for d in &mut diags {
                    d.severity = vm_catalog_protocol::Severity::Error;
                }
            }
            f.definitions.extend(scan.definitions);
            f.dirs.push((dir.clone(), diags));
        } else {
            let mut check = scan_definition_dir(dir, opts);
            if check.definition.is_none() && !has_error(&check.diagnostics) {
                // A hidden directory: skipped by the daemon, so not a definition.
                for d in &mut check.diagnostics {
                    d.severity = vm_catalog_protocol::Severity::Error;
                }
            }
            f.definitions.extend(check.definition);
            f.dirs.push((dir.clone(), check.diagnostics));
        }
    }
    f
}

/// Runs `check`; returns the process exit code (0: all valid, 1: not, 2:
/// usage error).
pub fn run(args: &CheckArgs) -> i32 {
    if let Some(bad) = args.trusted_targets.iter().find(|p| !is_valid_prefix(p)) {
        eprintln!(
            "vm-catalogd check: --trusted-target {}: must be an absolute path without '.' or '..'",
            display_path(bad)
        );
        return 2;
    }
    let opts = ScanOptions {
        trusted_prefixes: args.trusted_targets.clone(),
        ..ScanOptions::default()
    };
    let findings = collect(args, &opts);
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        write_json(&mut out, &findings)
    } else {
        write_text(&mut out, &findings)
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        eprintln!("vm-catalogd check: cannot write the report: {e}");
        return 2;
    }
    if findings.valid() { 0 } else { 1 }
}

fn write_diags(out: &mut impl Write, diags: &[Diagnostic]) -> std::io::Result<()> {
    for d in diags {
        writeln!(
            out,
            "  {:<7} {}  {}: {}",
            d.severity.as_str(),
            d.code,
            d.path,
            d.message
        )?;
    }
    Ok(())
}

fn counts(diags: &[Diagnostic]) -> String {
    let errors = diags
        .iter()
        .filter(|d| d.severity == vm_catalog_protocol::Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => String::new(),
        (0, w) => format!(", {}", plural(w, "warning")),
        (e, 0) => format!(", {}", plural(e, "error")),
        (e, w) => format!(", {}, {}", plural(e, "error"), plural(w, "warning")),
    }
}

fn write_text(out: &mut impl Write, f: &Findings) -> std::io::Result<()> {
    for (dir, diags) in &f.dirs {
        if !diags.is_empty() {
            writeln!(
                out,
                "{}:{}",
                display_path(dir),
                counts(diags).replacen(", ", " ", 1)
            )?;
            write_diags(out, diags)?;
        }
    }
    for d in &f.definitions {
        let state = if d.is_valid() { "valid" } else { "INVALID" };
        writeln!(
            out,
            "{} ({}): {state}{}",
            d.name,
            display_path(&d.dir),
            counts(&d.diagnostics)
        )?;
        write_diags(out, &d.diagnostics)?;
    }
    let invalid = f.definitions.iter().filter(|d| !d.is_valid()).count();
    writeln!(
        out,
        "checked {} definition{}: {} valid, {invalid} invalid",
        f.definitions.len(),
        if f.definitions.len() == 1 { "" } else { "s" },
        f.definitions.len() - invalid
    )
}

#[derive(Serialize)]
struct JsonDiag<'a> {
    code: &'static str,
    severity: &'static str,
    path: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct JsonProvider<'a> {
    kind: &'static str,
    name: &'a str,
}

#[derive(Serialize)]
struct JsonDefinition<'a> {
    name: &'a str,
    path: String,
    valid: bool,
    kernel: Option<String>,
    disks: Vec<String>,
    providers: Vec<JsonProvider<'a>>,
    fs: Option<String>,
    diagnostics: Vec<JsonDiag<'a>>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    definitions: Vec<JsonDefinition<'a>>,
    diagnostics: Vec<JsonDiag<'a>>,
}

fn json_diags(diags: &[Diagnostic]) -> Vec<JsonDiag<'_>> {
    diags
        .iter()
        .map(|d| JsonDiag {
            code: d.code.name(),
            severity: d.severity.as_str(),
            path: &d.path,
            message: &d.message,
        })
        .collect()
}

fn write_json(out: &mut impl Write, f: &Findings) -> std::io::Result<()> {
    let report = JsonReport {
        valid: f.valid(),
        definitions: f
            .definitions
            .iter()
            .map(|d| JsonDefinition {
                name: d.name.as_str(),
                path: display_path(&d.dir),
                valid: d.is_valid(),
                kernel: d.kernel.as_ref().map(|k| display_path(&k.path)),
                disks: d.disks.iter().map(|k| display_path(&k.path)).collect(),
                providers: d
                    .providers
                    .iter()
                    .map(|p| JsonProvider {
                        kind: p.provider.kind.as_str(),
                        name: p.provider.name.as_str(),
                    })
                    .collect(),
                fs: d.fs.as_ref().map(|k| display_path(&k.path)),
                diagnostics: json_diags(&d.diagnostics),
            })
            .collect(),
        diagnostics: f.dirs.iter().flat_map(|(_, d)| json_diags(d)).collect(),
    };
    serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::other)?;
    writeln!(out)
}
