//! Ending the processes that hold the GPU and belong to no service
//! (`[upgrade] holders = "terminate"`): SIGTERM, then SIGKILL after the
//! timeout. A process is signalled only while it is still the one the plan
//! named (same pid, same name, still holding a device).

use std::time::Duration;

use super::{running_system, wait_until};
use crate::host::{Cmd, Host, Root, run_checked};
use crate::journal::Journal;
use crate::progress::Progress;
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError};
use crate::upgrade::{HolderAction, Window};

pub const ID: &str = "window:terminate";

/// A process to end: pid, name (`comm`), and what it is, for messages.
#[derive(Debug, Clone)]
pub struct Target {
    pub pid: u32,
    pub comm: String,
    pub what: String,
}

pub struct Terminate {
    pub targets: Vec<Target>,
    pub timeout: Duration,
}

/// Whether `target` still runs as the same program.
fn alive(root: &Root, target: &Target) -> bool {
    root.read_trimmed(format!("/proc/{}/comm", target.pid))
        .ok()
        .flatten()
        .is_some_and(|comm| comm == target.comm)
}

fn kill(signal: &str, pids: &[u32]) -> Cmd {
    Cmd::change("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
}

fn described(targets: &[&Target]) -> String {
    targets
        .iter()
        .map(|t| format!("pid {} ({})", t.pid, t.what))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ends `targets`: SIGTERM, and SIGKILL for what still runs after
/// `timeout`.
pub fn end(
    host: &Host,
    targets: &[Target],
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<(), StepError> {
    let root = &host.root;
    let pids = |targets: &[&Target]| targets.iter().map(|t| t.pid).collect::<Vec<_>>();
    let running: Vec<&Target> = targets.iter().filter(|t| alive(root, t)).collect();
    if running.is_empty() {
        return Ok(());
    }
    // A process that exits between the check and the signal makes kill(1)
    // fail for it alone: the wait below tells what matters.
    let _ = host.runner.run(&kill("TERM", &pids(&running)));
    if wait_until(timeout, || running.iter().all(|t| !alive(root, t))) {
        return Ok(());
    }
    let stubborn: Vec<&Target> = running.iter().copied().filter(|t| alive(root, t)).collect();
    progress.warn(&format!(
        "{} ignored SIGTERM for {} s: SIGKILL",
        described(&stubborn),
        timeout.as_secs()
    ));
    let _ = run_checked(host.runner.as_ref(), &kill("KILL", &pids(&stubborn)));
    if wait_until(Duration::from_secs(10), || {
        stubborn.iter().all(|t| !alive(root, t))
    }) {
        return Ok(());
    }
    Err(StepError::Failed(format!(
        "{} survived SIGKILL (stuck in the kernel?)",
        described(&stubborn)
    )))
}

impl Step for Terminate {
    fn id(&self) -> String {
        ID.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let running: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| alive(&ctx.host.root, t))
            .collect();
        if running.is_empty() {
            return Ok(Check::Satisfied("no holder left to end".into()));
        }
        self.pending(&running)
    }

    fn preview(&self, _ctx: &Context) -> Result<Check, StepError> {
        self.pending(&self.targets.iter().collect::<Vec<_>>())
    }

    fn apply(&self, ctx: &Context, _journal: &mut Journal) -> Result<(), StepError> {
        running_system(ctx, "ending processes")?;
        end(ctx.host, &self.targets, self.timeout, ctx.progress)
    }

    fn transient(&self) -> bool {
        true
    }
}

impl Terminate {
    fn pending(&self, targets: &[&Target]) -> Result<Check, StepError> {
        Ok(Check::Pending(Change {
            action: Action::Delete,
            summary: format!(
                "end {} (SIGTERM, SIGKILL after {} s)",
                described(targets),
                self.timeout.as_secs()
            ),
            diff: Diff::None,
            commands: vec![
                kill("TERM", &targets.iter().map(|t| t.pid).collect::<Vec<_>>()).display(),
            ],
        }))
    }
}

/// The holders the window ends, each named with its container.
pub fn terminate_targets(window: &Window) -> Vec<Target> {
    window
        .holders
        .iter()
        .filter(|h| h.action == HolderAction::Terminate)
        .map(|h| Target {
            pid: h.pid,
            comm: h.comm.clone(),
            what: match &h.container {
                Some(container) => format!("{} in container {container}", h.comm),
                None => h.comm.clone(),
            },
        })
        .collect()
}
