//! Undoing a generation: after a failed step, for `provision rollback`, and
//! for a run that was killed half-way. Every undo is idempotent, so the
//! whole generation is replayed in reverse. On the running system the
//! driver swapped back is swapped live when nothing blocks it (the same
//! `[upgrade]` policy as the generation's), else left to a reboot.

use std::time::Duration;

use super::report::StepReport;
use super::{Report, gather, reboot_needed};
use crate::facts::Facts;
use crate::host::{Host, run_checked};
use crate::journal::{self, Journal, Lock, Status, Undo};
use crate::plan::{HolderPolicy, UpgradeSpec};
use crate::progress::Progress;
use crate::step::window::processes;
use crate::step::window::{modules, units};
use crate::step::{self, Action, Diff};
use crate::upgrade::{self, Swap};

/// What an undo could not do, and what only a reboot finishes.
#[derive(Debug, Default)]
pub struct Outcome {
    pub problems: Vec<String>,
    pub reboot: Vec<String>,
}

/// Runs the undo of every entry, newest first; cache refreshes (commands)
/// run last.
pub fn undo_generation(host: &Host, journal: &mut Journal, progress: &dyn Progress) -> Outcome {
    let mut outcome = Outcome::default();
    let entries = journal.generation.entries.clone();
    let upgrade = journal.generation.upgrade.clone().unwrap_or_default();
    // Every undo is idempotent, so the whole generation is replayed in
    // reverse, entries already undone included: when an earlier attempt
    // stopped half-way, a package restore that runs now may rebuild files
    // (an initramfs image) that an earlier-recorded entry restores after it.
    for (index, entry) in entries.iter().enumerate().rev() {
        if matches!(entry.undo, Undo::Command { .. }) {
            continue;
        }
        progress.step_started(&format!("undo {}", entry.step), "");
        let result = match &entry.undo {
            Undo::Undrain { resume, keep, .. } => {
                undrain(host, journal, &entries[index + 1..], resume, keep)
            }
            undo => undo_entry(host, journal, undo, &upgrade, &mut outcome),
        };
        progress.step_finished(&format!("undo {}", entry.step), result.is_ok());
        match result {
            Ok(()) => {
                if let Err(error) = journal.mark_undone(index) {
                    outcome.problems.push(error.to_string());
                }
            }
            Err(error) => outcome.problems.push(format!("{}: {error}", entry.step)),
        }
    }
    let mut ran: Vec<String> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let Undo::Command { cmd } = &entry.undo else {
            continue;
        };
        if !ran.contains(&cmd.display()) {
            ran.push(cmd.display());
            if let Err(error) = run_checked(host.runner.as_ref(), cmd) {
                outcome.problems.push(format!("{}: {error}", entry.step));
                continue;
            }
        }
        let _ = journal.mark_undone(index);
    }
    outcome
}

/// The node drained before the window: back in service when the drain
/// was all that happened (a drain_timeout, a refusal); kept drained, its
/// reason naming the log, when later changes had to be undone (a person
/// should look before jobs come back); left as it is by a rollback of a
/// generation that had resumed it.
fn undrain(
    host: &Host,
    journal: &Journal,
    later: &[journal::Entry],
    resume: &crate::host::Cmd,
    keep: &crate::host::Cmd,
) -> Result<(), String> {
    if journal.generation.status == Status::RollingBack {
        return Ok(());
    }
    let cmd = if later.is_empty() { resume } else { keep };
    run_checked(host.runner.as_ref(), cmd)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// When a generation began, to the nanosecond where the filesystem keeps
/// birth times (its log is made first), else the second after the one
/// its journal names.
fn generation_began(journal: &Journal) -> Option<std::time::SystemTime> {
    let log = journal::log_path(journal.root(), journal.generation.id);
    std::fs::metadata(log)
        .and_then(|meta| meta.created())
        .ok()
        .or_else(|| {
            let seconds = journal::unix_seconds(&journal.generation.started)? + 1;
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.try_into().ok()?))
        })
}

fn undo_entry(
    host: &Host,
    journal: &Journal,
    undo: &Undo,
    upgrade: &UpgradeSpec,
    outcome: &mut Outcome,
) -> Result<(), String> {
    match undo {
        Undo::File {
            path,
            before,
            created_dirs,
        } => journal
            .restore_file(path, before)
            .map(|()| journal.remove_created_dirs(created_dirs))
            .map_err(|e| e.to_string()),
        Undo::Tree { path, created_dirs } => host
            .root
            .remove_dir_all(path)
            .map(|()| journal.remove_created_dirs(created_dirs))
            .map_err(|e| e.to_string()),
        Undo::Packages {
            manager,
            before,
            modules,
        } => {
            place_modules(journal, modules)?;
            let returned = match manager.as_str() {
                "apt" => step::packages::undo(host, before).map_err(|e| e.to_string()),
                "dnf" => {
                    let release = crate::facts::os::version_id(&host.root);
                    let began = generation_began(journal);
                    step::packages::dnf::undo(host, release.as_deref(), before, began)
                        .map_err(|e| e.to_string())
                }
                other => Err(format!("unknown package manager {other}")),
            };
            for module in modules {
                let _ = host.root.remove_file(&module.path);
                if let Some(dir) = std::path::Path::new(&module.path).parent() {
                    let _ = std::fs::remove_dir(host.root.join(dir));
                }
            }
            returned?;
            settle_module(host, upgrade, outcome)
        }
        Undo::Run { cmd } => run_checked(host.runner.as_ref(), cmd)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Undo::Runfile { url, sha256, args } => {
            step::runfile::install(host, url, sha256, args).map_err(|e| e.to_string())
        }
        Undo::Command { .. } | Undo::Undrain { .. } => Ok(()),
        Undo::StartUnits { units } => start_units(host, units, outcome),
        Undo::StopUnits { units } => running(host, || {
            units::stop(
                host,
                units,
                Duration::from_secs(upgrade.stop_timeout.0),
                true,
            )
        }),
        Undo::RestartUnits { units } => running(host, || {
            let systemctl =
                |args: &[&str]| crate::host::Cmd::change("systemctl").args(args.iter().copied());
            run_checked(host.runner.as_ref(), &systemctl(&["daemon-reload"]))?;
            for unit in units {
                run_checked(host.runner.as_ref(), &systemctl(&["try-restart", unit]))?;
            }
            Ok(())
        }),
        Undo::LoadModules { modules } => load_modules(host, modules, outcome),
        Undo::UnloadModules { modules } => unload_modules(host, modules, outcome),
    }
}

/// Services and modules exist on the running system only: elsewhere their
/// undo has nothing to do.
fn running(
    host: &Host,
    action: impl FnOnce() -> Result<(), step::StepError>,
) -> Result<(), String> {
    if !host.root.is_host() {
        return Ok(());
    }
    action().map_err(|e| e.to_string())
}

/// The loaded module and the installed user space agree (or no module is
/// loaded): services can start.
fn driver_consistent(facts: &Facts) -> bool {
    facts.kernel_driver.version.is_some() && facts.kernel_driver.mismatch.is_none()
}

fn start_units(host: &Host, names: &[String], outcome: &mut Outcome) -> Result<(), String> {
    if !host.root.is_host() || names.is_empty() {
        return Ok(());
    }
    let facts = gather(host);
    if !driver_consistent(&facts) {
        outcome.reboot.push(format!(
            "{} start again at the next boot (the loaded module and the user space differ until then)",
            names.join(", ")
        ));
        return Ok(());
    }
    units::start(host, names).map_err(|e| e.to_string())
}

fn load_modules(host: &Host, names: &[String], outcome: &mut Outcome) -> Result<(), String> {
    if !host.root.is_host() {
        return Ok(());
    }
    let facts = gather(host);
    if facts.kernel_driver.version.is_some() && facts.kernel_driver.mismatch.is_some() {
        outcome.reboot.push(format!(
            "nvidia {} is still loaded: the restored driver loads at the next boot",
            facts.kernel_driver.version.as_deref().unwrap_or("")
        ));
        return Ok(());
    }
    modules::load(host, names).map_err(|e| e.to_string())
}

fn unload_modules(host: &Host, names: &[String], outcome: &mut Outcome) -> Result<(), String> {
    if !host.root.is_host() {
        return Ok(());
    }
    let facts = gather(host);
    let holders: Vec<String> = facts
        .holders
        .processes
        .iter()
        .map(|h| format!("pid {} ({})", h.pid, h.command))
        .collect();
    if !holders.is_empty() {
        outcome.reboot.push(format!(
            "{} hold the GPU: the module is swapped back at the next boot",
            holders.join(", ")
        ));
        return Ok(());
    }
    modules::unload(host, &facts, names).map_err(|e| e.to_string())
}

/// Puts the earlier release's built modules where its maintainer script
/// loads them (`step::build`).
fn place_modules(journal: &Journal, modules: &[journal::SavedModule]) -> Result<(), String> {
    for module in modules {
        journal
            .restore_file(&module.path, &Some(module.saved.clone()))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// After the packages went back: when a module of another release is
/// loaded (the generation's new driver, loaded at a boot since), swap it
/// for the restored one, draining the node under the generation's policy;
/// when a holder blocks that, the swap waits for a reboot.
fn settle_module(host: &Host, upgrade: &UpgradeSpec, outcome: &mut Outcome) -> Result<(), String> {
    if !host.root.is_host() {
        return Ok(());
    }
    let facts = gather(host);
    let driver = &facts.kernel_driver;
    let (Some(loaded), Some(_), Some(userspace)) =
        (&driver.version, &driver.mismatch, &driver.userspace)
    else {
        return Ok(());
    };
    let swap = Swap {
        before: Some(loaded.clone()),
        after: userspace.clone(),
    };
    let own = upgrade::ancestry_of_self(&host.root);
    let window = upgrade::window(&facts, upgrade, &swap, &own);
    let blockers = window.blockers();
    if !window.live || !blockers.is_empty() {
        let why = window
            .reboot_reason
            .clone()
            .unwrap_or_else(|| blockers.join("; "));
        outcome.reboot.push(format!(
            "nvidia {loaded} stays loaded until the next boot, which loads the restored {userspace}: {why}"
        ));
        return Ok(());
    }
    let timeout = Duration::from_secs(upgrade.stop_timeout.0);
    let kill = upgrade.holders == HolderPolicy::Terminate;
    let swap_back = || -> Result<(), step::StepError> {
        units::stop(host, &window.stop, timeout, kill)?;
        let targets = processes::terminate_targets(&window);
        processes::end(host, &targets, timeout, &crate::progress::Silent)?;
        modules::unload(host, &gather(host), &window.unload)?;
        modules::load(host, &window.load)?;
        units::start(host, &window.start)
    };
    swap_back().map_err(|e| e.to_string())
}

/// A dpkg killed under a run (or by anything else) is finished first: apt
/// does nothing until it is, an undo included.
fn recover_dpkg(host: &Host, warnings: &mut Vec<String>) -> Result<(), String> {
    if !host.root.exists(crate::facts::packages::DPKG_STATUS) {
        return Ok(());
    }
    if step::packages::repair_dpkg(host).map_err(|e| e.to_string())? {
        warnings.push(
            "dpkg had been interrupted: `dpkg --configure -a` finished its work first".into(),
        );
    }
    Ok(())
}

/// A run killed half-way left its generation `applying` (or a rollback
/// left it `rolling-back`): before anything else, the next apply finishes
/// that, so nothing half-made is taken as done.
pub(super) fn recover_interrupted(
    host: &Host,
    progress: &dyn Progress,
    log_to: &dyn Fn(&std::path::Path),
    warnings: &mut Vec<String>,
) -> Result<(), Box<Report>> {
    recover_dpkg(host, warnings).map_err(|message| Box::new(Report::failure(message)))?;
    let generation = match journal::interrupted(&host.root) {
        Ok(Some(generation)) => generation,
        Ok(None) => return Ok(()),
        Err(error) => return Err(Box::new(Report::failure(error.to_string()))),
    };
    let rolling_back = generation.status == Status::RollingBack;
    let mut journal = Journal::open(&host.root, generation.id)
        .map_err(|error| Box::new(Report::failure(error.to_string())))?;
    log_to(&journal::log_path(&host.root, generation.id));
    let outcome = undo_generation(host, &mut journal, progress);
    let what = if rolling_back {
        "was being rolled back when the run was killed: its rollback was finished first"
    } else {
        "was interrupted (the run that applied it was killed): undone first"
    };
    if outcome.problems.is_empty() {
        let _ = journal.finish(if rolling_back {
            Status::RolledBack
        } else {
            Status::Failed
        });
        warnings.push(format!("generation {} {what}", generation.id));
        warnings.extend(outcome.reboot);
        Ok(())
    } else {
        let _ = journal.finish(if rolling_back {
            Status::RollbackIncomplete
        } else {
            Status::FailedIncomplete
        });
        Err(Box::new(Report::failure(format!(
            "generation {} was interrupted, and undoing it could not restore everything:\n  {}\nfix the cause, then run `provision rollback`",
            generation.id,
            outcome.problems.join("\n  ")
        ))))
    }
}

/// `provision rollback`: undo the newest applied generation.
pub fn rollback(
    host: &Host,
    progress: &dyn Progress,
    log_to: &dyn Fn(&std::path::Path),
    lock_timeout: Duration,
) -> Report {
    let waiting = |what: &str| progress.warn(what);
    let lock = match Lock::acquire_waiting(&host.root, "rollback", lock_timeout, &waiting) {
        Ok(lock) => lock,
        Err(error) => return Report::failure(error.to_string()).finish(host),
    };
    let started = super::report::unix_now();
    let mut report = rollback_locked(host, progress, log_to, &lock);
    report.held_lock = Some([started, super::report::unix_now()]);
    report.warnings.extend(lock.waited_for.clone());
    report
}

/// `rollback` once the lock is held.
fn rollback_locked(
    host: &Host,
    progress: &dyn Progress,
    log_to: &dyn Fn(&std::path::Path),
    lock: &Lock,
) -> Report {
    journal::sweep(&host.root);
    let mut warnings = Vec::new();
    if let Err(message) = recover_dpkg(host, &mut warnings) {
        return Report::failure(message).finish(host);
    }
    let interrupted = match journal::interrupted(&host.root) {
        Ok(interrupted) => interrupted,
        Err(error) => return Report::failure(error.to_string()).finish(host),
    };
    // An apply killed before it began its generation changed nothing: the
    // host is as it was before that plan, and rollback leaves it so (the
    // next rollback undoes the generation before).
    if interrupted.is_none()
        && let Some(note) = lock.interrupted.as_deref()
        && note.starts_with("apply ")
        && lock.interrupted_generation().is_none()
    {
        return Report::new(format!(
            "the apply that was killed ({note}) had changed nothing yet: nothing to roll back for it"
        ))
        .finish(host);
    }
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
    if let Err(error) = journal.set_status(Status::RollingBack) {
        return Report::failure(error.to_string()).finish(host);
    }
    let outcome = undo_generation(host, &mut journal, progress);
    report.changed = !report.steps.is_empty();
    if outcome.problems.is_empty() {
        let _ = journal.finish(Status::RolledBack);
        report.msg = format!("rolled back generation {}", generation.id);
    } else {
        let _ = journal.finish(Status::RollbackIncomplete);
        report.failed = true;
        report.exit = super::Exit::Incomplete;
        report.msg = format!(
            "rollback of generation {} could not restore everything:\n  {}",
            generation.id,
            outcome.problems.join("\n  ")
        );
    }
    let facts = gather(host);
    report.reboot_required = !outcome.reboot.is_empty() || reboot_needed(&facts);
    report.warnings = warnings;
    report.warnings.extend(outcome.reboot);
    report.finish(host)
}

fn describe_undo(undo: &Undo) -> String {
    match undo {
        Undo::File {
            path, before: None, ..
        } => format!("remove {path}"),
        Undo::File { path, .. } => format!("restore {path}"),
        Undo::Tree { path, .. } => format!("remove {path}/"),
        Undo::Packages { before, .. } => format!(
            "return to the earlier package set ({} packages)",
            before.len()
        ),
        Undo::Command { cmd } | Undo::Run { cmd } => format!("run {cmd}"),
        Undo::Runfile { url, .. } => format!("install {url} again"),
        Undo::StartUnits { units } => format!("start {} again", units.join(", ")),
        Undo::StopUnits { units } => format!("stop {}", units.join(", ")),
        Undo::RestartUnits { units } => format!("restart {}", units.join(", ")),
        Undo::LoadModules { modules } => format!("load {} again", modules.join(", ")),
        Undo::UnloadModules { modules } => format!("unload {}", modules.join(", ")),
        Undo::Undrain { node, .. } => {
            format!("resume node {node}, or keep it drained when changes were undone")
        }
    }
}
