//! Stopping the GPU services before the swap, starting them after.

use std::time::Duration;

use super::{running_system, wait_until};
use crate::facts::services;
use crate::host::{Cmd, Host, run_checked};
use crate::journal::{Journal, Undo};
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError};

pub const STOP: &str = "window:stop";
pub const START: &str = "window:start";
pub const RESTART: &str = "window:restart";

fn systemctl(args: &[&str]) -> Cmd {
    Cmd::change("systemctl").args(args.iter().copied())
}

/// Whether `unit` has processes now (its cgroup exists).
fn active(host: &Host, unit: &str) -> bool {
    services::gather(&host.root, None).is_active(unit)
}

/// Those of `units` that have processes now (their cgroups exist), in
/// order; the services read once.
fn active_units(host: &Host, units: &[String]) -> Vec<String> {
    let services = services::gather(&host.root, None);
    units
        .iter()
        .filter(|u| services.is_active(u))
        .cloned()
        .collect()
}

/// Stops `units` in order, each within `timeout`; `kill`: SIGKILL what
/// does not stop in time (holders = "terminate"), else give up.
pub fn stop(host: &Host, units: &[String], timeout: Duration, kill: bool) -> Result<(), StepError> {
    for unit in units {
        run_checked(
            host.runner.as_ref(),
            &systemctl(&["stop", "--no-block", unit]),
        )?;
        if wait_until(timeout, || !active(host, unit)) {
            continue;
        }
        if !kill {
            return Err(StepError::Failed(format!(
                "{unit} did not stop within {} s (holders = \"stop-services\" gives up; \"terminate\" kills it, or raise [upgrade] stop_timeout)",
                timeout.as_secs()
            )));
        }
        run_checked(
            host.runner.as_ref(),
            &systemctl(&["kill", "--signal=SIGKILL", unit]),
        )?;
        if !wait_until(Duration::from_secs(10), || !active(host, unit)) {
            return Err(StepError::Failed(format!(
                "{unit} survived SIGKILL for 10 s"
            )));
        }
    }
    Ok(())
}

/// Starts `units` in order (a daemon-reload first where one of their unit
/// files changed with the packages and no package script reloaded since).
pub fn start(host: &Host, units: &[String]) -> Result<(), StepError> {
    if units.is_empty() {
        return Ok(());
    }
    if need_daemon_reload(host, units) {
        run_checked(host.runner.as_ref(), &systemctl(&["daemon-reload"]))?;
    }
    for unit in units {
        run_checked(host.runner.as_ref(), &systemctl(&["start", unit]))?;
    }
    Ok(())
}

/// Whether systemd holds an older copy of one of `units`' files than the
/// disk (`NeedDaemonReload`); when it cannot tell, it reloads. A reload
/// costs seconds of the window on a busy host, and the packages' own
/// scripts (dh_installsystemd's) already reloaded.
fn need_daemon_reload(host: &Host, units: &[String]) -> bool {
    let show = Cmd::read("systemctl")
        .args(["show", "-p", "NeedDaemonReload", "--value"])
        .args(units.iter().cloned());
    match host.runner.run(&show) {
        Ok(output) if output.success() => {
            let values: Vec<&str> = output
                .stdout
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            values.len() != units.len() || values.iter().any(|v| *v != "no")
        }
        _ => true,
    }
}

fn listing(units: &[String]) -> String {
    units.join(", ")
}

pub struct StopUnits {
    pub units: Vec<String>,
    pub timeout: Duration,
    pub kill: bool,
}

impl Step for StopUnits {
    fn id(&self) -> String {
        STOP.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let running: Vec<String> = self
            .units
            .iter()
            .filter(|u| {
                ctx.facts.services.is_active(u)
                    || ctx
                        .facts
                        .holders
                        .processes
                        .iter()
                        .any(|h| h.unit.as_deref() == Some(u.as_str()))
            })
            .cloned()
            .collect();
        if running.is_empty() {
            return Ok(Check::Satisfied(format!(
                "{} stopped",
                listing(&self.units)
            )));
        }
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: format!("stop {}", listing(&running)),
            diff: Diff::None,
            commands: running
                .iter()
                .map(|u| systemctl(&["stop", u]).display())
                .collect(),
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        running_system(ctx, "stopping services")?;
        let running = active_units(ctx.host, &self.units);
        journal.record(
            STOP,
            Undo::StartUnits {
                units: running.iter().rev().cloned().collect(),
            },
        )?;
        stop(ctx.host, &running, self.timeout, self.kill)
    }

    fn preview(&self, _ctx: &Context) -> Result<Check, StepError> {
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: format!("stop {}", listing(&self.units)),
            diff: Diff::None,
            commands: self
                .units
                .iter()
                .map(|u| systemctl(&["stop", u]).display())
                .collect(),
        }))
    }

    fn transient(&self) -> bool {
        true
    }
}

pub struct StartUnits {
    pub units: Vec<String>,
}

impl Step for StartUnits {
    fn id(&self) -> String {
        START.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let stopped: Vec<String> = self
            .units
            .iter()
            .filter(|u| !ctx.facts.services.is_active(u))
            .cloned()
            .collect();
        if stopped.is_empty() {
            return Ok(Check::Satisfied(format!(
                "{} running",
                listing(&self.units)
            )));
        }
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: format!("start {}", listing(&stopped)),
            diff: Diff::None,
            commands: stopped
                .iter()
                .map(|u| systemctl(&["start", u]).display())
                .collect(),
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        running_system(ctx, "starting services")?;
        let running = active_units(ctx.host, &self.units);
        let stopped: Vec<String> = self
            .units
            .iter()
            .filter(|u| !running.contains(u))
            .cloned()
            .collect();
        journal.record(
            START,
            Undo::StopUnits {
                units: stopped.iter().rev().cloned().collect(),
            },
        )?;
        start(ctx.host, &stopped)
    }

    fn preview(&self, _ctx: &Context) -> Result<Check, StepError> {
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: format!("start {} again", listing(&self.units)),
            diff: Diff::None,
            commands: self
                .units
                .iter()
                .map(|u| systemctl(&["start", u]).display())
                .collect(),
        }))
    }

    fn transient(&self) -> bool {
        true
    }
}

/// Services that ran through the swap and read the driver at their start
/// (`Window::restart`): restarted once the new module is loaded.
pub struct RestartUnits {
    pub units: Vec<String>,
}

impl Step for RestartUnits {
    fn id(&self) -> String {
        RESTART.into()
    }

    fn check(&self, _ctx: &Context) -> Result<Check, StepError> {
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: format!(
                "restart {} (it reads the driver through NVML when it starts)",
                listing(&self.units)
            ),
            diff: Diff::None,
            commands: self
                .units
                .iter()
                .map(|u| systemctl(&["restart", u]).display())
                .collect(),
        }))
    }

    fn apply(&self, ctx: &Context, _journal: &mut Journal) -> Result<(), StepError> {
        running_system(ctx, "restarting services")?;
        let running = active_units(ctx.host, &self.units);
        // Nothing to journal: a restart changes no state that an undo
        // would put back.
        for unit in &running {
            run_checked(ctx.host.runner.as_ref(), &systemctl(&["restart", unit]))?;
        }
        Ok(())
    }

    fn transient(&self) -> bool {
        true
    }
}
