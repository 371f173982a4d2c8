//! From a plan and the facts to the steps that make the host match it:
//! validation against the GPUs, the flavour, the package set, and one step
//! per piece of state (nouveau, packages, environment, initramfs).

mod container;
pub use container::{container_repository, extra_packages};
mod secure_boot;
pub use secure_boot::DKMS_SIGNING_CONF;

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

/// The flavour to install: the plan's, or for `auto` the one the GPUs need.
pub fn resolve_flavor(driver: &Driver, facts: &Facts) -> Result<Flavor, PlanRefused> {
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

/// A plan without `[driver]`: the toolkit (and compat) and its
/// environment, nothing that touches the driver, nouveau or the initramfs.
fn toolkit_only_steps(
    plan: &Plan,
    facts: &Facts,
    compat: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Box<dyn Step>>, PlanRefused> {
    let mut steps: Vec<Box<dyn Step>> = Vec::new();
    if plan.signing.is_some() {
        warnings.push(
            "[secure_boot] signs the modules a driver plan builds; a toolkit-only plan builds none"
                .into(),
        );
    }
    let found = if plan.source() == Source::Runfile {
        toolkit_runfile(plan, &mut steps)
    } else {
        package_steps(plan, facts, None, compat, warnings, &mut steps)?
    };
    other_toolkits_on_loader(plan, facts, &found, warnings);
    environment_steps(plan, found, &mut steps);
    Ok(steps)
}

/// A default toolkit put on the loader path beside others some other
/// file already lists (a toolkit package's own /etc/ld.so.conf.d/cuda-X-Y.conf):
/// programs then get whichever libraries ldconfig lists first. Said, with
/// the files to remove; provision does not remove files it does not own.
fn other_toolkits_on_loader(
    plan: &Plan,
    facts: &Facts,
    (home, _, on_path): &(Option<String>, Option<String>, bool),
    warnings: &mut Vec<String>,
) {
    let default = plan.toolkit.as_ref().is_some_and(|t| t.default);
    let (Some(home), true, false) = (home, default, *on_path) else {
        return;
    };
    if plan.environment.loader != Loader::LdSoConf {
        return;
    }
    let others: Vec<(String, String)> = facts
        .loader_toolkits()
        .into_iter()
        .filter(|(toolkit, file)| toolkit != home && file != LOADER_CONF)
        .collect();
    if others.is_empty() {
        return;
    }
    let listed: Vec<String> = others
        .iter()
        .map(|(toolkit, file)| format!("{toolkit} ({file})"))
        .collect();
    let files: Vec<&str> = others.iter().map(|(_, file)| file.as_str()).collect();
    warnings.push(format!(
        "the loader path already holds the libraries of {}: with {home} added, programs get whichever libcudart/libcublas ldconfig lists first; \
         remove {} and run ldconfig (they belong to the toolkit packages, so provision leaves them), or set [environment] loader = \"profile\"",
        listed.join(", "),
        files.join(" and ")
    ));
}

/// The package source (NVIDIA's repository for `cuda-repo`) and the
/// packages; returns where the toolkit and the compat library are.
#[allow(clippy::type_complexity)]
fn package_steps(
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
        if opened.manifest.plan_sha256 != plan.sha256 {
            warnings.push(format!(
                "the bundle was made for another plan (sha256 {}): a package this plan needs that it lacks cannot be installed offline",
                opened.manifest.plan_sha256
            ));
        }
        steps.push(Box::new(bundle_repository(opened, facts)?));
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

/// The nouveau blacklist file step; returns its content and the vendor
/// file that already does the job, if any.
fn nouveau_blacklist(
    plan: &Plan,
    facts: &Facts,
    steps: &mut Vec<Box<dyn Step>>,
) -> (String, Option<String>) {
    let blacklist = format!(
        "{}blacklist nouveau\noptions nouveau modeset=0\n",
        header("keep nouveau from binding NVIDIA GPUs")
    );
    let equivalent = facts
        .nouveau
        .files
        .iter()
        .filter(|f| f.path != NOUVEAU_CONF)
        .find(|f| (f.blacklist || f.install_disabled) && f.modeset_off)
        .map(|f| f.path.clone());
    steps.push(Box::new(ManagedFile {
        id: "nouveau:blacklist".into(),
        path: NOUVEAU_CONF.into(),
        content: plan.nouveau.disable.then(|| blacklist.clone()),
        mode: 0o644,
        equivalent: equivalent.clone(),
    }));
    (blacklist, equivalent)
}

/// PATH and the loader path for the default toolkit, and the compat
/// library first on the loader path: files, then ldconfig.
fn environment_steps(
    plan: &Plan,
    (toolkit_home, compat_dir, toolkit_on_path): (Option<String>, Option<String>, bool),
    steps: &mut Vec<Box<dyn Step>>,
) {
    let default_toolkit = plan.toolkit.as_ref().filter(|t| t.default);
    let home = default_toolkit.and(toolkit_home);
    let needs_env = home.is_some() && !toolkit_on_path;
    let lib_dir = home
        .as_ref()
        .map(|h| format!("{h}/targets/x86_64-linux/lib"));
    let profile = match (&home, needs_env) {
        (Some(home), true)
            if plan.environment.path || plan.environment.loader == Loader::Profile =>
        {
            Some(profile_script(plan, home, lib_dir.as_deref()))
        }
        _ => None,
    };
    steps.push(Box::new(ManagedFile {
        id: "environment:profile".into(),
        path: PROFILE_SCRIPT.into(),
        content: profile,
        mode: 0o644,
        equivalent: None,
    }));
    let mut loader_dirs: Vec<String> = match (&lib_dir, needs_env, plan.environment.loader) {
        (Some(lib), true, Loader::LdSoConf) => vec![lib.clone()],
        _ => Vec::new(),
    };
    // The compat libcuda goes in a file that sorts before the distribution's
    // own library directories, so the loader finds it before the driver's
    // libcuda. provision installs it only while the planned driver is older
    // than what it carries, and removes both when the plan no longer needs
    // them: it never shadows a newer driver.
    let compat_conf = compat_dir.as_ref().map(|dir| {
        format!(
            "{}{dir}\n",
            header("forward-compatibility libcuda, newer than the driver, found first")
        )
    });
    steps.push(Box::new(ManagedFile {
        id: "compat:loader".into(),
        path: COMPAT_CONF.into(),
        content: compat_conf.clone(),
        mode: 0o644,
        equivalent: None,
    }));
    if let Some(dir) = &compat_dir {
        loader_dirs.push(dir.clone());
    }
    let loader_conf = (!loader_dirs.is_empty()).then(|| {
        let mut text = header("CUDA toolkit libraries for every process");
        for dir in &loader_dirs {
            text.push_str(dir);
            text.push('\n');
        }
        text
    });
    steps.push(Box::new(ManagedFile {
        id: "environment:loader".into(),
        path: LOADER_CONF.into(),
        content: loader_conf.clone(),
        mode: 0o644,
        equivalent: None,
    }));
    steps.push(Box::new(Ldconfig {
        dirs: loader_dirs,
        conf: vec![
            (LOADER_CONF.into(), loader_conf),
            (COMPAT_CONF.into(), compat_conf),
        ],
    }));
}

/// /etc/profile.d: CUDA_HOME and PATH, and LD_LIBRARY_PATH when the plan
/// asks for the loader path of login shells.
fn profile_script(plan: &Plan, home: &str, lib_dir: Option<&str>) -> String {
    let mut text = header("CUDA toolkit environment for login shells");
    if plan.environment.path {
        text.push_str(&format!(
            "export CUDA_HOME={home}\ncase \":${{PATH}}:\" in\n  *\":{home}/bin:\"*) ;;\n  *) export PATH=\"{home}/bin${{PATH:+:${{PATH}}}}\" ;;\nesac\n"
        ));
    }
    if plan.environment.loader == Loader::Profile
        && let Some(lib) = lib_dir
    {
        text.push_str(&format!(
            "case \":${{LD_LIBRARY_PATH}}:\" in\n  *\":{lib}:\"*) ;;\n  *) export LD_LIBRARY_PATH=\"{lib}${{LD_LIBRARY_PATH:+:${{LD_LIBRARY_PATH}}}}\" ;;\nesac\n"
        ));
    }
    text
}

/// The driver (and toolkit) from NVIDIA's runfiles; returns the toolkit's
/// home for the environment steps.
#[allow(clippy::type_complexity)]
fn runfile_steps(
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

/// The toolkit from its runfile (`--toolkit` only), when the plan names
/// one; returns its home for the environment steps.
#[allow(clippy::type_complexity)]
fn toolkit_runfile(
    plan: &Plan,
    steps: &mut Vec<Box<dyn Step>>,
) -> (Option<String>, Option<String>, bool) {
    use step::runfile::{Component, Runfile, toolkit_args};
    let mut home = None;
    if let Some(toolkit) = &plan.toolkit
        && let (Some(url), Some(sha256)) = (&toolkit.runfile, &toolkit.sha256)
    {
        let short = toolkit.version.short();
        let path = format!("/usr/local/cuda-{short}");
        let release = match toolkit.version.update {
            Some(update) => format!("{short}.{update}"),
            None => short.clone(),
        };
        steps.push(Box::new(Runfile {
            url: url.0.clone(),
            sha256: sha256.0.clone(),
            args: toolkit_args(&path),
            component: Component::Toolkit {
                path: path.clone(),
                release,
            },
        }));
        home = Some(path);
    }
    (home, None, false)
}

/// The offline bundle's repository, for the release it was made for: a
/// Debian-family release exactly ("debian-12"), an RHEL-family one by its
/// major ("rhel-9" serves Rocky 9.4).
fn bundle_repository(
    opened: &crate::bundle::Opened,
    facts: &Facts,
) -> Result<step::bundle::BundleRepository, PlanRefused> {
    let version = facts.os.version_id.as_deref().unwrap_or("unknown");
    let family = facts.os.family;
    let here = match family {
        Some(crate::facts::os::Family::Rhel) => {
            format!("rhel-{}", version.split('.').next().unwrap_or(version))
        }
        _ => format!("{}-{version}", facts.os.id.as_deref().unwrap_or("unknown")),
    };
    if opened.manifest.release != here {
        return Err(PlanRefused::Refused(format!(
            "the bundle was made for {}, and this host is {here}: make one with `provision bundle PLAN --for {here}`",
            opened.manifest.release
        )));
    }
    Ok(step::bundle::BundleRepository {
        opened: opened.clone(),
        family: family.unwrap_or(crate::facts::os::Family::Debian),
    })
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

/// Whether `path` exists in the root the facts were read from.
fn facts_has(facts: &Facts, path: &str) -> bool {
    crate::host::Root::new(&facts.root)
        .map(|root| root.exists(path))
        .unwrap_or(false)
}
