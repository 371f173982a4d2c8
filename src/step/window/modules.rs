//! Unloading the NVIDIA kernel modules before the swap and loading the new
//! ones after it, in dependency order (`/sys/module/*/holders`). What
//! `rmmod` says ("Module nvidia is in use") is what the user sees when a
//! holder appeared after the drain.

use super::running_system;
use crate::facts::Facts;
use crate::host::{Cmd, Host, run_checked};
use crate::journal::{Journal, Undo};
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError};

pub const UNLOAD: &str = "window:unload";
pub const LOAD: &str = "window:load";

fn loaded(facts: &Facts, name: &str) -> bool {
    facts.kernel_driver.modules.iter().any(|m| m.name == name)
}

/// Unloads `modules` in order, those loaded only.
pub fn unload(host: &Host, facts: &Facts, modules: &[String]) -> Result<(), StepError> {
    for module in modules.iter().filter(|m| loaded(facts, m)) {
        run_checked(host.runner.as_ref(), &Cmd::change("rmmod").arg(module))?;
    }
    Ok(())
}

/// Loads `modules` in order (modprobe resolves aliases: Debian's
/// nvidia-current answers to nvidia).
pub fn load(host: &Host, modules: &[String]) -> Result<(), StepError> {
    for module in modules {
        run_checked(host.runner.as_ref(), &Cmd::change("modprobe").arg(module))?;
    }
    Ok(())
}

pub struct Unload {
    pub modules: Vec<String>,
    /// The loaded release, for messages.
    pub version: Option<String>,
}

impl Unload {
    fn pending(&self, modules: &[String]) -> Check {
        Check::Pending(Change {
            action: Action::Delete,
            summary: format!(
                "unload {}{}",
                modules.join(", "),
                self.version
                    .as_deref()
                    .map(|v| format!(" ({v})"))
                    .unwrap_or_default()
            ),
            diff: Diff::None,
            commands: modules
                .iter()
                .map(|m| Cmd::change("rmmod").arg(m).display())
                .collect(),
        })
    }
}

impl Step for Unload {
    fn id(&self) -> String {
        UNLOAD.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let still: Vec<String> = self
            .modules
            .iter()
            .filter(|m| loaded(ctx.facts, m))
            .cloned()
            .collect();
        if still.is_empty() {
            return Ok(Check::Satisfied("no NVIDIA module is loaded".into()));
        }
        Ok(self.pending(&still))
    }

    fn preview(&self, _ctx: &Context) -> Result<Check, StepError> {
        Ok(self.pending(&self.modules))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        running_system(ctx, "unloading kernel modules")?;
        // The drain is over: a process holding a device now came after it.
        let late: Vec<String> = ctx
            .facts
            .holders
            .processes
            .iter()
            .map(|h| {
                format!(
                    "pid {} ({}) holds {}",
                    h.pid,
                    h.command,
                    h.devices.join(", ")
                )
            })
            .collect();
        if !late.is_empty() {
            return Err(StepError::Failed(format!(
                "the GPU is still in use after the drain: {}",
                late.join("; ")
            )));
        }
        let unloading: Vec<String> = self
            .modules
            .iter()
            .filter(|m| loaded(ctx.facts, m))
            .cloned()
            .collect();
        journal.record(
            UNLOAD,
            Undo::LoadModules {
                modules: unloading.iter().rev().cloned().collect(),
            },
        )?;
        unload(ctx.host, ctx.facts, &unloading)
    }

    fn transient(&self) -> bool {
        true
    }
}

pub struct Load {
    pub modules: Vec<String>,
    /// The release the module must have ("580.105.08", or "580.*").
    pub after: String,
}

/// Whether the loaded `nvidia` is `after` ("580.*" accepts the branch)
/// and agrees with the installed user space.
fn right_module(facts: &Facts, after: &str) -> bool {
    let Some(version) = facts.kernel_driver.version.as_deref() else {
        return false;
    };
    let fits = match after.strip_suffix(".*") {
        Some(branch) => version.starts_with(&format!("{branch}.")),
        None => version == after,
    };
    fits && facts.kernel_driver.mismatch.is_none()
}

impl Step for Load {
    fn id(&self) -> String {
        LOAD.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let missing: Vec<&String> = self
            .modules
            .iter()
            .filter(|m| !loaded(ctx.facts, m))
            .collect();
        if missing.is_empty() && right_module(ctx.facts, &self.after) {
            return Ok(Check::Satisfied(format!(
                "nvidia {} is loaded",
                ctx.facts.kernel_driver.version.as_deref().unwrap_or("")
            )));
        }
        self.preview(ctx)
    }

    fn preview(&self, _ctx: &Context) -> Result<Check, StepError> {
        Ok(Check::Pending(Change {
            action: Action::Create,
            summary: format!("load {} ({})", self.modules.join(", "), self.after),
            diff: Diff::None,
            commands: self
                .modules
                .iter()
                .map(|m| Cmd::change("modprobe").arg(m).display())
                .collect(),
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        running_system(ctx, "loading kernel modules")?;
        if ctx.facts.kernel_driver.version.is_some() && !right_module(ctx.facts, &self.after) {
            return Err(StepError::Failed(format!(
                "nvidia {} is still loaded, not {}: it must be unloaded first",
                ctx.facts.kernel_driver.version.as_deref().unwrap_or(""),
                self.after
            )));
        }
        let loading: Vec<String> = self
            .modules
            .iter()
            .filter(|m| !loaded(ctx.facts, m))
            .cloned()
            .collect();
        journal.record(
            LOAD,
            Undo::UnloadModules {
                modules: loading.iter().rev().cloned().collect(),
            },
        )?;
        load(ctx.host, &loading)
    }

    fn transient(&self) -> bool {
        true
    }
}
