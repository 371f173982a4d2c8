//! The `compat` verb's one entry point: which question the flags ask, and
//! what answers it. The host (when read) lends its driver, flavour and
//! GPUs to every question; flags override them.

use super::host::{HostReport, gpu_rows, report};
use super::knowledge::GpuRow;
use super::line::LineReport;
use super::needs::NeedsReport;
use super::rules::{Answer, QuestionError, Target, Verdict, evaluate_on, find_gpu, invalid};
use super::wheels::{WheelReport, is_release_question};
use crate::facts::Facts;

/// The flags of `provision compat`.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub driver: Option<String>,
    pub cuda: Option<String>,
    pub torch: Option<String>,
    pub gpu: Option<String>,
    pub flavor: Option<String>,
}

impl Request {
    /// Whether the answer needs the host read: for its driver (none was
    /// given) or because `--root` names it.
    pub fn reads_host(&self, root_given: bool) -> bool {
        root_given || self.driver.is_none()
    }
}

/// One of the answers `compat` gives, each with its own document.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `--driver D --cuda X`, or a wheel: one verdict.
    Answer(Answer),
    /// `--torch 2.9.1`: every wheel of the release on the driver.
    Wheels(WheelReport),
    /// `--cuda 12.4 --torch latest`: the torch with a wheel for the line.
    Line(LineReport),
    /// No question: every toolkit and compat package of the host.
    Host(HostReport),
    /// A question without any driver: what each CUDA (wheel) needs.
    Needs(NeedsReport),
}

impl Reply {
    /// Exit 1 only when nothing asked about can run.
    pub fn failed(&self) -> bool {
        match self {
            Reply::Answer(answer) => answer.verdict == Verdict::Incompatible,
            Reply::Wheels(report) => report.best.is_none(),
            Reply::Line(report) => report.install.is_none(),
            Reply::Host(report) => report.failed,
            Reply::Needs(_) => false,
        }
    }
}

/// Answers `request`, reading `host` (facts gathered when
/// `reads_host`) for what the flags leave out.
pub fn ask(request: &Request, host: Option<&Facts>) -> Result<Reply, QuestionError> {
    let target = match (&request.cuda, &request.torch) {
        (Some(cuda), Some(torch)) => return line(cuda, torch).map(Reply::Line),
        (Some(cuda), None) => Some(Target::Cuda(cuda.clone())),
        (None, Some(torch)) => Some(Target::Torch(torch.clone())),
        (None, None) => None,
    };
    let named = request.gpu.as_deref().map(find_gpu).transpose()?;
    let gpus: Vec<&GpuRow> = match (&named, host) {
        (Some(gpu), _) => vec![gpu],
        (None, Some(facts)) => gpu_rows(facts),
        (None, None) => Vec::new(),
    };
    let flavor = request.flavor.clone().or_else(|| {
        host.filter(|_| request.driver.is_none())
            .and_then(|facts| facts.kernel_driver.flavor.clone())
    });
    let driver = request
        .driver
        .clone()
        .or_else(|| host.and_then(|f| f.driver_version().map(str::to_string)));
    let Some(target) = target else {
        if request.driver.is_some() {
            return Err(invalid("--driver needs --cuda or --torch"));
        }
        let facts = host.expect("reads_host: no driver given");
        return Ok(Reply::Host(report(facts)));
    };
    let Some(driver) = driver else {
        return super::needs::needs(&target, &gpus).map(Reply::Needs);
    };
    match &target {
        Target::Torch(text) if is_release_question(text) => {
            super::wheels::find(&driver, text, &gpus, flavor.as_deref()).map(Reply::Wheels)
        }
        _ => evaluate_on(&driver, &target, &gpus, flavor.as_deref()).map(Reply::Answer),
    }
}

/// `--cuda 12.4 --torch latest`: the torch release with a wheel for the line.
fn line(cuda: &str, torch: &str) -> Result<LineReport, QuestionError> {
    if !is_release_question(torch) {
        return Err(invalid(format!(
            "--cuda with --torch asks which torch has a wheel for that CUDA line: give --torch latest or a release (2.9), not the wheel {torch}"
        )));
    }
    super::line::find(cuda, torch)
}
