//! Plan validation against the detected GPUs and the knowledge base: a plan
//! that cannot work is refused, with the reason and a fix, before anything
//! changes. Also decides which `cuda-compat-X-Y` `[compat] package = "auto"`
//! means on this host.

use super::knowledge::{GpuRow, Knowledge};
use super::rules::{self, Mode, Target, Verdict};
use crate::facts::Facts;
use crate::facts::pci::Kind;
use crate::plan::{CompatPackage, Driver, DriverRef, DriverTarget, Flavor, Plan};
use crate::version::Dotted;

#[derive(Debug, Default)]
pub struct Validation {
    /// Reasons the plan cannot go ahead, each with what to do instead and
    /// the plan table it is about.
    pub problems: Vec<Problem>,
    /// Things a person should know before applying.
    pub warnings: Vec<String>,
    /// The forward-compatibility package the plan installs, if any.
    pub compat_package: Option<String>,
}

/// One reason a plan cannot go ahead: the table of the plan it is about
/// ("driver", "toolkit", "compat") and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub section: &'static str,
    pub text: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Validation {
    fn problem(&mut self, section: &'static str, text: impl Into<String>) {
        let problem = Problem {
            section,
            text: text.into(),
        };
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }
}

/// The driver release the plan asks for, as the rules read it: an exact
/// release, or a branch's newest.
fn planned_driver(driver: &Driver) -> String {
    match &driver.target {
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
    let mut v = match &plan.driver {
        Some(driver) => validate_driver(plan, driver, facts),
        None => validate_toolkit_only(plan, facts),
    };
    if v.compat_package.is_some() && gpus(facts).is_empty() {
        v.warnings.push(
            "forward compatibility works only on data-center GPUs, and no GPU is present to check"
                .into(),
        );
    }
    v.warnings.dedup();
    v
}

fn flavor_name(flavor: Flavor) -> Option<&'static str> {
    match flavor {
        Flavor::Open => Some("open"),
        Flavor::Proprietary => Some("proprietary"),
        Flavor::Auto => None,
    }
}

/// A plan that installs a driver: the driver on every GPU, the toolkit on
/// the driver, the compat package on both.
fn validate_driver(plan: &Plan, planned: &Driver, facts: &Facts) -> Validation {
    let mut v = Validation::default();
    let driver = planned_driver(planned);
    let branch = planned.target.branch().0;
    let flavor = flavor_name(planned.flavor);
    let gpus = gpus(facts);
    container_driver_problem(&mut v, facts);
    unknown_gpu_warning(&mut v, facts);
    ended_branch_warning(&mut v, branch);
    if let DriverTarget::Version(version) = &planned.target {
        uncited_release_warning(&mut v, &version.0);
    }
    let toolkit = plan.toolkit.as_ref().map(|t| t.version.to_string());
    let reported = gpu_problems(
        &mut v,
        &driver,
        branch,
        flavor,
        &gpus,
        toolkit.as_deref(),
        true,
    );
    if let Some(toolkit) = &toolkit {
        let on = OnDriver {
            driver: &driver,
            branch,
            flavor,
            toolkit_only: false,
        };
        toolkit_on_driver(&mut v, plan, &on, toolkit, &gpus, &reported);
    }
    named_compat(&mut v, plan, branch, &gpus, toolkit.is_some());
    v
}

/// A plan without `[driver]`: the toolkit (and compat package) checked
/// against every driver it will run on: the module that runs here (in a
/// container, the machine's), the driver installed in an image, and
/// `[toolkit] for_driver`. Nothing to run on is refused.
fn validate_toolkit_only(plan: &Plan, facts: &Facts) -> Validation {
    let mut v = Validation::default();
    let Some(toolkit) = plan.toolkit.as_ref().map(|t| t.version.to_string()) else {
        return v;
    };
    let drivers = drivers_underneath(plan, facts);
    if drivers.is_empty() {
        v.problem("toolkit", 
            "nothing here can run the toolkit: no NVIDIA kernel module is loaded and no driver is installed in this root; \
             an image baked for GPU nodes names the driver they run with [toolkit] for_driver = \"580\" (or \"580.95.05\"), \
             or add a [driver] table to install one",
        );
        return v;
    }
    unknown_gpu_warning(&mut v, facts);
    let gpus = gpus(facts);
    let flavor = facts.kernel_driver.flavor.as_deref();
    for (driver, planned) in &drivers {
        // The driver that runs drives these GPUs, whatever the knowledge
        // base says; the one an image is baked for is checked like a plan's.
        let branch = branch_of(driver);
        let reported = gpu_problems(
            &mut v,
            driver,
            branch,
            flavor,
            &gpus,
            Some(&toolkit),
            *planned,
        );
        let on = OnDriver {
            driver,
            branch,
            flavor,
            toolkit_only: true,
        };
        toolkit_on_driver(&mut v, plan, &on, &toolkit, &gpus, &reported);
        named_compat(&mut v, plan, branch, &gpus, true);
    }
    compat_shadows_running(&mut v, &drivers);
    v
}

/// A compat package one driver needs (the one an image is baked for)
/// would come first on the loader path of a newer driver that runs here,
/// and shadow it with an older libcuda.
fn compat_shadows_running(v: &mut Validation, drivers: &[(String, bool)]) {
    let Some(package) = v.compat_package.clone() else {
        return;
    };
    let short = package.trim_start_matches("cuda-compat-").replace('-', ".");
    let Some(fc) = rules::forward_compat_package(&short) else {
        return;
    };
    for (driver, _) in drivers.iter().filter(|(_, named)| !named) {
        if branch_of(driver) >= fc.built_from_branch {
            v.problem("compat", format!(
                "{package} carries a libcuda from R{}, and the driver {driver} runs here: on the loader path it would shadow that driver with an older libcuda; \
                 bake the image where no newer driver runs, or plan a toolkit both drivers run without it",
                fc.built_from_branch
            ));
            v.compat_package = None;
        }
    }
}

/// The drivers a toolkit-only plan's toolkit will run on, without
/// repeats: the loaded module's release, the installed user-mode
/// driver's, and the plan's `for_driver` (a branch as its number; true:
/// the plan names it).
pub fn drivers_underneath(plan: &Plan, facts: &Facts) -> Vec<(String, bool)> {
    let mut drivers: Vec<(String, bool)> = Vec::new();
    let planned = plan
        .toolkit
        .as_ref()
        .and_then(|t| t.for_driver.clone())
        .map(|d| match d {
            DriverRef::Branch(branch) => branch.to_string(),
            DriverRef::Version(version) => version.0,
        });
    for (driver, named) in [
        (facts.kernel_driver.version.clone(), false),
        (facts.user_driver.version.clone(), false),
        (planned, true),
    ] {
        if let Some(driver) = driver
            && !drivers.iter().any(|(d, _)| *d == driver)
        {
            drivers.push((driver, named));
        }
    }
    drivers
}

/// In a container the driver is the machine's underneath: a driver
/// installed here can never load, and its libraries would not match the
/// module that runs ("Driver/library version mismatch"). Refused whatever
/// the holders or the window would be.
fn container_driver_problem(v: &mut Validation, facts: &Facts) {
    let Some(container) = facts.os.container_phrase() else {
        return;
    };
    let module = match &facts.kernel_driver.version {
        Some(module) => format!("kernel module {module}"),
        None => "no NVIDIA module loaded".to_string(),
    };
    v.problem("driver", format!(
        "this is {container} ({}; {module}): its NVIDIA driver is the machine's underneath, \
         a driver installed here cannot load and would not match that module; \
         leave out [driver] to install the toolkit only (a plan of [toolkit], [compat] and [environment]), \
         and apply the driver plan to the machine itself (or `--root` at its root)",
        facts.os.container_signs.join("; ")
    ));
}

/// A branch past its end of life gets no more security fixes: said at
/// plan time, with the supported branches to move to (as `recommend`
/// lists them).
fn ended_branch_warning(v: &mut Validation, branch: u32) {
    let kb = Knowledge::get();
    let today = &kb.meta().compiled;
    let Some(row) = kb.branch(branch).filter(|row| row.ended_before(today)) else {
        return;
    };
    let eol = row
        .end_of_life_date
        .as_deref()
        .or(row.end_of_life.as_deref())
        .unwrap_or("?");
    let live: Vec<String> = kb
        .branches()
        .iter()
        .filter(|b| b.kind.starts_with("LTSB") && !b.ended_before(today))
        .map(|b| format!("R{} ({})", b.branch, b.kind))
        .collect();
    v.warnings.push(format!(
        "driver branch R{branch} reached its end of life on {eol} (knowledge base of {today}): it gets no more security fixes; \
         supported long-term branches: {} (`provision recommend` for this host)",
        live.join(", ")
    ));
}

/// An exact release the knowledge base does not list for its branch (a
/// typo such as 580.95.99 for 580.95.05, or a release newer than the
/// base): said before apply finds out at the package step.
fn uncited_release_warning(v: &mut Validation, version: &str) {
    let Some(parsed) = Dotted::parse(version) else {
        return;
    };
    let cited = super::question::cited_releases(parsed.major());
    if cited.is_empty() || cited.contains(&parsed) {
        return;
    }
    let list: Vec<String> = cited.iter().map(Dotted::to_string).collect();
    v.warnings.push(format!(
        "[driver] version = \"{version}\" is not among the R{} releases the knowledge base lists ({}): check the repository carries it \
         (apt-cache madison / dnf list --showduplicates); if none does, apply stops at the package step with nothing changed",
        parsed.major(),
        list.join(", ")
    ));
}

fn unknown_gpu_warning(v: &mut Validation, facts: &Facts) {
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
}

/// The driver must support every GPU, in the planned flavour; the
/// toolkit (when there is one) every GPU's architecture. `driver_checks`:
/// false when the driver is not the plan's (a toolkit-only plan), so
/// only the toolkit's problems count. Returns the reasons reported.
fn gpu_problems(
    v: &mut Validation,
    driver: &str,
    branch: u32,
    flavor: Option<&str>,
    gpus: &[&GpuRow],
    toolkit: Option<&str>,
    driver_checks: bool,
) -> Vec<String> {
    let mut reported = Vec::new();
    let cuda_for_gpu_checks = toolkit.unwrap_or("12.0").to_string();
    for gpu in gpus {
        let answer = match rules::evaluate(
            driver,
            &Target::Cuda(cuda_for_gpu_checks.clone()),
            Some(gpu),
            flavor,
        ) {
            Ok(answer) => answer,
            Err(error) => {
                v.problem(
                    if driver_checks { "driver" } else { "toolkit" },
                    error.to_string(),
                );
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
            let toolkit_problem = reason.text.starts_with("CUDA ");
            let counts = if toolkit_problem {
                toolkit.is_some()
            } else {
                driver_checks
            };
            if is_problem && counts {
                reported.push(reason.text.clone());
                v.problem(
                    if toolkit_problem { "toolkit" } else { "driver" },
                    format!(
                        "{}: {}",
                        reason.text,
                        fix_for_gpu(gpu, branch, &reason.text)
                    ),
                );
            }
        }
    }
    reported
}

/// The driver a toolkit is checked against.
struct OnDriver<'a> {
    /// A release ("580.159.04") or a branch ("580").
    driver: &'a str,
    branch: u32,
    flavor: Option<&'a str>,
    /// The driver is not the plan's: the way out is forward compatibility
    /// or an older toolkit, not another driver.
    toolkit_only: bool,
}

impl OnDriver<'_> {
    /// "driver R580", or for the driver underneath "the driver 580.159.04".
    fn label(&self) -> String {
        if self.toolkit_only {
            format!("the driver {}", self.driver)
        } else {
            format!("driver R{}", self.branch)
        }
    }

    /// What to plan instead: a newer driver, or (the driver not being the
    /// plan's) the newest toolkit this driver runs natively.
    fn way_out(&self, answer: &rules::Answer) -> String {
        if !self.toolkit_only {
            return format!(
                "plan driver branch {} or newer",
                answer.min_driver.as_deref().map(branch_of).unwrap_or(0)
            );
        }
        match Knowledge::get()
            .branch(self.branch)
            .and_then(|b| b.max_cuda.clone())
        {
            Some(max) => format!(
                "plan an older toolkit: CUDA {max} (the newest R{} runs natively) or older",
                self.branch
            ),
            None => "plan an older toolkit".into(),
        }
    }
}

/// The knowledge base's answer for the toolkit on the driver, one per GPU
/// (one for no GPU).
fn answers_on(on: &OnDriver, toolkit: &str, gpus: &[&GpuRow]) -> Vec<rules::Answer> {
    let target = Target::Cuda(toolkit.to_string());
    if gpus.is_empty() {
        return rules::evaluate(on.driver, &target, None, on.flavor)
            .into_iter()
            .collect();
    }
    gpus.iter()
        .filter_map(|gpu| rules::evaluate(on.driver, &target, Some(gpu), on.flavor).ok())
        .collect()
}

/// The toolkit on the driver: native, minor-version, or only with a
/// compat package (which the plan must allow), else refused.
fn toolkit_on_driver(
    v: &mut Validation,
    plan: &Plan,
    on: &OnDriver,
    toolkit: &str,
    gpus: &[&GpuRow],
    reported: &[String],
) {
    let label = on.label();
    for answer in &answers_on(on, toolkit, gpus) {
        match answer.verdict {
            Verdict::NeedsCompatPackage => {
                let package = answer.package.clone().unwrap_or_default();
                match &plan.compat {
                    CompatPackage::Auto => v.compat_package = Some(package),
                    CompatPackage::Named(name) if *name == package => v.compat_package = Some(package),
                    CompatPackage::Named(name) => v.problem("compat", format!(
                        "CUDA {toolkit} on {label} needs {package}, not {name}: set [compat] package = \"{package}\" (or \"auto\")"
                    )),
                    CompatPackage::None => v.problem("compat", format!(
                        "CUDA {toolkit} is newer than {label} runs natively or by minor-version compatibility{}: set [compat] package = \"auto\" to install {package}, or {}",
                        answer.gpu.as_ref().map(|g| format!(" on {g}")).unwrap_or_default(),
                        on.way_out(answer)
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
                v.problem(
                    "toolkit",
                    format!(
                        "CUDA {toolkit} cannot run on {label}{}: {why}; {}",
                        answer
                            .gpu
                            .as_ref()
                            .map(|g| format!(" with {g}"))
                            .unwrap_or_default(),
                        on.way_out(answer)
                    ),
                );
            }
            Verdict::Ambiguous => v.warnings.push(format!(
                "whether CUDA {toolkit} runs on {label} is ambiguous: {}",
                answer.readings.join("; or ")
            )),
            Verdict::Compatible => {
                if answer.mode == Mode::MinorVersion {
                    v.warnings.push(format!(
                        "CUDA {toolkit} runs on {label} by minor-version compatibility: {}",
                        answer.limitations.join("; ")
                    ));
                }
            }
        }
    }
}

/// An explicit compat package must make sense on this host.
fn named_compat(v: &mut Validation, plan: &Plan, branch: u32, gpus: &[&GpuRow], has_toolkit: bool) {
    if let CompatPackage::Named(name) = &plan.compat {
        let short = name.trim_start_matches("cuda-compat-").replace('-', ".");
        match rules::forward_compat_package(&short) {
            None => v.problem(
                "compat",
                format!(
                    "{name} is not in NVIDIA's forward-compatibility matrix: use one of {}",
                    Knowledge::get()
                        .forward_compat()
                        .iter()
                        .map(|r| r.package.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(fc) => {
                if fc.built_from_branch < branch {
                    v.problem("compat", format!(
                        "{name} carries a libcuda from R{}, older than the planned driver R{branch}: it would be useless, or fail with error 803 on the loader path; remove [compat] package or set it to \"none\"",
                        fc.built_from_branch
                    ));
                } else if fc.built_from_branch == branch || fc.native_branches.contains(&branch) {
                    v.problem("compat", format!(
                        "{name} is pointless with driver R{branch}, which runs CUDA {short} natively: set [compat] package = \"none\""
                    ));
                } else if !fc.supported_branches.contains(&branch) {
                    v.problem("compat", format!(
                        "{name} supports driver branches {} only, not R{branch}: plan one of them, or a driver that runs CUDA {short} natively",
                        fc.supported_branches.iter().map(|b| format!("R{b}")).collect::<Vec<_>>().join(", ")
                    ));
                } else if v.compat_package.is_none()
                    && has_toolkit
                    && !v.problems.iter().any(|p| p.section == "toolkit")
                {
                    v.problem("compat", format!(
                        "{name} is pointless: the planned toolkit runs on driver R{branch} without it; set [compat] package = \"none\""
                    ));
                }
                for gpu in gpus.iter().filter(|g| g.forward_compat != "yes") {
                    v.problem("compat", format!(
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
    validate(plan, facts)
        .problems
        .into_iter()
        .map(|p| p.text)
        .collect()
}
