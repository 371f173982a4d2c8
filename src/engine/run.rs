//! The one step loop of `apply` (a fresh apply, an upgrade's window, the
//! end of a generation after its reboot): check right before each step,
//! apply what is pending with its undo journaled first, gather the facts
//! again, and at the end check that every lasting step holds.

use std::time::Instant;

use super::report::{pending, satisfied};
use super::steps::Steps;
use super::{Exit, Report, close_generation, gather, open_generation, reboot_needed};
use crate::facts::Facts;
use crate::host::Host;
use crate::journal::{self, Generation, Journal, Status};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::step::{Action, Check, Context, Step};
use crate::upgrade::Phase;

pub(super) struct Apply<'a> {
    pub host: &'a Host,
    pub plan: &'a Plan,
    pub progress: &'a dyn Progress,
    pub log_to: &'a dyn Fn(&std::path::Path),
}

/// When each step of the window began and ended (seconds since the loop
/// started).
struct Clock {
    /// The loop's start as Unix time.
    epoch: f64,
    phases: Vec<(String, f64, f64)>,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            phases: Vec::new(),
        }
    }
}

impl Apply<'_> {
    pub fn run(
        &self,
        facts: Facts,
        built: Steps,
        resuming: Option<Generation>,
        warnings: Vec<String>,
        lock: &mut crate::journal::Lock,
    ) -> Report {
        let host = self.host;
        let mut report = Report::new("");
        report.warnings = warnings;
        report.window = built.window.clone();
        let initial = match self.preview(&built.steps, &facts) {
            Ok(initial) => initial,
            Err(message) => return Report::failure(message).finish(host),
        };
        if resuming.is_none() && initial.iter().all(|c| matches!(c, Check::Satisfied(_))) {
            report.steps = built
                .steps
                .iter()
                .zip(initial)
                .map(|(step, check)| match check {
                    Check::Satisfied(summary) => satisfied(step.id(), summary),
                    Check::Pending(change) => pending(step.id(), change),
                })
                .collect();
            report.msg = "no changes: the host matches the plan".into();
            report.reboot_required = self.plan.driver.is_some() && reboot_needed(&facts);
            return report.finish(host);
        }
        let mut journal = match open_generation(host, self.plan, resuming.as_ref(), lock) {
            Ok(journal) => journal,
            Err(error) => return Report::failure(error.to_string()).finish(host),
        };
        let log = journal::log_path(&host.root, journal.generation.id);
        (self.log_to)(&log);
        report.generation = Some(journal.generation.id);
        report.log = Some(log.to_string_lossy().into_owned());
        let mut clock = Clock::default();
        let result = self.apply_steps(
            &built.steps,
            initial,
            facts,
            &mut journal,
            &mut report,
            &mut clock,
        );
        report.verify = built.verification.lock().ok().and_then(|v| v.clone());
        report.phases = clock.all();
        report.drain = built.drain.lock().ok().and_then(|d| d.clone());
        if let Some(window) = &mut report.window {
            clock.fill(window);
        }
        match result {
            Ok(facts) => self.succeed(&mut journal, report, &facts, resuming.is_some()),
            Err(message) => fail(host, &mut journal, report, message, self.progress),
        }
    }

    /// What every step shows before anything changes.
    fn preview(&self, steps: &[Box<dyn Step>], facts: &Facts) -> Result<Vec<Check>, String> {
        let ctx = Context {
            host: self.host,
            facts,
            progress: self.progress,
            writable: true,
        };
        steps
            .iter()
            .map(|step| {
                step.preview(&ctx)
                    .map_err(|error| format!("{}: cannot check: {error}", step.id()))
            })
            .collect()
    }

    /// Applies each pending step in order; the facts after the last one.
    fn apply_steps(
        &self,
        steps: &[Box<dyn Step>],
        initial: Vec<Check>,
        mut facts: Facts,
        journal: &mut Journal,
        report: &mut Report,
        clock: &mut Clock,
    ) -> Result<Facts, String> {
        let started = Instant::now();
        for (step, first) in steps.iter().zip(initial) {
            let ctx = Context {
                host: self.host,
                facts: &facts,
                progress: self.progress,
                writable: true,
            };
            // State may have moved under earlier steps: check again right before.
            let check = step
                .check(&ctx)
                .map_err(|error| format!("{}: cannot check: {error}", step.id()))?;
            let change = match (check, first) {
                (Check::Satisfied(summary), Check::Satisfied(_)) => {
                    report.steps.push(satisfied(step.id(), summary));
                    continue;
                }
                // An earlier step already made this change (a package trigger
                // rebuilt the initramfs): report it, do not redo it.
                (Check::Satisfied(_), Check::Pending(change)) => {
                    report.steps.push(pending(step.id(), change));
                    continue;
                }
                (Check::Pending(change), _) => change,
            };
            self.progress.step_started(&step.id(), &change.summary);
            let began = started.elapsed().as_secs_f64();
            let result = step.apply(&ctx, journal);
            clock
                .phases
                .push((step.id(), began, started.elapsed().as_secs_f64()));
            self.progress.step_finished(&step.id(), result.is_ok());
            report.steps.push(pending(step.id(), change));
            if let Err(error) = result {
                return Err(format!("{} failed: {error}", step.id()));
            }
            facts = gather(self.host);
        }
        self.converged(steps, &facts)?;
        Ok(facts)
    }

    /// Every lasting step must now be satisfied.
    fn converged(&self, steps: &[Box<dyn Step>], facts: &Facts) -> Result<(), String> {
        let ctx = Context {
            host: self.host,
            facts,
            progress: self.progress,
            writable: true,
        };
        for step in steps.iter().filter(|s| !s.transient()) {
            match step.check(&ctx) {
                Ok(Check::Satisfied(_)) => {}
                Ok(Check::Pending(change)) => {
                    return Err(format!(
                        "{} did not converge: still pending after apply: {}",
                        step.id(),
                        change.summary
                    ));
                }
                Err(error) => return Err(format!("{}: cannot verify: {error}", step.id())),
            }
        }
        Ok(())
    }

    fn succeed(
        &self,
        journal: &mut Journal,
        mut report: Report,
        facts: &Facts,
        resumed: bool,
    ) -> Report {
        report.changed = true;
        report.reboot_required = match &report.window {
            Some(window) => !window.live,
            None => self.plan.driver.is_some() && reboot_needed(facts),
        };
        // A generation whose end is not on disk would be taken for an
        // interrupted one, and undone, by the next run: undo it now.
        if let Err(error) = close_generation(journal, &mut report, facts, self.plan) {
            let msg = format!(
                "could not record the end of generation {}: {error}",
                journal.generation.id
            );
            return fail(self.host, journal, report, msg, self.progress);
        }
        let changed = report
            .steps
            .iter()
            .filter(|s| s.action != Action::None)
            .count();
        let id = journal.generation.id;
        report.msg = match (&report.window, resumed) {
            (_, true) => format!("finished generation {id} after the reboot it waited for"),
            (Some(window), false) if !window.live => format!(
                "applied {changed} change(s) as generation {id}; the new driver loads at the next boot: {}",
                window.reboot_reason.as_deref().unwrap_or("")
            ),
            _ => format!("applied {changed} change(s) as generation {id}"),
        };
        report.finish(self.host)
    }
}

/// The phase a step belongs to, for `phases[]` of every apply: the
/// download ahead of the window, the module build, the drain, the
/// window's own steps, the packages, verify and the resume after a
/// reboot. Steps that only write files have none.
pub fn phase_of(id: &str) -> Option<&'static str> {
    Some(match id {
        "window:download" => "download",
        "driver:build" => "build",
        "window:drain" => "drain",
        "window:resume-node" => "resume",
        "window:stop" => "stop",
        "window:terminate" => "terminate",
        "window:unload" => "unload",
        "packages" | "runfile:driver" => "packages",
        "window:load" => "load",
        "window:start" => "start",
        "driver:verify" => "verify",
        "window:resume" | "window:resumed" => "resume",
        _ => return None,
    })
}

impl Clock {
    /// Every phase this apply went through, in order.
    fn all(&self) -> Vec<Phase> {
        self.phases
            .iter()
            .filter_map(|(id, began, ended)| {
                phase_of(id).map(|phase| Phase {
                    phase: phase.to_string(),
                    at: round(self.epoch + began),
                    seconds: round(ended - began),
                })
            })
            .collect()
    }

    /// The window's phases (the steps applied from its first to its last)
    /// and how long the GPU was out of service.
    fn fill(&self, window: &mut crate::upgrade::Window) {
        let in_window = |id: &str| {
            id.starts_with("window:")
                || id == crate::step::verify::ID
                || id == crate::step::packages::ID
                || id == "runfile:driver"
        };
        let first = self.phases.iter().position(|(id, _, _)| in_window(id));
        let last = self.phases.iter().rposition(|(id, _, _)| in_window(id));
        let (Some(first), Some(last)) = (first, last) else {
            return;
        };
        window.phases = self.phases[first..=last]
            .iter()
            .map(|(id, began, ended)| Phase {
                phase: id
                    .trim_start_matches("window:")
                    .trim_start_matches("driver:")
                    .to_string(),
                at: round(self.epoch + began),
                seconds: round(ended - began),
            })
            .collect();
        let out = self
            .phases
            .iter()
            .find(|(id, _, _)| {
                ["window:stop", "window:terminate", "window:unload"].contains(&id.as_str())
            })
            .map(|(_, began, _)| *began);
        let back = self
            .phases
            .iter()
            .rev()
            .find(|(id, _, _)| in_window(id))
            .map(|(_, _, ended)| *ended);
        if let (Some(out), Some(back)) = (out, back) {
            window.unavailable_seconds = Some(round(back - out));
        }
    }
}

fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Undoes the generation after a failed step and builds the failure report.
pub(super) fn fail(
    host: &Host,
    journal: &mut Journal,
    mut report: Report,
    msg: String,
    progress: &dyn Progress,
) -> Report {
    let outcome = super::undo::undo_generation(host, journal, progress);
    report.failed = true;
    report.changed = false;
    report.reboot_required = !outcome.reboot.is_empty();
    if outcome.problems.is_empty() {
        let _ = journal.finish(Status::Failed);
        report.exit = Exit::Failure;
        report.msg = format!(
            "{msg}\nevery change of generation {} was undone",
            journal.generation.id
        );
    } else {
        let _ = journal.finish(Status::FailedIncomplete);
        report.exit = Exit::Incomplete;
        report.changed = true;
        report.msg = format!(
            "{msg}\nthe automatic undo could not restore everything:\n  {}\nrun `provision rollback` after fixing the cause",
            outcome.problems.join("\n  ")
        );
    }
    report.warnings.extend(outcome.reboot);
    report.finish(host)
}
