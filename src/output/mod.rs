//! The only place that prints: terraform-style `+ ~ -` diffs for people,
//! one JSON document for machines, and progress (indicatif) on a terminal.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::{Report, StepReport};
use crate::progress::Progress;
use crate::step::{Action, Diff};

/// Colours only for a terminal that wants them.
#[derive(Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    pub fn for_stdout() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn plain() -> Style {
        Style { color: false }
    }

    pub(crate) fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn action(&self, action: Action, text: &str) -> String {
        match action {
            Action::Create => self.paint("32", text),
            Action::Update => self.paint("33", text),
            Action::Delete => self.paint("31", text),
            Action::None => self.paint("2", text),
        }
    }
}

/// A message as people read it: the C library's " (os error 2)" after
/// its own words adds nothing a reader can use.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" (os error ") {
        let tail = &rest[at + " (os error ".len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && tail[digits..].starts_with(')') {
            out.push_str(&rest[..at]);
            rest = &tail[digits + 1..];
        } else {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// The `--json` error document of a verb that is not a run: what failed
/// and why, nothing of a run's shape.
pub fn error_json(verb: &str, msg: &str) -> String {
    json(&serde_json::json!({
        "changed": false,
        "failed": true,
        "command": verb,
        "msg": msg,
    }))
}

/// `detect --json --packages`: the facts and every installed package.
#[derive(serde::Serialize)]
pub struct WithInstalled<'a> {
    #[serde(flatten)]
    pub facts: &'a crate::facts::Facts,
    pub installed: &'a [crate::facts::packages::Package],
}

impl<'a> WithInstalled<'a> {
    pub fn of(facts: &'a crate::facts::Facts) -> WithInstalled<'a> {
        WithInstalled {
            facts,
            installed: &facts.all_packages,
        }
    }
}

pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|error| {
        format!("{{\"failed\": true, \"msg\": \"cannot encode the report: {error}\"}}")
    })
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|line| format!("{by}{line}\n")).collect()
}

fn diff_lines(style: Style, diff: &Diff) -> String {
    match diff {
        Diff::None => String::new(),
        Diff::Text(text) => {
            let mut out = String::new();
            for line in text.lines() {
                let painted = if line.starts_with("+++") || line.starts_with("---") {
                    style.paint("1", line)
                } else if line.starts_with('+') {
                    style.action(Action::Create, line)
                } else if line.starts_with('-') {
                    style.action(Action::Delete, line)
                } else if line.starts_with("@@") {
                    style.paint("36", line)
                } else {
                    line.to_string()
                };
                out.push_str(&painted);
                out.push('\n');
            }
            out
        }
        Diff::Packages(changes) => {
            let width = changes.iter().map(|c| c.name.len()).max().unwrap_or(0);
            let mut out = String::new();
            for change in changes {
                let hold = if change.hold { "  (held)" } else { "" };
                let line = match (&change.before, &change.after) {
                    (None, Some(after)) => style.action(
                        Action::Create,
                        &format!("+ {:width$}  {after}{hold}", change.name),
                    ),
                    (Some(before), None) => style.action(
                        Action::Delete,
                        &format!("- {:width$}  {before}", change.name),
                    ),
                    (Some(before), Some(after)) if before == after => style.action(
                        Action::Update,
                        &format!("~ {:width$}  {after}  (hold){}", change.name, ""),
                    ),
                    (Some(before), Some(after)) => style.action(
                        Action::Update,
                        &format!("~ {:width$}  {before} -> {after}{hold}", change.name),
                    ),
                    (None, None) => continue,
                };
                out.push_str(&line);
                out.push('\n');
            }
            out
        }
    }
}

fn step_block(style: Style, step: &StepReport, verbose: bool) -> String {
    let mut out = String::new();
    let sigil = step.action.sigil();
    let head = format!("{sigil} {}  {}", step.id, step.summary);
    let _ = writeln!(out, "  {}", style.action(step.action, &head));
    if step.action != Action::None || verbose {
        out.push_str(&indent(&diff_lines(style, &step.diff), "      "));
        if !step.commands.is_empty() {
            let _ = writeln!(out, "      will run:");
            for command in &step.commands {
                let _ = writeln!(out, "        {command}");
            }
        }
    }
    out
}

/// The diff an Ansible `--diff` run shows (no colours).
/// A plan, apply or rollback report as its `--json` document, with
/// `diff.prepared` (the human diff, plain) for Ansible's `--diff`.
pub fn report_json(report: &Report) -> String {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    if let Some(diff) = value.get_mut("diff").and_then(|d| d.as_object_mut()) {
        diff.insert("prepared".into(), prepared_diff(&report.steps).into());
    }
    json(&value)
}

pub fn prepared_diff(steps: &[StepReport]) -> String {
    steps
        .iter()
        .filter(|s| s.action != Action::None)
        .map(|s| step_block(Style::plain(), s, false))
        .collect()
}

/// Human form of a plan, apply or rollback report.
pub fn human(report: &Report, verb: &str, style: Style) -> String {
    let mut out = String::new();
    if let Some(choice) = &report.recommendation {
        let _ = writeln!(
            out,
            "[driver] branch = \"recommended\" is R{} ({}), flavor {}:",
            choice.branch, choice.kind, choice.flavor
        );
        for reason in &choice.reasons {
            let _ = writeln!(out, "  - {reason}");
        }
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "{} {warning}", style.paint("33", "warning:"));
    }
    if !report.steps.is_empty() {
        let _ = writeln!(out);
        for step in &report.steps {
            out.push_str(&step_block(style, step, false));
        }
        let _ = writeln!(out);
    }
    if let Some(window) = &report.window {
        out.push_str(&window::window(window, style));
    }
    if let Some(verification) = &report.verify {
        out.push_str(&window::verification(verification, style));
    }
    let changes = report
        .steps
        .iter()
        .filter(|s| s.action != Action::None)
        .count();
    let unchanged = report.steps.len() - changes;
    if report.failed {
        let _ = writeln!(out, "{} {}", style.paint("31;1", "error:"), report.msg);
    } else {
        let summary = match verb {
            "plan" if changes == 0 => "No changes. The host matches the plan.".to_string(),
            "plan" => format!("Plan: {changes} to change, {unchanged} already as planned."),
            _ => format!(
                "{}{}",
                capitalize(&report.msg),
                if report.msg.ends_with('.') { "" } else { "." }
            ),
        };
        let _ = writeln!(out, "{}", style.paint("1", &summary));
    }
    // A failed run changed nothing that a reboot would finish.
    if report.reboot_required && !report.failed {
        let why = report
            .window
            .as_ref()
            .and_then(|w| w.reboot_reason.clone())
            .unwrap_or_else(|| "nouveau or an older module is loaded".into());
        let _ = writeln!(
            out,
            "{}",
            style.paint(
                "33",
                &format!("A reboot is required for the change to take effect ({why}).")
            ),
        );
    }
    if let Some(log) = &report.log {
        let _ = writeln!(out, "Log: {log}");
    }
    out
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

/// Progress on a terminal: the running step with its elapsed time and the
/// last line its command printed. Without a terminal: one line per step.
pub struct TerminalProgress {
    bar: Option<indicatif::ProgressBar>,
    started: Mutex<Option<(String, Instant)>>,
}

impl TerminalProgress {
    pub fn new() -> TerminalProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix:.bold} [{elapsed}] {wide_msg:.dim}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar
        });
        TerminalProgress {
            bar,
            started: Mutex::new(None),
        }
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        TerminalProgress::new()
    }
}

impl Progress for TerminalProgress {
    fn step_started(&self, id: &str, summary: &str) {
        *self.started.lock().expect("progress lock") = Some((id.to_string(), Instant::now()));
        match &self.bar {
            Some(bar) => {
                bar.reset_elapsed();
                bar.set_prefix(id.to_string());
                bar.set_message(summary.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
            }
            None => eprintln!("==> {id}: {summary}"),
        }
    }

    fn step_finished(&self, id: &str, ok: bool) {
        let elapsed = self
            .started
            .lock()
            .expect("progress lock")
            .take()
            .map(|(_, at)| at.elapsed())
            .unwrap_or_default();
        let line = format!(
            "{} {id} ({:.1}s)",
            if ok { "done" } else { "FAILED" },
            elapsed.as_secs_f64()
        );
        match &self.bar {
            Some(bar) => {
                bar.disable_steady_tick();
                bar.println(line);
                bar.set_message("");
                bar.set_prefix("");
            }
            None => eprintln!("    {line}"),
        }
    }

    fn command_started(&self, command: &str) {
        if let Some(bar) = &self.bar {
            if self.started.lock().expect("progress lock").is_none() {
                bar.set_prefix("checking");
            }
            bar.set_message(command.to_string());
        }
    }

    fn command_line(&self, line: &str) {
        if let Some(bar) = &self.bar
            && !line.trim().is_empty()
        {
            bar.set_message(line.trim().to_string());
        }
    }

    fn warn(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }

    fn download(&self, name: &str, done: u64, total: Option<u64>) {
        if let Some(bar) = &self.bar {
            let text = match total {
                Some(total) if total > 0 => {
                    format!("{name}: {} of {} MiB", done >> 20, total >> 20)
                }
                _ => format!("{name}: {} MiB", done >> 20),
            };
            bar.set_message(text);
        }
    }
}

mod compat;
mod doctor;
mod facts;
mod window;
pub use compat::{
    compat_host_human, compat_human, compat_sentence, line_human, needs_human, recommend_human,
    wheels_human,
};
pub use doctor::{doctor_human, verify_human};
pub use facts::facts_human;
pub use window::history as history_human;

#[cfg(test)]
mod plain_tests {
    #[test]
    fn errno_suffixes_are_dropped_and_nothing_else() {
        assert_eq!(
            super::plain("x.toml: cannot read: No such file or directory (os error 2)\n"),
            "x.toml: cannot read: No such file or directory\n"
        );
        assert_eq!(super::plain("a (os error x) b"), "a (os error x) b");
        assert_eq!(
            super::plain("(os error 13) and (os error 2)"),
            "(os error 13) and"
        );
    }
}

#[cfg(test)]
mod failure_tests {
    use crate::engine::Report;

    #[test]
    fn a_failure_is_not_followed_by_a_reboot_notice() {
        let mut report = Report::failure("the plan cannot work on this host".to_string());
        report.reboot_required = true;
        let text = super::human(&report, "apply", super::Style::plain());
        assert!(text.contains("the plan cannot work"), "{text}");
        assert!(!text.contains("A reboot is required"), "{text}");
    }
}
