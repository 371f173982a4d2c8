//! The reverse wheel question: "this host has CUDA 12.4, which torch?"
//! (`compat --cuda 12.4 --torch latest`): the newest torch release that
//! published a wheel for that CUDA line, or, for a release, whether it did.

use serde::Serialize;

use super::knowledge::{Knowledge, WheelRow};
use super::rules::{QuestionError, invalid};
use super::wheels::{domain_versions, install_line, release};
use crate::version::Dotted;

/// The answer to `compat --cuda X --torch latest|RELEASE`.
#[derive(Debug, Clone, Serialize)]
pub struct LineReport {
    /// The CUDA line asked about ("12.4").
    pub cuda: String,
    /// The wheel tag of that line ("cu124"); none when PyTorch never
    /// published one.
    pub tag: Option<String>,
    /// The torch release that answers (newest patch), if any.
    pub torch: Option<String>,
    pub torchvision: Option<String>,
    pub torchaudio: Option<String>,
    pub install: Option<String>,
    /// Every torch release (minor) with a wheel of the line.
    pub releases: Vec<String>,
    /// Whether the question was the newest release ("latest").
    pub latest: bool,
    pub notes: Vec<String>,
    pub sources: Vec<String>,
}

/// "12.4", "12.4.1" or "12.4.131" -> (major, minor).
fn line_of(cuda: &str) -> Result<(u32, u32), QuestionError> {
    Dotted::parse(cuda)
        .filter(|v| (2..=3).contains(&v.components().len()))
        .map(|v| (v.major(), v.minor()))
        .ok_or_else(|| {
            invalid(format!(
                "--cuda {cuda:?}: expected a CUDA line such as 12.4 (or 12.4.1)"
            ))
        })
}

/// The wheel rows of the same major, as (minor, tag), for the nearest-line note.
fn same_major(major: u32) -> Vec<(u32, &'static WheelRow)> {
    Knowledge::get()
        .pytorch_wheels()
        .iter()
        .filter_map(|w| {
            let v = Dotted::parse(&w.cuda)?;
            (v.major() == major).then_some((v.minor(), w))
        })
        .collect()
}

/// Answers the reverse question for `cuda` and `torch` ("latest" or a
/// release such as 2.9 or 2.9.1).
pub fn find(cuda: &str, torch: &str) -> Result<LineReport, QuestionError> {
    let (major, minor) = line_of(cuda)?;
    let line = format!("{major}.{minor}");
    let wheels = same_major(major);
    let Some((_, row)) = wheels.iter().find(|(m, _)| *m == minor) else {
        return Ok(no_line(&line, major, minor, &wheels));
    };
    let releases = row.torch.clone();
    let mut notes: Vec<String> = row.notes.iter().cloned().collect();
    let wanted = if torch == "latest" {
        let newest = releases.last().expect("a wheel row lists its releases");
        release(newest)?
    } else {
        let (found, exact, mut more) = release(torch)?;
        notes.append(&mut more);
        if !releases.contains(&found.torch) {
            notes.push(format!(
                "torch {} published no {} wheels (they exist for torch {})",
                found.torch,
                row.variant,
                releases.join(", ")
            ));
            return Ok(report(&line, row, None, releases, notes));
        }
        (found, exact, Vec::new())
    };
    let (found, exact, _) = wanted;
    if let Some((newer, tag)) = newer_line_note(&wheels, minor) {
        notes.push(format!(
            "a driver that runs CUDA {line} also runs newer CUDA {major}.x wheels by minor-version compatibility (torch {newer}+{tag}), within its limits (no PTX JIT of newer code); {} matches a CUDA {line} toolkit for building extensions",
            row.variant
        ));
    }
    let (vision, audio) = domain_versions(found, &exact);
    let install = install_line(found, &exact, &row.variant);
    let mut out = report(&line, row, Some(exact), releases, notes);
    out.torchvision = Some(vision);
    out.torchaudio = Some(audio);
    out.install = Some(install);
    out.latest = torch == "latest";
    Ok(out)
}

fn report(
    line: &str,
    row: &WheelRow,
    torch: Option<String>,
    releases: Vec<String>,
    notes: Vec<String>,
) -> LineReport {
    LineReport {
        cuda: line.to_string(),
        tag: Some(row.variant.clone()),
        torch,
        torchvision: None,
        torchaudio: None,
        install: None,
        releases,
        latest: false,
        notes,
        sources: row.sources.clone(),
    }
}

/// The newest torch of a newer line of the same major, for the note.
fn newer_line_note(wheels: &[(u32, &WheelRow)], minor: u32) -> Option<(String, String)> {
    let (_, row) = wheels
        .iter()
        .filter(|(m, _)| *m > minor)
        .max_by_key(|(_, w)| w.torch.last().and_then(|t| Dotted::parse(t)))?;
    let (_, exact, _) = release(row.torch.last()?).ok()?;
    Some((exact, row.variant.clone()))
}

/// No release published the line: the nearest lines below and above.
fn no_line(line: &str, major: u32, minor: u32, wheels: &[(u32, &WheelRow)]) -> LineReport {
    let below = wheels
        .iter()
        .filter(|(m, _)| *m < minor)
        .max_by_key(|(m, _)| *m);
    let above = wheels
        .iter()
        .filter(|(m, _)| *m > minor)
        .min_by_key(|(m, _)| *m);
    let releases = Knowledge::get().pytorch_releases();
    let span = match (releases.first(), releases.last()) {
        (Some(first), Some(last)) => format!("torch {} to {}", first.torch, last.torch),
        _ => "no torch release".to_string(),
    };
    let mut notes = vec![format!(
        "no torch release the knowledge base knows ({span}) published cu{major}{minor} wheels; only PyTorch's nightly index (https://download.pytorch.org/whl/nightly/) can carry a line no release has, and the knowledge base does not track nightlies"
    )];
    if let Some((_, row)) = below {
        notes.push(format!(
            "{} (torch {}) runs where CUDA {line} runs: an older CUDA line runs on any newer driver",
            row.variant,
            row.torch.join(", ")
        ));
    }
    if let Some((_, row)) = above {
        notes.push(format!(
            "{} (torch {}) is the next line up: on a driver that runs CUDA {line} it runs only by minor-version compatibility, within its limits (no PTX JIT of newer code)",
            row.variant,
            row.torch.join(", "),
        ));
    }
    let sources = below
        .or(above)
        .map(|(_, r)| r.sources.clone())
        .or_else(|| releases.last().map(|r| r.sources.clone()))
        .unwrap_or_default();
    LineReport {
        cuda: line.to_string(),
        tag: None,
        torch: None,
        torchvision: None,
        torchaudio: None,
        install: None,
        releases: Vec::new(),
        latest: false,
        notes,
        sources,
    }
}
