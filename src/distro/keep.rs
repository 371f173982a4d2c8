//! A branch plan on a host already on that branch keeps its driver: no
//! swap, no window, whatever package names carry it (Ubuntu's archive or
//! NVIDIA's repository, desktop or `-server` sets). Only `version`, a
//! flavour change or a branch change moves a driver.

use super::{Desired, PackageSpec, VersionSpec};
use crate::facts::Facts;
use crate::plan::{Branch, DriverTarget, DriverVersion, Flavor};
use crate::version::upstream;

/// The driver release the host runs and has installed, when it is one
/// the plan's branch and flavour accept: the module loaded (or, in an
/// image, installed) is that release, the user space too.
fn kept_release(facts: &Facts, branch: Branch, flavor: Flavor) -> Option<String> {
    let driver = &facts.kernel_driver;
    let release = driver
        .version
        .clone()
        .or_else(|| driver.installed.clone())?;
    let same_branch = release.split('.').next() == Some(branch.to_string().as_str());
    let userspace_agrees = driver
        .userspace
        .as_deref()
        .or(facts.user_driver.version.as_deref())
        .is_none_or(|u| u == release);
    let flavor_agrees = match (flavor, driver.flavor.as_deref()) {
        (Flavor::Open, Some(found)) => found == "open",
        (Flavor::Proprietary, Some(found)) => found == "proprietary",
        _ => true,
    };
    (same_branch && userspace_agrees && flavor_agrees && driver.mismatch.is_none())
        .then_some(release)
}

/// The installed packages of the kept release: the set that carries the
/// driver on this host, whatever it is named.
fn kept_packages<'a>(facts: &'a Facts, release: &str) -> Vec<&'a str> {
    facts
        .all_packages
        .iter()
        .chain(&facts.packages.gpu)
        .filter(|p| crate::facts::packages::is_gpu_package(&p.name))
        .filter(|p| upstream(&p.version) == release)
        .map(|p| p.name.as_str())
        .fold(Vec::new(), |mut names, name| {
            if !names.contains(&name) {
                names.push(name);
            }
            names
        })
}

/// A spec of the plan's driver set: versioned with the driver, or a
/// choice among packages one of which is (Ubuntu's precompiled module for
/// a kernel, else DKMS). Fabric Manager, at the driver's release too,
/// is no part of the set a host already has.
fn of_driver_set(spec: &PackageSpec) -> bool {
    let driver = |version: &VersionSpec| matches!(version, VersionSpec::Driver(_));
    !spec.name.contains("fabricmanager")
        && !spec.name.contains("fabric-manager")
        && (driver(&spec.version) || spec.alternatives.iter().any(|(_, v)| driver(v)))
}

/// When the host already runs the plan's branch in its flavour: the
/// plan's driver packages give way to the installed ones, held at their
/// release, and the note that says so. Fabric Manager and the rest of the
/// plan (toolkit, compat, prerequisites, holds) stay as planned.
pub fn keep_installed(
    desired: &mut Desired,
    facts: &Facts,
    target: &DriverTarget,
    flavor: Flavor,
) -> Option<String> {
    let DriverTarget::Branch(branch) = target else {
        return None; // an exact version moves the driver where it says
    };
    let release = kept_release(facts, *branch, flavor)?;
    // The plan's own set installed: the packages step keeps its release
    // anyway (the driver never moves within a branch unless asked).
    let installed = |name: &str| facts.all_packages.iter().any(|p| p.name == name);
    if desired
        .install
        .iter()
        .filter(|s| of_driver_set(s))
        .all(|s| installed(&s.name) || s.alternatives.iter().any(|(n, _)| installed(n)))
    {
        return None;
    }
    let names = kept_packages(facts, &release);
    if names.is_empty() {
        return None; // not installed by a package manager (a runfile)
    }
    let exact = VersionSpec::Driver(DriverTarget::Version(DriverVersion(release.clone())));
    let planned: Vec<String> = desired
        .install
        .iter()
        .filter(|s| of_driver_set(s))
        .map(|s| s.name.clone())
        .collect();
    desired.install.retain(|s| !of_driver_set(s));
    for spec in desired.install.iter_mut() {
        if matches!(spec.version, VersionSpec::Driver(_)) {
            spec.version = exact.clone();
        }
    }
    let kept: Vec<PackageSpec> = names
        .iter()
        .map(|name| PackageSpec {
            name: name.to_string(),
            version: exact.clone(),
            hold: true,
            alternatives: Vec::new(),
            optional: false,
        })
        .collect();
    desired.install.splice(0..0, kept);
    desired
        .remove
        .retain(|name| !names.contains(&name.as_str()));
    Some(format!(
        "the host already runs R{branch} ({release}, {}) from {}: kept as it is and held, no swap; the plan's own set ({}) is not installed. \
         [driver] version = \"...\", another branch or flavour moves it",
        facts
            .kernel_driver
            .flavor
            .as_deref()
            .unwrap_or("its flavour"),
        names.join(", "),
        planned.join(", ")
    ))
}
