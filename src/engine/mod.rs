//! plan -> facts -> steps -> check all -> apply in order -> verify; on
//! failure, undo the generation in reverse. `rollback` undoes the newest
//! applied generation. Every verb returns a [`Report`]; nothing here prints.

mod build;
mod report;

pub use build::{
    COMPAT_CONF, LOADER_CONF, NOUVEAU_CONF, PROFILE_SCRIPT, PlanRefused, build_steps,
    resolve_flavor,
};
pub use report::{AnsibleDiff, Exit, Report, StepReport};

use report::{pending, satisfied};

use crate::facts::{Facts, Options};
use crate::host::Host;
use crate::journal::{self, Journal, Lock, Status, Undo};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::step::{self, Action, Check, Context, Diff};

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
pub fn plan(host: &Host, plan: &Plan, progress: &dyn Progress) -> Report {
    let facts = gather(host);
    let mut warnings = Vec::new();
    let steps = match build_steps(plan, &facts, &mut warnings) {
        Ok(steps) => steps,
        Err(refused) => {
            let mut report = Report::failure(refused.to_string());
            report.warnings = warnings;
            return report.finish(host);
        }
    };
    let ctx = Context {
        host,
        facts: &facts,
        progress,
        writable: false,
    };
    let mut report = Report::new("");
    report.warnings = warnings;
    for step in &steps {
        match step.check(&ctx) {
            Ok(Check::Satisfied(summary)) => report.steps.push(satisfied(step.id(), summary)),
            Ok(Check::Pending(change)) => report.steps.push(pending(step.id(), change)),
            Err(error) => {
                report.failed = true;
                report.exit = Exit::Failure;
                report.msg = format!("{}: {error}", step.id());
                return report.finish(host);
            }
        }
    }
    let pending_count = report
        .steps
        .iter()
        .filter(|s| s.action != Action::None)
        .count();
    report.changed = pending_count > 0;
    report.reboot_required = reboot_needed(&facts);
    report.msg = if pending_count == 0 {
        "no changes: the host matches the plan".into()
    } else {
        format!("{pending_count} step(s) would change the host")
    };
    report.finish(host)
}

/// `provision apply`: check, then apply what is pending, journaled.
pub fn apply(
    host: &Host,
    plan: &Plan,
    progress: &dyn Progress,
    log_to: &dyn Fn(&std::path::Path),
) -> Report {
    let _lock = match Lock::acquire(&host.root) {
        Ok(lock) => lock,
        Err(error) => return Report::failure(error.to_string()).finish(host),
    };
    let mut facts = gather(host);
    let mut warnings = Vec::new();
    let steps = match build_steps(plan, &facts, &mut warnings) {
        Ok(steps) => steps,
        Err(refused) => {
            let mut report = Report::failure(refused.to_string());
            report.warnings = warnings;
            return report.finish(host);
        }
    };
    let mut report = Report::new("");
    report.warnings = warnings;
    let mut initial = Vec::new();
    {
        let ctx = Context {
            host,
            facts: &facts,
            progress,
            writable: true,
        };
        for step in &steps {
            match step.check(&ctx) {
                Ok(check) => initial.push(check),
                Err(error) => {
                    return Report::failure(format!("{}: cannot check: {error}", step.id()))
                        .finish(host);
                }
            }
        }
    }
    if initial.iter().all(|c| matches!(c, Check::Satisfied(_))) {
        report.steps = steps
            .iter()
            .zip(initial)
            .map(|(step, check)| match check {
                Check::Satisfied(summary) => satisfied(step.id(), summary),
                Check::Pending(change) => pending(step.id(), change),
            })
            .collect();
        report.msg = "no changes: the host matches the plan".into();
        report.reboot_required = reboot_needed(&facts);
        return report.finish(host);
    }

    let mut journal = match Journal::begin(&host.root, Some((&plan.path, &plan.sha256))) {
        Ok(journal) => journal,
        Err(error) => return Report::failure(error.to_string()).finish(host),
    };
    let log = journal::log_path(&host.root, journal.generation.id);
    log_to(&log);
    report.generation = Some(journal.generation.id);
    report.log = Some(log.to_string_lossy().into_owned());
    let driver_was_loaded = facts.kernel_driver.version.is_some();
    let mut packages_changed = false;

    for (step, first) in steps.iter().zip(initial) {
        let ctx = Context {
            host,
            facts: &facts,
            progress,
            writable: true,
        };
        // State may have moved under earlier steps: check again right before.
        let check = match step.check(&ctx) {
            Ok(check) => check,
            Err(error) => {
                return fail(
                    host,
                    &mut journal,
                    report,
                    format!("{}: cannot check: {error}", step.id()),
                    progress,
                );
            }
        };
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
        progress.step_started(&step.id(), &change.summary);
        let result = step.apply(&ctx, &mut journal);
        progress.step_finished(&step.id(), result.is_ok());
        if let Err(error) = result {
            report.steps.push(pending(step.id(), change));
            return fail(
                host,
                &mut journal,
                report,
                format!("{} failed: {error}", step.id()),
                progress,
            );
        }
        if step.id() == step::packages::ID {
            packages_changed = true;
        }
        report.steps.push(pending(step.id(), change));
        facts = gather(host);
    }

    // Converged? Every step must now be satisfied.
    let ctx = Context {
        host,
        facts: &facts,
        progress,
        writable: true,
    };
    for step in &steps {
        match step.check(&ctx) {
            Ok(Check::Satisfied(_)) => {}
            Ok(Check::Pending(change)) => {
                let msg = format!(
                    "{} did not converge: still pending after apply: {}",
                    step.id(),
                    change.summary
                );
                return fail(host, &mut journal, report, msg, progress);
            }
            Err(error) => {
                let msg = format!("{}: cannot verify: {error}", step.id());
                return fail(host, &mut journal, report, msg, progress);
            }
        }
    }
    report.changed = true;
    report.reboot_required = reboot_needed(&facts) || (packages_changed && driver_was_loaded);
    let _ = journal.set_reboot_required(report.reboot_required);
    if let Err(error) = journal.finish(Status::Applied) {
        report
            .warnings
            .push(format!("could not mark the generation applied: {error}"));
    }
    let changed = report
        .steps
        .iter()
        .filter(|s| s.action != Action::None)
        .count();
    report.msg = format!(
        "applied {changed} change(s) as generation {}",
        journal.generation.id
    );
    report.finish(host)
}

/// Undoes the generation after a failed step and builds the failure report.
fn fail(
    host: &Host,
    journal: &mut Journal,
    mut report: Report,
    msg: String,
    progress: &dyn Progress,
) -> Report {
    let problems = undo_generation(host, journal, progress);
    report.failed = true;
    report.changed = false;
    if problems.is_empty() {
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
            problems.join("\n  ")
        );
    }
    report.finish(host)
}

/// Runs the undo of every entry not yet undone, newest first; cache
/// refreshes (commands) run last. Returns what could not be undone.
pub fn undo_generation(host: &Host, journal: &mut Journal, progress: &dyn Progress) -> Vec<String> {
    let mut problems = Vec::new();
    let entries = journal.generation.entries.clone();
    // Every undo is idempotent, so the whole generation is replayed in
    // reverse, entries already undone included: when an earlier attempt
    // stopped half-way, a package restore that runs now may rebuild files
    // (an initramfs image) that an earlier-recorded entry restores after it.
    for (index, entry) in entries.iter().enumerate().rev() {
        if matches!(entry.undo, Undo::Command { .. }) {
            continue;
        }
        progress.step_started(&format!("undo {}", entry.step), "");
        let result: Result<(), String> = match &entry.undo {
            Undo::File {
                path,
                before,
                created_dirs,
            } => journal
                .restore_file(path, before)
                .map(|()| journal.remove_created_dirs(created_dirs))
                .map_err(|e| e.to_string()),
            Undo::Packages { manager, before } if manager == "apt" => {
                step::packages::undo(host, before).map_err(|e| e.to_string())
            }
            Undo::Packages { manager, before } if manager == "dnf" => {
                let release = crate::facts::os::version_id(&host.root);
                step::packages::dnf::undo(host, release.as_deref(), before)
                    .map_err(|e| e.to_string())
            }
            Undo::Packages { manager, .. } => Err(format!("unknown package manager {manager}")),
            Undo::Run { cmd } => crate::host::run_checked(host.runner.as_ref(), cmd)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Undo::Runfile { url, sha256, args } => {
                step::runfile::install(host, url, sha256, args).map_err(|e| e.to_string())
            }
            Undo::Command { .. } => Ok(()),
        };
        progress.step_finished(&format!("undo {}", entry.step), result.is_ok());
        match result {
            Ok(()) => {
                if let Err(error) = journal.mark_undone(index) {
                    problems.push(error.to_string());
                }
            }
            Err(error) => problems.push(format!("{}: {error}", entry.step)),
        }
    }
    let mut ran: Vec<String> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let Undo::Command { cmd } = &entry.undo else {
            continue;
        };
        if !ran.contains(&cmd.display()) {
            ran.push(cmd.display());
            if let Err(error) = crate::host::run_checked(host.runner.as_ref(), cmd) {
                problems.push(format!("{}: {error}", entry.step));
                continue;
            }
        }
        let _ = journal.mark_undone(index);
    }
    problems
}

/// `provision rollback`: undo the newest applied generation.
pub fn rollback(host: &Host, progress: &dyn Progress, log_to: &dyn Fn(&std::path::Path)) -> Report {
    let _lock = match Lock::acquire(&host.root) {
        Ok(lock) => lock,
        Err(error) => return Report::failure(error.to_string()).finish(host),
    };
    let generation = match journal::latest_undoable(&host.root) {
        Ok(Some(generation)) => generation,
        Ok(None) => return Report::new("nothing to roll back: no applied generation").finish(host),
        Err(error) => return Report::failure(error.to_string()).finish(host),
    };
    let mut journal = match Journal::open(&host.root, generation.id) {
        Ok(journal) => journal,
        Err(error) => return Report::failure(error.to_string()).finish(host),
    };
    let log = journal::log_path(&host.root, generation.id);
    log_to(&log);
    let mut report = Report::new("");
    report.generation = Some(generation.id);
    report.log = Some(log.to_string_lossy().into_owned());
    report.steps = generation
        .entries
        .iter()
        .rev()
        .map(|entry| StepReport {
            id: entry.step.clone(),
            action: Action::Update,
            summary: describe_undo(&entry.undo),
            diff: Diff::None,
            commands: Vec::new(),
        })
        .collect();
    let problems = undo_generation(host, &mut journal, progress);
    report.changed = !report.steps.is_empty();
    if problems.is_empty() {
        let _ = journal.finish(Status::RolledBack);
        report.msg = format!("rolled back generation {}", generation.id);
    } else {
        let _ = journal.finish(Status::RollbackIncomplete);
        report.failed = true;
        report.exit = Exit::Incomplete;
        report.msg = format!(
            "rollback of generation {} could not restore everything:\n  {}",
            generation.id,
            problems.join("\n  ")
        );
    }
    let facts = gather(host);
    report.reboot_required = generation.reboot_required || reboot_needed(&facts);
    report.finish(host)
}

fn describe_undo(undo: &Undo) -> String {
    match undo {
        Undo::File {
            path, before: None, ..
        } => format!("remove {path}"),
        Undo::File { path, .. } => format!("restore {path}"),
        Undo::Packages { before, .. } => format!(
            "return to the earlier package set ({} packages)",
            before.len()
        ),
        Undo::Command { cmd } | Undo::Run { cmd } => format!("run {cmd}"),
        Undo::Runfile { url, .. } => format!("install {url} again"),
    }
}
