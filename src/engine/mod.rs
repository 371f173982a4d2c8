//! plan -> facts -> steps -> check all -> apply in order -> verify; on
//! failure, undo the generation in reverse. `rollback` undoes the newest
//! applied generation. The maintenance window (a driver swapped under a
//! running node) is steps like any other (see `steps`). Every verb returns
//! a [`Report`]; nothing here prints.

mod build;
mod history;
mod recommended;
mod report;
mod run;
mod steps;
mod undo;

pub use build::DKMS_SIGNING_CONF;
pub use build::{
    COMPAT_CONF, LOADER_CONF, NOUVEAU_CONF, PROFILE_SCRIPT, PlanRefused, build_steps,
    cuda_repository, resolve_flavor,
};
pub use build::{container_repository, extra_packages};
pub use history::{History, history};
pub use report::{AnsibleDiff, Exit, Report, StepReport};
pub use undo::{rollback, undo_generation};

use report::{pending, satisfied};

use crate::facts::{Facts, Options};
use crate::host::Host;
use crate::journal::{self, Awaiting, Generation, Journal, Lock, Status};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::step::{Action, Check, Context};

fn gather(host: &Host) -> Facts {
    Facts::gather(
        host,
        Options {
            all_packages: true,
            ..Options::default()
        },
    )
}

/// nouveau holds the GPU now, or the loaded module is older than the
/// installed userspace: only a reboot (or a module reload) fixes either.
fn reboot_needed(facts: &Facts) -> bool {
    facts.nouveau.loaded == Some(true)
        || !facts.nouveau.bound.is_empty()
        || facts.kernel_driver.mismatch.is_some()
}

/// `provision plan`: every check, nothing changed.
pub fn plan(host: &Host, plan: &Plan, _progress: &dyn Progress) -> Report {
    let facts = gather(host);
    let (plan, recommendation) = match recommended::settle(plan, &facts) {
        Ok(settled) => settled,
        Err(message) => return Report::failure(message).finish(host),
    };
    let plan = plan.as_ref();
    let mut warnings = Vec::new();
    let waiting = match journal::awaiting_reboot(&host.root) {
        Ok(waiting) => waiting,
        Err(error) => return Report::failure(error.to_string()).finish(host),
    };
    let resuming = match waiting {
        Some(generation) => match resumable(plan, &facts, generation) {
            Ok(generation) => Some(generation),
            Err(report) => return report.finish(host),
        },
        None => None,
    };
    let ctx = Context {
        host,
        facts: &facts,
        progress: &crate::progress::Silent,
        writable: false,
    };
    // The host's history is read only when there is a window to compare.
    let with_last = |window: &mut Option<crate::upgrade::Window>| {
        if let Some(window) = window {
            window.last = history::last_window(&host.root);
        }
    };
    let built = match steps::steps(host, plan, &facts, resuming.as_ref(), &mut warnings) {
        Ok(mut built) => {
            with_last(&mut built.window);
            built
        }
        Err(mut refusal) => {
            with_last(&mut refusal.window);
            // A blocked window still shows what the plan would change.
            let mut shown = Report::new("");
            let _ = preview(&refusal.steps, &ctx, &mut shown);
            let mut report = refused(host, refusal, warnings);
            report.steps = shown.steps;
            report.recommendation = recommendation;
            return report;
        }
    };
    let mut report = Report::new("");
    report.warnings = warnings;
    report.recommendation = recommendation;
    if let Err(message) = preview(&built.steps, &ctx, &mut report) {
        report.failed = true;
        report.exit = Exit::Failure;
        report.msg = message;
        report.window = built.window;
        return report.finish(host);
    }
    let pending_count = report
        .steps
        .iter()
        .filter(|s| s.action != Action::None)
        .count();
    report.changed = pending_count > 0 || resuming.is_some();
    report.reboot_required = match &built.window {
        Some(window) => !window.live,
        None => plan.driver.is_some() && reboot_needed(&facts) && resuming.is_none(),
    };
    report.msg = match (&resuming, pending_count) {
        (Some(generation), _) => format!(
            "the reboot generation {} waited for happened: apply finishes it",
            generation.id
        ),
        (None, 0) => "no changes: the host matches the plan".into(),
        (None, count) => format!("{count} step(s) would change the host"),
    };
    report.window = built.window;
    report.finish(host)
}

/// Each step's check into `report`, in order; the first that cannot be
/// checked ends it with its message.
fn preview(
    steps: &[Box<dyn crate::step::Step>],
    ctx: &Context,
    report: &mut Report,
) -> Result<(), String> {
    for step in steps {
        match step.preview(ctx) {
            Ok(Check::Satisfied(summary)) => report.steps.push(satisfied(step.id(), summary)),
            Ok(Check::Pending(change)) => report.steps.push(pending(step.id(), change)),
            Err(error) => return Err(format!("{}: {error}", step.id())),
        }
    }
    Ok(())
}

/// The failure report of a refused plan, with the window when a holder
/// blocked it.
fn refused(host: &Host, refusal: Box<steps::Refusal>, warnings: Vec<String>) -> Report {
    let mut report = Report::failure(refusal.message);
    report.warnings = warnings;
    // What the window would need, blocked or not: plan and apply agree.
    report.reboot_required = refusal.window.as_ref().is_some_and(|w| !w.live);
    report.window = refusal.window;
    report.finish(host)
}

/// A generation awaits a reboot: after the reboot, the same plan finishes
/// it; before, apply only says so; another plan must wait.
fn resumable(
    plan: &Plan,
    facts: &Facts,
    generation: Generation,
) -> Result<Generation, Box<Report>> {
    let reason = generation
        .awaiting
        .as_ref()
        .map(|a| a.reason.clone())
        .unwrap_or_default();
    if generation.plan_sha256.as_deref() != Some(plan.sha256.as_str()) {
        return Err(Box::new(Report::failure(format!(
            "generation {} of another plan ({}) waits for a reboot ({reason}): reboot first, or `provision rollback` it",
            generation.id,
            generation.plan.as_deref().unwrap_or("unknown")
        ))));
    }
    let waited_for = generation.awaiting.as_ref().and_then(|a| a.boot_id.clone());
    if waited_for.is_some() && waited_for == facts.os.boot_id {
        let mut report = Report::new(format!(
            "generation {} waits for a reboot: {reason}",
            generation.id
        ));
        report.reboot_required = true;
        report.generation = Some(generation.id);
        return Err(Box::new(report));
    }
    Ok(generation)
}

/// `provision apply`: check, then apply what is pending, journaled.
pub fn apply(
    host: &Host,
    plan: &Plan,
    progress: &dyn Progress,
    log_to: &dyn Fn(&std::path::Path),
    lock_timeout: std::time::Duration,
) -> Report {
    let waiting = |what: &str| progress.warn(what);
    let mut lock = match Lock::acquire_waiting(&host.root, "apply", lock_timeout, &waiting) {
        Ok(lock) => lock,
        Err(error) => return Report::failure(error.to_string()).finish(host),
    };
    let started = report::unix_now();
    let mut report = apply_locked(host, plan, progress, log_to, &mut lock);
    report.held_lock = Some([started, report::unix_now()]);
    report.warnings.extend(lock.waited_for.clone());
    report
}

/// `apply` once the lock is held.
fn apply_locked(
    host: &Host,
    plan: &Plan,
    progress: &dyn Progress,
    log_to: &dyn Fn(&std::path::Path),
    lock: &mut Lock,
) -> Report {
    let mut warnings = Vec::new();
    if let Err(report) = undo::recover_interrupted(host, progress, log_to, &mut warnings) {
        return report.finish(host);
    }
    let swept = journal::sweep(&host.root);
    if swept > 0 {
        warnings.push(format!(
            "removed {swept} temporary file(s) a killed run left beside the files it was writing"
        ));
    }
    let facts = gather(host);
    let (plan, recommendation) = match recommended::settle(plan, &facts) {
        Ok(settled) => settled,
        Err(message) => return Report::failure(message).finish(host),
    };
    let plan = plan.as_ref();
    let resuming = match journal::awaiting_reboot(&host.root) {
        Ok(Some(generation)) => match resumable(plan, &facts, generation) {
            Ok(generation) => Some(generation),
            Err(report) => return report.finish(host),
        },
        Ok(None) => None,
        Err(error) => return Report::failure(error.to_string()).finish(host),
    };
    let built = match steps::steps(host, plan, &facts, resuming.as_ref(), &mut warnings) {
        Ok(built) => built,
        Err(refusal) => {
            let mut report = refused(host, refusal, warnings);
            report.recommendation = recommendation;
            return report;
        }
    };
    if built.window.is_some() && !host.root.is_host() {
        return refused(
            host,
            Box::new(steps::Refusal {
                message: format!(
                    "this plan swaps the driver of a running system, and {} is not this system: run provision on the host itself (no --root)",
                    host.root.path().display()
                ),
                window: built.window,
                steps: Vec::new(),
            }),
            warnings,
        );
    }
    let run = run::Apply {
        host,
        plan,
        progress,
        log_to,
    };
    let mut report = run.run(facts, built, resuming, warnings, lock);
    report.recommendation = recommendation;
    report
}

/// Opens the generation this apply writes: a new one, or the one a reboot
/// finishes.
fn open_generation<'a>(
    host: &'a Host,
    plan: &Plan,
    resuming: Option<&Generation>,
    lock: &mut Lock,
) -> Result<Journal<'a>, journal::JournalError> {
    let mut journal = match resuming {
        Some(generation) => {
            lock.note_generation(generation.id);
            Journal::open(&host.root, generation.id)?
        }
        None => Journal::begin(&host.root, Some((&plan.path, &plan.sha256)), lock)?,
    };
    journal.set_upgrade(&plan.upgrade)?;
    Ok(journal)
}

/// Records the end of a successful apply: applied, or waiting for a reboot.
fn close_generation(
    journal: &mut Journal,
    report: &mut Report,
    facts: &Facts,
    plan: &Plan,
) -> Result<(), journal::JournalError> {
    journal.generation.unavailable_seconds =
        report.window.as_ref().and_then(|w| w.unavailable_seconds);
    journal.generation.build_seconds = report
        .phases
        .iter()
        .find(|p| p.phase == "build")
        .map(|p| p.seconds);
    match &report.window {
        Some(window) if !window.live => {
            journal.set_awaiting(Some(Awaiting {
                reason: window.reboot_reason.clone().unwrap_or_default(),
                boot_id: facts.os.boot_id.clone(),
                start: window.stop.iter().rev().cloned().collect(),
                plan: Some(crate::step::window::reboot::kept_plan(&plan.sha256)),
            }))?;
            journal.set_reboot_required(true)?;
            // Debian's convention (update-notifier, needrestart): /run is
            // a tmpfs, so the flag is gone after the reboot.
            if journal.root().is_host() {
                let _ = journal.root().write_atomic(
                    crate::step::window::reboot::REBOOT_REQUIRED,
                    b"*** System restart required *** (provision: a driver upgrade)\n",
                    0o644,
                );
            }
            journal.finish(Status::AwaitingReboot)
        }
        _ => {
            journal.set_awaiting(None)?;
            journal.set_reboot_required(report.reboot_required)?;
            journal.finish(Status::Applied)
        }
    }
}
