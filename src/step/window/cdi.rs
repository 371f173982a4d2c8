//! `window:cdi`: the container device interface specification written
//! again once the new module is in (`nvidia-ctk cdi generate`), before the
//! services start: it names the driver's files by release
//! (`libcuda.so.580.95.05`), so a container runtime reading the old one
//! mounts files the upgrade removed.

use crate::host::{Cmd, run_checked};
use crate::journal::Journal;
use crate::step::window::running_system;
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError};

pub const ID: &str = "window:cdi";

/// Where NVIDIA's Container Toolkit writes the specification.
pub const SPECS: [&str; 2] = ["/etc/cdi/nvidia.yaml", "/var/run/cdi/nvidia.yaml"];

pub struct Cdi {
    pub specs: Vec<String>,
}

fn generate(spec: &str) -> Cmd {
    Cmd::change("nvidia-ctk").args(["cdi", "generate", &format!("--output={spec}")])
}

impl Step for Cdi {
    fn id(&self) -> String {
        ID.into()
    }

    fn check(&self, _ctx: &Context) -> Result<Check, StepError> {
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: format!(
                "generate the CDI specification again for the new driver ({})",
                self.specs.join(", ")
            ),
            diff: Diff::None,
            commands: self.specs.iter().map(|s| generate(s).display()).collect(),
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        running_system(ctx, "generating the CDI specification")?;
        for spec in &self.specs {
            journal.record_file(ID, spec)?;
            run_checked(ctx.host.runner.as_ref(), &generate(spec))?;
        }
        Ok(())
    }

    fn transient(&self) -> bool {
        true
    }
}
