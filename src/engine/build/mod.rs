//! From a plan and the facts to the steps that make the host match it:
//! validation against the GPUs, the flavour, the package set, and one step
//! per piece of state (nouveau, packages, environment, initramfs).

mod container;
mod driver;
mod environment;
mod nouveau;
mod toolkit;
pub use container::{container_repository, extra_packages};
mod secure_boot;
pub use secure_boot::DKMS_SIGNING_CONF;

pub use driver::{cuda_repository, resolve_flavor};
use driver::{package_steps, runfile_steps};
use environment::environment_steps;
use nouveau::nouveau_blacklist;
use toolkit::{other_toolkits_on_loader, toolkit_only_steps, toolkit_runfile};

use crate::distro;
use crate::facts::Facts;
use crate::plan::{Driver, Flavor, Loader, Plan, Source};
use crate::step::file::{ManagedFile, header};
use crate::step::initramfs::Initramfs;
use crate::step::ldconfig::Ldconfig;
use crate::step::persistence::Persistence;
use crate::step::repository::CudaRepository;
use crate::step::{self, Step};

pub const NOUVEAU_CONF: &str = "/etc/modprobe.d/provision-nouveau.conf";
pub const PROFILE_SCRIPT: &str = "/etc/profile.d/provision-cuda.sh";
pub const LOADER_CONF: &str = "/etc/ld.so.conf.d/provision-cuda.conf";
/// Sorts before the distributions' own library directories (x86_64-linux-gnu.conf).
pub const COMPAT_CONF: &str = "/etc/ld.so.conf.d/00-provision-cuda-compat.conf";

/// Why a plan cannot go ahead on this host, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PlanRefused {
    #[error("{0}")]
    Refused(String),
}

/// The steps of `plan` on this host, in apply order (the maintenance
/// window is added around them by the engine, see `engine::steps`).
pub fn build_steps(
    plan: &Plan,
    facts: &Facts,
    warnings: &mut Vec<String>,
) -> Result<Vec<Box<dyn Step>>, PlanRefused> {
    if facts.gpu_devices().next().is_none() {
        warnings.push(
            "no NVIDIA GPU is present (an image being baked, or a CI runner): the plan is applied without GPU checks".into(),
        );
    }
    let validation = crate::compat::validate::validate(plan, facts);
    warnings.extend(validation.warnings.iter().cloned());
    if !validation.problems.is_empty() {
        let located: Vec<String> = validation
            .problems
            .iter()
            .map(|p| format!("{} [{}]: {}", plan.at(p.section), p.section, p.text))
            .collect();
        return Err(PlanRefused::Refused(format!(
            "the plan cannot work on this host:\n  - {}",
            located.join("\n  - ")
        )));
    }
    let Some(driver) = &plan.driver else {
        return toolkit_only_steps(plan, facts, validation.compat_package.as_deref(), warnings);
    };
    let flavor = resolve_flavor(driver, facts)?;
    let mut steps: Vec<Box<dyn Step>> = Vec::new();

    // 1. nouveau out of the way (file now, initramfs after the packages).
    let (blacklist, equivalent) = nouveau_blacklist(plan, facts, &mut steps);

    // 2. the module signing key (Secure Boot), the package source, then
    // the packages (or the runfiles).
    secure_boot::signing_steps(plan, driver, facts, warnings, &mut steps)?;
    let found = if driver.source == Source::Runfile {
        runfile_steps(
            plan,
            facts,
            flavor,
            validation.compat_package.as_deref(),
            &mut steps,
        )?
    } else {
        package_steps(
            plan,
            facts,
            Some(flavor),
            validation.compat_package.as_deref(),
            warnings,
            &mut steps,
        )?
    };

    // 3. environment of the default toolkit.
    other_toolkits_on_loader(plan, facts, &found, warnings);
    environment_steps(plan, found, &mut steps);

    // 4. initramfs images carry the blacklist.
    if plan.nouveau.disable {
        // provision's own file counts when it writes one (no equivalent, or
        // it owns one already); a vendor's equivalent file counts as it is.
        let ours = equivalent.is_none() || facts_has(facts, NOUVEAU_CONF);
        let mut blacklist_files = vec![NOUVEAU_CONF.to_string()];
        blacklist_files.extend(equivalent);
        steps.push(Box::new(Initramfs {
            blacklist_files,
            blacklist: ours.then(|| (NOUVEAU_CONF.to_string(), blacklist)),
            family: facts.os.family,
        }));
    }

    // 5. persistence mode, once the daemon can run.
    steps.push(Box::new(Persistence {
        enabled: driver.persistence,
    }));
    Ok(steps)
}

/// Whether `path` exists in the root the facts were read from.
fn facts_has(facts: &Facts, path: &str) -> bool {
    crate::host::Root::new(&facts.root)
        .map(|root| root.exists(path))
        .unwrap_or(false)
}
