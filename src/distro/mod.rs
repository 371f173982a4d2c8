//! Distribution back ends: which packages a plan means on this host
//! (from `catalog.toml`) and how the package manager installs them.

pub mod apt;
pub mod dkms;
pub mod dnf;
pub mod keep;
pub mod openpgp;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::facts::Facts;
use crate::facts::os::Family;
use crate::plan::{DriverTarget, Flavor, Plan, Source};

/// catalog.toml, turned into JSON by build.rs.
const CATALOG: &str = include_str!(concat!(env!("OUT_DIR"), "/catalog.json"));

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalog {
    set: Vec<PackageSet>,
    repository: Vec<Repository>,
}

/// An NVIDIA CUDA repository and the key that signs it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub id: String,
    pub distros: Vec<String>,
    pub versions: Vec<String>,
    /// With `{arch}` for x86_64 / sbsa.
    pub url: String,
    pub key: String,
    pub fingerprint: Option<String>,
    pub sources: Vec<String>,
}

/// NVIDIA's repository for this host's distribution and release.
pub fn repository_for(facts: &Facts) -> Option<&'static Repository> {
    let id = facts.os.id.as_deref()?;
    let version = facts.os.version_id.as_deref()?;
    let major = version.split('.').next().unwrap_or(version);
    catalog().repository.iter().find(|r| {
        r.distros.iter().any(|d| d == id) && r.versions.iter().any(|v| v == version || v == major)
    })
}

/// The repository path component for the machine's architecture.
pub fn repo_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "sbsa",
        _ => "x86_64",
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSet {
    pub id: String,
    pub family: String,
    pub distros: Vec<String>,
    pub source: String,
    pub manager: String,
    /// Driver branches available per distribution release.
    #[serde(default)]
    pub branches: BTreeMap<String, Vec<u32>>,
    /// The driver branches this row's names serve, `[from, until)`: NVIDIA
    /// renamed Ubuntu's packages at 590.
    pub branch_from: Option<u32>,
    pub branch_until: Option<u32>,
    /// NVIDIA's pinning package for the plan's target (`{target}`: the
    /// branch, or the exact version), installed with the driver where the
    /// repository offers it.
    pub pinning: Option<String>,
    /// Installed packages named with a branch ("libnvidia-compute-580")
    /// that this row's unversioned names replace: removed in the same
    /// transaction (the old naming would keep a second module source).
    #[serde(default)]
    pub replaces_branch_named: bool,
    pub driver_open: Vec<String>,
    pub driver_proprietary: Vec<String>,
    #[serde(default)]
    pub prerequisites: Vec<String>,
    #[serde(default)]
    pub toolkit: Vec<String>,
    pub toolkit_home: Option<String>,
    #[serde(default)]
    pub toolkit_on_path: bool,
    /// Globs of packages pinned to the driver release (apt preferences).
    #[serde(default)]
    pub pin: Vec<String>,
    pub module: Option<String>,
    /// Fabric Manager, at the driver's release, on hosts with NVSwitches.
    #[serde(default)]
    pub fabric_manager: Vec<String>,
    /// dnf module carrying the driver streams (EL8/EL9: "nvidia-driver").
    pub stream_module: Option<String>,
    pub stream_open: Option<String>,
    pub stream_proprietary: Option<String>,
    /// Releases whose repository has module streams (EL10 has none).
    #[serde(default)]
    pub stream_releases: Vec<String>,
    /// The package that enables EPEL (where dkms comes from) per
    /// distribution; a distribution not listed gets a warning instead.
    #[serde(default)]
    pub epel: BTreeMap<String, String>,
    pub sources: Vec<String>,
}

fn catalog() -> &'static Catalog {
    static CATALOG_DATA: OnceLock<Catalog> = OnceLock::new();
    CATALOG_DATA.get_or_init(|| {
        serde_json::from_str(CATALOG)
            .unwrap_or_else(|error| panic!("distro/catalog.toml is invalid: {error}"))
    })
}

#[derive(Debug, thiserror::Error)]
pub enum DistroError {
    #[error("{0}")]
    Unsupported(String),
}

/// Which versions of a package the plan accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    /// Any version (prerequisites such as kernel headers).
    Any,
    /// The driver: every driver package at one upstream version, in this
    /// branch or exactly this release.
    Driver(DriverTarget),
    /// A toolkit: upstream version starting with this prefix ("11.8").
    Prefix(String),
    /// Exactly this version-release, any epoch (kernel-devel of an
    /// installed kernel).
    Exact(String),
}

impl VersionSpec {
    pub fn accepts(&self, package_version: &str) -> bool {
        let upstream = crate::version::upstream(package_version);
        match self {
            VersionSpec::Any => true,
            VersionSpec::Driver(target) => target.accepts(upstream),
            VersionSpec::Prefix(prefix) => {
                upstream == prefix || upstream.starts_with(&format!("{prefix}."))
            }
            VersionSpec::Exact(exact) => {
                package_version
                    .split_once(':')
                    .map_or(package_version, |(_, v)| v)
                    == exact
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            VersionSpec::Any => "any version".into(),
            VersionSpec::Driver(DriverTarget::Branch(branch)) => format!("{branch}.*"),
            VersionSpec::Driver(DriverTarget::Version(version)) => format!("{version}"),
            VersionSpec::Prefix(prefix) => format!("{prefix}.*"),
            VersionSpec::Exact(exact) => exact.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    pub name: String,
    pub version: VersionSpec,
    /// Held (`apt-mark hold`) once installed.
    pub hold: bool,
    /// Packages that serve instead, in order, when `name` is not offered
    /// (Ubuntu's precompiled kernel modules, else DKMS): (name, versions).
    pub alternatives: Vec<(String, VersionSpec)>,
    /// Installed where the repositories offer it, left out where they do
    /// not (NVIDIA's pinning package on a mirror without it).
    pub optional: bool,
}

/// Which package manager installs a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Manager {
    #[default]
    Apt,
    Dnf,
}

/// The package state a plan asks for on this host.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub manager: Manager,
    /// The dnf module stream the driver comes from: (module, stream).
    pub stream: Option<(String, String)>,
    pub install: Vec<PackageSpec>,
    /// Packages that must not be installed (the other driver flavour).
    pub remove: Vec<String>,
    /// Where the toolkit lives, for the environment.
    pub toolkit_home: Option<String>,
    /// The toolkit's binaries are already on the default PATH.
    pub toolkit_on_path: bool,
    /// Globs pinned to the driver release.
    pub pin: Vec<String>,
    /// The compat package's library directory, when one is installed.
    pub compat_dir: Option<String>,
    /// What the user should know (EPEL they must enable themselves).
    pub warnings: Vec<String>,
    /// Optional packages the repositories do not offer (settled at check).
    pub not_offered: Vec<String>,
}

impl Desired {
    /// Whether `name` is one of the driver's own packages, by the pin globs.
    pub fn pinned(&self, name: &str) -> bool {
        self.pin.iter().any(|glob| apt::glob_match(glob, name))
    }

    /// Whether a spec is settled against the repositories: alternatives
    /// to choose among, or an optional package.
    pub fn has_choices(&self) -> bool {
        self.install
            .iter()
            .any(|s| s.optional || !s.alternatives.is_empty())
    }
}

/// The catalog row for this host's distribution, `source` and the plan's
/// driver branch (None: toolkit only, the first row).
pub fn set_for(
    facts: &Facts,
    source: Source,
    branch: Option<u32>,
) -> Result<&'static PackageSet, DistroError> {
    let os_id = facts.os.id.as_deref().unwrap_or("unknown");
    let source_name = source.to_string();
    let serves = |set: &PackageSet| {
        branch.is_none_or(|b| {
            set.branch_from.is_none_or(|from| b >= from)
                && set.branch_until.is_none_or(|until| b < until)
        })
    };
    catalog()
        .set
        .iter()
        .find(|set| {
            set.source == source_name && set.distros.iter().any(|d| d == os_id) && serves(set)
        })
        .ok_or_else(|| {
            let offered: Vec<String> = catalog()
                .set
                .iter()
                .filter(|set| set.distros.iter().any(|d| d == os_id))
                .map(|set| format!("\"{}\"", set.source))
                .chain(std::iter::once("\"runfile\"".to_string()))
                .collect();
            let default = if source == Source::Distro {
                " (the default: the distribution's own packages)"
            } else {
                ""
            };
            DistroError::Unsupported(format!(
                "[driver] source = \"{source_name}\"{default} has no NVIDIA packages for {os_id} {}: set [driver] source = {}",
                facts.os.version_id.as_deref().unwrap_or(""),
                offered.join(" or ")
            ))
        })
}

/// Resolves the plan's driver, toolkit and prerequisites into packages.
/// `flavor` is the resolved flavour (never `auto`); None for a
/// toolkit-only plan.
pub fn desired(
    plan: &Plan,
    facts: &Facts,
    flavor: Option<Flavor>,
    compat: Option<&str>,
) -> Result<Desired, DistroError> {
    let branch = plan.driver.as_ref().map(|d| d.target.branch().0);
    let set = set_for(facts, plan.source(), branch)?;
    let family = facts.os.family;
    let expected_family = match set.family.as_str() {
        "rhel" => Some(Family::Rhel),
        _ => Some(Family::Debian),
    };
    if family.is_some() && family != expected_family {
        return Err(DistroError::Unsupported(format!(
            "package set {} is for the {} family",
            set.id, set.family
        )));
    }
    let mut desired = Desired {
        manager: match set.manager.as_str() {
            "dnf" => Manager::Dnf,
            _ => Manager::Apt,
        },
        ..Desired::default()
    };
    if let (Some(driver), Some(flavor)) = (&plan.driver, flavor) {
        desired.pin = set.pin.clone();
        driver_packages(&mut desired, set, driver, facts, flavor)?;
        fabric_manager(&mut desired, set, driver, facts)?;
        if plan.repositories.prerequisites {
            prerequisites(&mut desired, set, driver, facts, plan.bundle.is_some());
        }
    }
    if let Some(toolkit) = &plan.toolkit {
        toolkit_packages(&mut desired, set, plan, toolkit, compat);
    }
    if let Some(package) = compat {
        let short = package.trim_start_matches("cuda-compat-").replace('-', ".");
        desired.install.push(PackageSpec {
            name: package.to_string(),
            version: VersionSpec::Any,
            hold: true,
            alternatives: Vec::new(),
            optional: false,
        });
        desired.compat_dir = Some(format!("/usr/local/cuda-{short}/compat"));
    }
    Ok(desired)
}

/// The driver branches `source` carries for this host's release, where
/// the catalog limits them (Debian's archive: one per release), with the
/// source named as a person reads it; None where any branch is offered.
pub fn carried_branches(facts: &Facts, source: Source) -> Option<(String, Vec<u32>)> {
    let set = set_for(facts, source, None).ok()?;
    let (major_release, release) = releases(facts);
    let branches = set
        .branches
        .get(&major_release)
        .or_else(|| set.branches.get(&release))?;
    let id = facts.os.id.as_deref().unwrap_or("this distribution");
    let mut chars = id.chars();
    let id: String = chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    let name = format!("{id} {release}'s archive (source = \"{source}\")");
    Some((name, branches.clone()))
}

/// The release's major ("9" of "9.4") and the release itself.
fn releases(facts: &Facts) -> (String, String) {
    let release = facts.os.version_id.clone().unwrap_or_default();
    let major = release.split('.').next().unwrap_or("").to_string();
    (major, release)
}

/// The kernel a per-kernel package is built for: the running one or, in
/// an image, the newest.
fn target_kernel(facts: &Facts) -> Option<String> {
    facts.os.running_kernel.clone().or_else(|| {
        facts
            .os
            .kernels
            .iter()
            .map(|k| k.release.clone())
            .max_by(|a, b| crate::version::dpkg_compare(a, b))
    })
}

/// The driver set in the planned flavour (and the other flavour's
/// packages to remove), with its module stream.
fn driver_packages(
    desired: &mut Desired,
    set: &PackageSet,
    driver: &crate::plan::Driver,
    facts: &Facts,
    flavor: Flavor,
) -> Result<(), DistroError> {
    let (major_release, _) = releases(facts);
    let branch = driver.target.branch();
    carries(set, facts, branch)?;
    let (packages, other) = match flavor {
        Flavor::Proprietary => (&set.driver_proprietary, &set.driver_open),
        _ => (&set.driver_open, &set.driver_proprietary),
    };
    let branch = branch.to_string();
    let fill = |name: &str| name.replace("{branch}", &branch);
    desired.stream = module_stream(set, &major_release, flavor, &branch);
    // "{kernel}" in a driver package: built for one kernel (Ubuntu's
    // precompiled modules).
    let kernel = target_kernel(facts);
    let driver_version = |name: &str| {
        if name.contains("{kernel}") {
            // Versioned like the kernel it is built for.
            VersionSpec::Any
        } else {
            VersionSpec::Driver(driver.target.clone())
        }
    };
    let fill_kernel = |name: &str| {
        let name = fill(name);
        match &kernel {
            Some(kernel) => Some(name.replace("{kernel}", kernel)),
            None if name.contains("{kernel}") => None,
            None => Some(name),
        }
    };
    for entry in packages {
        // "a|b": the first one the repositories offer.
        let mut choices = entry
            .split('|')
            .filter_map(|name| fill_kernel(name).map(|filled| (filled, driver_version(name))));
        let Some((name, version)) = choices.next() else {
            continue;
        };
        desired.install.push(PackageSpec {
            name,
            version,
            hold: true,
            alternatives: choices.collect(),
            optional: false,
        });
    }
    if let Some(pinning) = pinning_package(set, &driver.target) {
        desired.install.insert(0, pinning);
    }
    let ours: Vec<String> = packages
        .iter()
        .flat_map(|entry| entry.split('|'))
        .filter_map(fill_kernel)
        .collect();
    desired.remove = other
        .iter()
        .flat_map(|entry| entry.split('|'))
        .filter_map(fill_kernel)
        .filter(|name| !ours.contains(name))
        .collect();
    if set.replaces_branch_named {
        desired.remove.extend(
            facts
                .all_packages
                .iter()
                .filter(|p| branch_named(&p.name))
                .map(|p| p.name.clone()),
        );
    }
    Ok(())
}

/// Refuses a branch the source does not carry for this release (Debian's
/// archive: one per release).
fn carries(
    set: &PackageSet,
    facts: &Facts,
    branch: crate::plan::Branch,
) -> Result<(), DistroError> {
    let (major_release, release) = releases(facts);
    if let Some(branches) = set
        .branches
        .get(&major_release)
        .or_else(|| set.branches.get(&release))
        && !branches.contains(&branch.0)
    {
        return Err(DistroError::Unsupported(format!(
            "{} {release} carries driver branch {} only, not {branch}; use source = \"cuda-repo\" for other branches",
            facts.os.id.as_deref().unwrap_or("this distribution"),
            branches
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )));
    }
    Ok(())
}

/// NVIDIA's pinning package for the target, installed first: "install the
/// pinning package prior to installing the driver" (Driver Installation
/// Guide, Recent Updates); optional, as a mirror may lack it.
fn pinning_package(set: &PackageSet, target: &DriverTarget) -> Option<PackageSpec> {
    let pinning = set.pinning.as_ref()?;
    let target = match target {
        DriverTarget::Branch(branch) => branch.to_string(),
        DriverTarget::Version(version) => version.to_string(),
    };
    Some(PackageSpec {
        name: pinning.replace("{target}", &target),
        version: VersionSpec::Any,
        hold: false,
        alternatives: Vec::new(),
        optional: true,
    })
}

/// A driver package named with its branch, the way NVIDIA's Ubuntu
/// packages were up to 580 ("nvidia-dkms-580-open", "libnvidia-compute-580",
/// "nvidia-firmware-580-580.95.05"); not a pinning package.
fn branch_named(name: &str) -> bool {
    (name.starts_with("nvidia-")
        || name.starts_with("libnvidia-")
        || name.starts_with("cuda-drivers-"))
        && !name.starts_with("nvidia-driver-pinning-")
        && name
            .split('-')
            .any(|part| part.len() == 3 && part.bytes().all(|b| b.is_ascii_digit()))
}

/// The dnf module stream the driver comes from on this release, if any.
fn module_stream(
    set: &PackageSet,
    major_release: &str,
    flavor: Flavor,
    branch: &str,
) -> Option<(String, String)> {
    let module = set.stream_module.as_ref()?;
    if !set.stream_releases.iter().any(|r| r == major_release) {
        return None;
    }
    let stream = match flavor {
        Flavor::Proprietary => set.stream_proprietary.as_ref(),
        _ => set.stream_open.as_ref(),
    }?;
    Some((module.clone(), stream.replace("{branch}", branch)))
}

/// NVSwitch systems (HGX, DGX) need Fabric Manager at exactly the
/// driver's release before their GPUs can run CUDA work.
fn fabric_manager(
    desired: &mut Desired,
    set: &PackageSet,
    driver: &crate::plan::Driver,
    facts: &Facts,
) -> Result<(), DistroError> {
    if !facts
        .gpus
        .iter()
        .any(|g| g.kind == crate::facts::pci::Kind::Nvswitch)
    {
        return Ok(());
    }
    if set.fabric_manager.is_empty() {
        return Err(DistroError::Unsupported(format!(
            "this host has NVSwitches, which need NVIDIA Fabric Manager, and {} does not carry it: use source = \"cuda-repo\"",
            set.id
        )));
    }
    let branch = driver.target.branch().to_string();
    for name in &set.fabric_manager {
        desired.install.push(PackageSpec {
            name: name.replace("{branch}", &branch),
            version: VersionSpec::Driver(driver.target.clone()),
            hold: true,
            alternatives: Vec::new(),
            optional: false,
        });
    }
    Ok(())
}

/// What DKMS needs to build the module: kernel headers for every
/// installed kernel, dkms, EPEL on the RHEL family.
fn prerequisites(
    desired: &mut Desired,
    set: &PackageSet,
    driver: &crate::plan::Driver,
    facts: &Facts,
    bundled: bool,
) {
    let (major_release, _) = releases(facts);
    let branch = driver.target.branch().to_string();
    let any = |name: String| PackageSpec {
        name,
        version: VersionSpec::Any,
        hold: false,
        alternatives: Vec::new(),
        optional: false,
    };
    // dkms comes from EPEL; an offline bundle carries it instead.
    if set.family == "rhel" && !bundled {
        match set.epel.get(facts.os.id.as_deref().unwrap_or("")) {
            Some(package) => desired
                .install
                .push(any(package.replace("{major}", &major_release))),
            None => desired.warnings.push(format!(
                "dkms comes from EPEL: on RHEL enable codeready-builder and install epel-release-latest-{major_release}.noarch.rpm (or mirror it) before applying"
            )),
        }
    }
    for name in &set.prerequisites {
        if let Some((package, "{kernel}")) = name.split_once('@') {
            // An rpm named once, installed per kernel (kernel-devel).
            for kernel in &facts.os.kernels {
                let release = &kernel.release;
                let version = [".x86_64", ".aarch64", ".noarch"]
                    .iter()
                    .find_map(|arch| release.strip_suffix(arch))
                    .unwrap_or(release);
                desired.install.push(PackageSpec {
                    name: package.to_string(),
                    version: VersionSpec::Exact(version.to_string()),
                    hold: false,
                    alternatives: Vec::new(),
                    optional: false,
                });
            }
        } else if name.contains("{kernel}") {
            for kernel in &facts.os.kernels {
                desired
                    .install
                    .push(any(name.replace("{kernel}", &kernel.release)));
            }
        } else {
            desired.install.push(any(name.replace("{branch}", &branch)));
        }
    }
}

/// The toolkit's packages and home; `auto` removes its compat package
/// unless the plan needs it.
fn toolkit_packages(
    desired: &mut Desired,
    set: &PackageSet,
    plan: &Plan,
    toolkit: &crate::plan::ToolkitSpec,
    compat: Option<&str>,
) {
    let short = toolkit.version.short();
    let dashed = toolkit.version.dashed();
    let prefix = match toolkit.version.update {
        Some(update) => format!("{short}.{update}"),
        None => short.clone(),
    };
    for name in &set.toolkit {
        desired.install.push(PackageSpec {
            name: name.replace("{dashed}", &dashed).replace("{short}", &short),
            version: VersionSpec::Prefix(prefix.clone()),
            hold: true,
            alternatives: Vec::new(),
            optional: false,
        });
    }
    desired.toolkit_home = set
        .toolkit_home
        .as_ref()
        .map(|home| home.replace("{short}", &short));
    desired.toolkit_on_path = set.toolkit_on_path;
    if plan.compat == crate::plan::CompatPackage::Auto && compat.is_none() {
        desired.remove.push(format!("cuda-compat-{dashed}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_specs() {
        let branch = VersionSpec::Driver(DriverTarget::Branch(crate::plan::Branch(535)));
        assert!(branch.accepts("535.247.01-1~deb12u1"));
        assert!(!branch.accepts("550.54.14-1"));
        let toolkit = VersionSpec::Prefix("11.8".into());
        assert!(toolkit.accepts("11.8.89~11.8.0-5~deb12u1"));
        assert!(!toolkit.accepts("11.80.1-1"));
        assert!(VersionSpec::Prefix("12.8".into()).accepts("12.8-1"));
    }

    #[test]
    fn branch_named_packages_are_the_old_ubuntu_naming() {
        for name in [
            "nvidia-dkms-580-open",
            "libnvidia-compute-580",
            "nvidia-headless-no-dkms-580-open",
            "nvidia-firmware-580-580.95.05",
            "cuda-drivers-580",
        ] {
            assert!(branch_named(name), "{name}");
        }
        for name in [
            "nvidia-dkms-open",
            "nvidia-driver-pinning-580",
            "libnvidia-container1",
            "linux-modules-nvidia-580-server-6.8.0-1-generic",
        ] {
            assert!(!branch_named(name), "{name}");
        }
    }

    #[test]
    fn the_catalog_reads() {
        assert!(!catalog().set.is_empty());
    }
}
