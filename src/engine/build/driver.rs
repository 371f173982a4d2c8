//! `[driver]`: the flavour, the package set from its source (the
//! distribution's, NVIDIA's repository, a bundle) or the runfiles.

use super::*;

/// The flavour to install: the plan's, or for `auto` the one the GPUs need.
pub fn resolve_flavor(driver: &Driver, facts: &Facts) -> Result<Flavor, PlanRefused> {
    let flavor = auto_flavor(driver, facts)?;
    let branch = driver.target.branch();
    if flavor == Flavor::Proprietary && branch.0 >= OPEN_ONLY_FROM {
        let why = if driver.flavor == Flavor::Auto {
            "this host's GPUs need the proprietary kernel modules (Maxwell, Pascal, Volta)"
        } else {
            "flavor = \"proprietary\""
        };
        return Err(PlanRefused::Refused(format!(
            "{why}, and driver branch {branch} ships the open kernel modules only (NVIDIA Driver Installation Guide r{OPEN_ONLY_FROM}, Kernel Modules): \
             set flavor = \"open\" (Turing and newer), or a branch before {OPEN_ONLY_FROM} for older GPUs"
        )));
    }
    Ok(flavor)
}

/// The first branch without proprietary kernel modules.
const OPEN_ONLY_FROM: u32 = 620;

/// The plan's flavour, or for `auto` the one the GPUs need.
fn auto_flavor(driver: &Driver, facts: &Facts) -> Result<Flavor, PlanRefused> {
    if driver.flavor != Flavor::Auto {
        return Ok(driver.flavor);
    }
    let gpus: Vec<_> = facts.gpu_devices().collect();
    if gpus.is_empty() {
        return Err(PlanRefused::Refused(
            "flavor = \"auto\" needs a GPU to choose from, and none is present (an image being baked?): \
             set [driver] flavor = \"open\" (Turing and newer) or \"proprietary\" (Maxwell, Pascal, Volta)"
                .into(),
        ));
    }
    let supports = |flavor: &str| {
        gpus.iter()
            .all(|g| g.flavors.is_empty() || g.flavors.iter().any(|f| f == flavor))
    };
    if supports("open") {
        Ok(Flavor::Open)
    } else if supports("proprietary") {
        Ok(Flavor::Proprietary)
    } else {
        Err(PlanRefused::Refused(
            "the GPUs in this host need different kernel-module flavours (open for Blackwell, proprietary before Turing): \
             one driver cannot serve them all"
                .into(),
        ))
    }
}

/// The package source (NVIDIA's repository for `cuda-repo`) and the
/// packages; returns where the toolkit and the compat library are.
#[allow(clippy::type_complexity)]
pub(super) fn package_steps(
    plan: &Plan,
    facts: &Facts,
    flavor: Option<Flavor>,
    compat: Option<&str>,
    warnings: &mut Vec<String>,
    steps: &mut Vec<Box<dyn Step>>,
) -> Result<(Option<String>, Option<String>, bool), PlanRefused> {
    let section = if plan.driver.is_some() {
        "driver"
    } else {
        "toolkit"
    };
    let mut desired = distro::desired(plan, facts, flavor, compat)
        .map_err(|e| PlanRefused::Refused(format!("{}: {e}", plan.at(section))))?;
    warnings.extend(desired.warnings.iter().cloned());
    if let (Some(driver), Some(flavor)) = (&plan.driver, flavor)
        && let Some(note) =
            distro::keep::keep_installed(&mut desired, facts, &driver.target, flavor)
    {
        warnings.push(note);
    }
    if plan.dcgm_diag > 0 && !plan.dcgm {
        return Err(PlanRefused::Refused(format!(
            "{}: [dcgm] diag = {} asks nv-hostengine, which [dcgm] enable = true installs and runs: add it",
            plan.at("dcgm"),
            plan.dcgm_diag
        )));
    }
    if plan.dcgm && plan.source() != Source::CudaRepo {
        return Err(PlanRefused::Refused(format!(
            "[dcgm] comes from NVIDIA's CUDA repository, and this plan's source is \"{}\": set source = \"cuda-repo\"",
            plan.source()
        )));
    }
    desired
        .install
        .extend(container::extra_packages(plan, facts)?);
    if let Some(opened) = &plan.bundle {
        steps.push(Box::new(bundle_step(
            plan, facts, opened, &desired, warnings,
        )?));
    } else {
        if let Some(repository) = cuda_repository(plan, facts, distro::repo_arch())? {
            steps.push(Box::new(repository));
        }
        if let Some(repository) = container::container_repository(plan, facts, distro::repo_arch())?
        {
            steps.push(Box::new(repository));
        }
    }
    let found = (
        desired.toolkit_home.clone(),
        desired.compat_dir.clone(),
        desired.toolkit_on_path,
    );
    steps.push(Box::new(step::packages::Packages::new(desired)));
    if let Some(runtime) = container::runtime_step(plan, facts)? {
        steps.push(Box::new(runtime));
    }
    if let Some(dcgm) = container::dcgm_step(plan) {
        steps.push(Box::new(dcgm));
    }
    Ok(found)
}

/// The driver (and toolkit) from NVIDIA's runfiles; returns the toolkit's
/// home for the environment steps.
#[allow(clippy::type_complexity)]
pub(super) fn runfile_steps(
    plan: &Plan,
    facts: &Facts,
    flavor: Flavor,
    compat: Option<&str>,
    steps: &mut Vec<Box<dyn Step>>,
) -> Result<(Option<String>, Option<String>, bool), PlanRefused> {
    use step::runfile::{Component, Runfile, driver_args};
    if plan.container != crate::plan::ContainerRuntime::None || plan.dcgm {
        return Err(PlanRefused::Refused(
            "[container] and [dcgm] install packages from NVIDIA's repositories, and a runfile driver has none: use source = \"cuda-repo\"".into(),
        ));
    }
    if let Some(package) = compat {
        return Err(PlanRefused::Refused(format!(
            "{package} comes from NVIDIA's CUDA repository, not a runfile: set [compat] package = \"none\" and a driver that runs the toolkit natively, or use source = \"cuda-repo\""
        )));
    }
    let Some(download) = plan.driver.as_ref().and_then(|d| d.runfile.as_ref()) else {
        return Err(PlanRefused::Refused(
            "source = \"runfile\" needs [driver] runfile and sha256".into(),
        ));
    };
    let Some(crate::plan::DriverTarget::Version(version)) = plan.driver.as_ref().map(|d| &d.target)
    else {
        return Err(PlanRefused::Refused(
            "source = \"runfile\" needs an exact [driver] version".into(),
        ));
    };
    // An image has no running kernel of its own: build for the one it has.
    let kernel = match (&facts.os.running_kernel, facts.os.kernels.as_slice()) {
        (Some(_), _) => None,
        (None, [only]) => Some(only.release.as_str()),
        _ => None,
    };
    let flavor = match flavor {
        Flavor::Proprietary => "proprietary",
        _ => "open",
    };
    steps.push(Box::new(Runfile {
        url: download.url.clone(),
        sha256: download.sha256.clone(),
        args: [
            driver_args(flavor, kernel),
            secure_boot::runfile_args(plan.signing.as_ref()),
        ]
        .concat(),
        component: Component::Driver {
            version: version.to_string(),
        },
    }));
    Ok(toolkit_runfile(plan, steps))
}

/// The offline bundle's repository, checked before anything changes to
/// serve the plan's packages on this host; a bundle made for another plan,
/// or for other hosts, is a warning.
fn bundle_step(
    plan: &Plan,
    facts: &Facts,
    opened: &crate::bundle::Opened,
    desired: &distro::Desired,
    warnings: &mut Vec<String>,
) -> Result<step::bundle::BundleRepository, PlanRefused> {
    if opened.manifest.plan_sha256 != plan.sha256 {
        warnings.push(format!(
            "the bundle was made for another plan (sha256 {}): a package this plan needs that it lacks cannot be installed offline",
            opened.manifest.plan_sha256
        ));
    }
    let hosts = &opened.manifest.hosts;
    let name = facts.os.hostname.as_ref();
    if !hosts.is_empty() && !name.is_some_and(|name| hosts.contains(name)) {
        warnings.push(format!(
            "this host ({}) is not among those the bundle was made for ({}): it is checked against this host's packages before anything changes",
            name.map_or("unnamed", String::as_str),
            hosts.join(", ")
        ));
    }
    let family = bundle_family(opened, facts)?;
    Ok(step::bundle::BundleRepository {
        opened: opened.clone(),
        family,
        packages: step::packages::Packages::new(desired.clone()),
        plan_path: plan.path.display().to_string(),
    })
}

/// The family of the release the bundle was made for, which must be this
/// host's: a Debian-family release exactly ("debian-12"), an RHEL-family
/// one by its major ("rhel-9" serves Rocky 9.4).
fn bundle_family(
    opened: &crate::bundle::Opened,
    facts: &Facts,
) -> Result<crate::facts::os::Family, PlanRefused> {
    let family = facts.os.family;
    let here = crate::facts::os::release_name(
        facts.os.id.as_deref().unwrap_or("unknown"),
        facts.os.version_id.as_deref().unwrap_or("unknown"),
        family,
    );
    if opened.manifest.release != here {
        return Err(PlanRefused::Refused(format!(
            "the bundle was made for {}, and this host is {here}: make one with `provision bundle PLAN --for {here}`",
            opened.manifest.release
        )));
    }
    Ok(family.unwrap_or(crate::facts::os::Family::Debian))
}

/// NVIDIA's CUDA repository for a `cuda-repo` plan: the plan's mirror or
/// NVIDIA's own for `arch` (its path component: "x86_64", "sbsa"), with
/// the key and the fingerprint to trust.
pub fn cuda_repository(
    plan: &Plan,
    facts: &Facts,
    arch: &str,
) -> Result<Option<CudaRepository>, PlanRefused> {
    if plan.source() != Source::CudaRepo {
        return Ok(None);
    }
    let refuse = |message: String| PlanRefused::Refused(message);
    let family = facts
        .os
        .family
        .ok_or_else(|| refuse("the distribution family is unknown (no /etc/os-release): cannot set up NVIDIA's repository".into()))?;
    let known = distro::repository_for(facts);
    let system = format!(
        "{} {}",
        facts.os.id.as_deref().unwrap_or("this distribution"),
        facts.os.version_id.as_deref().unwrap_or("")
    );
    let repos = &plan.repositories;
    let mut url = match (&repos.cuda, known) {
        (Some(url), _) => url.0.clone(),
        (None, Some(known)) => known.url.replace("{arch}", arch),
        (None, None) => {
            return Err(refuse(format!(
                "NVIDIA publishes no CUDA repository provision knows for {system}: set [repositories] cuda to one"
            )));
        }
    };
    if !url.ends_with('/') {
        url.push('/');
    }
    let key_url = match (&repos.cuda_key, known) {
        (Some(key), _) => key.0.clone(),
        (None, Some(known)) => format!("{url}{}", known.key),
        (None, None) => {
            return Err(refuse(
                "set [repositories] cuda_key: the repository's signing key".into(),
            ));
        }
    };
    let fingerprint = match (
        &repos.cuda_fingerprint,
        known.and_then(|k| k.fingerprint.clone()),
    ) {
        (Some(fingerprint), _) => fingerprint.0.clone(),
        (None, Some(pinned)) => pinned,
        (None, None) => {
            return Err(refuse(format!(
                "provision has no pinned fingerprint for NVIDIA's {system} repository key: verify it out of band and set [repositories] cuda_fingerprint"
            )));
        }
    };
    Ok(Some(CudaRepository {
        kind: crate::step::repository::RepoKind::Cuda,
        url,
        key_url,
        fingerprint,
        family,
    }))
}
