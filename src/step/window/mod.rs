//! The maintenance window as steps. Drain, before the step that replaces
//! the driver: [`download::Download`] (everything fetched while the node
//! still serves), [`units::StopUnits`], [`processes::Terminate`],
//! [`modules::Unload`]. Restore, after it: [`modules::Load`],
//! [`units::StartUnits`]; or, when the new module must wait for a boot,
//! [`reboot::Reboot`] (and [`reboot::Resumed`] once it happened). Each
//! journals its undo before it acts: a failure anywhere puts the services
//! back and the earlier module in.
//!
//! These steps act on the running system only: the engine builds them for
//! a root that is the booted host (`Root::is_host` and the running kernel
//! installed in it), and each refuses to act anywhere else.

pub mod cdi;
pub mod download;
pub mod drain;
pub mod modules;
pub mod processes;
pub mod reboot;
pub mod starts;
pub mod units;

use std::time::{Duration, Instant};

use super::{Context, StepError};

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);

/// Refuses to act unless the root is the running system.
pub(crate) fn running_system(ctx: &Context, what: &str) -> Result<(), StepError> {
    if ctx.host.root.is_host() && ctx.facts.os.booted() {
        Ok(())
    } else {
        Err(StepError::Failed(format!(
            "{what} acts on the running system only, not on {} (an image or another root has no running driver)",
            ctx.host.root.path().display()
        )))
    }
}

/// Waits until `done` holds or `timeout` passes; true when it held.
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}
