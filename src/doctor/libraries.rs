//! Findings about which libraries programs load: a libcuda that is not the
//! running driver's, two toolkits on the loader path, a compat directory
//! the driver does not need.

use super::{Finding, Severity, evidence};
use crate::facts::Facts;
use crate::facts::driver::{Library, is_compat, library};
use crate::host::Host;
use crate::version::Dotted;

/// The directory a library path is in.
fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(dir, _)| dir)
}

/// The configuration files that put `dir` on the loader path.
fn loader_files(facts: &Facts, dir: &str) -> Vec<String> {
    facts
        .environment
        .loader
        .iter()
        .filter(|e| e.value.trim_end_matches('/') == dir)
        .map(|e| e.file.clone())
        .collect()
}

/// Whether a libcuda of `version` belongs to neither the running module
/// nor the installed user space (that pair differing is the mismatch).
fn foreign(facts: &Facts, module: &str, version: &str) -> bool {
    version != module && facts.kernel_driver.userspace.as_deref() != Some(version)
}

/// The libcuda programs load first (outside compat/ directories) and,
/// when it is no part of the installed driver, the one that is.
fn shadowing(facts: &Facts, module: &str) -> Option<(Library, Option<Library>)> {
    let mut own = facts
        .user_driver
        .candidates
        .iter()
        .filter(|c| !is_compat(c) && c.resolved.is_some());
    let first = own.next()?;
    if !foreign(facts, module, first.version.as_deref()?) {
        return None;
    }
    let right = own.find(|c| c.version.as_deref() == Some(module)).cloned();
    Some((first.clone(), right))
}

/// A libcuda on the loader path, or in a login shell's LD_LIBRARY_PATH,
/// that is not the running driver's.
pub(super) fn libcuda_shadowed(host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    let Some(module) = facts.kernel_driver.version.clone() else {
        return;
    };
    let mut found: Vec<(String, String)> = Vec::new();
    let mut files: Vec<String> = Vec::new();
    if let Some((first, right)) = shadowing(facts, &module) {
        let version = first.version.clone().unwrap_or_default();
        found.push((first.path.clone(), version));
        files.extend(loader_files(facts, dir_of(&first.path)));
        if let Some(right) = right {
            found.push((
                right.path.clone(),
                format!(
                    "{} (the running driver's, found later)",
                    right.version.unwrap_or_default()
                ),
            ));
        }
    }
    for entry in facts
        .environment
        .library_path
        .iter()
        .filter(|e| !e.value.contains("/compat"))
    {
        let lib = library(
            &host.root,
            &format!("{}/libcuda.so.1", entry.value.trim_end_matches('/')),
            "libcuda",
        );
        if let Some(version) = lib.version.filter(|v| foreign(facts, &module, v)) {
            found.push((
                entry.file.clone(),
                format!("LD_LIBRARY_PATH={} holds libcuda {version}", entry.value),
            ));
            files.push(entry.file.clone());
        }
    }
    let Some((path, version)) = found.first().cloned() else {
        return;
    };
    files.dedup();
    let mut shown = vec![evidence("/proc/driver/nvidia/version", module.clone())];
    shown.extend(found.into_iter().map(|(file, value)| evidence(file, value)));
    findings.push(Finding {
        id: "libcuda-shadowed".into(),
        severity: Severity::Error,
        title: format!("CUDA programs load {path} ({version}), not the running driver's libcuda {module}: cuInit fails (CUDA_ERROR_SYSTEM_DRIVER_MISMATCH)"),
        evidence: shown,
        remedy: format!(
            "remove the stale libcuda, or take its directory off {} and run ldconfig; the driver's own libcuda comes with its packages",
            if files.is_empty() { "the loader path".to_string() } else { files.join(" and ") }
        ),
    });
}

/// Whether the loader lists more than one toolkit's libraries.
pub(super) fn two_toolkits_on_loader(facts: &Facts) -> bool {
    facts.loader_toolkits().len() > 1
}

pub(super) fn loader_two_toolkits(_host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    let toolkits = facts.loader_toolkits();
    if toolkits.len() < 2 {
        return;
    }
    let names: Vec<&str> = toolkits.iter().map(|(t, _)| t.as_str()).collect();
    let keep = facts
        .toolkits
        .default
        .clone()
        .unwrap_or_else(|| names[0].to_string());
    let drop: Vec<&str> = toolkits
        .iter()
        .filter(|(t, _)| *t != keep)
        .map(|(_, f)| f.as_str())
        .collect();
    findings.push(Finding {
        id: "loader-two-toolkits".into(),
        severity: Severity::Warning,
        title: format!(
            "the loader path holds the libraries of {} toolkits ({}): a program gets whichever libcudart/libcublas ldconfig listed first, not the toolkit it was built with",
            toolkits.len(),
            names.join(", ")
        ),
        evidence: toolkits.iter().map(|(t, f)| evidence(f.clone(), t.clone())).collect(),
        remedy: format!(
            "keep one toolkit on the loader path ([toolkit] version = \"{}\", default = true: provision owns /etc/ld.so.conf.d/provision-cuda.conf); remove {} and run ldconfig; programs built with another toolkit set LD_LIBRARY_PATH or an rpath",
            keep.trim_start_matches("/usr/local/cuda-"),
            drop.join(", ")
        ),
    });
}

/// The CUDA release of a compat library, from its directory
/// (`/usr/local/cuda-13.0/compat/libcuda.so.1` -> 13.0).
fn compat_cuda(path: &str) -> Option<Dotted> {
    let toolkit = path.split("/compat/").next()?;
    Dotted::parse(toolkit.rsplit("cuda-").next()?)
}

/// A compat libcuda first on the loader path, newer than the driver, for
/// a CUDA release the driver runs natively: nothing needs it, and every
/// program loads it instead of the driver's own.
pub(super) fn compat_not_needed(_host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    let user = &facts.user_driver;
    let (Some(compat), Some(driver), Some(native)) =
        (&user.compat_first, &user.version, &user.cuda_version)
    else {
        return;
    };
    let (Some(compat_version), Some(driver_version)) = (
        compat.version.as_deref().and_then(Dotted::parse),
        Dotted::parse(driver),
    ) else {
        return;
    };
    let (Some(cuda), Some(native_cuda)) = (compat_cuda(&compat.path), Dotted::parse(native)) else {
        return;
    };
    // Older or equal: compat-shadows-driver / compat-older-than-driver say so.
    if compat_version <= driver_version || cuda > native_cuda {
        return;
    }
    let files = loader_files(facts, dir_of(&compat.path));
    findings.push(Finding {
        id: "compat-not-needed".into(),
        severity: Severity::Warning,
        title: format!(
            "{} ({compat_version}) is first on the loader path, but driver {driver} runs CUDA {native} natively: no program needs it, and every one loads it instead of the driver's libcuda (NVIDIA's matrix: not applicable)",
            compat.path
        ),
        evidence: vec![
            evidence(compat.path.clone(), compat_version.to_string()),
            evidence("/proc/driver/nvidia/version", driver.clone()),
            evidence("nvidia-smi CUDA Version", native.clone()),
        ],
        remedy: format!(
            "remove cuda-compat-{}-{} (apt-get purge / dnf remove), or take {} off the loader path and run ldconfig; with provision, [compat] package = \"auto\" installs one only when the driver needs it",
            cuda.major(),
            cuda.minor(),
            if files.is_empty() { dir_of(&compat.path).to_string() } else { files.join(", ") }
        ),
    });
}
