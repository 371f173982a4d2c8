//! The whole step list of one run: the plan's steps (`build`), and around
//! the step that replaces the driver under a loaded module, the
//! maintenance window (`upgrade::policy` decides, this splices): drain
//! before it, restore after the host files and before persistence, verify
//! at the end, or the reboot that finishes it.

use std::sync::{Arc, Mutex};

use super::build::{PlanRefused, build_steps};
use crate::facts::Facts;
use crate::facts::os::Family;
use crate::host::Host;
use crate::journal::Generation;
use crate::plan::{Drain, DriverTarget, HolderPolicy, Plan};
use crate::progress::Silent;
use crate::step::window::cdi::{self, Cdi};
use crate::step::window::drain::{DrainNode, DrainReport, ResumeNode, Scheduler};
use crate::step::window::modules::{Load, Unload};
use crate::step::window::processes::{Terminate, terminate_targets};
use crate::step::window::reboot::{Reboot, Resumed};
use crate::step::window::starts::{HoldStarts, ReleaseStarts};
use crate::step::window::units::{RestartUnits, StartUnits, StopUnits};
use crate::step::{Context, DriverChange, Step, persistence, verify};
use crate::upgrade::{self, HolderAction, Swap, Window};

/// The steps of one run and what `plan` shows about the window.
pub struct Steps {
    pub steps: Vec<Box<dyn Step>>,
    pub window: Option<Window>,
    /// Filled by the verify step, when there is one.
    pub verification: Arc<Mutex<Option<verify::Verification>>>,
    /// Filled by the drain step, when there is one.
    pub drain: Arc<Mutex<Option<DrainReport>>>,
}

/// Why the steps could not be built: the plan is refused, or a holder
/// blocks the window (which is shown all the same).
pub struct Refusal {
    pub message: String,
    pub window: Option<Window>,
    /// The plan's own steps, when only the window blocked it: `plan`
    /// shows them beside the blocked window.
    pub steps: Vec<Box<dyn Step>>,
}

impl From<PlanRefused> for Refusal {
    fn from(refused: PlanRefused) -> Refusal {
        Refusal {
            message: refused.to_string(),
            window: None,
            steps: Vec::new(),
        }
    }
}

/// Every step of `plan` on this host, the window included. `resuming`: a
/// generation that waited for a reboot and now finishes.
pub fn steps(
    host: &Host,
    plan: &Plan,
    facts: &Facts,
    resuming: Option<&Generation>,
    warnings: &mut Vec<String>,
) -> Result<Steps, Box<Refusal>> {
    let steps = build_steps(plan, facts, warnings).map_err(|r| Box::new(r.into()))?;
    if plan.driver.as_ref().is_some_and(|d| d.persistence)
        && !facts.services.systemd
        && !host.has_tool("systemctl")
    {
        warnings.push(format!(
            "{}: [driver] persistence is not set up (start nvidia-persistenced some other way)",
            persistence::no_systemctl(facts)
        ));
    }
    let mut built = Steps {
        steps,
        window: None,
        verification: Arc::new(Mutex::new(None)),
        drain: Arc::new(Mutex::new(None)),
    };
    if let Some(generation) = resuming {
        let restore = resume_steps(plan, facts, generation);
        insert_before_persistence(&mut built.steps, restore);
        built.push_verify(plan);
        let scheduler = scheduler(host, plan).map_err(|message| {
            Box::new(Refusal {
                message,
                window: None,
                steps: Vec::new(),
            })
        })?;
        if let Some(scheduler) = scheduler {
            built.steps.push(Box::new(ResumeNode { scheduler }));
        }
        built.steps.push(Box::new(Resumed {
            plan_sha256: plan.sha256.clone(),
        }));
        return Ok(built);
    }
    let ctx = Context {
        host,
        facts,
        progress: &Silent,
        writable: false,
    };
    if plan.driver.is_none() {
        return Ok(built); // the driver underneath is not the plan's to swap
    }
    let change = driver_change(&built.steps, &ctx).map_err(|message| {
        Box::new(Refusal {
            message,
            window: None,
            steps: Vec::new(),
        })
    })?;
    if let Some((index, change)) = change {
        add_window(host, plan, facts, &mut built, index, change)?;
    }
    if let Some(window) = &built.window {
        warnings.extend(deferred_holders_warning(window));
    }
    Ok(built)
}

impl Steps {
    fn push_verify(&mut self, plan: &Plan) {
        let Some(driver) = &plan.driver else {
            return; // a toolkit-only plan leaves the driver as it is
        };
        self.steps.push(Box::new(verify::Verify {
            target: driver.target.clone(),
            persistence: driver.persistence,
            signing: plan.signing.as_ref().map(|s| s.cert.clone()),
            compute: plan.verify.compute,
            dcgm_diag: plan.dcgm_diag,
            result: self.verification.clone(),
        }));
    }
}

/// The window around the step at `index`, which changes the driver; an
/// image (nothing runs) gets verify only.
fn add_window(
    host: &Host,
    plan: &Plan,
    facts: &Facts,
    built: &mut Steps,
    index: usize,
    change: DriverChange,
) -> Result<(), Box<Refusal>> {
    let swap = Swap {
        before: facts.kernel_driver.version.clone(),
        after: change.after,
    };
    let nothing_runs = !facts.os.booted() && swap.before.is_none();
    // The packages catch up with the module already loaded (after a
    // rollback that waits for its reboot): nothing to swap either.
    if nothing_runs || swap.before.as_deref() == Some(swap.after.as_str()) {
        if let Some(build) = built.steps[index].prebuilder() {
            built.steps.insert(index, build);
        }
        built.push_verify(plan);
        return Ok(());
    }
    let step = built.steps[index].as_ref();
    let window = window_around(host, plan, facts, step, &swap);
    if let Some(message) = refused(&window, step, &swap) {
        return Err(Box::new(Refusal {
            message,
            window: Some(window),
            steps: std::mem::take(&mut built.steps),
        }));
    }
    let scheduler = scheduler(host, plan).map_err(|message| {
        Box::new(Refusal {
            message,
            window: Some(window.clone()),
            steps: Vec::new(),
        })
    })?;
    let drain = scheduler.clone().map(|scheduler| DrainNode {
        scheduler,
        why: format!(
            "driver {} -> {}",
            swap.before.as_deref().unwrap_or("none"),
            swap.after
        ),
        timeout: std::time::Duration::from_secs(plan.upgrade.drain_timeout),
        report: built.drain.clone(),
    });
    // Debian's package scripts start the services they ship (policy-rc.d
    // governs them); RPM's try-restart leaves a stopped service stopped.
    let scripts_start = facts.os.family == Some(Family::Debian)
        && built.steps[index].id() == crate::step::packages::ID;
    splice(&mut built.steps, index, &window, plan, drain, scripts_start);
    if window.live {
        built.push_verify(plan);
        if let Some(scheduler) = scheduler {
            built.steps.push(Box::new(ResumeNode { scheduler }));
        }
    }
    built.window = Some(window);
    Ok(())
}

/// The window of `swap` for the driver's `step`: its policy, the CDI
/// specifications a live swap regenerates, and what builds inside it.
fn window_around(host: &Host, plan: &Plan, facts: &Facts, step: &dyn Step, swap: &Swap) -> Window {
    let own = upgrade::ancestry_of_self(&host.root);
    let mut window = upgrade::window(facts, &plan.upgrade, swap, &own);
    if window.live && window.module.before.is_some() {
        window.cdi = cdi::SPECS
            .iter()
            .filter(|spec| host.root.exists(spec))
            .map(|spec| spec.to_string())
            .collect();
    }
    if window.live && step.prebuilder().is_none() {
        window.build_inside = step.builds_inside();
    }
    window
}

/// Why the window cannot run: a runfile that would wait for a reboot, or
/// the processes that block the swap.
fn refused(window: &Window, step: &dyn Step, swap: &Swap) -> Option<String> {
    if let Some(message) = runfile_cannot_wait(window, step) {
        return Some(message);
    }
    let blockers = window.blockers();
    (!blockers.is_empty()).then(|| {
        format!(
            "the driver swap ({} -> {}) is blocked by processes holding the GPU:\n  - {}",
            swap.before.as_deref().unwrap_or("none"),
            swap.after,
            blockers.join("\n  - ")
        )
    })
}

/// The scheduler the node is drained through, if the plan names one:
/// Slurm (the node named `slurm_node`, else the host's short name), or the
/// plan's own commands.
fn scheduler(host: &Host, plan: &Plan) -> Result<Option<Scheduler>, String> {
    let upgrade = &plan.upgrade;
    if let (Some(drain), Some(resume)) = (&upgrade.drain_command, &upgrade.resume_command) {
        return Ok(Some(Scheduler::Commands {
            drain: drain.clone(),
            resume: resume.clone(),
        }));
    }
    if upgrade.drain != Drain::Slurm {
        return Ok(None);
    }
    let node = upgrade
        .slurm_node
        .as_ref()
        .map(|n| n.0.clone())
        .or_else(|| {
            ["/proc/sys/kernel/hostname", "/etc/hostname"]
                .iter()
                .find_map(|path| host.root.read_trimmed(path).ok().flatten())
                .filter(|name| !name.is_empty())
                .map(|name| name.split('.').next().unwrap_or(&name).to_string())
        });
    match node {
        Some(node) => Ok(Some(Scheduler::Slurm { node })),
        None => Err(format!(
            "{}: [upgrade] drain = \"slurm\": the host name cannot be read here; set [upgrade] slurm_node to the node's Slurm name",
            plan.at("upgrade")
        )),
    }
}

/// nvidia-installer does not install over a loaded module it cannot
/// unload: a runfile's swap cannot wait for a reboot.
fn runfile_cannot_wait(window: &Window, step: &dyn Step) -> Option<String> {
    let waits = !window.live && window.module.before.is_some();
    (waits && step.id() == "runfile:driver").then(|| {
        format!(
            "source = \"runfile\" cannot leave the swap to a reboot ({}): nvidia-installer does not install while the nvidia module is loaded; let the window unload it, or install the driver from packages",
            window.reboot_reason.as_deref().unwrap_or("")
        )
    })
}

/// Work left running across a swap that waits for a reboot: what a new GPU
/// process meets until then.
fn deferred_holders_warning(window: &Window) -> Option<String> {
    let running: Vec<String> = window
        .holders
        .iter()
        .filter(|h| h.action == HolderAction::RunsUntilReboot)
        .map(|h| format!("pid {} ({})", h.pid, h.comm))
        .collect();
    (!running.is_empty()).then(|| {
        format!(
            "{} hold the GPU and run on until the reboot; GPU processes started before it, once the new user space is installed, fail with \"Driver/library version mismatch\": drain the node first",
            running.join(", ")
        )
    })
}

/// The step that changes the driver and how, or for a host whose module
/// and user space already differ (an unattended upgrade), the reload that
/// makes them agree.
fn driver_change(
    steps: &[Box<dyn Step>],
    ctx: &Context,
) -> Result<Option<(usize, DriverChange)>, String> {
    for (index, step) in steps.iter().enumerate() {
        if let Some(change) = step
            .driver_change(ctx)
            .map_err(|e| format!("{}: {e}", step.id()))?
        {
            return Ok(Some((index, change)));
        }
    }
    let driver = &ctx.facts.kernel_driver;
    if let (Some(_), Some(userspace)) = (&driver.mismatch, &driver.userspace) {
        let index = position(steps, persistence::ID).unwrap_or(steps.len());
        return Ok(Some((
            index,
            DriverChange {
                before: Some(userspace.clone()),
                after: userspace.clone(),
            },
        )));
    }
    Ok(None)
}

fn position(steps: &[Box<dyn Step>], id: &str) -> Option<usize> {
    steps.iter().position(|s| s.id() == id)
}

fn insert_before_persistence(steps: &mut Vec<Box<dyn Step>>, restore: Vec<Box<dyn Step>>) {
    let at = position(steps, persistence::ID).unwrap_or(steps.len());
    for (offset, step) in restore.into_iter().enumerate() {
        steps.insert(at + offset, step);
    }
}

/// Drain before step `index`, restore after the host files (verify comes
/// last); or, when the module waits for a boot, the reboot step last.
fn splice(
    steps: &mut Vec<Box<dyn Step>>,
    index: usize,
    window: &Window,
    plan: &Plan,
    node: Option<DrainNode>,
    scripts_start: bool,
) {
    let timeout = std::time::Duration::from_secs(plan.upgrade.stop_timeout.0);
    let mut drain: Vec<Box<dyn Step>> = Vec::new();
    let loaded = window.module.before.is_some();
    if loaded && let Some(download) = steps.get(index).and_then(|s| s.downloader()) {
        drain.push(download);
    }
    // The module is built before anything is stopped: the window holds the
    // install only.
    if let Some(build) = steps.get(index).and_then(|s| s.prebuilder()) {
        drain.push(build);
    }
    if loaded {
        if let Some(node) = node {
            drain.push(Box::new(node));
        }
        if !window.stop.is_empty() {
            drain.push(Box::new(StopUnits {
                units: window.stop.clone(),
                timeout,
                kill: plan.upgrade.holders == HolderPolicy::Terminate,
            }));
        }
        let targets = terminate_targets(window);
        if !targets.is_empty() {
            drain.push(Box::new(Terminate { targets, timeout }));
        }
        if !window.unload.is_empty() {
            drain.push(Box::new(Unload {
                modules: window.unload.clone(),
                version: window.module.before.clone(),
            }));
        }
    }
    let hold_starts = scripts_start && window.live && !window.start.is_empty();
    if hold_starts {
        drain.push(Box::new(HoldStarts {
            units: window.start.clone(),
        }));
    }
    let after = index + drain.len() + 1;
    for (offset, step) in drain.into_iter().enumerate() {
        steps.insert(index + offset, step);
    }
    if hold_starts {
        steps.insert(after, Box::new(ReleaseStarts));
    }
    if !window.live {
        steps.push(Box::new(Reboot {
            reason: window.reboot_reason.clone().unwrap_or_default(),
            plan_bytes: plan.bytes.clone(),
            plan_sha256: plan.sha256.clone(),
        }));
        return;
    }
    insert_before_persistence(steps, restore_steps(window));
}

/// What follows the driver's change in a live window: the module in, the
/// CDI specification, the services, what reads the driver at its start.
fn restore_steps(window: &Window) -> Vec<Box<dyn Step>> {
    let mut restore: Vec<Box<dyn Step>> = vec![Box::new(Load {
        modules: window.load.clone(),
        after: window.module.after.clone(),
    })];
    if !window.cdi.is_empty() {
        restore.push(Box::new(Cdi {
            specs: window.cdi.clone(),
        }));
    }
    if !window.start.is_empty() {
        restore.push(Box::new(StartUnits {
            units: window.start.clone(),
        }));
    }
    if !window.restart.is_empty() {
        restore.push(Box::new(RestartUnits {
            units: window.restart.clone(),
        }));
    }
    restore
}

/// After the reboot a generation waited for: the module loaded (udev or
/// modules-load.d usually did it at boot), the services it stopped
/// started again.
fn resume_steps(plan: &Plan, facts: &Facts, generation: &Generation) -> Vec<Box<dyn Step>> {
    let after = match plan.driver.as_ref().map(|d| &d.target) {
        Some(DriverTarget::Version(version)) => version.to_string(),
        Some(DriverTarget::Branch(branch)) => format!("{branch}.*"),
        None => String::new(),
    };
    let mut restore: Vec<Box<dyn Step>> = Vec::new();
    if facts.os.booted() && plan.driver.is_some() {
        restore.push(Box::new(Load {
            modules: vec!["nvidia".into()],
            after,
        }));
    }
    let start = generation
        .awaiting
        .as_ref()
        .map(|a| a.start.clone())
        .unwrap_or_default();
    if !start.is_empty() {
        restore.push(Box::new(StartUnits { units: start }));
    }
    restore
}
