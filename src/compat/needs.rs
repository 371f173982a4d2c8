//! The question without a driver: "which CUDA wheels does torch 2.6.0
//! have, and what driver does each need?" (`compat --torch 2.6.0` on a
//! machine with no NVIDIA driver, where images are built). For every
//! wheel, or for one CUDA release: the lowest driver that runs it
//! natively, the lowest by minor-version compatibility, and the
//! forward-compatibility package that serves older branches on
//! data-center GPUs.

use serde::Serialize;

use super::gpu::{Gpu, gpu_problems, wheel_arch_problems};
use super::knowledge::{GpuRow, Knowledge};
use super::rules::{QuestionError, Target, forward_compat_package, toolkit_rows, torch_target};
use super::wheels::{install_line, release};
use crate::version::Dotted;

/// What one CUDA release (or wheel) needs of the driver.
#[derive(Debug, Clone, Serialize)]
pub struct Need {
    /// The wheel's tag ("cu124"); null for a CUDA release.
    pub tag: Option<String>,
    /// The CUDA release it resolved to ("12.4.1").
    pub cuda: String,
    /// The lowest driver that runs it natively.
    pub native_driver: String,
    /// The lowest driver that runs it by minor-version compatibility
    /// (CUDA 11 and later, with that mode's limitations); null where the
    /// major has none.
    pub minor_version_driver: Option<String>,
    /// `cuda-compat-X-Y` and the older branches it serves (data-center
    /// GPUs only); null where NVIDIA ships none.
    pub forward_compat: Option<String>,
    /// The pip line, for a wheel.
    pub install: Option<String>,
    /// Why it cannot run on the GPUs asked about, if so.
    pub problems: Vec<String>,
}

/// The answer to a compat question asked without a driver.
#[derive(Debug, Clone, Serialize)]
pub struct NeedsReport {
    /// "torch 2.6.0", "CUDA 12.4", "torch 2.9.1+cu130".
    pub question: String,
    pub gpus: Vec<String>,
    pub needs: Vec<Need>,
    pub notes: Vec<String>,
    pub msg: String,
}

/// What `target` needs of a driver, on `gpus` when given.
pub fn needs(target: &Target, gpus: &[&GpuRow]) -> Result<NeedsReport, QuestionError> {
    let mut notes = Vec::new();
    let (question, needs) = match target {
        Target::Torch(text) if super::wheels::is_release_question(text) => {
            let (row, torch, found) = release(text)?;
            notes.extend(found);
            let mut needs = Vec::new();
            for variant in Knowledge::get()
                .pytorch_wheels()
                .iter()
                .filter(|w| w.torch.contains(&row.torch))
            {
                let wheel = format!("{torch}+{}", variant.variant);
                let mut need = need_of(&variant.cuda, Some(&wheel), gpus)?;
                need.tag = Some(variant.variant.clone());
                need.install = Some(install_line(row, &torch, &variant.variant));
                needs.push(need);
            }
            (format!("torch {torch}"), needs)
        }
        Target::Torch(text) => {
            let (cuda, reasons, _) = torch_target(text)?;
            notes.extend(reasons.into_iter().map(|r| r.text));
            let mut need = need_of(&cuda, Some(text), gpus)?;
            need.tag = text.split_once('+').map(|(_, tag)| tag.to_string());
            (format!("torch {text}"), vec![need])
        }
        Target::Cuda(text) => (format!("CUDA {text}"), vec![need_of(text, None, gpus)?]),
    };
    let floor = needs
        .iter()
        .filter(|n| n.problems.is_empty())
        .filter_map(|n| {
            let native = Dotted::parse(&n.native_driver)?;
            let minor = n.minor_version_driver.as_deref().and_then(Dotted::parse);
            Some(minor.map_or(native.clone(), |m| m.min(native)))
        })
        .min();
    let msg = match floor {
        Some(floor) => format!(
            "{question}: the oldest driver that runs {} is {floor}",
            if needs.len() > 1 {
                "one of its CUDA wheels"
            } else {
                "it"
            }
        ),
        None => format!("{question}: nothing of it runs on the GPUs asked about"),
    };
    Ok(NeedsReport {
        question,
        gpus: gpus.iter().map(|g| g.name.clone()).collect(),
        needs,
        notes,
        msg,
    })
}

/// The driver floors of one CUDA release ("12.4", "12.4.1").
fn need_of(cuda: &str, wheel: Option<&str>, gpus: &[&GpuRow]) -> Result<Need, QuestionError> {
    let (rows, _) = toolkit_rows(cuda)?;
    let native = rows
        .iter()
        .map(|r| &r.min_driver)
        .max()
        .expect("toolkit_rows returns a row")
        .clone();
    let release = match rows.as_slice() {
        [row] => row.release.clone(),
        _ => cuda.to_string(),
    };
    let version = Dotted::parse(&release).unwrap_or_else(|| native.clone());
    let kb = Knowledge::get();
    let minor_version_driver = kb
        .minor_compat()
        .iter()
        .find(|f| f.cuda_major == version.major() && f.supported)
        .and_then(|f| f.min_driver.clone())
        .filter(|floor| *floor < native)
        .map(|floor| floor.to_string());
    let short = format!("{}.{}", version.major(), version.minor());
    let forward_compat = forward_compat_package(&short).map(|fc| {
        let branches: Vec<String> = fc
            .supported_branches
            .iter()
            .map(|b| format!("R{b}"))
            .collect();
        format!(
            "{} on {} (data-center GPUs)",
            fc.package,
            branches.join(", ")
        )
    });
    let mut problems = Vec::new();
    for row in gpus {
        let gpu = Gpu {
            row,
            label: row.name.clone(),
        };
        problems.extend(gpu_problems(&gpu, &native, None, &version));
        if let Some(wheel) = wheel {
            problems.extend(wheel_arch_problems(wheel, &gpu));
        }
    }
    Ok(Need {
        tag: None,
        cuda: release,
        native_driver: native.to_string(),
        minor_version_driver,
        forward_compat,
        install: None,
        problems: problems.into_iter().map(|r| r.text).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_2_6_needs_no_driver_to_be_answered() {
        let report = needs(&Target::Torch("2.6.0".into()), &[]).unwrap();
        let tags: Vec<_> = report
            .needs
            .iter()
            .filter_map(|n| n.tag.as_deref())
            .collect();
        assert_eq!(tags, ["cu118", "cu124", "cu126"]);
        let cu118 = &report.needs[0];
        // CUDA 11.8 natively from 520.61.05, by minor-version
        // compatibility from 450.80.02 (the CUDA 11 floor).
        assert_eq!(cu118.native_driver, "520.61.05");
        assert_eq!(cu118.minor_version_driver.as_deref(), Some("450.80.02"));
        assert!(cu118.install.as_deref().unwrap().contains("torch==2.6.0"));
        assert!(report.msg.contains("450.80.02"), "{}", report.msg);
    }

    #[test]
    fn a_gpu_the_wheel_has_no_kernels_for_is_a_problem() {
        let h100 = crate::compat::rules::find_gpu("H100 PCIe").unwrap();
        let report = needs(&Target::Cuda("13.0".into()), &[&h100]).unwrap();
        assert_eq!(report.needs[0].native_driver, "580.65.06");
        assert!(report.needs[0].problems.is_empty());
        let k80 = crate::compat::rules::find_gpu("K80").unwrap();
        let report = needs(&Target::Cuda("13.0".into()), &[&k80]).unwrap();
        assert!(!report.needs[0].problems.is_empty(), "{report:#?}");
    }
}
