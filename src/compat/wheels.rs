//! Which PyTorch wheel runs here: every CUDA variant PyTorch published for
//! a torch release, each judged on the driver (and GPU) like any other
//! CUDA question, the best one named, with the pip line that installs it.

use serde::Serialize;

use super::knowledge::{GpuRow, Knowledge, TorchRelease};
use super::rules::{Mode, QuestionError, Target, Verdict, evaluate_on, invalid};
use crate::version::Dotted;

const INDEX: &str = "https://download.pytorch.org/whl";

/// One wheel variant of the release.
#[derive(Debug, Clone, Serialize)]
pub struct Wheel {
    /// "cu126", or "cpu".
    pub tag: String,
    /// The CUDA runtime the wheel bundles; none for "cpu".
    pub cuda: Option<String>,
    pub verdict: Verdict,
    pub mode: Mode,
    /// The cuda-compat package it needs, if that is the way.
    pub package: Option<String>,
    pub install: String,
    /// Why (the first reason the verdict rests on).
    pub why: String,
}

/// The answer to `compat --torch VERSION` without a wheel tag.
#[derive(Debug, Clone, Serialize)]
pub struct WheelReport {
    pub driver: String,
    pub gpu: Option<String>,
    /// The release the question resolved to ("2.9.1").
    pub torch: String,
    pub torchvision: String,
    pub torchaudio: String,
    pub wheels: Vec<Wheel>,
    /// The tag to install: the newest CUDA that runs, natively or by
    /// minor-version compatibility; else one that needs a compat package;
    /// none when no CUDA wheel runs.
    pub best: Option<String>,
    pub notes: Vec<String>,
    pub sources: Vec<String>,
}

/// Whether `text` asks for a release rather than one wheel ("2.9.1",
/// "2.9", "latest", a torchvision or torchaudio version).
pub fn is_release_question(text: &str) -> bool {
    !text.contains('+')
}

/// The release row and the exact torch version `text` names.
pub(super) fn release(
    text: &str,
) -> Result<(&'static TorchRelease, String, Vec<String>), QuestionError> {
    let releases = Knowledge::get().pytorch_releases();
    let known = || {
        releases
            .iter()
            .map(|r| r.torch.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if text == "latest" {
        let row = releases.last().expect("torch releases");
        return Ok((row, row.newest.clone(), Vec::new()));
    }
    let version = Dotted::parse(text).ok_or_else(|| {
        invalid(format!(
            "--torch {text:?}: expected a version such as 2.9.1, 2.9 or latest"
        ))
    })?;
    let minor = format!("{}.{}", version.major(), version.minor());
    let domain = |pick: fn(&TorchRelease) -> &str| {
        releases.iter().find(|r| {
            Dotted::parse(pick(r))
                .is_some_and(|d| (d.major(), d.minor()) == (version.major(), version.minor()))
        })
    };
    let (row, library) = match releases.iter().find(|r| r.torch == minor) {
        Some(row) => (row, None),
        None => match domain(|r| &r.torchvision)
            .map(|r| (r, "torchvision"))
            .or_else(|| domain(|r| &r.torchaudio).map(|r| (r, "torchaudio")))
        {
            Some((row, library)) => (row, Some(library)),
            None => {
                return Err(invalid(format!(
                    "--torch {text}: no torch, torchvision or torchaudio release {minor} is known (torch releases known: {})",
                    known()
                )));
            }
        },
    };
    let mut notes = Vec::new();
    let exact = match library {
        Some(library) => {
            notes.push(format!("{library} {text} goes with torch {}", row.torch));
            row.newest.clone()
        }
        None if version.components().len() < 3 => row.newest.clone(),
        None => {
            let newest = Dotted::parse(&row.newest).expect("knowledge.toml versions parse");
            if version > newest {
                notes.push(format!(
                    "torch {text} is newer than {} (the newest {minor} the knowledge base knows): the knowledge base is older than this release",
                    row.newest
                ));
            }
            text.to_string()
        }
    };
    Ok((row, exact, notes))
}

/// The pip line for `torch` from the index of `tag`.
pub(super) fn install_line(row: &TorchRelease, torch: &str, tag: &str) -> String {
    let (vision, audio) = domain_versions(row, torch);
    format!(
        "pip install torch=={torch} torchvision=={vision} torchaudio=={audio} --index-url {INDEX}/{tag}"
    )
}

/// torchvision and torchaudio for `torch`: exact for the newest patch the
/// knowledge base knows, else any patch of their minor (pip's `==X.Y.*`).
pub(super) fn domain_versions(row: &TorchRelease, torch: &str) -> (String, String) {
    if torch == row.newest {
        return (row.torchvision.clone(), row.torchaudio.clone());
    }
    let minor = |v: &str| {
        let d = Dotted::parse(v).expect("knowledge.toml versions parse");
        format!("{}.{}.*", d.major(), d.minor())
    };
    (minor(&row.torchvision), minor(&row.torchaudio))
}

/// Every wheel of the torch release `text` names, judged on `driver`.
pub fn find(
    driver: &str,
    text: &str,
    gpus: &[&GpuRow],
    flavor: Option<&str>,
) -> Result<WheelReport, QuestionError> {
    let kb = Knowledge::get();
    let (row, torch, notes) = release(text)?;
    let mut wheels = Vec::new();
    for variant in kb
        .pytorch_wheels()
        .iter()
        .filter(|w| w.torch.contains(&row.torch))
    {
        let answer = evaluate_on(
            driver,
            &Target::Torch(format!("{torch}+{}", variant.variant)),
            gpus,
            flavor,
        )?;
        wheels.push(Wheel {
            tag: variant.variant.clone(),
            cuda: Some(variant.cuda.clone()),
            verdict: answer.verdict,
            mode: answer.mode,
            package: answer.package.clone(),
            install: install_line(row, &torch, &variant.variant),
            why: decisive(&answer.reasons),
        });
    }
    wheels.push(Wheel {
        tag: "cpu".into(),
        cuda: None,
        verdict: Verdict::Compatible,
        mode: Mode::Native,
        package: None,
        install: install_line(row, &torch, "cpu"),
        why: "runs on the CPU only: no driver needed, no GPU used".into(),
    });
    let best = best(&wheels);
    let (torchvision, torchaudio) = domain_versions(row, &torch);
    Ok(WheelReport {
        driver: driver.to_string(),
        gpu: (!gpus.is_empty()).then(|| {
            gpus.iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }),
        torch,
        torchvision,
        torchaudio,
        wheels,
        best,
        notes,
        sources: row.sources.clone(),
    })
}

/// The reason a wheel's verdict turns on: a GPU the wheel has no kernels
/// for, else the driver's reading (the last).
fn decisive(reasons: &[super::rules::Reason]) -> String {
    reasons
        .iter()
        .find(|r| r.row.starts_with("pytorch_arch"))
        .or(reasons.last())
        .map(|r| r.text.clone())
        .unwrap_or_default()
}

/// The newest CUDA wheel that runs as it is; else the newest that runs
/// with a compat package.
fn best(wheels: &[Wheel]) -> Option<String> {
    let cuda = |w: &Wheel| w.cuda.as_deref().and_then(Dotted::parse);
    let newest = |verdict: Verdict| {
        wheels
            .iter()
            .filter(|w| w.cuda.is_some() && w.verdict == verdict)
            .max_by_key(|w| cuda(w))
            .map(|w| w.tag.clone())
    };
    newest(Verdict::Compatible).or_else(|| newest(Verdict::NeedsCompatPackage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::rules::find_gpu;

    /// (driver, --torch, GPU, the variants published for that release
    /// (pytorch_wheel rows, notes section 9), the best tag by the rules:
    /// the newest CUDA the driver runs natively or by minor-version
    /// compatibility (cu11x from 450.80.02, cu12x from 525.60.13, cu13x
    /// from 580.65.06), and no wheel whose kernels skip the GPU).
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static [&'static str],
        Option<&'static str>,
    );

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        ("450.80.02", "1.13", None, &["cu116", "cu117"], Some("cu117")),
        ("525.60.13", "1.13.1", None, &["cu116", "cu117"], Some("cu117")),
        ("450.80.02", "2.0", None, &["cu117", "cu118"], Some("cu118")),
        ("470.82.01", "2.0.1", None, &["cu117", "cu118"], Some("cu118")),
        ("450.80.02", "2.1", None, &["cu118", "cu121"], Some("cu118")),
        ("525.60.13", "2.1.2", None, &["cu118", "cu121"], Some("cu121")),
        ("535.104.05", "2.2", None, &["cu118", "cu121"], Some("cu121")),
        ("470.82.01", "2.3", None, &["cu118", "cu121"], Some("cu118")),
        ("550.54.14", "2.3.1", None, &["cu118", "cu121"], Some("cu121")),
        ("525.60.13", "2.4", None, &["cu118", "cu121", "cu124"], Some("cu124")),
        ("515.65.01", "2.4.1", None, &["cu118", "cu121", "cu124"], Some("cu118")),
        ("550.54.14", "2.5", None, &["cu118", "cu121", "cu124"], Some("cu124")),
        ("470.82.01", "2.5.1", None, &["cu118", "cu121", "cu124"], Some("cu118")),
        ("535.104.05", "2.6", None, &["cu118", "cu124", "cu126"], Some("cu126")),
        ("450.80.02", "2.6.0", None, &["cu118", "cu124", "cu126"], Some("cu118")),
        ("560.35.03", "2.7", None, &["cu118", "cu126", "cu128"], Some("cu128")),
        ("520.61.05", "2.7.1", None, &["cu118", "cu126", "cu128"], Some("cu118")),
        ("535.104.05", "2.8", None, &["cu126", "cu128", "cu129"], Some("cu129")),
        ("575.57.08", "2.8.0", None, &["cu126", "cu128", "cu129"], Some("cu129")),
        ("535.104.05", "2.9.1", None, &["cu126", "cu128", "cu130"], Some("cu128")),
        ("580.95.05", "2.9.1", None, &["cu126", "cu128", "cu130"], Some("cu130")),
        ("570.86.15", "2.9", None, &["cu126", "cu128", "cu130"], Some("cu128")),
        ("580.65.06", "2.10", None, &["cu126", "cu128", "cu130"], Some("cu130")),
        ("550.127.05", "2.10.0", None, &["cu126", "cu128", "cu130"], Some("cu128")),
        ("590.44.01", "2.11", None, &["cu126", "cu128", "cu130"], Some("cu130")),
        ("525.60.13", "2.11.0", None, &["cu126", "cu128", "cu130"], Some("cu128")),
        ("580.95.05", "2.12", None, &["cu126", "cu130", "cu132"], Some("cu132")),
        ("535.104.05", "2.12.0", None, &["cu126", "cu130", "cu132"], Some("cu126")),
        ("580.95.05", "2.13", None, &["cu126", "cu130", "cu132"], Some("cu132")),
        ("570.86.15", "latest", None, &["cu126", "cu130", "cu132"], Some("cu126")),
        // torchvision and torchaudio versions name their torch release.
        ("580.95.05", "0.24.1", None, &["cu126", "cu128", "cu130"], Some("cu130")),
        ("535.104.05", "0.21.0", None, &["cu118", "cu124", "cu126"], Some("cu126")),
        ("450.80.02", "0.13.1", None, &["cu116", "cu117"], Some("cu117")),
        // pytorch_arch: 2.8+ cu128/cu129 and the CUDA 13 wheels start at
        // Turing; 2.12+ cu126 ends at Hopper.
        ("580.95.05", "2.9", Some("GTX 1080"), &["cu126", "cu128", "cu130"], Some("cu126")),
        ("580.95.05", "2.8", Some("GTX 1080"), &["cu126", "cu128", "cu129"], Some("cu126")),
        ("580.95.05", "2.7", Some("GTX 1080"), &["cu118", "cu126", "cu128"], Some("cu128")),
        ("580.95.05", "2.9", Some("H100 SXM5"), &["cu126", "cu128", "cu130"], Some("cu130")),
        ("580.95.05", "2.13", Some("RTX 4090"), &["cu126", "cu130", "cu132"], Some("cu132")),
        // Forward compatibility: only when nothing runs as it is.
        ("535.104.05", "2.13", Some("H100 SXM5"), &["cu126", "cu130", "cu132"], Some("cu126")),
        // Nothing of the 12.x/13.x era runs on a CUDA 11 driver without a GPU
        // named (forward compatibility is for data-center GPUs only).
        ("470.82.01", "2.9", None, &["cu126", "cu128", "cu130"], None),
    ];

    #[test]
    fn the_wheel_finder_lists_every_variant_and_picks_the_best() {
        assert!(CASES.len() >= 40);
        for (driver, torch, gpu, tags, best) in CASES {
            let gpu = gpu.map(|g| find_gpu(g).unwrap());
            let gpus: Vec<&GpuRow> = gpu.iter().collect();
            let report = find(driver, torch, &gpus, None).unwrap();
            let mut want: Vec<&str> = tags.to_vec();
            want.push("cpu");
            let got: Vec<&str> = report.wheels.iter().map(|w| w.tag.as_str()).collect();
            assert_eq!(got, want, "{driver} {torch}: the variants");
            assert_eq!(
                report.best.as_deref(),
                *best,
                "{driver} {torch} {gpu:?}: the best"
            );
            for wheel in &report.wheels {
                assert!(
                    wheel.install.starts_with(&format!(
                        "pip install torch=={} torchvision==",
                        report.torch
                    )) && wheel.install.ends_with(&format!(
                        "--index-url https://download.pytorch.org/whl/{}",
                        wheel.tag
                    )),
                    "{}",
                    wheel.install
                );
            }
        }
    }

    #[test]
    fn the_install_line_carries_the_matching_domain_libraries() {
        let report = find("580.95.05", "2.9.1", &[], None).unwrap();
        let best = report.wheels.iter().find(|w| w.tag == "cu130").unwrap();
        assert_eq!(
            best.install,
            "pip install torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1 --index-url https://download.pytorch.org/whl/cu130"
        );
        // An older patch: the domain libraries of its minor, any patch.
        let older = find("580.95.05", "2.9.0", &[], None).unwrap();
        assert_eq!(
            (older.torchvision.as_str(), older.torchaudio.as_str()),
            ("0.24.*", "2.9.*")
        );
    }

    #[test]
    fn unknown_releases_are_refused_and_newer_patches_warned() {
        let error = find("580.95.05", "3.7", &[], None).unwrap_err().to_string();
        assert!(
            error.contains("no torch, torchvision or torchaudio release 3.7")
                && error.contains("2.13"),
            "{error}"
        );
        assert!(find("580.95.05", "two", &[], None).is_err());
        let newer = find("580.95.05", "2.9.7", &[], None).unwrap();
        assert!(
            newer
                .notes
                .iter()
                .any(|n| n.contains("older than this release")),
            "{:?}",
            newer.notes
        );
    }
}
