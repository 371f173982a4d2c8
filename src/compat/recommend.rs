//! Which driver branch a host should get (`[driver] branch = "recommended"`,
//! `provision recommend`): the newest production or long-term branch that
//! supports every GPU and runs the toolkit natively; data-center GPUs
//! prefer NVIDIA's long-term branches; a qualifying installed branch stays.

use serde::Serialize;

use super::knowledge::{BranchRow, GpuRow, Knowledge};
use crate::facts::Facts;
use crate::version::Dotted;

/// A branch as plans write it: `branch = "580"`.
fn as_text<S: serde::Serializer>(branch: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&branch.to_string())
}

/// A branch the choice passed over, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Alternative {
    #[serde(serialize_with = "as_text")]
    pub branch: u32,
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it could serve the host (only not preferred).
    pub eligible: bool,
    pub why: String,
}

/// The recommended branch, its flavour and the reasons.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    /// "580", as a plan's `branch` takes it.
    #[serde(serialize_with = "as_text")]
    pub branch: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub flavor: String,
    pub reasons: Vec<String>,
    pub alternatives: Vec<Alternative>,
}

/// What the choice is made for.
pub struct Needs<'a> {
    pub gpus: Vec<&'a GpuRow>,
    /// The toolkit the plan (or host) uses, "13.0".
    pub toolkit: Option<String>,
    /// The branch installed now, kept while it qualifies.
    pub installed: Option<u32>,
    /// The branches the plan's source carries, where it limits them
    /// (Debian's archive), with the source's name; None: any branch.
    pub carried: Option<(String, Vec<u32>)>,
}

fn is_production(row: &BranchRow) -> bool {
    row.kind.starts_with("LTSB") || row.kind == "PB"
}

fn is_long_term(row: &BranchRow) -> bool {
    row.kind.starts_with("LTSB")
}

/// Why `row` cannot serve the host, if it cannot.
fn unfit(row: &BranchRow, needs: &Needs, today: &str) -> Option<String> {
    let kb = Knowledge::get();
    if let Some((source, branches)) = &needs.carried
        && !branches.contains(&row.branch)
    {
        return Some(format!("{source} does not carry it"));
    }
    if !is_production(row) {
        return Some(format!(
            "type {}: not a production or long-term branch",
            row.kind
        ));
    }
    if row.ended_before(today) {
        let eol = row
            .end_of_life_date
            .as_deref()
            .or(row.end_of_life.as_deref());
        return Some(format!("end of life since {}", eol.unwrap_or("?")));
    }
    for gpu in &needs.gpus {
        let last = gpu.last_driver_branch.or(kb
            .arch_of(&gpu.compute_capability)
            .and_then(|a| a.last_driver_branch));
        if let Some(min) = gpu.min_driver_branch.filter(|min| row.branch < *min) {
            return Some(format!("{} needs R{min} or newer", gpu.name));
        }
        if let Some(last) = last.filter(|last| row.branch > *last) {
            return Some(format!("{} ({}) ends with R{last}", gpu.name, gpu.arch));
        }
    }
    if let Some(toolkit) = &needs.toolkit {
        let runs = row
            .max_cuda
            .as_deref()
            .and_then(Dotted::parse)
            .zip(Dotted::parse(toolkit))
            .is_some_and(|(max, want)| (max.major(), max.minor()) >= (want.major(), want.minor()));
        if !runs {
            return Some(format!(
                "runs CUDA up to {}, not {toolkit} natively",
                row.max_cuda.as_deref().unwrap_or("?")
            ));
        }
    }
    None
}

/// The module flavour for these GPUs on `branch`: open where every GPU
/// takes it and the branch defaults to it (R560 on), or where one needs it.
fn flavor(gpus: &[&GpuRow], branch: u32) -> Result<String, String> {
    let required: Vec<&str> = gpus
        .iter()
        .filter(|g| g.open_module == "required")
        .map(|g| g.name.as_str())
        .collect();
    let unsupported: Vec<&str> = gpus
        .iter()
        .filter(|g| g.open_module == "unsupported")
        .map(|g| g.name.as_str())
        .collect();
    match (required.is_empty(), unsupported.is_empty()) {
        (false, false) => Err(format!(
            "no one module flavour serves these GPUs: {} need the open module, {} the proprietary one; give them separate hosts",
            required.join(", "),
            unsupported.join(", ")
        )),
        (false, true) => Ok("open".into()),
        (true, false) => Ok("proprietary".into()),
        (true, true) if branch >= 560 => Ok("open".into()),
        (true, true) => Ok("proprietary".into()),
    }
}

/// A GPU that no driver lets run the toolkit (CUDA dropped its architecture).
fn toolkit_beyond_gpu(needs: &Needs) -> Result<(), String> {
    let kb = Knowledge::get();
    let Some(want) = needs.toolkit.as_deref().and_then(Dotted::parse) else {
        return Ok(());
    };
    for gpu in &needs.gpus {
        let last = gpu.last_cuda_major.or(kb
            .arch_of(&gpu.compute_capability)
            .and_then(|a| a.last_cuda_major));
        if let Some(last) = last.filter(|last| want.major() > *last) {
            return Err(format!(
                "{} ({}) runs CUDA up to {last}.x: no driver branch runs CUDA {} on it; plan a CUDA {last}.x toolkit",
                gpu.name,
                gpu.arch,
                needs.toolkit.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// The recommendation for `needs`, judged as of the knowledge base's date.
pub fn recommend(needs: &Needs) -> Result<Recommendation, String> {
    toolkit_beyond_gpu(needs)?;
    let kb = Knowledge::get();
    let today = kb.meta().compiled.clone();
    let mut judged: Vec<(&BranchRow, Option<String>)> = kb
        .branches()
        .iter()
        .map(|row| (row, unfit(row, needs, &today)))
        .collect();
    judged.sort_by_key(|(row, _)| std::cmp::Reverse(row.branch));
    let (chosen, first) = choose(&judged, needs)?;
    let mut reasons = vec![first];
    reasons.extend(support_reasons(chosen, needs, &today));
    let flavor = flavor(&needs.gpus, chosen.branch)?;
    reasons.push(format!(
        "flavor {flavor}: {}",
        flavor_reason(&flavor, &needs.gpus, chosen.branch)
    ));
    let alternatives = alternatives(&judged, chosen, &today);
    Ok(Recommendation {
        branch: chosen.branch,
        kind: chosen.kind.clone(),
        flavor,
        reasons,
        alternatives,
    })
}

/// The branch to take and the reason it wins: an installed one that
/// qualifies, else the newest long-term one for data-center GPUs, else the
/// newest that qualifies.
fn choose<'a>(
    judged: &[(&'a BranchRow, Option<String>)],
    needs: &Needs,
) -> Result<(&'a BranchRow, String), String> {
    let eligible = |long_term: bool| {
        judged
            .iter()
            .find(|(row, why)| why.is_none() && (!long_term || is_long_term(row)))
            .map(|(row, _)| *row)
    };
    let kept = needs.installed.and_then(|b| {
        judged
            .iter()
            .find(|(row, why)| row.branch == b && why.is_none())
            .map(|(row, _)| *row)
    });
    if let Some(row) = kept {
        return Ok((
            row,
            format!(
                "R{} is installed and still qualifies: a recommendation never moves a host off a branch that serves it",
                row.branch
            ),
        ));
    }
    let datacenter = !needs.gpus.is_empty() && needs.gpus.iter().all(|g| g.class == "datacenter");
    if let Some(row) = eligible(true).filter(|_| datacenter) {
        return Ok((
            row,
            format!(
                "data-center GPUs prefer NVIDIA's long-term branches: R{} is the newest long-term ({}) branch that qualifies",
                row.branch, row.kind
            ),
        ));
    }
    match eligible(false) {
        Some(row) => Ok((
            row,
            format!(
                "R{} is the newest production or long-term branch that qualifies ({})",
                row.branch, row.kind
            ),
        )),
        None => carried_past_its_end(judged, needs).ok_or_else(|| nothing_serves(judged, needs)),
    }
}

/// A source that carries only ended branches (Debian 12's archive: R535,
/// ended 2026-06-01) still gets its newest carried one that serves the
/// host in every other way, said plainly with the way to a supported one.
fn carried_past_its_end<'a>(
    judged: &[(&'a BranchRow, Option<String>)],
    needs: &Needs,
) -> Option<(&'a BranchRow, String)> {
    let (source, _) = needs.carried.as_ref()?;
    let row = judged
        .iter()
        .find(|(_, why)| why.as_deref().is_some_and(|w| w.starts_with("end of life")))
        .map(|(row, _)| *row)?;
    let eol = row
        .end_of_life_date
        .as_deref()
        .or(row.end_of_life.as_deref())
        .unwrap_or("?");
    Some((
        row,
        format!(
            "R{} is the newest branch {source} carries that drives these GPUs, and its support ended {eol} (no more security fixes): \
             source = \"cuda-repo\" offers supported branches",
            row.branch
        ),
    ))
}

/// Branches that ended this many years before the knowledge base are not
/// worth listing as alternatives.
const ENDED_LISTED_YEARS: u32 = 3;

/// The other branches and why each was passed over: newer ones, and
/// production ones that ended recently.
fn alternatives(
    judged: &[(&BranchRow, Option<String>)],
    chosen: &BranchRow,
    today: &str,
) -> Vec<Alternative> {
    let cutoff = today
        .get(..4)
        .and_then(|y| y.parse::<u32>().ok())
        .map(|y| format!("{}{}", y - ENDED_LISTED_YEARS, &today[4..]))
        .unwrap_or_default();
    judged
        .iter()
        .filter(|(row, _)| {
            row.branch != chosen.branch && (is_production(row) || row.branch > chosen.branch)
        })
        .filter(|(row, why)| why.is_none() || !row.ended_before(&cutoff))
        .map(|(row, why)| Alternative {
            branch: row.branch,
            kind: row.kind.clone(),
            eligible: why.is_none(),
            why: why
                .clone()
                .unwrap_or_else(|| "qualifies, but not preferred".into()),
        })
        .collect()
}

/// Why no branch serves: a GPU whose last branch reached its end of life,
/// else why each supported branch fails.
fn nothing_serves(judged: &[(&BranchRow, Option<String>)], needs: &Needs) -> String {
    let kb = Knowledge::get();
    for gpu in &needs.gpus {
        let last = gpu.last_driver_branch.or(kb
            .arch_of(&gpu.compute_capability)
            .and_then(|a| a.last_driver_branch));
        if let Some(row) = last.and_then(|b| kb.branch(b))
            && let Some(eol) = &row.end_of_life_date
        {
            return format!(
                "{} ({}) ends with R{}, whose support ended {eol}: no supported branch drives it; name [driver] branch = \"{}\" knowingly",
                gpu.name, gpu.arch, row.branch, row.branch
            );
        }
    }
    let live: Vec<String> = judged
        .iter()
        .filter(|(row, why)| {
            is_production(row) && !why.as_deref().unwrap_or("").starts_with("end of life")
        })
        .map(|(row, why)| format!("R{} {}", row.branch, why.as_deref().unwrap_or("")))
        .collect();
    format!(
        "no supported production or long-term branch serves this host: {}",
        live.join("; ")
    )
}

/// Why the chosen branch serves the GPUs and the toolkit, with its rows.
fn support_reasons(row: &BranchRow, needs: &Needs, today: &str) -> Vec<String> {
    let mut reasons = Vec::new();
    for gpu in &needs.gpus {
        reasons.push(format!(
            "supports {} ({}, compute {}) [gpu {}]",
            gpu.name, gpu.arch, gpu.compute_capability, gpu.device
        ));
    }
    if let Some(toolkit) = &needs.toolkit {
        reasons.push(format!(
            "runs CUDA {toolkit} natively (up to {}) [branch {}]",
            row.max_cuda.as_deref().unwrap_or("?"),
            row.branch
        ));
    }
    if let Some(eol) = &row.end_of_life_date {
        let state = if row.ended_before(today) {
            "support ended"
        } else {
            "supported until"
        };
        reasons.push(format!(
            "{state} {eol} (knowledge base of {today}) [branch {}: {}]",
            row.branch,
            row.sources.join(", ")
        ));
    }
    reasons
}

fn flavor_reason(flavor: &str, gpus: &[&GpuRow], branch: u32) -> String {
    let needs_open = gpus.iter().any(|g| g.open_module == "required");
    let no_open = gpus.iter().any(|g| g.open_module == "unsupported");
    match (flavor, needs_open, no_open) {
        ("open", true, _) => "the GPUs run only with the open kernel module".into(),
        ("open", _, _) => format!("every GPU takes the open module, R{branch}'s default"),
        (_, _, true) => "a GPU predates Turing: the open module cannot drive it".into(),
        _ => format!("R{branch} predates the open module as default (R560)"),
    }
}

/// What a host needs: its GPUs (known to the knowledge base), the toolkit
/// (`toolkit`, else the one /usr/local/cuda points at), the branch it runs.
pub fn needs_of(facts: &Facts, toolkit: Option<String>) -> Result<Needs<'static>, String> {
    let kb = Knowledge::get();
    let mut gpus: Vec<&'static GpuRow> = Vec::new();
    for gpu in facts.gpu_devices() {
        let row = kb
            .gpu(gpu.device_id(), gpu.subsystem.as_deref())
            .map(|(row, _)| row)
            .ok_or_else(|| {
                format!(
                    "GPU {} ({}) is not in the knowledge base: give [driver] branch",
                    gpu.address, gpu.pci_id
                )
            })?;
        if !gpus.iter().any(|g| std::ptr::eq(*g, row)) {
            gpus.push(row);
        }
    }
    if gpus.is_empty() {
        return Err("no NVIDIA GPU on this host: a branch cannot be recommended for no GPU; give [driver] branch".into());
    }
    let toolkit = toolkit.or_else(|| {
        let default = facts.toolkits.default.as_deref()?;
        facts
            .toolkits
            .installed
            .iter()
            .find(|t| t.path == default)
            .and_then(|t| t.short.clone())
    });
    let installed = facts
        .driver_version()
        .and_then(Dotted::parse)
        .map(|d| d.major());
    Ok(Needs {
        gpus,
        toolkit,
        installed,
        carried: None,
    })
}
