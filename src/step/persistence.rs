//! Persistence mode: `nvidia-persistenced` enabled and running without
//! `--no-persistence-mode` (the flag Debian's and Ubuntu's units start it
//! with), so the driver stays initialised between jobs (NVIDIA's "Driver
//! Persistence" guide: the daemon is the supported way; `nvidia-smi -pm 1`
//! is deprecated). The unit's own file is never edited: a drop-in replaces
//! its ExecStart, and goes again on rollback.

use crate::host::{Cmd, run_checked};
use crate::journal::{Journal, Undo};
use crate::step::file::{header, unified};
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError, io_error};

pub const ID: &str = "driver:persistence";
pub const UNIT: &str = "nvidia-persistenced.service";
pub const DROP_IN: &str =
    "/etc/systemd/system/nvidia-persistenced.service.d/provision-persistence.conf";
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];
const OFF: &str = "--no-persistence-mode";

pub struct Persistence {
    /// `[driver] persistence`.
    pub enabled: bool,
}

/// The daemon's unit file as shipped, and its text.
fn vendor_unit(ctx: &Context) -> Option<(String, String)> {
    UNIT_DIRS.iter().find_map(|dir| {
        let path = format!("{dir}/{UNIT}");
        ctx.host
            .root
            .read_string(&path)
            .ok()
            .map(|text| (path, text))
    })
}

/// The last `ExecStart=` of a unit file.
pub fn exec_start(unit: &str) -> Option<String> {
    unit.lines()
        .filter_map(|line| line.trim().strip_prefix("ExecStart="))
        .rfind(|command| !command.trim().is_empty())
        .map(|command| command.trim().to_string())
}

/// The targets of `WantedBy=` (where `systemctl enable` links the unit).
fn wanted_by(unit: &str) -> Vec<String> {
    let targets: Vec<String> = unit
        .lines()
        .filter_map(|line| line.trim().strip_prefix("WantedBy="))
        .flat_map(|targets| targets.split_whitespace().map(str::to_string))
        .collect();
    if targets.is_empty() {
        vec!["multi-user.target".into()]
    } else {
        targets
    }
}

/// The drop-in that turns persistence mode on, when the unit turns it off.
pub fn drop_in(unit: &str) -> Option<String> {
    let command = exec_start(unit)?;
    if !command.split_whitespace().any(|word| word == OFF) {
        return None;
    }
    let words: Vec<&str> = command
        .split_whitespace()
        .filter(|word| *word != OFF)
        .collect();
    let mut on = vec![words[0], "--persistence-mode"];
    on.extend(words[1..].iter().filter(|w| **w != "--persistence-mode"));
    Some(format!(
        "{}# The unit starts the daemon with {OFF}; persistence mode stays on.\n[Service]\nExecStart=\nExecStart={}\n",
        header("persistence mode for NVIDIA GPUs"),
        on.join(" ")
    ))
}

struct State {
    drop_in_now: Option<String>,
    drop_in_wanted: Option<String>,
    enabled: bool,
    /// The daemon must run now (a booted systemd host whose module and
    /// user space agree).
    must_run: bool,
    running_right: bool,
}

impl Persistence {
    fn state(&self, ctx: &Context, unit: &str) -> State {
        let root = &ctx.host.root;
        let drop_in_now = root.read_string(DROP_IN).ok();
        let drop_in_wanted = drop_in(unit);
        let enabled = wanted_by(unit)
            .iter()
            .any(|target| root.exists(format!("/etc/systemd/system/{target}.wants/{UNIT}")));
        let facts = ctx.facts;
        let must_run = facts.services.systemd
            && root.is_host()
            && facts.os.booted()
            && facts.kernel_driver.version.is_some()
            && facts.kernel_driver.mismatch.is_none();
        let process = facts
            .holders
            .processes
            .iter()
            .find(|p| p.unit.as_deref() == Some(UNIT));
        let running_right = facts.services.is_active(UNIT)
            && process.is_some_and(|p| !p.cmdline.split_whitespace().any(|w| w == OFF))
            && drop_in_now == drop_in_wanted;
        State {
            drop_in_now,
            drop_in_wanted,
            enabled,
            must_run,
            running_right,
        }
    }
}

impl Step for Persistence {
    fn id(&self) -> String {
        ID.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let ours = ctx.host.root.read_string(DROP_IN).ok();
        if !self.enabled {
            return Ok(match ours {
                None => Check::Satisfied(
                    "persistence mode is left as it is ([driver] persistence = false)".into(),
                ),
                Some(text) => Check::Pending(Change {
                    action: Action::Delete,
                    summary: format!("remove {DROP_IN} ([driver] persistence = false)"),
                    diff: Diff::Text(unified(DROP_IN, &text, "")),
                    commands: vec![format!("systemctl restart {UNIT}")],
                }),
            });
        }
        if !ctx.host.has_tool("systemctl") {
            return Ok(Check::Satisfied(format!(
                "{}: nvidia-persistenced is left as it is",
                no_systemctl(ctx.facts)
            )));
        }
        let Some((_, unit)) = vendor_unit(ctx) else {
            // Before the driver is installed, its packages may bring the
            // daemon; after, a driver set without it has nothing to set up.
            if ctx.facts.user_driver.version.is_none() {
                return Ok(Check::Pending(Change {
                    action: Action::Create,
                    summary: format!(
                        "enable {UNIT} in persistence mode once the driver's packages install it"
                    ),
                    diff: Diff::None,
                    commands: vec![format!("systemctl enable {UNIT}")],
                }));
            }
            return Ok(Check::Satisfied(format!("{UNIT} is not installed")));
        };
        let state = self.state(ctx, &unit);
        let files_ok = state.drop_in_now == state.drop_in_wanted && state.enabled;
        if files_ok && (!state.must_run || state.running_right) {
            return Ok(Check::Satisfied(format!(
                "{UNIT} is enabled, in persistence mode"
            )));
        }
        let mut commands = Vec::new();
        if !state.enabled {
            commands.push(format!("systemctl enable {UNIT}"));
        }
        if state.must_run {
            commands.push(format!("systemctl restart {UNIT}"));
        }
        let diff = match (&state.drop_in_now, &state.drop_in_wanted) {
            (now, want) if now != want => Diff::Text(unified(
                DROP_IN,
                now.as_deref().unwrap_or(""),
                want.as_deref().unwrap_or(""),
            )),
            _ => Diff::None,
        };
        Ok(Check::Pending(Change {
            action: if state.drop_in_now.is_none() && state.drop_in_wanted.is_some() {
                Action::Create
            } else {
                Action::Update
            },
            summary: format!("{UNIT}: enabled and running in persistence mode"),
            diff,
            commands,
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        let host = ctx.host;
        let root = &host.root;
        let systemctl = |args: &[&str]| Cmd::change("systemctl").args(args.iter().copied());
        let unit = vendor_unit(ctx).map(|(_, text)| text);
        let Some(unit) = unit.filter(|_| self.enabled) else {
            if !self.enabled {
                journal.record_file(ID, DROP_IN)?;
                root.remove_file(DROP_IN).map_err(io_error(DROP_IN))?;
                if ctx.facts.services.systemd && root.is_host() {
                    run_checked(host.runner.as_ref(), &systemctl(&["daemon-reload"]))?;
                    run_checked(host.runner.as_ref(), &systemctl(&["try-restart", UNIT]))?;
                }
                return Ok(());
            }
            ctx.progress.warn(&format!(
                "the driver's packages installed no {UNIT}: persistence mode is not set up"
            ));
            return Ok(());
        };
        let state = self.state(ctx, &unit);
        // The daemon's state before: restored after the files are (undo
        // runs in reverse, so this entry comes first).
        if state.must_run {
            let undo = if ctx.facts.services.is_active(UNIT) {
                Undo::RestartUnits {
                    units: vec![UNIT.into()],
                }
            } else {
                Undo::StopUnits {
                    units: vec![UNIT.into()],
                }
            };
            journal.record(ID, undo)?;
        }
        if state.drop_in_now != state.drop_in_wanted {
            journal.record_file(ID, DROP_IN)?;
            match &state.drop_in_wanted {
                Some(text) => root.write_atomic(DROP_IN, text.as_bytes(), 0o644),
                None => root.remove_file(DROP_IN),
            }
            .map_err(io_error(DROP_IN))?;
        }
        if !state.enabled {
            journal.record(
                ID,
                Undo::Run {
                    cmd: systemctl(&["disable", UNIT]),
                },
            )?;
            run_checked(host.runner.as_ref(), &systemctl(&["enable", UNIT]))?;
        }
        if ctx.facts.services.systemd && root.is_host() {
            run_checked(host.runner.as_ref(), &systemctl(&["daemon-reload"]))?;
        }
        if state.must_run {
            run_checked(host.runner.as_ref(), &systemctl(&["restart", UNIT]))?;
        }
        Ok(())
    }
}

/// Why persistence cannot be set up here, in the facts' words: a root
/// without systemd, or one whose init is systemd but that carries no
/// systemctl (a partial capture of a host).
pub fn no_systemctl(facts: &crate::facts::Facts) -> String {
    if facts.os.systemd == Some(true) || facts.services.systemd {
        "this root's init is systemd, but systemctl is not in it (a partial capture?)".into()
    } else {
        "no systemd in this root".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UBUNTU_UNIT: &str = "[Unit]\nDescription=NVIDIA Persistence Daemon\nWants=syslog.target\n\n[Service]\nType=forking\nExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --no-persistence-mode --verbose\nExecStopPost=/bin/rm -rf /var/run/nvidia-persistenced\n\n[Install]\nWantedBy=multi-user.target\n";

    #[test]
    fn a_unit_that_turns_persistence_off_gets_a_drop_in() {
        let text = drop_in(UBUNTU_UNIT).unwrap();
        assert!(text.contains("[Service]\nExecStart=\nExecStart=/usr/bin/nvidia-persistenced --persistence-mode --user nvidia-persistenced --verbose\n"), "{text}");
        assert!(
            !text
                .contains("ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --no")
        );
        let on = UBUNTU_UNIT.replace(" --no-persistence-mode", "");
        assert_eq!(drop_in(&on), None, "persistence is on by default");
        assert_eq!(wanted_by(UBUNTU_UNIT), ["multi-user.target"]);
    }
}
