//! `vm-catalogd check`: validate definition directories offline, exactly as
//! the daemon reads them, printing every diagnostic. This is what someone
//! building a custom user partition runs before shipping it.
//!
//! A definition directory is read as an untrusted source reads it. With
//! `--sources`, the source roots are planned exactly as a rescan plans them
//! ([`Plan::new`]: scan, then merge, against an empty catalog), so the
//! verdict is the daemon's: shadowing, missing providers, provider cycles
//! and rejected providers included.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use vm_catalog_protocol::{
    Diagnostic, Epoch, Severity, SourceLabel, SourceState, Trust, VmEntry, VmState,
};

use crate::catalog::{Catalog, MergeOptions, Names, VmIds};
use crate::config::label_dir;
use crate::definition::{
    Definition, ScanOptions, display_path, has_error, is_valid_prefix, scan_definition_dir,
};
use crate::rescan::Plan;
use crate::source::SourceSpec;

const AFTER_HELP: &str = "\
Each DIR is one definition directory (`<root>/<vm>`: vmlinux, blk/*.img, \
providers/net/NAME, fs/), read as an untrusted source reads it.

With --sources, each DIR is a source root holding one definition directory \
per VM (like `svc/data` on a user partition), optionally as LABEL=DIR \
(default label: dirN, N its position); the roots are merged in order, after \
any --trusted-source, exactly as the daemon merges its sources: a name is \
claimed by the first root that defines it, and providers must resolve \
(missing providers, provider cycles and rejected providers reject their \
dependants; a VM of an untrusted root may use only the VMs of trusted roots \
and of its own root, unless --allow-cross-source-providers).

Nothing below an untrusted DIR is followed: a symlink counts only when its \
target is an absolute path under a --trusted-target prefix and is a regular \
file there.

JSON output (--json) is one object:
  {\"valid\": BOOL,
   \"definitions\": [{\"name\", \"path\", \"valid\", \"source\", \"state\", \"kernel\",
                    \"disks\": [PATH], \"providers\": [{\"kind\", \"name\"}], \"fs\",
                    \"diagnostics\": [DIAG]}],
   \"diagnostics\": [DIAG]}
where DIAG is {\"code\", \"severity\", \"path\", \"message\"}, `code` a stable \
kebab-case diagnostic code, `source` and `state` (active, shadowed, \
rejected) are null without --sources, and the top-level `diagnostics` are \
about the DIRs themselves (missing, not a directory, entries that cannot \
be definitions).

Exit status: 0 when every definition is valid and nothing is an error, 1 \
otherwise, 2 on a usage error.";

/// Arguments of `vm-catalogd check`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct CheckArgs {
    /// Print one JSON object (see --help) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Each DIR is a source root ([LABEL=]DIR) holding definition
    /// directories, not a definition directory itself; the roots are merged
    /// as the daemon merges its sources.
    #[arg(long)]
    pub sources: bool,
    /// A trusted source root (symlinks followed), merged before the DIRs, as
    /// the daemon's built-in and trusted sources are (repeatable; implies
    /// --sources).
    #[arg(long = "trusted-source", value_name = "LABEL=DIR")]
    pub trusted_sources: Vec<String>,
    /// With --sources: how VMs are named, as the daemon's --names
    /// (`qualified`: `<label>.<directory name>`).
    #[arg(long, value_enum, default_value = "plain")]
    pub names: Names,
    /// With --sources: let a VM of one DIR use another DIR's VM as its
    /// provider, as the daemon's --allow-cross-source-providers (by default
    /// only trusted sources' VMs and its own DIR's: `provider-untrusted`).
    #[arg(long)]
    pub allow_cross_source_providers: bool,
    /// A symlink is accepted when its target is under this prefix (repeatable).
    #[arg(
        long = "trusted-target",
        value_name = "PREFIX",
        default_value = "/usr/img/"
    )]
    pub trusted_targets: Vec<PathBuf>,
    /// Definition directories (`<root>/<vm>`), or with --sources source roots.
    #[arg(required_unless_present = "trusted_sources", value_name = "DIR")]
    pub dirs: Vec<String>,
}

/// A usage error: the message, for exit status 2.
#[derive(Debug)]
struct Usage(String);

/// One definition checked, and (with `--sources`) what the merge made of it.
#[derive(Debug)]
struct Checked {
    def: Arc<Definition>,
    /// Its catalog entry, when it was merged.
    entry: Option<VmEntry>,
}

impl Checked {
    fn diagnostics(&self) -> &[Diagnostic] {
        match &self.entry {
            Some(e) => &e.diagnostics,
            None => &self.def.diagnostics,
        }
    }

    fn valid(&self) -> bool {
        match &self.entry {
            Some(e) => e.state != VmState::Rejected,
            None => self.def.is_valid(),
        }
    }
}

/// What was found, over every DIR.
#[derive(Debug, Default)]
struct Findings {
    definitions: Vec<Checked>,
    /// (DIR, diagnostics about it).
    dirs: Vec<(String, Vec<Diagnostic>)>,
}

impl Findings {
    fn valid(&self) -> bool {
        self.definitions.iter().all(Checked::valid) && self.dirs.iter().all(|(_, d)| !has_error(d))
    }
}

/// The source roots of `--sources`, in the daemon's order: the trusted ones,
/// then the DIRs.
fn specs(args: &CheckArgs) -> Result<Vec<SourceSpec>, Usage> {
    let mut out = Vec::new();
    for value in &args.trusted_sources {
        let (label, root) =
            label_dir("--trusted-source", value).map_err(|e| Usage(e.to_string()))?;
        out.push(SourceSpec::directory(label, root, Trust::Trusted));
    }
    for (n, value) in args.dirs.iter().enumerate() {
        let labelled = value
            .split_once('=')
            .filter(|(l, _)| SourceLabel::try_from(*l).is_ok());
        let (label, root) = match labelled {
            Some(_) => label_dir("DIR", value).map_err(|e| Usage(e.to_string()))?,
            None => (
                SourceLabel::try_from(format!("dir{}", n + 1)).expect("a valid label"),
                PathBuf::from(value),
            ),
        };
        out.push(SourceSpec::directory(label, root, Trust::Untrusted));
    }
    let mut labels: Vec<&SourceLabel> = out.iter().map(|s| &s.label).collect();
    labels.sort_unstable();
    if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
        return Err(Usage(format!(
            "two sources are labelled {:?}",
            w[0].as_str()
        )));
    }
    Ok(out)
}

/// `--sources`: the roots planned as a rescan plans them.
fn collect_sources(args: &CheckArgs, opts: &ScanOptions) -> Result<Findings, Usage> {
    let specs = specs(args)?;
    let empty = Catalog::empty(Epoch(0));
    let merge = MergeOptions {
        names: args.names,
        cross_source_providers: args.allow_cross_source_providers,
        ..MergeOptions::plain("/run/vm")
    };
    let plan = Plan::new(&empty, &specs, opts, &merge, &mut VmIds::new(1))
        .map_err(|e| Usage(e.to_string()))?;
    let draft = plan.draft();
    let mut f = Findings::default();
    for s in draft.sources() {
        let mut diags = s.diagnostics.clone();
        if s.state == SourceState::Missing {
            // An empty source is fine for the daemon, not for a check.
            for d in &mut diags {
                d.severity = Severity::Error;
            }
        }
        f.dirs.push((s.path.clone(), diags));
    }
    f.definitions = draft
        .candidates()
        .iter()
        .map(|c| Checked {
            def: c.definition.clone(),
            entry: Some((*c.entry).clone()),
        })
        .collect();
    Ok(f)
}

fn collect(args: &CheckArgs, opts: &ScanOptions) -> Result<Findings, Usage> {
    if args.sources || !args.trusted_sources.is_empty() {
        return collect_sources(args, opts);
    }
    let mut f = Findings::default();
    for dir in &args.dirs {
        let mut check = scan_definition_dir(Path::new(dir), opts);
        if check.definition.is_none() && !has_error(&check.diagnostics) {
            // A hidden directory: skipped by the daemon, so not a definition.
            for d in &mut check.diagnostics {
                d.severity = Severity::Error;
            }
        }
        f.definitions.extend(check.definition.map(|d| Checked {
            def: Arc::new(d),
            entry: None,
        }));
        f.dirs
            .push((display_path(Path::new(dir)), check.diagnostics));
    }
    Ok(f)
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
    let findings = match collect(args, &opts) {
        Ok(f) => f,
        Err(Usage(message)) => {
            eprintln!("vm-catalogd check: {message}");
            return 2;
        }
    };
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
        .filter(|d| d.severity == Severity::Error)
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

impl Checked {
    fn name(&self) -> &str {
        match &self.entry {
            Some(e) => e.name.as_str(),
            None => self.def.name.as_str(),
        }
    }

    /// "valid" or "INVALID", and what the merge made of a valid one.
    fn verdict(&self) -> String {
        match &self.entry {
            _ if !self.valid() => "INVALID".into(),
            Some(VmEntry {
                state: VmState::Shadowed,
                shadowed_by: Some(by),
                ..
            }) => format!("valid, shadowed by {by}"),
            _ => "valid".into(),
        }
    }
}

fn write_text(out: &mut impl Write, f: &Findings) -> std::io::Result<()> {
    for (dir, diags) in &f.dirs {
        if !diags.is_empty() {
            writeln!(out, "{dir}:{}", counts(diags).replacen(", ", " ", 1))?;
            write_diags(out, diags)?;
        }
    }
    for d in &f.definitions {
        writeln!(
            out,
            "{} ({}): {}{}",
            d.name(),
            display_path(&d.def.dir),
            d.verdict(),
            counts(d.diagnostics())
        )?;
        write_diags(out, d.diagnostics())?;
    }
    let invalid = f.definitions.iter().filter(|d| !d.valid()).count();
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
    source: Option<&'a str>,
    state: Option<&'static str>,
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

fn json_definition(c: &Checked) -> JsonDefinition<'_> {
    let d = &*c.def;
    // A merged entry names its providers as the catalog resolved them.
    let providers = match &c.entry {
        Some(e) => e
            .providers
            .iter()
            .map(|p| JsonProvider {
                kind: p.kind.as_str(),
                name: p.name.as_str(),
            })
            .collect(),
        None => d
            .providers
            .iter()
            .map(|p| JsonProvider {
                kind: p.provider.kind.as_str(),
                name: p.provider.name.as_str(),
            })
            .collect(),
    };
    JsonDefinition {
        name: c.name(),
        path: display_path(&d.dir),
        valid: c.valid(),
        source: c.entry.as_ref().map(|e| e.source.as_str()),
        state: c.entry.as_ref().map(|e| e.state.as_str()),
        kernel: d.kernel.as_ref().map(|k| display_path(&k.path)),
        disks: d.disks.iter().map(|k| display_path(&k.path)).collect(),
        providers,
        fs: d.fs.as_ref().map(|k| display_path(&k.path)),
        diagnostics: json_diags(c.diagnostics()),
    }
}

fn write_json(out: &mut impl Write, f: &Findings) -> std::io::Result<()> {
    let report = JsonReport {
        valid: f.valid(),
        definitions: f.definitions.iter().map(json_definition).collect(),
        diagnostics: f.dirs.iter().flat_map(|(_, d)| json_diags(d)).collect(),
    };
    serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::other)?;
    writeln!(out)
}
