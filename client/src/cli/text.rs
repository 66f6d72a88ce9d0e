//! Human-readable output: aligned tables and one-line descriptions.

use vm_catalog_protocol::{Change, ChangeItem, Severity, VmEntry, VmState};

/// Formats rows as columns separated by two spaces (the last column is not padded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == n {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out
}

/// Why a definition is not active (or, active, has no service), in a few
/// words: each distinct error once, in the order of its first diagnostic.
pub fn reason(e: &VmEntry) -> String {
    match e.state {
        // An active VM with an error is left out of the apply (no service):
        // `hook-failed`, `name-too-long`, … say why.
        VmState::Shadowed => match &e.shadowed_by {
            Some(l) => format!("shadowed by {l}"),
            None => "shadowed".into(),
        },
        VmState::Active | VmState::Rejected | VmState::Unavailable => {
            let mut names: Vec<&str> = Vec::new();
            for d in &e.diagnostics {
                let name = d.code.name();
                if d.severity == Severity::Error && !names.contains(&name) {
                    names.push(name);
                }
            }
            names.join(", ")
        }
    }
}

/// One line for a change: `added appvm-lynx (user, active)`.
pub fn change(c: &Change) -> String {
    match &c.item {
        ChangeItem::Vm(e) => {
            let mut s = format!(
                "{} {} ({}, {})",
                c.kind.as_str(),
                e.name,
                e.source,
                e.state.as_str()
            );
            let why = reason(e);
            if !why.is_empty() {
                s.push_str(": ");
                s.push_str(&why);
            }
            s
        }
        ChangeItem::Source(s) => {
            format!(
                "source {} {} ({}, {})",
                c.kind.as_str(),
                s.label,
                s.kind.as_str(),
                s.state.as_str()
            )
        }
    }
}

/// `-` for nothing.
pub fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

#[cfg(test)]
mod tests {
    use vm_catalog_protocol::{DiagCode, Diagnostic};

    use super::*;

    fn diag(code: DiagCode, severity: Severity) -> Diagnostic {
        Diagnostic {
            code,
            severity,
            path: "/srv/user/lynx".into(),
            message: String::new(),
        }
    }

    /// Regression (issue 12, item 6): the REASON column repeated
    /// `missing-provider` once per missing provider, dozens of times.
    #[test]
    fn reason_says_each_distinct_error_once() {
        let mut diagnostics = vec![diag(DiagCode::MissingProvider, Severity::Error); 40];
        diagnostics.push(diag(DiagCode::UnknownEntry, Severity::Warning));
        diagnostics.push(diag(DiagCode::MissingKernel, Severity::Error));
        diagnostics.push(diag(DiagCode::MissingProvider, Severity::Error));
        let e = VmEntry {
            name: "lynx".parse().unwrap(),
            source: "user".parse().unwrap(),
            state: VmState::Rejected,
            path: "/srv/user/lynx".into(),
            view: None,
            service: None,
            providers: vec![],
            diagnostics,
            restart_pending: false,
            shadowed_by: None,
            revision: 1,
            fingerprint: None,
            id: None,
        };
        assert_eq!(reason(&e), "missing-provider, missing-kernel");
    }
}
