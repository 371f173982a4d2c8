//! The maintenance window, verify's checks and the generation history in
//! human form.

use std::fmt::Write as _;

use super::Style;
use crate::engine::History;
use crate::step::verify::Verification;
use crate::upgrade::{HolderAction, Window};

pub fn window(window: &Window, style: Style) -> String {
    let mut out = String::new();
    let how = if window.live {
        "swapped live".to_string()
    } else {
        format!(
            "at the next boot: {}",
            window.reboot_reason.as_deref().unwrap_or("")
        )
    };
    let _ = writeln!(
        out,
        "{} nvidia {} -> {}, {how}",
        style.paint("1", "Maintenance window:"),
        window.module.before.as_deref().unwrap_or("(none loaded)"),
        window.module.after
    );
    if !window.holders.is_empty() {
        let _ = writeln!(out, "  holders:");
        for holder in &window.holders {
            let owner = match (&holder.container, &holder.unit) {
                (Some(container), _) => format!("container {container}"),
                (None, Some(unit)) => unit.clone(),
                (None, None) => String::new(),
            };
            let action = match holder.action {
                HolderAction::StopUnit => style.paint("33", "stop its service"),
                HolderAction::Terminate => style.paint("31", "terminate"),
                HolderAction::Block => style.paint("31;1", "blocks"),
                HolderAction::RunsUntilReboot => style.paint("33", "runs until the reboot"),
                HolderAction::Drained => style.paint("33", "drained first"),
            };
            let _ = writeln!(
                out,
                "    pid {:<7} {:<16} {:<30} {:<28} {action}",
                holder.pid,
                holder.comm,
                owner,
                holder.devices.join(",")
            );
            if let Some(reason) = &holder.reason {
                let _ = writeln!(out, "      {reason}");
            }
        }
    }
    if let Some(build) = &window.build_inside {
        let _ = writeln!(out, "  build   inside the window: {build}");
    }
    for (label, items) in [
        ("stop", &window.stop),
        ("unload", &window.unload),
        ("load", &window.load),
        ("cdi", &window.cdi),
        ("start", &window.start),
        ("restart", &window.restart),
    ] {
        if !items.is_empty() {
            let _ = writeln!(out, "  {label:<7} {}", items.join(", "));
        }
    }
    if !window.phases.is_empty() {
        let phases: Vec<String> = window
            .phases
            .iter()
            .map(|p| format!("{} {:.1} s", p.phase, p.seconds))
            .collect();
        let _ = writeln!(out, "  phases  {}", phases.join(", "));
    }
    if let Some(seconds) = window.unavailable_seconds {
        let _ = writeln!(out, "  the GPU was out of service for {seconds:.1} s");
    }
    if let Some(last) = &window.last {
        last_window(&mut out, last);
    }
    out
}

/// What the host's history says the last window and build cost.
fn last_window(out: &mut String, last: &crate::upgrade::LastWindow) {
    let _ = writeln!(
        out,
        "  last time (generation {}, {}) the GPU was out of service for {:.1} s",
        last.generation,
        last.finished.as_deref().unwrap_or("unfinished"),
        last.unavailable_seconds
    );
    if let Some(build) = last.build_seconds {
        let _ = writeln!(
            out,
            "  the last module build took {build:.1} s, before the window"
        );
    }
}

pub fn verification(verification: &Verification, style: Style) -> String {
    let mut out = String::new();
    let verdict = if verification.passed {
        style.paint("32", "passed")
    } else {
        style.paint("31;1", "failed")
    };
    let _ = writeln!(out, "{} {verdict}", style.paint("1", "Verify:"));
    for check in &verification.checks {
        let mark = match check.passed {
            Some(true) => style.paint("32", "ok  "),
            Some(false) => style.paint("31", "FAIL"),
            None => style.paint("2", "n/a "),
        };
        let _ = writeln!(out, "  {mark} {:<12} {}", check.name, check.evidence);
    }
    out
}

pub fn history(history: &History, style: Style) -> String {
    let mut out = String::new();
    if history.failed {
        let _ = writeln!(out, "{} {}", style.paint("31;1", "error:"), history.msg);
        return out;
    }
    if history.generations.is_empty() {
        let _ = writeln!(
            out,
            "No generation yet: provision has changed nothing here."
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{:>4}  {:<18} {:<20} {:<20} {:>7}  plan",
        "gen", "state", "started", "finished", "changes"
    );
    for g in &history.generations {
        let state = crate::serde_name(&g.state);
        let _ = writeln!(
            out,
            "{:>4}  {:<18} {:<20} {:<20} {:>7}  {}{}",
            g.id,
            state,
            g.started,
            g.finished.as_deref().unwrap_or("-"),
            g.changes,
            g.plan.as_deref().unwrap_or("-"),
            g.plan_sha256
                .as_deref()
                .map(|sha| format!(" ({})", &sha[..12.min(sha.len())]))
                .unwrap_or_default()
        );
        if let Some(reason) = &g.awaiting {
            let _ = writeln!(out, "      waits for a reboot: {reason}");
        }
    }
    out
}
