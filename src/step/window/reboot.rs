//! When the new module must wait for a boot: the generation is kept as
//! awaiting a reboot, the plan is kept beside the journal, and a oneshot
//! `provision-resume.service` (present only while a generation waits)
//! finishes it at the next boot, as `provision apply PLAN` would by hand.

use crate::host::{Cmd, run_checked};
use crate::journal::{Journal, STATE_DIR};
use crate::step::file::header;
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError, io_error};

pub const ID: &str = "window:reboot";
pub const RESUMED: &str = "window:resumed";
/// Debian's flag file for "a reboot is needed" (update-notifier,
/// needrestart): touched while a generation waits for a reboot.
pub const REBOOT_REQUIRED: &str = "/run/reboot-required";

pub const UNIT: &str = "/etc/systemd/system/provision-resume.service";
pub const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/provision-resume.service";

/// Where a plan waiting for a reboot is kept.
pub fn kept_plan(sha256: &str) -> String {
    format!("{STATE_DIR}/plans/{sha256}.toml")
}

/// The resume unit: after the modules are loaded and the GPU services up,
/// `provision apply` of the kept plan.
pub fn unit(binary: &str, plan: &str) -> String {
    format!(
        "{}[Unit]\nDescription=provision: finish the driver upgrade that waited for this boot\nAfter=systemd-modules-load.service network-online.target nvidia-persistenced.service munge.service slurmctld.service\nBefore=slurmd.service kubelet.service docker.service containerd.service crio.service\nWants=network-online.target\nConditionPathExists={plan}\n\n[Service]\nType=oneshot\nExecStart={binary} apply {plan} --json\n\n[Install]\nWantedBy=multi-user.target\n",
        header("finishes a driver upgrade after the reboot it waited for")
    )
}

fn has_systemd(ctx: &Context) -> bool {
    ctx.host.has_tool("systemctl")
}

pub struct Reboot {
    pub reason: String,
    pub plan_bytes: Vec<u8>,
    pub plan_sha256: String,
}

impl Step for Reboot {
    fn id(&self) -> String {
        ID.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let mut commands = vec![format!("keep the plan as {}", kept_plan(&self.plan_sha256))];
        if has_systemd(ctx) {
            commands.push(format!("write {UNIT} and enable it"));
        }
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: format!("the new driver loads at the next boot: {}", self.reason),
            diff: Diff::None,
            commands,
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        let root = &ctx.host.root;
        let plan = kept_plan(&self.plan_sha256);
        journal.record_file(ID, &plan)?;
        root.write_atomic(&plan, &self.plan_bytes, 0o600)
            .map_err(io_error(&plan))?;
        if !has_systemd(ctx) {
            ctx.progress.warn(&format!(
                "no systemd: after the reboot, run `provision apply {plan}` to finish"
            ));
            return Ok(());
        }
        let binary = std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/usr/bin/provision".into());
        journal.record_file(ID, UNIT)?;
        root.write_atomic(UNIT, unit(&binary, &plan).as_bytes(), 0o644)
            .map_err(io_error(UNIT))?;
        journal.record_file(ID, WANTS)?;
        root.symlink_atomic(WANTS, UNIT).map_err(io_error(WANTS))?;
        if ctx.facts.services.systemd && root.is_host() {
            run_checked(
                ctx.host.runner.as_ref(),
                &Cmd::change("systemctl").arg("daemon-reload"),
            )?;
        }
        Ok(())
    }

    fn transient(&self) -> bool {
        true
    }
}

/// After the reboot: the resume unit and the kept plan go.
pub struct Resumed {
    pub plan_sha256: String,
}

impl Step for Resumed {
    fn id(&self) -> String {
        RESUMED.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let root = &ctx.host.root;
        let left: Vec<String> = [
            UNIT.to_string(),
            WANTS.to_string(),
            kept_plan(&self.plan_sha256),
        ]
        .into_iter()
        .filter(|p| root.exists(p))
        .collect();
        if left.is_empty() {
            return Ok(Check::Satisfied("nothing waits for a reboot".into()));
        }
        Ok(Check::Pending(Change {
            action: Action::Delete,
            summary: format!("the reboot happened: remove {}", left.join(", ")),
            diff: Diff::None,
            commands: Vec::new(),
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        let root = &ctx.host.root;
        for path in [
            WANTS.to_string(),
            UNIT.to_string(),
            kept_plan(&self.plan_sha256),
        ] {
            if root.exists(&path) {
                journal.record_file(RESUMED, &path)?;
                root.remove_file(&path).map_err(io_error(&path))?;
            }
        }
        if ctx.facts.services.systemd && root.is_host() && has_systemd(ctx) {
            run_checked(
                ctx.host.runner.as_ref(),
                &Cmd::change("systemctl").arg("daemon-reload"),
            )?;
        }
        Ok(())
    }
}
