//! `window:hold-starts` and `window:release-starts`: while the package step
//! runs inside the window, the packages' own scripts do not start the
//! services provision stopped. Debian's maintainer scripts restart a
//! service they ship (`deb-systemd-invoke restart nvidia-persistenced`):
//! inside the window that starts it before the new module is loaded (it
//! loads a module itself through `nvidia-modprobe`, or fails), and costs
//! the GPU the seconds of a start that `window:start` repeats anyway.
//!
//! Both tools ask `/usr/sbin/policy-rc.d` first (Debian Policy 9.3.3.1,
//! `invoke-rc.d(8)`: exit 101 forbids the action). The hold writes one that
//! forbids starting the units `window:start` starts after the load, and
//! allows everything else; the release removes it once the packages are
//! in. Both are journaled: a failure in between takes it away again. A
//! policy the host already has (container images ship one) is left alone,
//! and the scripts start what that policy allows.

use crate::journal::Journal;
use crate::step::window::running_system;
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError, io_error};

pub const HOLD: &str = "window:hold-starts";
pub const RELEASE: &str = "window:release-starts";

/// Where `invoke-rc.d` and `deb-systemd-invoke` look for the local policy.
pub const POLICY: &str = "/usr/sbin/policy-rc.d";

/// The first lines of the policy provision writes: how the release knows
/// it is its own.
const MARK: &str = "#!/bin/sh\n# provision: upgrade window\n";

/// The policy that forbids starting `units` (with or without `.service`),
/// and allows every other action.
pub fn policy(units: &[String]) -> String {
    let names: Vec<&str> = units
        .iter()
        .map(|u| u.strip_suffix(".service").unwrap_or(u))
        .collect();
    format!(
        "{MARK}# The package scripts do not start what provision stopped: it starts\n\
         # these itself once the new kernel module is loaded. Removed when the\n\
         # packages are in.\n\
         while [ $# -gt 0 ]; do\n  case \"$1\" in --*) shift ;; *) break ;; esac\ndone\n\
         unit=\"${{1%.service}}\"\n\
         shift\n\
         case \"$unit\" in\n  {}) ;;\n  *) exit 0 ;;\nesac\n\
         case \" $* \" in\n  *\" start \"*|*\" restart \"*|*\" try-restart \"*|*\" reload \"*|*\" force-reload \"*|*\" reload-or-restart \"*) exit 101 ;;\nesac\n\
         exit 0\n",
        names.join("|")
    )
}

fn ours(ctx: &Context) -> Option<bool> {
    ctx.host
        .root
        .read_string(POLICY)
        .ok()
        .map(|text| text.starts_with(MARK))
}

/// Forbids the package scripts to start `units` until the release.
pub struct HoldStarts {
    pub units: Vec<String>,
}

impl Step for HoldStarts {
    fn id(&self) -> String {
        HOLD.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        if ours(ctx) == Some(false) {
            return Ok(Check::Satisfied(format!(
                "{POLICY} is the host's own: it decides what the package scripts start"
            )));
        }
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: format!(
                "the package scripts do not start {} (started after the load)",
                self.units.join(", ")
            ),
            diff: Diff::None,
            commands: vec![format!("write {POLICY} (exit 101 for their start)")],
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        running_system(ctx, "holding the services' start")?;
        journal.record_file(HOLD, POLICY)?;
        ctx.host
            .root
            .write_atomic(POLICY, policy(&self.units).as_bytes(), 0o755)
            .map_err(io_error(POLICY))
    }

    fn transient(&self) -> bool {
        true
    }
}

/// Takes the hold's policy away once the packages are in.
pub struct ReleaseStarts;

impl Step for ReleaseStarts {
    fn id(&self) -> String {
        RELEASE.into()
    }

    /// Pending only while the hold's policy is there.
    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        match ours(ctx) {
            Some(true) => self.preview(ctx),
            Some(false) => Ok(Check::Satisfied(format!(
                "{POLICY} is the host's own: it stays"
            ))),
            None => Ok(Check::Satisfied(format!("no {POLICY}"))),
        }
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        journal.record_file(RELEASE, POLICY)?;
        ctx.host.root.remove_file(POLICY).map_err(io_error(POLICY))
    }

    /// `plan`: the hold writes the policy first, unless the host has one.
    fn preview(&self, ctx: &Context) -> Result<Check, StepError> {
        if ours(ctx) == Some(false) {
            return self.check(ctx);
        }
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: "the package scripts may start services again".into(),
            diff: Diff::None,
            commands: vec![format!("remove {POLICY}")],
        }))
    }

    fn transient(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs the policy as `invoke-rc.d` and `deb-systemd-invoke` do.
    fn exit(policy: &str, args: &[&str]) -> i32 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy-rc.d");
        std::fs::write(&path, policy).unwrap();
        Command::new("sh")
            .arg(&path)
            .args(args)
            .status()
            .unwrap()
            .code()
            .unwrap()
    }

    #[test]
    fn forbids_starting_only_the_units_provision_starts_itself() {
        let text = policy(&["nvidia-persistenced".into(), "nvidia-dcgm.service".into()]);
        // deb-systemd-invoke: the unit with its suffix, one action.
        assert_eq!(
            exit(&text, &["nvidia-persistenced.service", "restart"]),
            101
        );
        assert_eq!(exit(&text, &["nvidia-dcgm.service", "start"]), 101);
        // invoke-rc.d: options first, the script's name, the actions.
        assert_eq!(
            exit(&text, &["--quiet", "nvidia-persistenced", "start"]),
            101
        );
        assert_eq!(exit(&text, &["nvidia-persistenced", "try-restart"]), 101);
        // Stopping them, and every other service, stays allowed.
        assert_eq!(exit(&text, &["nvidia-persistenced.service", "stop"]), 0);
        assert_eq!(exit(&text, &["ssh.service", "restart"]), 0);
        assert_eq!(
            exit(&text, &["nvidia-persistenced-extra.service", "start"]),
            0
        );
    }
}
