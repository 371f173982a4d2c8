//! Draining the node through its scheduler before the window, and putting
//! it back after verify: Slurm's `scontrol update state=drain` (the node
//! takes no new job), then a wait until no job of the node runs, bounded
//! by `[upgrade] drain_timeout`; `state=resume` once the new driver is
//! verified. Other schedulers: `[upgrade] drain_command` (which returns
//! once the node is drained) and `resume_command`, run at the same points.
//!
//! As sites do it by hand (`scontrol update state=drain`, then NHC or the
//! admin resumes the node after its health checks) and as NVIDIA's GPU
//! Operator does it (cordon, wait for jobs, drain, upgrade, validate,
//! uncordon). A node an administrator drained or set down before is left
//! as it was, and not resumed afterwards.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::host::{Cmd, Host, run_checked};
use crate::journal::{Journal, Undo};
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError};

pub const DRAIN: &str = "window:drain";
pub const RESUME: &str = "window:resume-node";

/// How often the wait asks the scheduler again.
const POLL: Duration = Duration::from_secs(2);

/// How the node is drained and resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheduler {
    Slurm {
        node: String,
    },
    Commands {
        drain: Vec<String>,
        resume: Vec<String>,
    },
}

/// A job running on the node, as Slurm lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: String,
    pub user: String,
    pub name: String,
    pub state: String,
    /// When Slurm expects it to end (its time limit), if known.
    pub end: Option<String>,
}

/// The node as Slurm reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeState {
    /// "IDLE", "MIXED+DRAIN", "DOWN+DRAIN", ...
    pub state: String,
    pub reason: Option<String>,
}

impl NodeState {
    /// Drained, draining or down: no new work goes there.
    pub fn out_of_service(&self) -> bool {
        ["DRAIN", "DOWN", "FAIL", "MAINT", "REBOOT"]
            .iter()
            .any(|flag| self.state.contains(flag))
    }

    /// Drained by provision (its reason names it).
    pub fn ours(&self) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|r| r.starts_with(REASON_PREFIX))
    }
}

/// Every drain reason provision sets begins so.
pub const REASON_PREFIX: &str = "provision: ";

/// What the drain did, for the report (`drain` in `--json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DrainReport {
    /// The node's name, or the commands' (other schedulers).
    pub node: String,
    /// Its state before provision touched it.
    pub state_before: Option<String>,
    /// The jobs it waited for.
    pub jobs: Vec<Job>,
    /// How long it waited for them.
    pub waited_seconds: f64,
    /// An administrator had drained the node: left as it was.
    pub left_as_it_was: bool,
}

/// `scontrol show node NODE --oneliner`'s state and reason.
pub fn parse_node(text: &str) -> Option<NodeState> {
    let line = text.lines().find(|l| l.contains("State="))?;
    let state = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("State="))?
        .to_string();
    let reason = line
        .split_once(" Reason=")
        .map(|(_, rest)| rest.trim().to_string())
        .filter(|r| !r.is_empty() && r != "(null)");
    Some(NodeState { state, reason })
}

/// `squeue -h -o %i|%u|%j|%T|%e`: one job a line.
pub fn parse_jobs(text: &str) -> Vec<Job> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.trim().split('|').collect();
            let [id, user, name, state, end] = fields.as_slice() else {
                return None;
            };
            Some(Job {
                id: id.to_string(),
                user: user.to_string(),
                name: name.to_string(),
                state: state.to_string(),
                end: Some(end.to_string())
                    .filter(|e| !e.is_empty() && !["N/A", "NONE", "Unknown"].contains(&e.as_str())),
            })
        })
        .collect()
}

fn scontrol(args: &[&str]) -> Cmd {
    Cmd::change("scontrol").args(args.iter().copied())
}

/// The node's state now.
pub fn node_state(host: &Host, node: &str) -> Result<NodeState, StepError> {
    if !host.has_tool("scontrol") {
        return Err(StepError::Failed(
            "[upgrade] drain = \"slurm\": scontrol is not installed here (slurm-client): this host is no Slurm node".into(),
        ));
    }
    let cmd = Cmd::read("scontrol").args(["show", "node", node, "--oneliner"]);
    let output = run_checked(host.runner.as_ref(), &cmd)?;
    parse_node(&output.stdout).ok_or_else(|| {
        StepError::Failed(format!(
            "`{cmd}` printed no State= for {node}: is it the node's Slurm name? ([upgrade] slurm_node)"
        ))
    })
}

/// The jobs running (or about to) on the node.
pub fn node_jobs(host: &Host, node: &str) -> Result<Vec<Job>, StepError> {
    let cmd = Cmd::read("squeue").args([
        "-h",
        "-w",
        node,
        "-t",
        "RUNNING,COMPLETING,CONFIGURING,SUSPENDED",
        "-o",
        "%i|%u|%j|%T|%e",
    ]);
    let output = run_checked(host.runner.as_ref(), &cmd)?;
    Ok(parse_jobs(&output.stdout))
}

fn describe(jobs: &[Job]) -> String {
    jobs.iter()
        .map(|j| {
            format!(
                "{} ({}, {}{})",
                j.id,
                j.user,
                j.name,
                j.end
                    .as_deref()
                    .map(|e| format!(", ends {e}"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct DrainNode {
    pub scheduler: Scheduler,
    /// Why, as the node's drain reason says it ("driver 570.124.06 ->
    /// 580.105.08").
    pub why: String,
    /// 0: as long as the jobs run.
    pub timeout: Duration,
    pub report: Arc<Mutex<Option<DrainReport>>>,
}

impl DrainNode {
    fn drain_cmd(&self, node: &str, generation: u64) -> Cmd {
        scontrol(&[
            "update",
            &format!("nodename={node}"),
            "state=drain",
            &format!(
                "reason={REASON_PREFIX}{} (generation {generation})",
                self.why
            ),
        ])
    }

    /// Waits until no job runs on `node`, showing the jobs it waits for.
    fn wait_for_jobs(
        &self,
        ctx: &Context,
        node: &str,
        report: &mut DrainReport,
    ) -> Result<(), StepError> {
        let started = Instant::now();
        loop {
            let jobs = node_jobs(ctx.host, node)?;
            for job in &jobs {
                if !report.jobs.iter().any(|j| j.id == job.id) {
                    report.jobs.push(job.clone());
                }
            }
            report.waited_seconds = started.elapsed().as_secs_f64();
            if jobs.is_empty() {
                return Ok(());
            }
            if !self.timeout.is_zero() && started.elapsed() >= self.timeout {
                return Err(StepError::Failed(format!(
                    "[upgrade] drain_timeout: after {} s jobs still run on {node}: {}; the node is back as it was and nothing changed",
                    self.timeout.as_secs(),
                    describe(&jobs)
                )));
            }
            ctx.progress.command_line(&format!(
                "waiting for {} job(s) on {node} to finish: {}",
                jobs.len(),
                describe(&jobs)
            ));
            std::thread::sleep(POLL);
        }
    }

    fn apply_slurm(
        &self,
        ctx: &Context,
        journal: &mut Journal,
        node: &str,
    ) -> Result<(), StepError> {
        let before = node_state(ctx.host, node)?;
        let mut report = DrainReport {
            node: node.to_string(),
            state_before: Some(before.state.clone()),
            ..DrainReport::default()
        };
        if before.out_of_service() && !before.ours() {
            // An administrator's drain (or a down node) stays theirs.
            report.left_as_it_was = true;
        } else if !before.ours() {
            journal.record(
                DRAIN,
                Undo::Undrain {
                    node: node.to_string(),
                    resume: scontrol(&["update", &format!("nodename={node}"), "state=resume"]),
                    keep: scontrol(&[
                        "update",
                        &format!("nodename={node}"),
                        "state=drain",
                        &format!(
                            "reason={REASON_PREFIX}generation {} failed and was undone: see {}",
                            journal.generation.id, journal.generation.log
                        ),
                    ]),
                },
            )?;
            run_checked(
                ctx.host.runner.as_ref(),
                &self.drain_cmd(node, journal.generation.id),
            )?;
        }
        let waited = self.wait_for_jobs(ctx, node, &mut report);
        *self.report.lock().expect("drain report") = Some(report);
        waited
    }
}

impl Step for DrainNode {
    fn id(&self) -> String {
        DRAIN.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let node = match &self.scheduler {
            Scheduler::Slurm { node } => node,
            Scheduler::Commands { drain, .. } => {
                return Ok(Check::Pending(Change {
                    action: Action::Update,
                    summary: "drain the node with [upgrade] drain_command".into(),
                    diff: Diff::None,
                    commands: vec![drain.join(" ")],
                }));
            }
        };
        let state = node_state(ctx.host, node)?;
        let jobs = node_jobs(ctx.host, node)?;
        let waits = match (jobs.is_empty(), self.timeout.is_zero()) {
            (true, _) => "no job runs there".to_string(),
            (false, true) => format!("then wait for {}", describe(&jobs)),
            (false, false) => format!(
                "then wait up to {} s for {}",
                self.timeout.as_secs(),
                describe(&jobs)
            ),
        };
        let summary = if state.out_of_service() && !state.ours() {
            format!(
                "Slurm node {node} is {} already ({}): left as it is, not resumed afterwards; {waits}",
                state.state,
                state.reason.as_deref().unwrap_or("no reason")
            )
        } else {
            format!("drain Slurm node {node} (now {}); {waits}", state.state)
        };
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary,
            diff: Diff::None,
            commands: vec![
                self.drain_cmd(node, 0)
                    .display()
                    .replace("(generation 0)", "(generation N)"),
            ],
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        match &self.scheduler {
            Scheduler::Slurm { node } => self.apply_slurm(ctx, journal, node),
            Scheduler::Commands { drain, resume } => {
                let (program, args) = drain.split_first().expect("checked by the plan");
                let (resume_program, resume_args) =
                    resume.split_first().expect("checked by the plan");
                journal.record(
                    DRAIN,
                    Undo::Run {
                        cmd: Cmd::change(resume_program.as_str()).args(resume_args.iter().cloned()),
                    },
                )?;
                run_checked(
                    ctx.host.runner.as_ref(),
                    &Cmd::change(program.as_str()).args(args.iter().cloned()),
                )?;
                Ok(())
            }
        }
    }

    fn transient(&self) -> bool {
        true
    }
}

/// Puts the node back in service once the new driver is verified: Slurm's
/// `state=resume` for a node provision drained; a node an administrator
/// drained stays drained.
pub struct ResumeNode {
    pub scheduler: Scheduler,
}

impl ResumeNode {
    fn resume_cmd(&self) -> Cmd {
        match &self.scheduler {
            Scheduler::Slurm { node } => {
                scontrol(&["update", &format!("nodename={node}"), "state=resume"])
            }
            Scheduler::Commands { resume, .. } => {
                let (program, args) = resume.split_first().expect("checked by the plan");
                Cmd::change(program.as_str()).args(args.iter().cloned())
            }
        }
    }
}

impl Step for ResumeNode {
    fn id(&self) -> String {
        RESUME.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let summary = match &self.scheduler {
            Scheduler::Slurm { node } => {
                let state = node_state(ctx.host, node)?;
                if !state.ours() {
                    return Ok(Check::Satisfied(format!(
                        "Slurm node {node} is {}: provision did not drain it",
                        state.state
                    )));
                }
                format!("resume Slurm node {node}")
            }
            Scheduler::Commands { .. } => "resume the node with [upgrade] resume_command".into(),
        };
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary,
            diff: Diff::None,
            commands: vec![self.resume_cmd().display()],
        }))
    }

    fn preview(&self, _ctx: &Context) -> Result<Check, StepError> {
        let summary = match &self.scheduler {
            Scheduler::Slurm { node } => {
                format!(
                    "resume Slurm node {node} once verify passed (a node drained before stays drained)"
                )
            }
            Scheduler::Commands { .. } => "resume the node with [upgrade] resume_command".into(),
        };
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary,
            diff: Diff::None,
            commands: Vec::new(),
        }))
    }

    fn apply(&self, ctx: &Context, _journal: &mut Journal) -> Result<(), StepError> {
        if let Check::Satisfied(_) = self.check(ctx)? {
            return Ok(());
        }
        match &self.scheduler {
            Scheduler::Slurm { node } => resume_slurm(ctx.host, node, &self.resume_cmd()),
            Scheduler::Commands { .. } => {
                run_checked(ctx.host.runner.as_ref(), &self.resume_cmd())?;
                Ok(())
            }
        }
    }

    fn transient(&self) -> bool {
        true
    }
}

/// `state=resume`. After a reboot the resume unit runs before slurmd, so
/// slurmctld has not heard from the node since it came back (its base
/// state is UNKNOWN) and refuses a resume ("Invalid node state
/// specified"); Slurm 22.05 clears the drain before it refuses, and then
/// nothing is left to do. Where the drain is still there, `state=undrain`
/// clears it alone: the node serves once slurmd registers.
fn resume_slurm(host: &Host, node: &str, resume: &Cmd) -> Result<(), StepError> {
    if host.runner.run(resume)?.success() {
        return Ok(());
    }
    if !node_state(host, node)?.state.contains("DRAIN") {
        return Ok(());
    }
    let undrain = scontrol(&["update", &format!("nodename={node}"), "state=undrain"]);
    run_checked(host.runner.as_ref(), &undrain)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrols_node_line_and_squeues_jobs() {
        let line = "NodeName=gpu01 Arch=x86_64 CoresPerSocket=1 CPUAlloc=1 State=MIXED+DRAIN ThreadsPerCore=1 Reason=provision: driver 570.124.06 -> 580.105.08 (generation 2) [root@2026-12-06T03:00:00]\n";
        let node = parse_node(line).unwrap();
        assert_eq!(node.state, "MIXED+DRAIN");
        assert!(node.out_of_service() && node.ours());
        let idle = parse_node("NodeName=gpu01 State=IDLE ThreadsPerCore=1\n").unwrap();
        assert!(!idle.out_of_service() && !idle.ours());
        assert_eq!(idle.reason, None);
        let admin = parse_node(
            "NodeName=gpu01 State=IDLE+DRAIN Reason=bad fan [admin@2026-12-01T10:00:00]\n",
        )
        .unwrap();
        assert!(admin.out_of_service() && !admin.ours());
        let jobs =
            parse_jobs("17|alice|train|RUNNING|2026-12-06T05:00:00\n18|bob|eval|COMPLETING|N/A\n");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].end.as_deref(), Some("2026-12-06T05:00:00"));
        assert_eq!(jobs[1].end, None);
        assert_eq!(
            describe(&jobs),
            "17 (alice, train, ends 2026-12-06T05:00:00), 18 (bob, eval)"
        );
    }
}
