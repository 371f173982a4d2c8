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

use super::knowledge::{ForwardCompat, GpuRow, Knowledge, ToolkitRow};
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

/// One step of the reasoning, with the knowledge-base row it rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub text: String,
    /// "toolkit 12.8.1", "gpu 0x2330", "forward_compat cuda-compat-13-0", ...
    pub row: String,
    pub sources: Vec<String>,
}

fn reason(text: impl Into<String>, row: impl Into<String>, sources: &[String]) -> Reason {
    Reason {
        text: text.into(),
        row: row.into(),
        sources: sources.to_vec(),
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

/// What the question asks for: a toolkit release or a PyTorch wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// "12.8" (GA), "12.8.1" (Update 1), "12.8.93" (a component's full
    /// version: one of 12.8's releases), "10.2.89".
    Cuda(String),
    /// "2.9.1+cu130"
    Torch(String),
}

#[derive(Debug, thiserror::Error)]
pub enum QuestionError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> QuestionError {
    QuestionError::Invalid(message.into())
}

/// Parses `--driver`: a release ("535.104.05") or a branch ("580": its
/// newest release).
pub fn parse_driver(text: &str) -> Result<(Dotted, Option<Reason>), QuestionError> {
    let version = Dotted::parse(text).ok_or_else(|| {
        invalid(format!(
            "--driver {text:?}: expected a driver release such as 580.95.05 or a branch such as 580"
        ))
    })?;
    if version.major() < 100 {
        return Err(invalid(format!(
            "--driver {text:?}: driver versions start with their branch, such as 580"
        )));
    }
    if version.components().len() == 1 {
        let newest = Dotted::parse(&format!("{}.9999.99", version.major())).expect("valid");
        let note = reason(
            format!(
                "driver {text} is read as branch {}'s newest release",
                version.major()
            ),
            format!("branch {}", version.major()),
            &[],
        );
        return Ok((newest, Some(note)));
    }
    Ok((version, None))
}

/// The knowledge-base rows a CUDA version names.
pub fn toolkit_rows(
    text: &str,
) -> Result<(Vec<&'static ToolkitRow>, Option<String>), QuestionError> {
    let kb = Knowledge::get();
    let version = Dotted::parse(text)
        .filter(|v| (2..=3).contains(&v.components().len()))
        .ok_or_else(|| {
            invalid(format!(
                "CUDA version {text:?}: expected 12.8, 12.8.1 or a full version such as 12.8.93"
            ))
        })?;
    let (major, minor) = (version.major(), version.minor());
    let same_minor: Vec<&ToolkitRow> = kb
        .toolkits()
        .iter()
        .filter(|row| row.key().is_some_and(|(a, b, _)| (a, b) == (major, minor)))
        .collect();
    if same_minor.is_empty() {
        let mut known: Vec<String> = kb
            .toolkits()
            .iter()
            .filter_map(|r| r.key())
            .map(|(a, b, _)| format!("{a}.{b}"))
            .collect();
        known.dedup();
        return Err(invalid(format!(
            "CUDA {major}.{minor} is not a release the knowledge base knows (known: {})",
            known.join(", ")
        )));
    }
    // An exact row first (12.8.1, 10.2.89).
    if let Some(row) = same_minor
        .iter()
        .find(|r| r.release == text || r.release.split('-').next() == Some(text))
    {
        return Ok((vec![row], None));
    }
    match version.components().get(2).copied() {
        // "12.8": its GA (the row labelled GA, else the first release).
        None => {
            let ga = same_minor
                .iter()
                .find(|r| r.label.ends_with(" GA"))
                .or_else(|| {
                    same_minor
                        .iter()
                        .filter(|r| !r.is_preview())
                        .min_by_key(|r| r.key())
                })
                .or(same_minor.first())
                .copied()
                .expect("non-empty");
            Ok((vec![ga], None))
        }
        // "12.8.9": an update index the base does not have.
        Some(update) if update < 20 => Err(invalid(format!(
            "CUDA {text}: the knowledge base has no Update {update} of {major}.{minor} (it has {})",
            same_minor
                .iter()
                .map(|r| r.release.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        // "12.8.93": a component's full version, which names no single
        // release: every release of the minor is a candidate.
        Some(_) => Ok((
            same_minor,
            Some(format!(
                "{text} is a component version of CUDA {major}.{minor}, not a release: every {major}.{minor} release is considered"
            )),
        )),
    }
}

/// The wheel variant row and its CUDA release for "2.9.1+cu130".
/// The wheel's CUDA release, the reasons, and the dispute when sources
/// disagree whether that wheel was published.
#[allow(clippy::type_complexity)]
pub fn torch_target(text: &str) -> Result<(String, Vec<Reason>, Option<String>), QuestionError> {
    let kb = Knowledge::get();
    let (torch, variant) = text.split_once('+').ok_or_else(|| {
        invalid(format!(
            "--torch {text:?}: expected a wheel version such as 2.9.1+cu130"
        ))
    })?;
    let torch_version = Dotted::parse(torch)
        .ok_or_else(|| invalid(format!("--torch {text:?}: {torch:?} is not a version")))?;
    let row = kb
        .pytorch_wheels()
        .iter()
        .find(|r| r.variant == variant)
        .ok_or_else(|| {
            let known: Vec<&str> = kb
                .pytorch_wheels()
                .iter()
                .map(|r| r.variant.as_str())
                .collect();
            invalid(format!(
                "--torch {text:?}: no {variant} wheels are known (known: {})",
                known.join(", ")
            ))
        })?;
    let minor = format!("{}.{}", torch_version.major(), torch_version.minor());
    let reasons = vec![reason(
        format!(
            "torch {text} bundles the CUDA {} runtime; the driver must run CUDA {}",
            row.cuda, row.cuda
        ),
        format!("pytorch_wheel {}", row.variant),
        &row.sources,
    )];
    let mut disputed = None;
    if !row.torch.contains(&minor) {
        // Unlisted: not published, unless a source disagrees (recorded as CONFLICT).
        match row.notes.as_deref().filter(|n| n.contains("CONFLICT")) {
            Some(note) => disputed = Some(note.to_string()),
            None => {
                return Err(invalid(format!(
                    "torch {minor} was not published with {variant} wheels (they exist for torch {})",
                    row.torch.join(", ")
                )));
            }
        }
    }
    Ok((row.cuda.clone(), reasons, disputed))
}

/// Compute capability as a comparable number (9.0 -> 90, 12.1 -> 121).
fn cc_value(text: &str) -> Option<u32> {
    let version = Dotted::parse(text)?;
    Some(version.major() * 10 + version.minor())
}

struct Gpu<'a> {
    row: &'a GpuRow,
    label: String,
}

/// Problems that stop a GPU from working with this driver, flavour and
/// CUDA major at all (they make the verdict "incompatible").
fn gpu_problems(gpu: &Gpu, driver: &Dotted, flavor: Option<&str>, cuda: &Dotted) -> Vec<Reason> {
    let kb = Knowledge::get();
    let row = gpu.row;
    let arch = kb.arch_of(&row.compute_capability);
    let row_id = format!("gpu {}", row.device);
    let arch_id = |a: &super::knowledge::ArchRow| format!("arch {}", a.name);
    let mut problems = Vec::new();
    let branch = driver.major();
    let last_branch = row
        .last_driver_branch
        .or(arch.and_then(|a| a.last_driver_branch));
    if let Some(last) = last_branch
        && branch > last
    {
        problems.push(reason(
            format!(
                "driver R{branch} no longer supports {} ({}): its last branch is R{last}",
                gpu.label, row.arch
            ),
            row_id.clone(),
            &row.sources,
        ));
    }
    if let Some(min) = row.min_driver_branch
        && branch < min
    {
        problems.push(reason(
            format!(
                "{} needs driver R{min} or newer; R{branch} predates it",
                gpu.label
            ),
            row_id.clone(),
            &row.sources,
        ));
    }
    match (flavor, row.open_module.as_str()) {
        (Some("open"), "unsupported") => problems.push(reason(
            format!("the open kernel module needs a Turing or newer GPU; {} ({}) needs the proprietary module", gpu.label, row.arch),
            row_id.clone(),
            &row.sources,
        )),
        (Some("proprietary"), "required") => problems.push(reason(
            format!("{} ({}) runs only with the open kernel module", gpu.label, row.arch),
            row_id.clone(),
            &row.sources,
        )),
        _ => {}
    }
    let last_cuda = row.last_cuda_major.or(arch.and_then(|a| a.last_cuda_major));
    if let Some(last) = last_cuda
        && cuda.major() > last
    {
        let sources = arch
            .map(|a| a.sources.clone())
            .unwrap_or_else(|| row.sources.clone());
        problems.push(reason(
            format!(
                "CUDA {} dropped {} (compute capability {}): its last toolkit major is CUDA {last}",
                cuda.major(),
                row.arch,
                row.compute_capability
            ),
            arch.map(arch_id).unwrap_or(row_id.clone()),
            &sources,
        ));
    }
    if let Some(arch) = arch
        && let Some(first) = arch
            .first_cuda
            .split_whitespace()
            .next()
            .and_then(Dotted::parse)
        && *cuda < first
    {
        problems.push(reason(
            format!(
                "CUDA {cuda} predates {} (compute capability {}): support starts with CUDA {first}",
                arch.name, row.compute_capability
            ),
            arch_id(arch),
            &arch.sources,
        ));
    }
    problems
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
    let kb = Knowledge::get();
    let toolkit_id = format!("toolkit {}", row.release);
    let (major, minor, _) = row.key().unwrap_or((0, 0, 0));
    let short = format!("{major}.{minor}");
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
    let branch = driver.major();
    if let Some(family) = kb.minor_compat().iter().find(|f| f.cuda_major == major) {
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
                return Reading {
                    verdict: Verdict::Compatible,
                    mode: Mode::MinorVersion,
                    package: None,
                    limitations: minor_version_limitations(&short),
                    reasons,
                    readings: Vec::new(),
                };
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
                return Reading {
                    verdict: Verdict::Ambiguous,
                    mode: Mode::MinorVersion,
                    package: None,
                    limitations: minor_version_limitations(&short),
                    reasons,
                    readings: vec![
                        format!("documented floor R{documented}: compatible by minor-version compatibility"),
                        format!("precise floor {precise}: not compatible below it"),
                    ],
                };
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
    }
    // Forward compatibility: a newer libcuda from cuda-compat-X-Y.
    let Some(fc) = forward_compat_row(major, minor) else {
        reasons.push(reason(
            format!("NVIDIA ships no forward-compatibility package for CUDA {short} in the current matrix"),
            "forward_compat (none)",
            &[],
        ));
        return Reading {
            verdict: Verdict::Incompatible,
            mode: Mode::None,
            package: None,
            limitations: Vec::new(),
            reasons,
            readings: Vec::new(),
        };
    };
    let fc_id = format!("forward_compat {}", fc.package);
    let incompatible = |reasons: Vec<Reason>| Reading {
        verdict: Verdict::Incompatible,
        mode: Mode::None,
        package: None,
        limitations: Vec::new(),
        reasons,
        readings: Vec::new(),
    };
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
    let mut verdict = Verdict::NeedsCompatPackage;
    let mut readings = Vec::new();
    if doc_lists {
        reasons.push(reason(
            format!(
                "{} supports driver branch R{branch} (forward compatibility)",
                fc.package
            ),
            fc_id.clone(),
            &fc.sources,
        ));
        if let Some(kind) = kb.branch(branch).map(|b| b.kind.as_str())
            && kind.starts_with("NFB")
        {
            verdict = Verdict::Ambiguous;
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
        verdict = Verdict::Ambiguous;
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
                return incompatible(reasons);
            }
            _ => {
                verdict = Verdict::Ambiguous;
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
    Reading {
        verdict,
        mode: Mode::ForwardCompat,
        package: Some(fc.package.clone()),
        limitations: forward_compat_limitations(&fc.package),
        reasons,
        readings,
    }
}

/// A GPU as `--gpu` names it: "10de:2330", "0x2330", or a name.
pub fn find_gpu(query: &str) -> Result<&'static GpuRow, QuestionError> {
    let kb = Knowledge::get();
    let hex = query.trim().to_lowercase();
    let device = hex
        .strip_prefix("10de:")
        .or_else(|| hex.strip_prefix("0x"))
        .filter(|d| d.len() == 4 && d.bytes().all(|b| b.is_ascii_hexdigit()));
    if let Some(device) = device {
        let id = u16::from_str_radix(device, 16).map_err(|e| invalid(e.to_string()))?;
        return kb.gpu(id, None).map(|(row, _)| row).ok_or_else(|| {
            invalid(format!(
                "--gpu {query}: device 0x{id:04x} is not in the knowledge base"
            ))
        });
    }
    let found = kb.gpu_by_name(query);
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(invalid(format!(
            "--gpu {query:?}: no GPU of that name in the knowledge base"
        ))),
        many => {
            // "H100" matches several: an exact name wins, else ask.
            if let Some(exact) = many
                .iter()
                .find(|r| r.name.eq_ignore_ascii_case(query) || r.name.ends_with(query))
            {
                return Ok(exact);
            }
            Err(invalid(format!(
                "--gpu {query:?} names several GPUs: {}",
                many.iter()
                    .map(|r| format!("{} ({})", r.name, r.device))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

/// The whole question: driver, CUDA release or wheel, optional GPU and flavour.
pub fn evaluate(
    driver_text: &str,
    target: &Target,
    gpu: Option<&GpuRow>,
    flavor: Option<&str>,
) -> Result<Answer, QuestionError> {
    let (driver, driver_note) = parse_driver(driver_text)?;
    let mut preamble: Vec<Reason> = driver_note.into_iter().collect();
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
    let first = &readings[0];
    let agree = readings
        .iter()
        .all(|r| r.verdict == first.verdict && r.mode == first.mode);
    let min_driver = rows
        .iter()
        .map(|r| &r.min_driver)
        .max()
        .map(|d| d.to_string());
    let cuda_label = match (&torch, rows.as_slice()) {
        (Some(torch), [row]) => format!(
            "torch {torch} (CUDA {})",
            row.label.trim_start_matches("CUDA ")
        ),
        (None, [row]) => row.label.clone(),
        (_, many) => format!(
            "CUDA {cuda_text} (one of {})",
            many.iter()
                .map(|r| r.release.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut answer = Answer {
        driver: driver_text.to_string(),
        cuda: if rows.len() == 1 {
            rows[0].release.clone()
        } else {
            cuda_text.clone()
        },
        cuda_label,
        gpu: gpu
            .as_ref()
            .map(|g| format!("{} ({})", g.label, g.row.device)),
        flavor: flavor.map(str::to_string),
        verdict: first.verdict,
        mode: first.mode,
        package: first.package.clone(),
        min_driver,
        limitations: first.limitations.clone(),
        reasons: preamble,
        readings: first.readings.clone(),
    };
    if agree {
        answer.reasons.extend(first.reasons.iter().cloned());
    } else {
        answer.verdict = Verdict::Ambiguous;
        answer.readings = rows
            .iter()
            .zip(&readings)
            .map(|(row, reading)| {
                format!(
                    "if it is {}: {} ({})",
                    row.label, reading.verdict, reading.mode
                )
            })
            .collect();
        for reading in &readings {
            answer.reasons.extend(reading.reasons.iter().cloned());
        }
        answer.reasons.dedup();
    }
    if let (Some(note), Some(torch)) = (disputed, &torch)
        && answer.verdict != Verdict::Incompatible
    {
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

/// A wheel variant that no longer carries kernels for the GPU's architecture.
fn wheel_arch_problems(torch: &str, gpu: &Gpu) -> Vec<Reason> {
    let Some((version, variant)) = torch.split_once('+') else {
        return Vec::new();
    };
    let (Some(version), Some(cc)) = (
        Dotted::parse(version),
        cc_value(&gpu.row.compute_capability),
    ) else {
        return Vec::new();
    };
    Knowledge::get()
        .pytorch_arches()
        .iter()
        .filter(|row| row.variants.iter().any(|v| v == variant))
        .filter(|row| Dotted::parse(&row.torch_from).is_some_and(|from| version >= from))
        .filter_map(|row| {
            let below = row
                .min_compute_capability
                .as_deref()
                .and_then(cc_value)
                .is_some_and(|min| cc < min);
            let above = row
                .max_compute_capability
                .as_deref()
                .and_then(cc_value)
                .is_some_and(|max| cc > max);
            (below || above).then(|| {
                reason(
                    format!(
                        "torch {torch} carries no kernels for {} (compute capability {}): {}",
                        gpu.label,
                        gpu.row.compute_capability,
                        row.notes.clone().unwrap_or_default()
                    ),
                    format!(
                        "pytorch_arch {} from {}",
                        row.variants.join("/"),
                        row.torch_from
                    ),
                    &row.sources,
                )
            })
        })
        .collect()
}
