//! Reading a compatibility question: the driver (`580.95.05` or a branch),
//! the CUDA release it names (GA, Update, or a component's full version),
//! the PyTorch wheel, and the GPU as a person types it.

use super::knowledge::{GpuRow, Knowledge, ToolkitRow};
use super::reason::{QuestionError, Reason, invalid, reason};
use crate::version::Dotted;

/// Parses `--driver`: a release ("535.104.05") or a branch ("580": its
/// newest release).
pub fn parse_driver(text: &str) -> Result<(Dotted, Vec<Reason>), QuestionError> {
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
    let mut notes: Vec<Reason> = known_branch(text, version.major())?.into_iter().collect();
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
        notes.insert(0, note);
        return Ok((newest, notes));
    }
    notes.extend(newer_than_known(text, &version));
    Ok((version, notes))
}

/// Branches past the newest known one are answered (with a warning) up to
/// this far ahead: NVIDIA's branch numbers advance by about 30 a year.
const PLAUSIBLE_AHEAD: u32 = 100;

/// Every branch the knowledge base knows: its branch rows and the branches
/// of the drivers its toolkit rows cite (410, 396: no row of their own).
fn known_branches() -> Vec<u32> {
    let kb = Knowledge::get();
    let mut known: Vec<u32> = kb
        .branches()
        .iter()
        .map(|b| b.branch)
        .chain(kb.toolkits().iter().map(|t| t.min_driver.major()))
        .collect();
    known.sort_unstable();
    known.dedup();
    known
}

/// A known branch; one a little past the newest known with a warning; any
/// other is refused with the known branches listed.
fn known_branch(text: &str, branch: u32) -> Result<Option<Reason>, QuestionError> {
    let known = known_branches();
    if known.contains(&branch) {
        return Ok(None);
    }
    let newest = known.last().copied().unwrap_or(0);
    let compiled = &Knowledge::get().meta().compiled;
    if branch > newest && branch <= newest + PLAUSIBLE_AHEAD {
        return Ok(Some(reason(
            format!(
                "warning: branch {branch} is newer than every branch the knowledge base knows (R{newest}, compiled {compiled}): answers assume it runs what R{newest} runs"
            ),
            format!("branch {newest}"),
            &[],
        )));
    }
    let why = if branch > newest {
        format!("far beyond R{newest}, the newest the knowledge base knows (compiled {compiled})")
    } else {
        "the knowledge base knows no NVIDIA release of it".to_string()
    };
    let list: Vec<String> = known.iter().map(u32::to_string).collect();
    Err(invalid(format!(
        "driver {text}: branch {branch} is unknown: {why}; known branches: {}",
        list.join(", ")
    )))
}

/// Every release of `branch` a knowledge-base row cites (a toolkit's
/// floor or bundled driver, a release seen in a real capture), oldest
/// first.
pub fn cited_releases(branch: u32) -> Vec<Dotted> {
    let kb = Knowledge::get();
    let mut cited: Vec<Dotted> = kb
        .toolkits()
        .iter()
        .flat_map(|row| std::iter::once(&row.min_driver).chain(row.runfile_driver.as_ref()))
        .chain(kb.branch(branch).and_then(|b| b.newest_seen.as_ref()))
        .filter(|d| d.major() == branch)
        .cloned()
        .collect();
    cited.sort();
    cited.dedup();
    cited
}

/// The newest release of `branch` any knowledge-base row cites.
pub fn newest_cited(branch: u32) -> Option<Dotted> {
    cited_releases(branch).pop()
}

/// A note when the release is newer than any the knowledge base cites for
/// its branch: the answer still holds for the branch, but the base is older.
fn newer_than_known(text: &str, version: &Dotted) -> Option<Reason> {
    // A branch past its end of life has no releases the base could lack.
    let kb = Knowledge::get();
    let ended = kb
        .branch(version.major())
        .is_some_and(|b| b.ended_before(&kb.meta().compiled));
    if ended {
        return None;
    }
    let newest = newest_cited(version.major())?;
    (version > &newest).then(|| {
        reason(
            format!(
                "warning: driver {text} is newer than every {} release the knowledge base cites (newest {newest}): the knowledge base is older than this driver, or the version is mistyped; answers hold for branch {}",
                version.major(),
                version.major()
            ),
            format!("branch {}", version.major()),
            &[],
        )
    })
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

/// A GPU as `--gpu` names it: a PCI device id as lspci (`10de:2330`,
/// `[10de:2330]`, `2330`) or nvidia-smi (`0x233010DE`) print it, or a name
/// in any case ("h100", "NVIDIA GeForce RTX 4090"). A name several GPUs
/// share is answered when the knowledge base treats them alike (every A100
/// gets the same answer): the row returned names them all. When they
/// differ, the error lists each with the id to pass.
pub fn find_gpu(query: &str) -> Result<GpuRow, QuestionError> {
    let kb = Knowledge::get();
    if let Some(id) = device_id(query)
        && let Some((row, _)) = kb.gpu(id, None)
    {
        return Ok(row.clone());
    }
    let found = kb.gpu_by_name(query);
    let words = super::knowledge::name_words(query);
    match found.as_slice() {
        [] => Err(invalid(format!(
            "--gpu {query:?}: no GPU of that name or PCI id in the knowledge base; \
             give the device id lspci -nn prints ([10de:2330] -> --gpu 10de:2330) or a name such as \"H100\", \"RTX 4090\""
        ))),
        [one] => Ok((*one).clone()),
        many => {
            // An exact name wins ("H100 PCIe" among the H100s).
            if let Some(exact) = many
                .iter()
                .find(|r| super::knowledge::name_words(&r.name) == words)
            {
                return Ok((*exact).clone());
            }
            if many.iter().all(|r| alike(r, many[0])) {
                let mut row = many[0].clone();
                row.name = format!("{query} (any of {}: {})", many.len(), ids(many));
                return Ok(row);
            }
            Err(invalid(format!(
                "--gpu {query:?} names GPUs that get different answers ({}); pass one by its id: {}",
                differences(many),
                many.iter()
                    .map(|r| format!("--gpu {} ({})", r.device, r.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

/// The device id in `10de:2330`, `[10de:2330]`, `0x2330`, `2330` or
/// nvidia-smi's `0x233010DE`.
fn device_id(query: &str) -> Option<u16> {
    let text = query
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_lowercase();
    let text = text.strip_prefix("10de:").unwrap_or(&text);
    let text = text.strip_prefix("0x").unwrap_or(text);
    let text = match text.len() {
        8 => text.strip_suffix("10de")?,
        _ => text,
    };
    (text.len() == 4 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u16::from_str_radix(text, 16).ok())
        .flatten()
}

/// What the rules read of a GPU (gpu.rs, recommend, validation): rows
/// equal in these get every answer alike.
fn traits(row: &GpuRow) -> impl PartialEq + '_ {
    (
        (&row.arch, &row.compute_capability, &row.class),
        (&row.forward_compat, &row.open_module),
        (
            row.min_driver_branch,
            row.last_driver_branch,
            row.last_cuda_major,
        ),
    )
}

fn alike(a: &GpuRow, b: &GpuRow) -> bool {
    traits(a) == traits(b)
}

fn ids(rows: &[&GpuRow]) -> String {
    rows.iter()
        .map(|r| r.device.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which of the traits differ among `rows`, in words.
fn differences(rows: &[&GpuRow]) -> String {
    let first = rows[0];
    let mut differ = Vec::new();
    let mut check = |name: &str, same: &dyn Fn(&GpuRow) -> bool| {
        if !rows.iter().all(|r| same(r)) {
            differ.push(name.to_string());
        }
    };
    check("architecture", &|r| {
        r.compute_capability == first.compute_capability
    });
    check("class", &|r| r.class == first.class);
    check("forward compatibility", &|r| {
        r.forward_compat == first.forward_compat
    });
    check("kernel-module flavour", &|r| {
        r.open_module == first.open_module
    });
    check("driver range", &|r| {
        (r.min_driver_branch, r.last_driver_branch, r.last_cuda_major)
            == (
                first.min_driver_branch,
                first.last_driver_branch,
                first.last_cuda_major,
            )
    });
    if differ.is_empty() {
        differ.push("architecture".into());
    }
    format!("they differ in {}", differ.join(", "))
}
