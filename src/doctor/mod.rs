//! `provision doctor`: reads the facts and explains a host in plain words:
//! the three version numbers, then findings, each with severity, evidence
//! (file and value) and a remedy (a plan snippet or a command).

mod checks;
mod libraries;

pub use checks::driver_from_host;

use serde::Serialize;

use crate::facts::Facts;

use crate::host::Host;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// Where it was read (a file, or a command).
    pub file: String,
    pub value: String,
}

pub(super) fn evidence(file: impl Into<String>, value: impl Into<String>) -> Evidence {
    Evidence {
        file: file.into(),
        value: value.into(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub title: String,
    pub evidence: Vec<Evidence>,
    /// A plan snippet or a command that fixes it.
    pub remedy: String,
}

/// The three version numbers people confuse, side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    /// nvidia.ko, from /proc/driver/nvidia/version.
    pub kernel_module: Option<String>,
    /// libcuda.so, the user-mode driver.
    pub user_mode_driver: Option<String>,
    /// The newest CUDA the user-mode driver runs: nvidia-smi's "CUDA Version".
    pub driver_cuda: Option<String>,
    /// What applications get (a compat library first on the loader path changes it).
    pub effective_cuda: Option<String>,
    /// Each toolkit's nvcc (what `nvcc --version` prints).
    pub toolkits: Vec<ToolkitVersion>,
    pub explanation: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolkitVersion {
    pub path: String,
    pub release: Option<String>,
    pub nvcc: Option<String>,
    pub default: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub changed: bool,
    pub failed: bool,
    pub msg: String,
    /// The driver is provided by the machine underneath (boot-time checks skipped).
    pub driver_from_host: bool,
    pub versions: Versions,
    pub findings: Vec<Finding>,
}

fn versions(facts: &Facts) -> Versions {
    let kernel = facts.kernel_driver.version.clone();
    let user = facts.user_driver.version.clone();
    let cuda = facts.user_driver.cuda_version.clone();
    let effective = facts.user_driver.effective_cuda_version.clone();
    let toolkits: Vec<ToolkitVersion> = facts
        .toolkits
        .installed
        .iter()
        .filter(|t| !t.compat_only)
        .map(|t| ToolkitVersion {
            path: t.path.clone(),
            release: t.release.clone(),
            nvcc: t.nvcc.clone(),
            default: facts.toolkits.default.as_deref() == Some(t.path.as_str()),
        })
        .collect();
    let mut explanation = Vec::new();
    if driver_from_host(facts) {
        explanation.push(
            "The driver comes from the machine underneath (mounted at /usr/local/nvidia or a container): its nouveau, initramfs and persistence settings belong to that machine.".into(),
        );
    }
    match &kernel {
        Some(version) => explanation.push(format!(
            "The kernel module (nvidia.ko) is {version}: /proc/driver/nvidia/version, nvidia-smi's \"Driver Version\"."
        )),
        None => explanation.push("No NVIDIA kernel module is loaded.".into()),
    }
    match (&user, &cuda) {
        (Some(user), Some(cuda)) => explanation.push(format!(
            "The user-mode driver (libcuda.so) is {user}; it runs CUDA up to {cuda}: that is what nvidia-smi prints as \"CUDA Version\". It is the newest CUDA the driver supports, not an installed toolkit."
        )),
        (Some(user), None) => explanation.push(format!("The user-mode driver (libcuda.so) is {user}.")),
        _ => explanation.push("No user-mode driver (libcuda.so) is on the loader path.".into()),
    }
    if let (Some(compat), Some(effective)) = (&facts.user_driver.compat_first, &effective) {
        explanation.push(format!(
            "Applications load {} first ({}), so they get CUDA {effective}.",
            compat.path,
            compat.version.as_deref().unwrap_or("unknown version")
        ));
    }
    for toolkit in &toolkits {
        explanation.push(format!(
            "The toolkit in {}{} is {} (nvcc {}): the CUDA applications are built with, which may be older or, with limits, newer than the driver's CUDA.",
            toolkit.path,
            if toolkit.default { " (/usr/local/cuda)" } else { "" },
            toolkit.release.as_deref().unwrap_or("of unknown version"),
            toolkit.nvcc.as_deref().unwrap_or("unknown"),
        ));
    }
    Versions {
        kernel_module: kernel,
        user_mode_driver: user,
        driver_cuda: cuda,
        effective_cuda: effective,
        toolkits,
        explanation,
    }
}

pub fn run(host: &Host, facts: &Facts) -> Report {
    let mut findings = Vec::new();
    let from_host = driver_from_host(facts);
    for area in [
        checks::no_driver,
        checks::nouveau,
        checks::mismatch,
        checks::gpu_support,
        checks::cuda,
        checks::environment,
        libraries::libcuda_shadowed,
        libraries::loader_two_toolkits,
        libraries::compat_not_needed,
        checks::persistence,
        checks::secure_boot,
        checks::upgrades,
        checks::headers,
    ] {
        area(host, facts, &mut findings);
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    Report {
        changed: false,
        failed: errors > 0,
        msg: match (errors, warnings) {
            (0, 0) => "no problems found".into(),
            _ => format!("{errors} error(s), {warnings} warning(s)"),
        },
        driver_from_host: from_host,
        versions: versions(facts),
        findings,
    }
}
