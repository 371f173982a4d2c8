//! DCGM's host engine, `nvidia-dcgm.service`: enabled once its package is
//! installed, and started on a running host. It holds the GPU, so the
//! upgrade window stops and starts it (it is in `[upgrade] services`).

use crate::host::{Cmd, run_checked};
use crate::journal::{Journal, Undo};
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError};

pub const ID: &str = "dcgm:service";
pub const UNIT: &str = "nvidia-dcgm.service";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/nvidia-dcgm.service";

pub struct DcgmService;

impl DcgmService {
    /// A booted systemd host: the service must run now, not only at boot.
    fn must_run(ctx: &Context) -> bool {
        ctx.facts.services.systemd && ctx.host.root.is_host() && ctx.facts.os.booted()
    }
}

impl Step for DcgmService {
    fn id(&self) -> String {
        ID.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        // An image is enabled offline; a running host needs systemd running.
        let no_systemd = if ctx.host.root.is_host() {
            !ctx.facts.services.systemd
        } else {
            !ctx.host.has_tool("systemctl")
        };
        if no_systemd {
            return Ok(Check::Satisfied(format!(
                "no systemd here: {UNIT} is left to start some other way"
            )));
        }
        let enabled = ctx.host.root.exists(WANTS);
        let running = !Self::must_run(ctx) || ctx.facts.services.is_active(UNIT);
        if enabled && running {
            return Ok(Check::Satisfied(format!("{UNIT} is enabled and running")));
        }
        let mut commands = Vec::new();
        if !enabled {
            commands.push(format!("systemctl enable {UNIT}"));
        }
        if Self::must_run(ctx) {
            commands.push(format!("systemctl start {UNIT}"));
        }
        Ok(Check::Pending(Change {
            action: Action::Create,
            summary: format!("{UNIT}: enabled (DCGM's host engine)"),
            diff: Diff::None,
            commands,
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        let runner = ctx.host.runner.as_ref();
        let systemctl = |verb: &str| Cmd::change("systemctl").args([verb, UNIT]);
        if Self::must_run(ctx) && !ctx.facts.services.is_active(UNIT) {
            journal.record(
                ID,
                Undo::StopUnits {
                    units: vec![UNIT.into()],
                },
            )?;
        }
        if !ctx.host.root.exists(WANTS) {
            journal.record(
                ID,
                Undo::Run {
                    cmd: systemctl("disable"),
                },
            )?;
            run_checked(runner, &systemctl("enable"))?;
        }
        if Self::must_run(ctx) && !ctx.facts.services.is_active(UNIT) {
            run_checked(runner, &systemctl("start"))?;
        }
        Ok(())
    }
}
