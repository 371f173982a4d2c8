//! Human form of `provision compat`: the verdict in a sentence, then why,
//! with the knowledge-base rows and sources each reason rests on.

use std::fmt::Write as _;

use super::Style;
use crate::compat::host::HostReport;
use crate::compat::rules::{Answer, Mode, Verdict};

fn verdict_style(style: Style, verdict: Verdict) -> String {
    let code = match verdict {
        Verdict::Compatible => "32;1",
        Verdict::NeedsCompatPackage => "33;1",
        Verdict::Ambiguous => "35;1",
        Verdict::Incompatible => "31;1",
    };
    style.paint(code, &verdict.to_string())
}

/// The verdict in one sentence ([`Answer::sentence`]).
pub fn compat_sentence(answer: &Answer) -> String {
    answer.sentence()
}

fn body(out: &mut String, answer: &Answer, indent: &str) {
    if !answer.readings.is_empty() {
        let _ = writeln!(out, "{indent}Readings:");
        for reading in &answer.readings {
            let _ = writeln!(out, "{indent}  - {reading}");
        }
    }
    let _ = writeln!(out, "{indent}Why:");
    for reason in &answer.reasons {
        let cite = if reason.sources.is_empty() {
            format!("[{}]", reason.row)
        } else {
            format!("[{}: {}]", reason.row, reason.sources.join(", "))
        };
        let _ = writeln!(out, "{indent}  - {} {cite}", reason.text);
    }
    if !answer.limitations.is_empty() {
        let _ = writeln!(out, "{indent}Limitations:");
        for limitation in &answer.limitations {
            let _ = writeln!(out, "{indent}  - {limitation}");
        }
    }
    if let Some(min) = &answer.min_driver
        && answer.mode != Mode::Native
    {
        let _ = writeln!(out, "{indent}Lowest driver that runs it natively: {min}");
    }
}

pub fn compat_human(answer: &Answer, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {}",
        verdict_style(style, answer.verdict),
        compat_sentence(answer)
    );
    body(&mut out, answer, "");
    out
}

pub fn compat_host_human(report: &HostReport, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Driver {}{} on {}",
        report.driver.as_deref().unwrap_or("none"),
        report
            .flavor
            .as_deref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default(),
        if report.gpus.is_empty() {
            "no GPU".to_string()
        } else {
            report.gpus.join(", ")
        }
    );
    for check in &report.checks {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}  {}: {}",
            check.subject,
            verdict_style(style, check.answer.verdict),
            check.summary
        );
        body(&mut out, &check.answer, "  ");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", report.msg);
    out
}

/// `compat --torch 2.9.1`: one line a wheel, the best one marked, then
/// the pip line of the best.
pub fn wheels_human(report: &crate::compat::wheels::WheelReport, style: Style) -> String {
    let mut out = String::new();
    let on = match &report.gpu {
        Some(gpu) => format!("driver {} with {gpu}", report.driver),
        None => format!("driver {}", report.driver),
    };
    let _ = writeln!(
        out,
        "torch {} (torchvision {}, torchaudio {}) on {on}:",
        report.torch, report.torchvision, report.torchaudio
    );
    for wheel in &report.wheels {
        let mark = if report.best.as_deref() == Some(wheel.tag.as_str()) {
            "*"
        } else {
            " "
        };
        let how = match (&wheel.package, wheel.mode) {
            (Some(package), _) => format!(" with {package}"),
            (None, Mode::MinorVersion) => " (minor-version compatibility)".to_string(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            " {mark} {:<6} {}{how}: {}",
            wheel.tag,
            verdict_style(style, wheel.verdict),
            wheel.why
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    match report
        .best
        .as_deref()
        .and_then(|tag| report.wheels.iter().find(|w| w.tag == tag))
    {
        Some(best) => {
            let _ = writeln!(out, "Install ({}):\n  {}", best.tag, best.install);
        }
        None => {
            let _ = writeln!(
                out,
                "No CUDA wheel of torch {} runs on {on}: upgrade the driver, or install the CPU wheel.",
                report.torch
            );
        }
    }
    let _ = writeln!(out, "Sources: {}", report.sources.join(", "));
    out
}

/// `compat --cuda 12.4 --torch latest`.
pub fn line_human(report: &crate::compat::line::LineReport, style: Style) -> String {
    let mut out = String::new();
    match (&report.tag, &report.torch, &report.install) {
        (Some(tag), Some(torch), Some(install)) => {
            let which = if report.latest {
                format!(
                    "the newest torch release with {tag} wheels (CUDA {})",
                    report.cuda
                )
            } else {
                format!("published {tag} wheels (CUDA {})", report.cuda)
            };
            let _ = writeln!(
                out,
                "{} torch {torch} (torchvision {}, torchaudio {}): {which}.",
                style.paint("32;1", "found:"),
                report.torchvision.as_deref().unwrap_or("?"),
                report.torchaudio.as_deref().unwrap_or("?"),
            );
            let _ = writeln!(out, "Install:\n  {install}");
        }
        (Some(tag), _, _) => {
            let _ = writeln!(
                out,
                "{} that torch release has no {tag} wheels (CUDA {}).",
                style.paint("31;1", "none:"),
                report.cuda
            );
        }
        (None, _, _) => {
            let _ = writeln!(
                out,
                "{} no torch release the knowledge base knows has wheels for CUDA {}.",
                style.paint("31;1", "none:"),
                report.cuda
            );
        }
    }
    if !report.releases.is_empty() {
        let _ = writeln!(
            out,
            "Releases with these wheels: torch {}",
            report.releases.join(", ")
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(out, "Sources: {}", report.sources.join(", "));
    out
}

/// `provision recommend`.
pub fn recommend_human(choice: &crate::compat::recommend::Recommendation, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} branch = \"{}\", flavor = \"{}\" ({})",
        style.paint("32;1", "recommended:"),
        choice.branch,
        choice.flavor,
        choice.kind
    );
    let _ = writeln!(out, "Why:");
    for reason in &choice.reasons {
        let _ = writeln!(out, "  - {reason}");
    }
    if !choice.alternatives.is_empty() {
        let _ = writeln!(out, "Alternatives:");
        for alt in &choice.alternatives {
            let _ = writeln!(out, "  R{} ({}): {}", alt.branch, alt.kind, alt.why);
        }
    }
    out
}

/// `compat --torch 2.6.0` (or `--cuda 12.4`) with no driver to judge: what
/// each CUDA wheel needs of one.
pub fn needs_human(report: &crate::compat::needs::NeedsReport, style: Style) -> String {
    let mut out = String::new();
    let on = if report.gpus.is_empty() {
        String::new()
    } else {
        format!(" on {}", report.gpus.join(", "))
    };
    let _ = writeln!(
        out,
        "{}{on}: no driver to check against; what each needs of one:",
        report.question
    );
    for need in &report.needs {
        let name = match &need.tag {
            Some(tag) => format!("{tag:<6} (CUDA {})", need.cuda),
            None => format!("CUDA {}", need.cuda),
        };
        let mut how = format!("driver {} or newer natively", need.native_driver);
        if let Some(minor) = &need.minor_version_driver {
            how.push_str(&format!(", from {minor} by minor-version compatibility"));
        }
        if let Some(fc) = &need.forward_compat {
            how.push_str(&format!("; older branches: {fc}"));
        }
        let _ = writeln!(out, "  {name}: {how}");
        for problem in &need.problems {
            let _ = writeln!(out, "    {} {problem}", style.paint("31;1", "cannot run:"));
        }
        if let Some(install) = &need.install {
            let _ = writeln!(out, "    {install}");
        }
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(out, "{}", report.msg);
    out
}
