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

/// The verdict in one sentence.
pub fn compat_sentence(answer: &Answer) -> String {
    let on = match &answer.gpu {
        Some(gpu) => format!("driver {} with {gpu}", answer.driver),
        None => format!("driver {}", answer.driver),
    };
    match (answer.verdict, answer.mode) {
        (Verdict::Compatible, Mode::Native) => {
            format!("{} runs natively on {on}.", answer.cuda_label)
        }
        (Verdict::Compatible, Mode::MinorVersion) => {
            format!(
                "{} runs on {on} by minor-version compatibility, with limitations.",
                answer.cuda_label
            )
        }
        (Verdict::Compatible, _) => format!("{} runs on {on}.", answer.cuda_label),
        (Verdict::NeedsCompatPackage, _) => format!(
            "{} runs on {on} only with {} (forward compatibility).",
            answer.cuda_label,
            answer.package.as_deref().unwrap_or("a cuda-compat package")
        ),
        (Verdict::Incompatible, _) => format!("{} does not run on {on}.", answer.cuda_label),
        (Verdict::Ambiguous, _) => format!(
            "Whether {} runs on {on} depends on which source is right.",
            answer.cuda_label
        ),
    }
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
