//! What a GPU needs from the driver and the toolkit: a driver branch in its
//! range, the kernel-module flavour it runs with, a toolkit (or PyTorch
//! wheel) that still carries its architecture.

use super::knowledge::{GpuRow, Knowledge};
use super::reason::{Reason, reason};
use crate::version::Dotted;

/// Compute capability as a comparable number (9.0 -> 90, 12.1 -> 121).
fn cc_value(text: &str) -> Option<u32> {
    let version = Dotted::parse(text)?;
    Some(version.major() * 10 + version.minor())
}

pub(crate) struct Gpu<'a> {
    pub(crate) row: &'a GpuRow,
    pub(crate) label: String,
}

/// Problems that stop a GPU from working with this driver, flavour and
/// CUDA major at all (they make the verdict "incompatible").
pub(crate) fn gpu_problems(
    gpu: &Gpu,
    driver: &Dotted,
    flavor: Option<&str>,
    cuda: &Dotted,
) -> Vec<Reason> {
    let kb = Knowledge::get();
    let row = gpu.row;
    let arch = kb.arch_of(&row.compute_capability);
    let row_id = format!("gpu {}", row.device);
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
    problems.extend(cuda_problems(gpu, cuda));
    problems
}

/// The CUDA release against the GPU's architecture: dropped after its
/// last major, or older than the architecture.
fn cuda_problems(gpu: &Gpu, cuda: &Dotted) -> Vec<Reason> {
    let row = gpu.row;
    let arch = Knowledge::get().arch_of(&row.compute_capability);
    let row_id = format!("gpu {}", row.device);
    let arch_id = |a: &super::knowledge::ArchRow| format!("arch {}", a.name);
    let mut problems = Vec::new();
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

/// A wheel variant that no longer carries kernels for the GPU's architecture.
pub(crate) fn wheel_arch_problems(torch: &str, gpu: &Gpu) -> Vec<Reason> {
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
