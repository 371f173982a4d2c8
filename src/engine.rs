//! plan -> facts -> steps -> check all -> apply in order -> verify; on
//! failure, undo the generation in reverse. `rollback` undoes the newest
//! applied generation. Every verb returns a [`Report`]; nothing here prints.

use serde::Serialize;

use crate::distro;
use crate::facts::{Facts, Options};
use crate::host::{CommandRecord, Host};
use crate::journal::{self, Journal, Lock, Status, Undo};
use crate::plan::{Flavor, Loader, Plan};
use crate::progress::Progress;
use crate::step::file::{ManagedFile, header};
use crate::step::initramfs::Initramfs;
use crate::step::ldconfig::Ldconfig;
use crate::step::{self, Action, Check, Context, Diff, Step};

pub const NOUVEAU_CONF: &str = "/etc/modprobe.d/provision-nouveau.conf";
pub const PROFILE_SCRIPT: &str = "/etc/profile.d/provision-cuda.sh";
pub const LOADER_CONF: &str = "/etc/ld.so.conf.d/provision-cuda.conf";
/// Sorts before the distributions' own library directories (x86_64-linux-gnu.conf).
pub const COMPAT_CONF: &str = "/etc/ld.so.conf.d/00-provision-cuda-compat.conf";

/// The process exit codes (documented in `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    /// `plan --detailed-exitcode` only: changes are pending.
    Pending = 2,
    /// Failed, and the automatic undo could not restore everything.
    Incomplete = 3,
}

/// What a verb did or would do: printed as a diff or as one JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub changed: bool,
    pub failed: bool,
    pub msg: String,
    pub reboot_required: bool,
    pub steps: Vec<StepReport>,
    pub warnings: Vec<String>,
    /// The journal generation written, if any.
    pub generation: Option<u64>,
    /// Full output of every command of this run.
    pub log: Option<String>,
    /// Every command run, read-only ones too.
    pub commands: Vec<CommandRecord>,
    /// Ansible's `--diff` form.
    pub diff: AnsibleDiff,
    #[serde(skip)]
    pub exit: Exit,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AnsibleDiff {
    pub prepared: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub action: Action,
    pub summary: String,
    pub diff: Diff,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

impl Report {
    fn new(msg: impl Into<String>) -> Report {
        Report {
            changed: false,
            failed: false,
            msg: msg.into(),
            reboot_required: false,
            steps: Vec::new(),
            warnings: Vec::new(),
            generation: None,
            log: None,
            commands: Vec::new(),
            diff: AnsibleDiff::default(),
            exit: Exit::Success,
        }
    }

    pub fn failure(msg: impl Into<String>) -> Report {
        Report {
            failed: true,
            exit: Exit::Failure,
            ..Report::new(msg)
        }
    }

    fn finish(mut self, host: &Host) -> Report {
        self.commands = host.runner.records();
        self.diff.prepared = crate::output::prepared_diff(&self.steps);
        self
    }
}

/// Why a plan cannot go ahead on this host, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PlanRefused {
    #[error("{0}")]
    Refused(String),
}

fn satisfied(id: String, summary: String) -> StepReport {
    StepReport {
        id,
        action: Action::None,
        summary,
        diff: Diff::None,
        commands: Vec::new(),
    }
}

fn pending(id: String, change: step::Change) -> StepReport {
    StepReport {
        id,
        action: change.action,
        summary: change.summary,
        diff: change.diff,
        commands: change.commands,
    }
}

/// The flavour to install: the plan's, or for `auto` the one the GPUs need.
pub fn resolve_flavor(plan: &Plan, facts: &Facts) -> Result<Flavor, PlanRefused> {
    if plan.driver.flavor != Flavor::Auto {
        return Ok(plan.driver.flavor);
    }
    let gpus: Vec<_> = facts.gpu_devices().collect();
    if gpus.is_empty() {
        return Err(PlanRefused::Refused(
            "flavor = \"auto\" needs a GPU to choose from, and none is present (an image being baked?): \
             set [driver] flavor = \"open\" (Turing and newer) or \"proprietary\" (Maxwell, Pascal, Volta)"
                .into(),
        ));
    }
    let supports = |flavor: &str| {
        gpus.iter()
            .all(|g| g.flavors.is_empty() || g.flavors.iter().any(|f| f == flavor))
    };
    if supports("open") {
        Ok(Flavor::Open)
    } else if supports("proprietary") {
        Ok(Flavor::Proprietary)
    } else {
        Err(PlanRefused::Refused(
            "the GPUs in this host need different kernel-module flavours (open for Blackwell, proprietary before Turing): \
             one driver cannot serve them all"
                .into(),
        ))
    }
}

/// The steps of `plan` on this host, in apply order.
pub fn build_steps(
    plan: &Plan,
    facts: &Facts,
    warnings: &mut Vec<String>,
) -> Result<Vec<Box<dyn Step>>, PlanRefused> {
    if facts.gpu_devices().next().is_none() {
        warnings.push(
            "no NVIDIA GPU is present (an image being baked, or a CI runner): the plan is applied without GPU checks".into(),
        );
    }
    let validation = crate::compat::validate::validate(plan, facts);
    warnings.extend(validation.warnings.iter().cloned());
    if !validation.problems.is_empty() {
        return Err(PlanRefused::Refused(format!(
            "the plan cannot work on this host:\n  - {}",
            validation.problems.join("\n  - ")
        )));
    }
    let flavor = resolve_flavor(plan, facts)?;
    let desired = distro::desired(plan, facts, flavor, validation.compat_package.as_deref())
        .map_err(|e| PlanRefused::Refused(e.to_string()))?;
    let mut steps: Vec<Box<dyn Step>> = Vec::new();

    // 1. nouveau out of the way (file now, initramfs after the packages).
    let blacklist = format!(
        "{}blacklist nouveau\noptions nouveau modeset=0\n",
        header("keep nouveau from binding NVIDIA GPUs")
    );
    let equivalent = facts
        .nouveau
        .files
        .iter()
        .filter(|f| f.path != NOUVEAU_CONF)
        .find(|f| (f.blacklist || f.install_disabled) && f.modeset_off)
        .map(|f| f.path.clone());
    steps.push(Box::new(ManagedFile {
        id: "nouveau:blacklist".into(),
        path: NOUVEAU_CONF.into(),
        content: plan.nouveau.disable.then(|| blacklist.clone()),
        mode: 0o644,
        equivalent: equivalent.clone(),
    }));

    // 2. packages.
    let toolkit_home = desired.toolkit_home.clone();
    let compat_dir = desired.compat_dir.clone();
    let toolkit_on_path = desired.toolkit_on_path;
    steps.push(Box::new(step::packages::Packages { desired }));

    // 3. environment of the default toolkit.
    let default_toolkit = plan.toolkit.as_ref().filter(|t| t.default);
    let home = default_toolkit.and(toolkit_home);
    let needs_env = home.is_some() && !toolkit_on_path;
    let lib_dir = home
        .as_ref()
        .map(|h| format!("{h}/targets/x86_64-linux/lib"));
    let profile = match (&home, needs_env) {
        (Some(home), true)
            if plan.environment.path || plan.environment.loader == Loader::Profile =>
        {
            let mut text = header("CUDA toolkit environment for login shells");
            if plan.environment.path {
                text.push_str(&format!(
                    "export CUDA_HOME={home}\ncase \":${{PATH}}:\" in\n  *\":{home}/bin:\"*) ;;\n  *) export PATH=\"{home}/bin${{PATH:+:${{PATH}}}}\" ;;\nesac\n"
                ));
            }
            if plan.environment.loader == Loader::Profile
                && let Some(lib) = &lib_dir
            {
                text.push_str(&format!(
                    "case \":${{LD_LIBRARY_PATH}}:\" in\n  *\":{lib}:\"*) ;;\n  *) export LD_LIBRARY_PATH=\"{lib}${{LD_LIBRARY_PATH:+:${{LD_LIBRARY_PATH}}}}\" ;;\nesac\n"
                ));
            }
            Some(text)
        }
        _ => None,
    };
    steps.push(Box::new(ManagedFile {
        id: "environment:profile".into(),
        path: PROFILE_SCRIPT.into(),
        content: profile,
        mode: 0o644,
        equivalent: None,
    }));
    let mut loader_dirs: Vec<String> = match (&lib_dir, needs_env, plan.environment.loader) {
        (Some(lib), true, Loader::LdSoConf) => vec![lib.clone()],
        _ => Vec::new(),
    };
    // The compat libcuda goes in a file that sorts before the distribution's
    // own library directories, so the loader finds it before the driver's
    // libcuda. provision installs it only while the planned driver is older
    // than what it carries, and removes both when the plan no longer needs
    // them: it never shadows a newer driver.
    let compat_conf = compat_dir.as_ref().map(|dir| {
        format!(
            "{}{dir}\n",
            header("forward-compatibility libcuda, newer than the driver, found first")
        )
    });
    steps.push(Box::new(ManagedFile {
        id: "compat:loader".into(),
        path: COMPAT_CONF.into(),
        content: compat_conf.clone(),
        mode: 0o644,
        equivalent: None,
    }));
    if let Some(dir) = &compat_dir {
        loader_dirs.push(dir.clone());
    }
    let loader_conf = (!loader_dirs.is_empty()).then(|| {
        let mut text = header("CUDA toolkit libraries for every process");
        for dir in &loader_dirs {
            text.push_str(dir);
            text.push('\n');
        }
        text
    });
    steps.push(Box::new(ManagedFile {
        id: "environment:loader".into(),
        path: LOADER_CONF.into(),
        content: loader_conf.clone(),
        mode: 0o644,
        equivalent: None,
    }));
    steps.push(Box::new(Ldconfig {
        dirs: loader_dirs,
        conf: vec![
            (LOADER_CONF.into(), loader_conf),
            (COMPAT_CONF.into(), compat_conf),
        ],
    }));

    // 4. initramfs images carry the blacklist.
    if plan.nouveau.disable {
        // provision's own file counts when it writes one (no equivalent, or
        // it owns one already); a vendor's equivalent file counts as it is.
        let ours = equivalent.is_none() || facts_has(facts, NOUVEAU_CONF);
        let mut blacklist_files = vec![NOUVEAU_CONF.to_string()];
        blacklist_files.extend(equivalent);
        steps.push(Box::new(Initramfs {
            blacklist_files,
            blacklist: ours.then(|| (NOUVEAU_CONF.to_string(), blacklist)),
            family: facts.os.family,
        }));
    }
    Ok(steps)
}

/// Whether `path` exists in the root the facts were read from.
fn facts_has(facts: &Facts, path: &str) -> bool {
    crate::host::Root::new(&facts.root)
        .map(|root| root.exists(path))
        .unwrap_or(false)
}

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
                report.msg = format!("{}: cannot check: {error}", step.id());
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
            Undo::File { path, before } => journal
                .restore_file(path, before)
                .map_err(|e| e.to_string()),
            Undo::Packages { manager, before } if manager == "apt" => {
                step::packages::undo(host, before).map_err(|e| e.to_string())
            }
            Undo::Packages { manager, .. } => Err(format!("unknown package manager {manager}")),
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
        Undo::File { path, before: None } => format!("remove {path}"),
        Undo::File { path, .. } => format!("restore {path}"),
        Undo::Packages { before, .. } => format!(
            "return to the earlier package set ({} packages)",
            before.len()
        ),
        Undo::Command { cmd } => format!("run {cmd}"),
    }
}
