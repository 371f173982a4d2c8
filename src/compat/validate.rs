//! Plan validation against the detected GPUs and the knowledge base: a plan
//! that cannot work is refused, with the reason and a fix, before anything
//! changes. Also decides which `cuda-compat-X-Y` `[compat] package = "auto"`
//! means on this host.

use super::knowledge::{GpuRow, Knowledge};
use super::rules::{self, Mode, Target, Verdict};
use crate::facts::Facts;
use crate::facts::pci::Kind;
use crate::plan::{CompatPackage, DriverTarget, Flavor, Plan};
use crate::version::Dotted;

#[derive(Debug, Default)]
pub struct Validation {
    /// Reasons the plan cannot go ahead, each with what to do instead.
    pub problems: Vec<String>,
    /// Things a person should know before applying.
    pub warnings: Vec<String>,
    /// The forward-compatibility package the plan installs, if any.
    pub compat_package: Option<String>,
}

/// The driver release the plan asks for, as the rules read it: an exact
/// release, or a branch's newest.
fn planned_driver(plan: &Plan) -> String {
    match &plan.driver.target {
        DriverTarget::Version(version) => version.to_string(),
        DriverTarget::Branch(branch) => branch.to_string(),
    }
}

fn gpus(facts: &Facts) -> Vec<&'static GpuRow> {
    let kb = Knowledge::get();
    let mut rows: Vec<&GpuRow> = Vec::new();
    for gpu in facts.gpus.iter().filter(|g| g.kind == Kind::Gpu) {
        if let Some((row, _)) = kb.gpu(gpu.device_id(), gpu.subsystem.as_deref())
            && !rows.iter().any(|r| std::ptr::eq(*r, row))
        {
            rows.push(row);
        }
    }
    rows
}

/// The branch of a driver release ("570.124.06" -> 570).
fn branch_of(version: &str) -> u32 {
    Dotted::parse(version).map(|v| v.major()).unwrap_or(0)
}

pub fn validate(plan: &Plan, facts: &Facts) -> Validation {
    let mut v = Validation::default();
    let driver = planned_driver(plan);
    let branch = plan.driver.target.branch().0;
    let flavor = match plan.driver.flavor {
        Flavor::Open => Some("open"),
        Flavor::Proprietary => Some("proprietary"),
        Flavor::Auto => None,
    };
    let gpus = gpus(facts);
    let mut reported: Vec<String> = Vec::new();

    // A container whose driver is the machine's underneath: a driver
    // installed here can never load, and its libraries would not match the
    // module that runs ("Driver/library version mismatch").
    let host_libcuda = facts
        .user_driver
        .libcuda
        .as_deref()
        .is_some_and(|p| p.starts_with("/usr/local/nvidia/"));
    if let (Some(container), Some(module)) = (&facts.os.container, &facts.kernel_driver.version)
        && (host_libcuda || !facts.os.read_only_driver_mounts.is_empty())
    {
        let mounted = if facts.os.read_only_driver_mounts.is_empty() {
            "/usr/local/nvidia".to_string()
        } else {
            facts.os.read_only_driver_mounts.join(", ")
        };
        v.problems.push(format!(
            "this is a {container} container whose NVIDIA driver comes from the machine underneath (kernel module {module}, libraries mounted at {mounted}): \
             a driver installed here cannot load and would not match that module; apply the plan to the machine itself (or `--root` at its root)"
        ));
    }
    let unknown_gpus: Vec<&str> = facts
        .gpus
        .iter()
        .filter(|g| g.kind == Kind::Gpu && g.name.is_none())
        .map(|g| g.pci_id.as_str())
        .collect();
    if !unknown_gpus.is_empty() {
        v.warnings.push(format!(
            "GPU(s) {} are not in the knowledge base: their driver and CUDA support is not checked",
            unknown_gpus.join(", ")
        ));
    }

    // The driver must support every GPU, in the planned flavour. A toolkit
    // question with the toolkit's release carries the GPU checks too.
    let toolkit = plan.toolkit.as_ref().map(|t| t.version.to_string());
    let cuda_for_gpu_checks = toolkit.clone().unwrap_or_else(|| "12.0".to_string());
    for gpu in &gpus {
        let answer = match rules::evaluate(
            &driver,
            &Target::Cuda(cuda_for_gpu_checks.clone()),
            Some(gpu),
            flavor,
        ) {
            Ok(answer) => answer,
            Err(error) => {
                v.problems.push(error.to_string());
                continue;
            }
        };
        for reason in answer
            .reasons
            .iter()
            .filter(|r| r.row.starts_with("gpu ") || r.row.starts_with("arch "))
        {
            let is_problem = answer.verdict == Verdict::Incompatible
                && !reason.text.contains("forward compatibility")
                && !reason.text.contains("data-center GPU");
            if is_problem && (toolkit.is_some() || !reason.text.starts_with("CUDA ")) {
                reported.push(reason.text.clone());
                v.problems.push(format!(
                    "{}: {}",
                    reason.text,
                    fix_for_gpu(gpu, branch, &reason.text)
                ));
            }
        }
    }

    // The toolkit on the planned driver: native, minor-version, or only
    // with a compat package (which the plan must allow), else refused.
    if let Some(toolkit) = &toolkit {
        let verdicts: Vec<rules::Answer> = if gpus.is_empty() {
            rules::evaluate(&driver, &Target::Cuda(toolkit.clone()), None, flavor)
                .into_iter()
                .collect()
        } else {
            gpus.iter()
                .filter_map(|gpu| {
                    rules::evaluate(&driver, &Target::Cuda(toolkit.clone()), Some(gpu), flavor).ok()
                })
                .collect()
        };
        for answer in &verdicts {
            match answer.verdict {
                Verdict::NeedsCompatPackage => {
                    let package = answer.package.clone().unwrap_or_default();
                    match &plan.compat {
                        CompatPackage::Auto => v.compat_package = Some(package),
                        CompatPackage::Named(name) if *name == package => v.compat_package = Some(package),
                        CompatPackage::Named(name) => v.problems.push(format!(
                            "CUDA {toolkit} on driver R{branch} needs {package}, not {name}: set [compat] package = \"{package}\" (or \"auto\")"
                        )),
                        CompatPackage::None => v.problems.push(format!(
                            "CUDA {toolkit} is newer than driver R{branch} runs natively or by minor-version compatibility{}: set [compat] package = \"auto\" to install {package}, or plan driver branch {} or newer",
                            answer.gpu.as_ref().map(|g| format!(" on {g}")).unwrap_or_default(),
                            answer.min_driver.as_deref().map(branch_of).unwrap_or(0)
                        )),
                    }
                }
                Verdict::Incompatible => {
                    if answer.reasons.iter().any(|r| reported.contains(&r.text)) {
                        continue; // reported above with the GPU's own fix
                    }
                    let why = answer
                        .reasons
                        .iter()
                        .rev()
                        .find(|r| !r.text.is_empty())
                        .map(|r| r.text.clone())
                        .unwrap_or_default();
                    v.problems.push(format!(
                        "CUDA {toolkit} cannot run on driver R{branch}{}: {why}; plan driver branch {} or newer",
                        answer.gpu.as_ref().map(|g| format!(" with {g}")).unwrap_or_default(),
                        answer.min_driver.as_deref().map(branch_of).unwrap_or(0)
                    ));
                }
                Verdict::Ambiguous => v.warnings.push(format!(
                    "whether CUDA {toolkit} runs on driver R{branch} is ambiguous: {}",
                    answer.readings.join("; or ")
                )),
                Verdict::Compatible => {
                    if answer.mode == Mode::MinorVersion {
                        v.warnings.push(format!(
                            "CUDA {toolkit} runs on driver R{branch} by minor-version compatibility: {}",
                            answer.limitations.join("; ")
                        ));
                    }
                }
            }
        }
    }

    // An explicit compat package must make sense on this host.
    if let CompatPackage::Named(name) = &plan.compat {
        let short = name.trim_start_matches("cuda-compat-").replace('-', ".");
        match rules::forward_compat_package(&short) {
            None => v.problems.push(format!(
                "{name} is not in NVIDIA's forward-compatibility matrix: use one of {}",
                Knowledge::get()
                    .forward_compat()
                    .iter()
                    .map(|r| r.package.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(fc) => {
                if fc.built_from_branch < branch {
                    v.problems.push(format!(
                        "{name} carries a libcuda from R{}, older than the planned driver R{branch}: it would be useless, or fail with error 803 on the loader path; remove [compat] package or set it to \"none\"",
                        fc.built_from_branch
                    ));
                } else if fc.built_from_branch == branch || fc.native_branches.contains(&branch) {
                    v.problems.push(format!(
                        "{name} is pointless with driver R{branch}, which runs CUDA {short} natively: set [compat] package = \"none\""
                    ));
                } else if !fc.supported_branches.contains(&branch) {
                    v.problems.push(format!(
                        "{name} supports driver branches {} only, not R{branch}: plan one of them, or a driver that runs CUDA {short} natively",
                        fc.supported_branches.iter().map(|b| format!("R{b}")).collect::<Vec<_>>().join(", ")
                    ));
                } else if v.compat_package.is_none() && toolkit.is_some() {
                    v.problems.push(format!(
                        "{name} is pointless: the planned toolkit runs on driver R{branch} without it; set [compat] package = \"none\""
                    ));
                }
                for gpu in gpus.iter().filter(|g| g.forward_compat != "yes") {
                    v.problems.push(format!(
                        "{name} needs a data-center GPU; {} ({}) is not one (forward compatibility fails there with error 804): plan a driver that runs the toolkit natively",
                        gpu.name, gpu.class
                    ));
                }
                if v.problems.is_empty() {
                    v.compat_package = Some(name.clone());
                }
            }
        }
    }
    if v.compat_package.is_some() && gpus.is_empty() {
        v.warnings.push(
            "forward compatibility works only on data-center GPUs, and no GPU is present to check"
                .into(),
        );
    }
    v.problems.dedup();
    v.warnings.dedup();
    v
}

/// What to do about a GPU the planned driver cannot serve.
fn fix_for_gpu(gpu: &GpuRow, branch: u32, problem: &str) -> String {
    if problem.contains("open kernel module") && problem.contains("needs the proprietary") {
        return "set [driver] flavor = \"proprietary\" (or \"auto\")".into();
    }
    if problem.contains("runs only with the open kernel module") {
        return "set [driver] flavor = \"open\" (or \"auto\")".into();
    }
    if problem.starts_with("CUDA ") {
        return "plan an older toolkit that still supports this GPU".into();
    }
    if let Some(min) = gpu.min_driver_branch
        && branch < min
    {
        return format!("plan driver branch {min} or newer");
    }
    if let Some(last) = gpu.last_driver_branch.or_else(|| {
        Knowledge::get()
            .arch_of(&gpu.compute_capability)
            .and_then(|a| a.last_driver_branch)
    }) && branch > last
    {
        return format!("plan driver branch {last} or older");
    }
    "plan a driver and toolkit that support this GPU".into()
}

/// Problems that stop the plan (kept for callers that need only those).
pub fn check_plan(plan: &Plan, facts: &Facts) -> Vec<String> {
    validate(plan, facts).problems
}
