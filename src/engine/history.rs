//! `provision history`: every generation with its state, plan and times.

use serde::Serialize;

use crate::host::Host;
use crate::journal::{self, Status};

#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub generations: Vec<GenerationSummary>,
    pub failed: bool,
    pub msg: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerationSummary {
    pub id: u64,
    /// applied, awaiting-reboot, failed, rolled-back, ...
    pub state: Status,
    pub plan: Option<String>,
    pub plan_sha256: Option<String>,
    pub started: String,
    pub finished: Option<String>,
    pub reboot_required: bool,
    /// Why it waits for a reboot, while it does.
    pub awaiting: Option<String>,
    pub changes: usize,
    pub log: String,
}

pub fn history(host: &Host) -> History {
    match journal::all(&host.root) {
        Ok(generations) => History {
            msg: format!("{} generation(s)", generations.len()),
            failed: false,
            generations: generations
                .into_iter()
                .map(|g| GenerationSummary {
                    id: g.id,
                    state: g.status,
                    plan: g.plan,
                    plan_sha256: g.plan_sha256,
                    started: g.started,
                    finished: g.finished,
                    reboot_required: g.reboot_required,
                    awaiting: g.awaiting.map(|a| a.reason),
                    changes: g.entries.len(),
                    log: g.log,
                })
                .collect(),
        },
        Err(error) => History {
            generations: Vec::new(),
            failed: true,
            msg: error.to_string(),
        },
    }
}

/// The newest window the host's generations recorded (what `plan` shows
/// beside the window it predicts).
pub fn last_window(root: &crate::host::Root) -> Option<crate::upgrade::LastWindow> {
    let generations = journal::all(root).ok()?;
    let build_seconds = generations.iter().rev().find_map(|g| g.build_seconds);
    generations.into_iter().rev().find_map(|g| {
        Some(crate::upgrade::LastWindow {
            unavailable_seconds: g.unavailable_seconds?,
            generation: g.id,
            finished: g.finished,
            build_seconds,
        })
    })
}
