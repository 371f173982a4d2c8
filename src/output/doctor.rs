//! Human form of `provision doctor` and `provision verify`.

use std::fmt::Write as _;

use super::Style;
use crate::doctor::{Report, Severity};

pub fn doctor_human(report: &Report, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", style.paint("1", "The three versions"));
    for line in &report.versions.explanation {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out);
    if report.findings.is_empty() {
        let _ = writeln!(out, "{}", style.paint("32;1", "No problems found."));
        return out;
    }
    let _ = writeln!(out, "{}", style.paint("1", "Findings"));
    for finding in &report.findings {
        let (label, code) = match finding.severity {
            Severity::Error => ("error", "31;1"),
            Severity::Warning => ("warning", "33;1"),
            Severity::Info => ("info", "36"),
        };
        let _ = writeln!(
            out,
            "{} [{}] {}",
            style.paint(code, label),
            finding.id,
            finding.title
        );
        for evidence in &finding.evidence {
            let _ = writeln!(out, "    {}: {}", evidence.file, evidence.value);
        }
        let _ = writeln!(out, "    fix: {}", finding.remedy);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", report.msg);
    out
}

/// `provision verify`: one line per check, then the verdict.
pub fn verify_human(result: &crate::step::verify::Verification, style: Style) -> String {
    let mut out = String::new();
    for check in &result.checks {
        let mark = match check.passed {
            Some(true) => style.paint("32", "ok  "),
            Some(false) => style.paint("31;1", "FAIL"),
            None => style.paint("33", "n/a "),
        };
        let _ = writeln!(out, "{mark} {:<14} {}", check.name, check.evidence);
    }
    let _ = writeln!(
        out,
        "{}",
        if result.passed {
            style.paint("32;1", "healthy")
        } else {
            style.paint("31;1", "not healthy")
        }
    );
    out
}
