//! What a verb reports: the process exit code, the steps with their
//! actions and diffs, and the JSON document Ansible reads.

use serde::Serialize;

use crate::host::{CommandRecord, Host};
use crate::step::verify::Verification;
use crate::step::{self, Action, Diff};
use crate::upgrade::Window;

/// The process exit codes (documented in `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    /// `plan --detailed-exitcode` only: changes are pending.
    Pending = 2,
    /// Failed, and the automatic undo could not restore everything.
    Incomplete = 3,
    /// The command line itself is wrong (an unknown flag, a missing
    /// argument): nothing was read or run. sysexits.h's EX_USAGE, so that
    /// no script mistakes a typo for pending changes (2).
    Usage = 64,
}

/// What a verb did or would do: printed as a diff or as one JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub changed: bool,
    pub failed: bool,
    pub msg: String,
    pub reboot_required: bool,
    pub steps: Vec<StepReport>,
    pub warnings: Vec<String>,
    /// The journal generation written, if any.
    pub generation: Option<u64>,
    /// Full output of every command of this run.
    pub log: Option<String>,
    /// Every command run, read-only ones too.
    pub commands: Vec<CommandRecord>,
    /// Ansible's `--diff` form.
    pub diff: AnsibleDiff,
    /// The maintenance window, when the driver is swapped under a loaded
    /// module (or loaded after a fresh install).
    pub window: Option<Window>,
    /// The checks run after the driver changed.
    pub verify: Option<Verification>,
    /// `apply`: each phase it went through (download, build, drain, stop,
    /// terminate, unload, packages, load, start, verify, resume), with
    /// when it began and how long it took; empty for `plan`.
    pub phases: Vec<crate::upgrade::Phase>,
    /// `[upgrade] drain`: the node, its state before, the jobs waited for.
    pub drain: Option<crate::step::window::drain::DrainReport>,
    /// When this run held the host's lock (Unix time, seconds): runs on one
    /// host never overlap.
    pub held_lock: Option<[f64; 2]>,
    /// `[driver] branch = "recommended"`: the branch chosen and why.
    pub recommendation: Option<crate::compat::recommend::Recommendation>,
    #[serde(skip)]
    pub exit: Exit,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AnsibleDiff {
    pub prepared: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub action: Action,
    pub summary: String,
    pub diff: Diff,
    pub commands: Vec<String>,
}

impl Report {
    pub(crate) fn new(msg: impl Into<String>) -> Report {
        Report {
            changed: false,
            failed: false,
            msg: msg.into(),
            reboot_required: false,
            steps: Vec::new(),
            warnings: Vec::new(),
            generation: None,
            log: None,
            commands: Vec::new(),
            diff: AnsibleDiff::default(),
            window: None,
            verify: None,
            held_lock: None,
            phases: Vec::new(),
            drain: None,
            recommendation: None,
            exit: Exit::Success,
        }
    }

    pub fn failure(msg: impl Into<String>) -> Report {
        Report {
            failed: true,
            exit: Exit::Failure,
            ..Report::new(msg)
        }
    }

    pub(crate) fn finish(mut self, host: &Host) -> Report {
        self.commands = host.runner.records();
        self
    }
}

/// Unix time in seconds, with the fraction.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) fn satisfied(id: String, summary: String) -> StepReport {
    StepReport {
        id,
        action: Action::None,
        summary,
        diff: Diff::None,
        commands: Vec::new(),
    }
}

pub(crate) fn pending(id: String, change: step::Change) -> StepReport {
    StepReport {
        id,
        action: change.action,
        summary: change.summary,
        diff: change.diff,
        commands: change.commands,
    }
}
