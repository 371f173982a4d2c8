//! Container hosts: `[container] runtime` installs NVIDIA's container
//! toolkit from the libnvidia-container repository (its key pinned by
//! fingerprint, like the CUDA repository's) and configures the runtime;
//! `[dcgm] enable` installs DCGM for the driver's CUDA major from the CUDA
//! repository and enables its service. Both packages are held with the
//! driver set.

use super::PlanRefused;
use crate::compat::knowledge::Knowledge;
use crate::distro::{PackageSpec, VersionSpec};
use crate::facts::Facts;
use crate::facts::os::Family;
use crate::host::Root;
use crate::plan::{ContainerRuntime, Plan};
use crate::step::container::{
    CONTAINERD_CONFIG, CRIO_DROPIN, DOCKER_CONFIG, RuntimeConfig, containerd_config, crio_dropin,
    docker_config,
};
use crate::step::dcgm::DcgmService;
use crate::step::file::ManagedFile;
use crate::step::repository::{CudaRepository, RepoKind};

/// NVIDIA's libnvidia-container repository and its signing key
/// ("NVIDIA CORPORATION (Open Source Projects) <cudatools@nvidia.com>",
/// long id DDCAE044F796ECB0), as NVIDIA's install guide configures them.
const CONTAINER_APT: &str = "https://nvidia.github.io/libnvidia-container/stable/deb/{arch}/";
const CONTAINER_RPM: &str = "https://nvidia.github.io/libnvidia-container/stable/rpm/{arch}/";
const CONTAINER_KEY: &str = "https://nvidia.github.io/libnvidia-container/gpgkey";
const CONTAINER_FINGERPRINT: &str = "C95B321B61E88C1809C4F759DDCAE044F796ECB0";

/// The packages the container runtime and DCGM need, held with the driver.
pub fn extra_packages(plan: &Plan, facts: &Facts) -> Result<Vec<PackageSpec>, PlanRefused> {
    let held = |name: String| PackageSpec {
        name,
        version: VersionSpec::Any,
        hold: true,
        alternatives: Vec::new(),
        optional: false,
    };
    let mut packages = Vec::new();
    if plan.container != ContainerRuntime::None {
        packages.push(held("nvidia-container-toolkit".into()));
    }
    if plan.dcgm {
        packages.push(held(format!(
            "datacenter-gpu-manager-4-cuda{}",
            dcgm_cuda_major(plan, facts)?
        )));
    }
    Ok(packages)
}

/// The CUDA major of the driver DCGM runs with: the newest CUDA its
/// libcuda supports (what nvidia-smi prints).
fn dcgm_cuda_major(plan: &Plan, facts: &Facts) -> Result<u32, PlanRefused> {
    let branch = match &plan.driver {
        Some(driver) => Some(driver.target.branch().0),
        None => crate::compat::validate::drivers_underneath(plan, facts)
            .first()
            .and_then(|(driver, _)| driver.split('.').next()?.parse().ok()),
    };
    let major = branch
        .and_then(|b| Knowledge::get().branch(b))
        .and_then(|row| row.max_cuda.as_deref())
        .and_then(|cuda| cuda.split('.').next()?.parse().ok());
    major.ok_or_else(|| {
        PlanRefused::Refused(
            "[dcgm] enable: the driver's CUDA major is unknown (no driver planned or running that the knowledge base knows), so the DCGM package (datacenter-gpu-manager-4-cudaN) cannot be chosen".into(),
        )
    })
}

/// The libnvidia-container repository: the plan's mirror or NVIDIA's.
/// `arch`: NVIDIA's path component for the CPU ("x86_64", "sbsa").
pub fn container_repository(
    plan: &Plan,
    facts: &Facts,
    arch: &str,
) -> Result<Option<CudaRepository>, PlanRefused> {
    if plan.container == ContainerRuntime::None {
        return Ok(None);
    }
    let family = facts.os.family.ok_or_else(|| {
        PlanRefused::Refused(
            "the distribution family is unknown (no /etc/os-release): cannot set up NVIDIA's libnvidia-container repository".into(),
        )
    })?;
    let repos = &plan.repositories;
    let arch = match (family, arch) {
        (Family::Debian, "x86_64") => "amd64",
        (Family::Debian, _) => "arm64",
        (Family::Rhel, "x86_64") => "x86_64",
        (Family::Rhel, _) => "aarch64",
    };
    let mut url = match &repos.container {
        Some(url) => url.0.clone(),
        None => match family {
            Family::Debian => CONTAINER_APT,
            Family::Rhel => CONTAINER_RPM,
        }
        .replace("{arch}", arch),
    };
    if !url.ends_with('/') {
        url.push('/');
    }
    Ok(Some(CudaRepository {
        kind: RepoKind::Container,
        key_url: repos
            .container_key
            .as_ref()
            .map_or(CONTAINER_KEY.to_string(), |k| k.0.clone()),
        fingerprint: repos
            .container_fingerprint
            .as_ref()
            .map_or(CONTAINER_FINGERPRINT.to_string(), |f| f.0.clone()),
        url,
        family,
    }))
}

/// The runtime's configuration with the nvidia runtime added, from the
/// file as it is now.
pub fn runtime_step(plan: &Plan, facts: &Facts) -> Result<Option<RuntimeConfig>, PlanRefused> {
    let (path, unit) = match plan.container {
        ContainerRuntime::None => return Ok(None),
        ContainerRuntime::Docker => (DOCKER_CONFIG, "docker.service"),
        ContainerRuntime::Containerd => (CONTAINERD_CONFIG, "containerd.service"),
        ContainerRuntime::CriO => (CRIO_DROPIN, "crio.service"),
    };
    let root =
        Root::new(&facts.root).map_err(|e| PlanRefused::Refused(format!("{}: {e}", facts.root)))?;
    let current = root.read_string(path).ok();
    let content = match plan.container {
        ContainerRuntime::Docker => docker_config(current.as_deref()),
        ContainerRuntime::Containerd => containerd_config(current.as_deref()),
        _ => Ok(crio_dropin()),
    }
    .map_err(PlanRefused::Refused)?;
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        root.metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644)
    };
    Ok(Some(RuntimeConfig {
        file: ManagedFile {
            id: crate::step::container::ID.into(),
            path: path.into(),
            content: Some(content),
            mode,
            equivalent: None,
        },
        unit: unit.into(),
    }))
}

/// DCGM's service, enabled (and started on a running host).
pub fn dcgm_step(plan: &Plan) -> Option<DcgmService> {
    plan.dcgm.then_some(DcgmService)
}
