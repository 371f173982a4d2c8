//! `provision compat` on a detected host: every installed toolkit and every
//! compat package against the running driver and the GPUs.

use serde::Serialize;

use super::knowledge::{GpuRow, Knowledge};
use super::rules::{Answer, Mode, Reason, Target, Verdict, evaluate_on as ask};
use crate::facts::Facts;
use crate::facts::pci::Kind;
use crate::version::Dotted;

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub driver: Option<String>,
    pub flavor: Option<String>,
    pub gpus: Vec<String>,
    /// One entry per toolkit and per compat directory (per GPU model).
    pub checks: Vec<Check>,
    /// The worst verdict of all checks.
    pub verdict: Verdict,
    pub msg: String,
    pub failed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// "toolkit /usr/local/cuda-13.0" or "compat /usr/local/cuda-13.0/compat".
    pub subject: String,
    /// The check's outcome in one sentence.
    pub summary: String,
    /// A compat directory whose libcuda is not newer than the driver
    /// (useless; error 803 on the loader path). False for toolkits.
    pub stale: bool,
    /// A compat directory on the loader path; null for toolkits.
    pub on_loader_path: Option<bool>,
    #[serde(flatten)]
    pub answer: Answer,
}

pub use super::rules::worst;

/// The knowledge-base rows of the host's GPUs, one per model.
pub fn gpu_rows(facts: &Facts) -> Vec<&'static GpuRow> {
    let kb = Knowledge::get();
    let mut rows: Vec<&GpuRow> = Vec::new();
    for gpu in facts.gpus.iter().filter(|g| g.kind == Kind::Gpu) {
        let subsystem = gpu.subsystem.as_deref();
        if let Some((row, _)) = kb.gpu(gpu.device_id(), subsystem)
            && !rows.iter().any(|r| std::ptr::eq(*r, row))
        {
            rows.push(row);
        }
    }
    rows
}

pub fn report(facts: &Facts) -> HostReport {
    let driver = facts.driver_version().map(str::to_string);
    let flavor = facts.kernel_driver.flavor.clone();
    let gpus = gpu_rows(facts);
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    let Some(driver_version) = driver.clone() else {
        return HostReport {
            driver: None,
            flavor,
            gpus: gpus.iter().map(|g| g.name.clone()).collect(),
            checks,
            verdict: Verdict::Ambiguous,
            msg: "no NVIDIA driver is loaded or installed: nothing to check CUDA against".into(),
            failed: false,
        };
    };
    let on = On {
        driver: &driver_version,
        gpus: &gpus,
        flavor: flavor.as_deref(),
    };
    for toolkit in facts.toolkits.installed.iter().filter(|t| !t.compat_only) {
        match toolkit_check(facts, toolkit, &on) {
            Ok(check) => checks.push(check),
            Err(note) => notes.push(note),
        }
    }
    checks.extend(
        facts
            .toolkits
            .installed
            .iter()
            .filter_map(|toolkit| compat_check(toolkit, &on)),
    );
    let verdict = worst(checks.iter().map(|c| c.answer.verdict));
    let failed = verdict == Verdict::Incompatible;
    let mut msg = match checks.len() {
        0 => "no toolkit or compat package to check".to_string(),
        n => format!("{n} check(s); worst verdict: {verdict}"),
    };
    if !notes.is_empty() {
        msg.push_str(&format!(" ({})", notes.join("; ")));
    }
    HostReport {
        driver,
        flavor,
        gpus: gpus.iter().map(|g| g.name.clone()).collect(),
        checks,
        verdict,
        msg,
        failed,
    }
}

/// The driver, GPUs and flavour every check of a host is judged on.
struct On<'a> {
    driver: &'a str,
    gpus: &'a [&'static GpuRow],
    flavor: Option<&'a str>,
}

/// One installed toolkit against the driver; Err: why it cannot be
/// checked.
fn toolkit_check(
    facts: &Facts,
    toolkit: &crate::facts::toolkit::Toolkit,
    on: &On,
) -> Result<Check, String> {
    let Some(release) = toolkit.release.clone().or(toolkit.short.clone()) else {
        return Err(format!("{}: its version is unknown", toolkit.path));
    };
    let mut answer = ask(
        on.driver,
        &Target::Cuda(release.clone()),
        on.gpus,
        on.flavor,
    )
    .map_err(|error| format!("{}: {error}", toolkit.path))?;
    if answer.verdict == Verdict::NeedsCompatPackage
        && let Some(package) = answer.package.clone()
    {
        answer
            .reasons
            .push(compat_installed_reason(facts, &package, &release));
    }
    Ok(Check {
        subject: format!("toolkit {}", toolkit.path),
        summary: answer.sentence(),
        stale: false,
        on_loader_path: None,
        answer,
    })
}

/// Whether the compat package a toolkit needs is there and serving it.
fn compat_installed_reason(facts: &Facts, package: &str, release: &str) -> Reason {
    let short = package.trim_start_matches("cuda-compat-").replace('-', ".");
    let active = facts.toolkits.installed.iter().any(|t| {
        t.short.as_deref() == Some(short.as_str())
            && t.compat
                .as_ref()
                .is_some_and(|c| c.on_loader_path && c.against_driver.as_deref() == Some("newer"))
    });
    Reason {
        text: if active {
            format!(
                "{package} is installed, newer than the driver and on the loader path: applications get it"
            )
        } else {
            format!(
                "{package} is not installed on the loader path: CUDA {release} applications fail on this driver"
            )
        },
        row: "detected host".into(),
        sources: Vec::new(),
    }
}

/// A toolkit's compat directory against the driver, when it has one.
fn compat_check(toolkit: &crate::facts::toolkit::Toolkit, on: &On) -> Option<Check> {
    let (Some(compat), Some(short)) = (&toolkit.compat, &toolkit.short) else {
        return None;
    };
    let version = compat.version.clone()?;
    let answer = compat_answer(
        on.driver,
        short,
        &version,
        compat.on_loader_path,
        on.gpus,
        on.flavor,
    );
    let stale = Dotted::parse(&version)
        .zip(Dotted::parse(on.driver))
        .is_some_and(|(compat, running)| compat <= running);
    Some(Check {
        subject: format!("compat {}", compat.path),
        summary: answer
            .reasons
            .first()
            .map(|r| format!("{}.", r.text))
            .unwrap_or_default(),
        stale,
        on_loader_path: Some(compat.on_loader_path),
        answer,
    })
}

/// The compat library against the driver that runs: useless, harmful,
/// active, or not the way, each said first among the reasons.
fn weigh(
    answer: &mut Answer,
    driver: &str,
    short: &str,
    version: &str,
    on_path: bool,
    gpus: &[&GpuRow],
    package: &str,
) {
    let row = format!("compat {package}");
    let note = |text: String| Reason {
        text,
        row: row.clone(),
        sources: Vec::new(),
    };
    let (Some(compat), Some(running)) = (Dotted::parse(version), Dotted::parse(driver)) else {
        return;
    };
    let supported = super::rules::forward_compat_package(short)
        .filter(|fc| fc.supported_branches.contains(&running.major()));
    let eligible = gpus.iter().all(|g| g.forward_compat == "yes");
    if compat <= running && on_path {
        answer.verdict = Verdict::Incompatible;
        answer.mode = Mode::None;
        answer.reasons.insert(
            0,
            note(format!(
                "its libcuda {version} is not newer than the driver {driver} and it is on the loader path: CUDA applications load it and fail with error 803 (CUDA_ERROR_SYSTEM_DRIVER_MISMATCH)"
            )),
        );
    } else if compat <= running {
        // Off the loader path nothing loads it: the CUDA line runs as the
        // driver alone runs it (doctor calls the leftover a warning).
        answer.reasons.insert(
            0,
            note(format!(
                "its libcuda {version} is not newer than the driver {driver}, and nothing loads it (not on the loader path): harmless but useless; remove {package}"
            )),
        );
    } else if let (Some(fc), true) = (supported, eligible) {
        answer.verdict = Verdict::Compatible;
        answer.mode = Mode::ForwardCompat;
        answer.limitations.clear();
        answer.reasons.insert(
            0,
            note(if on_path {
                format!("its libcuda {version} is newer than the driver, {} supports R{}, and it is on the loader path: forward compatibility is active", fc.package, running.major())
            } else {
                format!("its libcuda {version} is newer than the driver, but not on the loader path: applications do not use it")
            }),
        );
        if !on_path {
            answer.verdict = Verdict::NeedsCompatPackage;
        }
    } else if matches!(answer.mode, Mode::Native | Mode::MinorVersion) {
        answer.reasons.insert(
            0,
            note(format!(
                "{package} cannot serve this driver or GPU; applications run CUDA {short} by {}",
                if answer.mode == Mode::Native {
                    "native support"
                } else {
                    "minor-version compatibility"
                }
            )),
        );
    }
}

/// A compat package the knowledge base cannot judge: ambiguous, saying why.
fn unanswered(driver: &str, short: &str, label: &str, flavor: Option<&str>, why: String) -> Answer {
    Answer {
        driver: driver.to_string(),
        cuda: short.to_string(),
        cuda_label: label.to_string(),
        gpu: None,
        flavor: flavor.map(str::to_string),
        verdict: Verdict::Ambiguous,
        mode: Mode::None,
        package: Some(format!("cuda-compat-{}", short.replace('.', "-"))),
        min_driver: None,
        limitations: Vec::new(),
        reasons: vec![Reason {
            text: why,
            row: "toolkit".into(),
            sources: Vec::new(),
        }],
        readings: Vec::new(),
    }
}

/// A compat package's library against the running driver. It helps when it
/// is newer than the driver, on a branch its package supports, on a
/// data-center GPU, and on the loader path: across a major it is the only
/// way, within a major it lifts minor-version compatibility's limits (the
/// matrix lists R570 for cuda-compat-12-9, say).
fn compat_answer(
    driver: &str,
    short: &str,
    version: &str,
    on_path: bool,
    gpus: &[&GpuRow],
    flavor: Option<&str>,
) -> Answer {
    let package = format!("cuda-compat-{}", short.replace('.', "-"));
    let mut answer = match ask(driver, &Target::Cuda(short.to_string()), gpus, flavor) {
        Ok(answer) => answer,
        Err(error) => {
            return unanswered(
                driver,
                short,
                &format!("{package} {version}"),
                flavor,
                error.to_string(),
            );
        }
    };
    answer.cuda_label = format!("{package} {version}");
    answer.package = Some(package.clone());
    weigh(&mut answer, driver, short, version, on_path, gpus, &package);
    answer
}
