//! The rules that read the knowledge base: will CUDA X (or a PyTorch wheel)
//! run on driver D, on this GPU, with this kernel-module flavour?
//!
//! The decision model (reference notes §1): the driver must support the GPU
//! (branch range, module flavour) and the toolkit its architecture; then the
//! driver runs the release natively (Table 3 floor), or by minor-version
//! compatibility (CUDA 11+, inside the major's driver range, with
//! limitations), or through a `cuda-compat-X-Y` package (data-center GPUs,
//! listed branches only); otherwise not at all. Where sources disagree the
//! verdict is "ambiguous" and names both readings. Every reason cites the
//! knowledge-base row it comes from.

use serde::Serialize;

use super::gpu::{Gpu, gpu_problems, wheel_arch_problems};
use super::knowledge::{ForwardCompat, GpuRow, Knowledge, ToolkitRow};
pub use super::question::{find_gpu, parse_driver, toolkit_rows, torch_target};
pub use super::reason::{QuestionError, Reason};
pub(crate) use super::reason::{invalid, reason};
use crate::version::Dotted;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Compatible,
    NeedsCompatPackage,
    Incompatible,
    Ambiguous,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Compatible => "compatible",
            Verdict::NeedsCompatPackage => "needs-compat-package",
            Verdict::Incompatible => "incompatible",
            Verdict::Ambiguous => "ambiguous",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Native,
    MinorVersion,
    ForwardCompat,
    None,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Native => "native",
            Mode::MinorVersion => "minor-version",
            Mode::ForwardCompat => "forward-compat",
            Mode::None => "none",
        })
    }
}

/// The answer to one question.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub driver: String,
    /// The release the question resolved to ("12.8.1"), or the wheel.
    pub cuda: String,
    pub cuda_label: String,
    pub gpu: Option<String>,
    pub flavor: Option<String>,
    pub verdict: Verdict,
    pub mode: Mode,
    /// The `cuda-compat-X-Y` to install, if that is the way.
    pub package: Option<String>,
    /// The lowest driver that runs it natively.
    pub min_driver: Option<String>,
    pub limitations: Vec<String>,
    pub reasons: Vec<Reason>,
    /// For "ambiguous": the readings that disagree.
    pub readings: Vec<String>,
}

impl Answer {
    /// The verdict in one sentence.
    pub fn sentence(&self) -> String {
        let answer = self;
        let on = match &answer.gpu {
            Some(gpu) => format!("driver {} with {gpu}", answer.driver),
            None => format!("driver {}", answer.driver),
        };
        match (answer.verdict, answer.mode) {
            (Verdict::Compatible, Mode::Native) => {
                format!("{} runs natively on {on}.", answer.cuda_label)
            }
            (Verdict::Compatible, Mode::MinorVersion) => {
                format!(
                    "{} runs on {on} by minor-version compatibility, with limitations.",
                    answer.cuda_label
                )
            }
            (Verdict::Compatible, _) => format!("{} runs on {on}.", answer.cuda_label),
            (Verdict::NeedsCompatPackage, _) => format!(
                "{} runs on {on} only with {} (forward compatibility).",
                answer.cuda_label,
                answer.package.as_deref().unwrap_or("a cuda-compat package")
            ),
            (Verdict::Incompatible, _) => format!("{} does not run on {on}.", answer.cuda_label),
            (Verdict::Ambiguous, _) => format!(
                "Whether {} runs on {on} depends on which source is right.",
                answer.cuda_label
            ),
        }
    }
}

/// What the question asks for: a toolkit release or a PyTorch wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// "12.8" (GA), "12.8.1" (Update 1), "12.8.93" (a component's full
    /// version: one of 12.8's releases), "10.2.89".
    Cuda(String),
    /// "2.9.1+cu130"
    Torch(String),
}

/// Limitations of running a newer minor on an older driver of the major.
fn minor_version_limitations(cuda: &str) -> Vec<String> {
    vec![
        format!(
            "PTX produced by CUDA {cuda} cannot be JIT-compiled by this driver: applications must carry SASS (cubins) for the GPU's architecture"
        ),
        "CUDA APIs that need a newer driver fail with cudaErrorCallRequiresNewerDriver".to_string(),
    ]
}

fn forward_compat_limitations(package: &str) -> Vec<String> {
    vec![
        format!("{package} must be installed and its compat/ directory put on the loader path ([compat] package = \"auto\" does both)"),
        "forward compatibility works only on Linux with data-center GPUs (and select NGC-ready RTX parts): elsewhere CUDA fails with error 804 (CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE)".to_string(),
        "the compat libcuda must stay newer than the driver: an older one fails with error 803 (CUDA_ERROR_SYSTEM_DRIVER_MISMATCH), so remove it when the driver is upgraded".to_string(),
        "CUDA-OpenGL/Vulkan interop is not available under forward compatibility".to_string(),
    ]
}

/// One reading of the driver against one toolkit release.
struct Reading {
    verdict: Verdict,
    mode: Mode,
    package: Option<String>,
    limitations: Vec<String>,
    reasons: Vec<Reason>,
    /// The other reading, when the sources disagree.
    readings: Vec<String>,
}

/// The `cuda-compat-X-Y` row for a CUDA minor ("12.9").
pub fn forward_compat_package(short: &str) -> Option<&'static ForwardCompat> {
    Knowledge::get()
        .forward_compat()
        .iter()
        .find(|row| row.cuda == short)
}

fn forward_compat_row(major: u32, minor: u32) -> Option<&'static ForwardCompat> {
    Knowledge::get()
        .forward_compat()
        .iter()
        .find(|row| row.cuda == format!("{major}.{minor}"))
}

fn driver_vs_release(driver: &Dotted, row: &ToolkitRow, gpu: Option<&Gpu>) -> Reading {
    let toolkit_id = format!("toolkit {}", row.release);
    let (major, minor, _) = row.key().unwrap_or((0, 0, 0));
    let mut reasons = Vec::new();
    if *driver >= row.min_driver {
        reasons.push(reason(
            format!(
                "{} runs natively on driver {} or newer; {driver} meets that",
                row.label, row.min_driver
            ),
            toolkit_id,
            &row.sources,
        ));
        return Reading {
            verdict: Verdict::Compatible,
            mode: Mode::Native,
            package: None,
            limitations: Vec::new(),
            reasons,
            readings: Vec::new(),
        };
    }
    reasons.push(reason(
        format!(
            "{} needs driver {} to run natively; {driver} is older",
            row.label, row.min_driver
        ),
        toolkit_id,
        &row.sources,
    ));
    if let Some(reading) = minor_version(driver, major, minor, &mut reasons) {
        return reading;
    }
    forward_compat(driver, row, gpu, reasons)
}

fn incompatible(reasons: Vec<Reason>) -> Reading {
    Reading {
        verdict: Verdict::Incompatible,
        mode: Mode::None,
        package: None,
        limitations: Vec::new(),
        reasons,
        readings: Vec::new(),
    }
}

/// The reading by minor-version compatibility (CUDA 11 and later), when
/// it decides; else its reason is added and None.
fn minor_version(
    driver: &Dotted,
    major: u32,
    minor: u32,
    reasons: &mut Vec<Reason>,
) -> Option<Reading> {
    let short = format!("{major}.{minor}");
    let branch = driver.major();
    let family = Knowledge::get()
        .minor_compat()
        .iter()
        .find(|f| f.cuda_major == major)?;
    let family_id = format!("minor_compat {major}.x");
    let below_top = family.below_branch.is_none_or(|top| branch < top);
    match (&family.min_driver, &family.min_driver_documented) {
            _ if !family.supported => reasons.push(reason(
                format!("CUDA {major}.x has no minor-version compatibility: every release needs its own driver floor"),
                family_id,
                &family.sources,
            )),
            (Some(precise), _) if below_top && driver >= precise => {
                reasons.push(reason(
                    format!("CUDA {major}.x runs on any driver from {precise} by minor-version compatibility"),
                    family_id,
                    &family.sources,
                ));
                return Some(Reading {
                    verdict: Verdict::Compatible,
                    mode: Mode::MinorVersion,
                    package: None,
                    limitations: minor_version_limitations(&short),
                    reasons: std::mem::take(reasons),
                    readings: Vec::new(),
                });
            }
            (Some(precise), Some(documented)) if below_top && *driver >= *documented && family.conflict.is_some() => {
                // Between the printed floor (">= 580") and the precise one.
                reasons.push(reason(
                    format!(
                        "the documents print CUDA {major}.x minor-version compatibility from R{documented}, the precise floor is {precise}: {driver} sits between them"
                    ),
                    family_id,
                    &family.sources,
                ));
                return Some(Reading {
                    verdict: Verdict::Ambiguous,
                    mode: Mode::MinorVersion,
                    package: None,
                    limitations: minor_version_limitations(&short),
                    reasons: std::mem::take(reasons),
                    readings: vec![
                        format!("documented floor R{documented}: compatible by minor-version compatibility"),
                        format!("precise floor {precise}: not compatible below it"),
                    ],
                });
            }
            _ => reasons.push(reason(
                format!(
                    "minor-version compatibility for CUDA {major}.x needs a driver from {}{}",
                    family.min_driver.as_ref().map(|d| d.to_string()).unwrap_or_default(),
                    family.below_branch.map(|b| format!(" below R{b}")).unwrap_or_default()
                ),
                family_id,
                &family.sources,
            )),
        }
    None
}

/// The reading by forward compatibility: a newer libcuda from
/// cuda-compat-X-Y, on the branches it lists, on data-center GPUs.
fn forward_compat(
    driver: &Dotted,
    row: &ToolkitRow,
    gpu: Option<&Gpu>,
    mut reasons: Vec<Reason>,
) -> Reading {
    let (major, minor, _) = row.key().unwrap_or((0, 0, 0));
    let short = format!("{major}.{minor}");
    let branch = driver.major();
    let Some(fc) = forward_compat_row(major, minor) else {
        reasons.push(reason(
            format!("NVIDIA ships no forward-compatibility package for CUDA {short} in the current matrix"),
            "forward_compat (none)",
            &[],
        ));
        return incompatible(reasons);
    };
    let fc_id = format!("forward_compat {}", fc.package);
    if fc.native_branches.contains(&branch) {
        reasons.push(reason(
            format!("R{branch} is CUDA {short}'s own branch: upgrade within it to {} or newer instead of a compat package", row.min_driver),
            fc_id,
            &fc.sources,
        ));
        return incompatible(reasons);
    }
    let doc_lists = fc.supported_branches.contains(&branch);
    let other_lists =
        fc.elf_note_branches.contains(&branch) || fc.container_branches.contains(&branch);
    if !doc_lists && !other_lists {
        reasons.push(reason(
            format!(
                "{} supports drivers of branches {} only; R{branch} is not one of them",
                fc.package,
                fc.supported_branches
                    .iter()
                    .map(|b| format!("R{b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fc_id,
            &fc.sources,
        ));
        return incompatible(reasons);
    }
    let mut draft = Draft {
        verdict: Verdict::NeedsCompatPackage,
        readings: Vec::new(),
        reasons,
    };
    branch_listing(&mut draft, fc, branch, doc_lists, &short);
    if !gpu_reading(&mut draft, fc, row, gpu) {
        return incompatible(draft.reasons);
    }
    Reading {
        verdict: draft.verdict,
        mode: Mode::ForwardCompat,
        package: Some(fc.package.clone()),
        limitations: forward_compat_limitations(&fc.package),
        reasons: draft.reasons,
        readings: draft.readings,
    }
}

/// A forward-compatibility reading being made.
struct Draft {
    verdict: Verdict,
    readings: Vec<String>,
    reasons: Vec<Reason>,
}

/// Whether the sources list the branch for the compat package, and agree.
fn branch_listing(
    draft: &mut Draft,
    fc: &ForwardCompat,
    branch: u32,
    doc_lists: bool,
    short: &str,
) {
    let kb = Knowledge::get();
    let fc_id = format!("forward_compat {}", fc.package);
    let (reasons, readings) = (&mut draft.reasons, &mut draft.readings);
    if doc_lists {
        reasons.push(reason(
            format!(
                "{} supports driver branch R{branch} (forward compatibility)",
                fc.package
            ),
            fc_id.clone(),
            &fc.sources,
        ));
        // The current matrix excludes New Feature Branches while listing
        // some; the 2021 note (historical rows) names R440 itself.
        let historical = fc.sources.iter().any(|s| s == "S-DC-2021");
        if let Some(kind) = kb.branch(branch).map(|b| b.kind.as_str())
            && kind.starts_with("NFB")
            && !historical
        {
            draft.verdict = Verdict::Ambiguous;
            readings.push(format!(
                "the forward-compatibility table marks R{branch} as supported for {}",
                fc.package
            ));
            readings.push(format!("the same page says New Feature Branches (R{branch} is one) are not supported targets"));
            reasons.push(reason(
                format!("R{branch} is a New Feature Branch, which the same document excludes from forward compatibility"),
                format!("branch {branch}"),
                &kb.branch(branch).map(|b| b.sources.clone()).unwrap_or_default(),
            ));
        }
    } else {
        draft.verdict = Verdict::Ambiguous;
        readings.push(format!(
            "NVIDIA's documentation does not list R{branch} for {}",
            fc.package
        ));
        readings.push(format!(
            "the compat library's ELF note or NVIDIA's container images accept R{branch} for CUDA {short}"
        ));
        reasons.push(reason(
            format!("sources disagree whether {} supports R{branch}", fc.package),
            fc_id.clone(),
            &fc.sources,
        ));
    }
}

/// The GPU's part: false when it rules forward compatibility out.
fn gpu_reading(draft: &mut Draft, fc: &ForwardCompat, row: &ToolkitRow, gpu: Option<&Gpu>) -> bool {
    let (reasons, readings) = (&mut draft.reasons, &mut draft.readings);
    match gpu {
        Some(gpu) => match gpu.row.forward_compat.as_str() {
            "yes" => reasons.push(reason(
                format!(
                    "{} is a data-center GPU: forward compatibility is available",
                    gpu.label
                ),
                format!("gpu {}", gpu.row.device),
                &gpu.row.sources,
            )),
            "no" => {
                reasons.push(reason(
                    format!(
                        "{} is not a data-center GPU: forward compatibility fails there with error 804; upgrade the driver to {} or newer",
                        gpu.label, row.min_driver
                    ),
                    format!("gpu {}", gpu.row.device),
                    &gpu.row.sources,
                ));
                return false;
            }
            _ => {
                draft.verdict = Verdict::Ambiguous;
                readings.push(format!(
                    "{} may be a select NGC-ready RTX part, which forward compatibility serves",
                    gpu.label
                ));
                readings.push(format!(
                    "{} is not a data-center GPU, which forward compatibility requires",
                    gpu.label
                ));
                reasons.push(reason(
                    gpu.row.forward_compat_note.clone().unwrap_or_else(|| {
                        format!("forward compatibility on {} is not documented", gpu.label)
                    }),
                    format!("gpu {}", gpu.row.device),
                    &gpu.row.sources,
                ));
            }
        },
        None => reasons.push(reason(
            "forward compatibility needs a data-center GPU (no GPU was given)",
            "forward_compat_rules",
            &fc.sources,
        )),
    }
    true
}

/// Incompatible > ambiguous > needs a package > compatible.
pub fn worst(verdicts: impl Iterator<Item = Verdict>) -> Verdict {
    let rank = |v: Verdict| match v {
        Verdict::Compatible => 0,
        Verdict::NeedsCompatPackage => 1,
        Verdict::Ambiguous => 2,
        Verdict::Incompatible => 3,
    };
    verdicts
        .max_by_key(|v| rank(*v))
        .unwrap_or(Verdict::Compatible)
}

/// One question on every GPU model of a host (or none), keeping the
/// worst answer: a host is only as compatible as its least GPU.
pub fn evaluate_on(
    driver: &str,
    target: &Target,
    gpus: &[&GpuRow],
    flavor: Option<&str>,
) -> Result<Answer, QuestionError> {
    if gpus.is_empty() {
        return evaluate(driver, target, None, flavor);
    }
    let mut answers = Vec::new();
    for gpu in gpus {
        answers.push(evaluate(driver, target, Some(gpu), flavor)?);
    }
    let verdict = worst(answers.iter().map(|a| a.verdict));
    Ok(answers
        .into_iter()
        .find(|a| a.verdict == verdict)
        .expect("one answer has the worst verdict"))
}

/// The whole question: driver, CUDA release or wheel, optional GPU and flavour.
pub fn evaluate(
    driver_text: &str,
    target: &Target,
    gpu: Option<&GpuRow>,
    flavor: Option<&str>,
) -> Result<Answer, QuestionError> {
    let (driver, mut preamble) = parse_driver(driver_text)?;
    let mut disputed = None;
    let (cuda_text, torch) = match target {
        Target::Cuda(text) => (text.clone(), None),
        Target::Torch(text) => {
            let (cuda, reasons, dispute) = torch_target(text)?;
            preamble.extend(reasons);
            disputed = dispute;
            (cuda, Some(text.clone()))
        }
    };
    let (rows, note) = toolkit_rows(&cuda_text)?;
    if let Some(note) = note {
        preamble.push(reason(note, format!("toolkit {cuda_text}"), &[]));
    }
    let gpu = gpu.map(|row| Gpu {
        label: row.name.clone(),
        row,
    });
    let cuda_version = Dotted::parse(&cuda_text).expect("parsed above");
    let mut problems = gpu
        .as_ref()
        .map(|g| gpu_problems(g, &driver, flavor, &cuda_version))
        .unwrap_or_default();
    if let (Some(torch), Some(gpu)) = (&torch, &gpu) {
        problems.extend(wheel_arch_problems(torch, gpu));
    }
    let readings: Vec<Reading> = rows
        .iter()
        .map(|row| driver_vs_release(&driver, row, gpu.as_ref()))
        .collect();
    let question = Question {
        driver_text,
        cuda_text: &cuda_text,
        torch: torch.as_deref(),
        gpu: gpu.as_ref(),
        flavor,
    };
    let mut answer = question.answer(&rows, &readings, preamble);
    if let (Some(note), Some(torch)) = (disputed, &torch) {
        dispute_wheel(&mut answer, &readings[0], torch, note);
    }
    // A branch is read as its newest release, a number no driver has:
    // reasons name it in words instead.
    if !driver_text.contains('.') {
        let sentinel = driver.to_string();
        let words = format!("R{}'s newest release", driver.major());
        for reason in answer.reasons.iter_mut().chain(problems.iter_mut()) {
            reason.text = reason.text.replace(&sentinel, &words);
        }
    }
    if !problems.is_empty() {
        answer.verdict = Verdict::Incompatible;
        answer.mode = Mode::None;
        answer.package = None;
        answer.limitations.clear();
        answer.readings.clear();
        let mut reasons = problems;
        reasons.extend(answer.reasons);
        answer.reasons = reasons;
    }
    Ok(answer)
}

/// What one evaluation asks, for building its answer.
struct Question<'a> {
    driver_text: &'a str,
    cuda_text: &'a str,
    torch: Option<&'a str>,
    gpu: Option<&'a Gpu<'a>>,
    flavor: Option<&'a str>,
}

impl Question<'_> {
    /// The answer from the readings of every release the CUDA version
    /// names: theirs when they agree, "ambiguous" with each when not.
    fn answer(&self, rows: &[&ToolkitRow], readings: &[Reading], preamble: Vec<Reason>) -> Answer {
        let first = &readings[0];
        let agree = readings
            .iter()
            .all(|r| r.verdict == first.verdict && r.mode == first.mode);
        let mut answer = Answer {
            driver: self.driver_text.to_string(),
            cuda: if rows.len() == 1 {
                rows[0].release.clone()
            } else {
                self.cuda_text.to_string()
            },
            cuda_label: self.label(rows),
            gpu: self.gpu.map(|g| {
                if g.label.contains(&g.row.device) {
                    g.label.clone()
                } else {
                    format!("{} ({})", g.label, g.row.device)
                }
            }),
            flavor: self.flavor.map(str::to_string),
            verdict: first.verdict,
            mode: first.mode,
            package: first.package.clone(),
            min_driver: rows
                .iter()
                .map(|r| &r.min_driver)
                .max()
                .map(|d| d.to_string()),
            limitations: first.limitations.clone(),
            reasons: preamble,
            readings: first.readings.clone(),
        };
        if agree {
            answer.reasons.extend(first.reasons.iter().cloned());
            return answer;
        }
        answer.verdict = Verdict::Ambiguous;
        answer.readings = rows
            .iter()
            .zip(readings)
            .map(|(row, reading)| {
                format!(
                    "if it is {}: {} ({})",
                    row.label, reading.verdict, reading.mode
                )
            })
            .collect();
        for reading in readings {
            answer.reasons.extend(reading.reasons.iter().cloned());
        }
        answer.reasons.dedup();
        answer
    }

    /// "torch 2.9.1+cu130 (CUDA 13.0 GA)", "CUDA 12.8 GA", or for a
    /// version several releases share, all of them.
    fn label(&self, rows: &[&ToolkitRow]) -> String {
        match (self.torch, rows) {
            (Some(torch), [row]) => format!(
                "torch {torch} (CUDA {})",
                row.label.trim_start_matches("CUDA ")
            ),
            (None, [row]) => row.label.clone(),
            (_, many) => format!(
                "CUDA {} (one of {})",
                self.cuda_text,
                many.iter()
                    .map(|r| r.release.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A wheel the release matrices do not list: the answer holds only if it
/// exists.
fn dispute_wheel(answer: &mut Answer, first: &Reading, torch: &str, note: String) {
    if answer.verdict == Verdict::Incompatible {
        return;
    }
    answer.verdict = Verdict::Ambiguous;
    answer.readings = vec![
        format!("the release matrices do not list {torch}: the wheel may not exist"),
        format!(
            "another source installs {torch}: if it exists, {} ({})",
            first.verdict, first.mode
        ),
    ];
    answer.reasons.push(reason(
        note,
        format!("pytorch_wheel {}", torch.split('+').nth(1).unwrap_or("")),
        &[],
    ));
}
