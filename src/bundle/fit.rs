//! Does a bundle serve this host? Asked of the package manager itself
//! before anything changes: apt with the host's dpkg status read in place,
//! or dnf with a copy of the host's rpm database and module state, the
//! bundle's repository as the only source, and the transaction `apply`
//! would run simulated against the two. Whatever it would have to fetch
//! from elsewhere (the headers of a kernel the bundle was not made for, a
//! dependency the host lacks) is named, with the `provision bundle`
//! command line that carries it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::apt::{Apt, debian_arch, io};
use super::dnf::Dnf;
use super::{BundleError, Opened, REPO_DIR, extract_repo_files};
use crate::distro;
use crate::facts::Facts;
use crate::host::Host;

/// The bundle's repository for a probe: its unpacked copy, or the index
/// files `keep` names read out of the tar into `scratch` (`plan` only
/// checked the bundle).
fn repository(
    opened: &Opened,
    keep: impl Fn(&str) -> bool,
    scratch: &Path,
) -> Result<PathBuf, BundleError> {
    match &opened.dir {
        Some(dir) => Ok(dir.join(REPO_DIR)),
        None => {
            extract_repo_files(&opened.path, keep, scratch)?;
            Ok(scratch.to_path_buf())
        }
    }
}

/// apt with the host's packages and the bundle alone.
pub struct Probe<'a> {
    apt: Apt<'a>,
}

impl<'a> Probe<'a> {
    /// Points a throwaway apt at the host's dpkg status and the bundle's
    /// repository (its unpacked copy, or its index read out of the tar).
    pub fn new(opened: &Opened, host: &'a Host) -> Result<Probe<'a>, BundleError> {
        let arch = debian_arch(&opened.manifest.arch).unwrap_or("amd64");
        let status = host.root.join(crate::facts::packages::DPKG_STATUS);
        let apt = Apt::new(host.runner.as_ref(), arch, Some(status))?;
        let index = |name: &str| name == "Packages" || name == "Release";
        let repo = repository(opened, index, &apt.path().join("bundle"))?;
        let source = format!("deb [trusted=yes] file:{}/ ./\n", repo.display());
        fs_err::write(apt.path().join("etc/apt/sources.list"), source).map_err(io)?;
        apt.run(apt.cmd("apt-get").args(["update", "-q"]))?;
        Ok(Probe { apt })
    }

    /// Every version of each name the bundle offers.
    pub fn offered(&self, names: &[String]) -> Result<BTreeMap<String, Vec<String>>, BundleError> {
        let (_, text) = self.apt.try_run(
            self.apt
                .cmd("apt-cache")
                .arg("madison")
                .args(names.iter().cloned()),
        )?;
        Ok(distro::apt::parse_madison(&text))
    }

    /// Simulates the transaction: Ok, or what apt says it cannot do.
    pub fn simulate(
        &self,
        exact: &[(String, String)],
        remove: &[String],
    ) -> Result<Result<(), Vec<String>>, BundleError> {
        let cmd = self
            .apt
            .cmd("apt-get")
            .args(["-s", "-q", "install", "--no-install-recommends"])
            .args(exact.iter().map(|(n, v)| format!("{n}={v}")))
            .args(remove.iter().map(|n| format!("{n}-")));
        let (ok, text) = self.apt.try_run(cmd)?;
        if ok {
            return Ok(Ok(()));
        }
        Ok(Err(unmet(&text)))
    }
}

/// dnf with a copy of the host's rpm database and module state in a
/// throwaway install root, and only the bundle's repository.
pub struct DnfProbe<'a> {
    dnf: Dnf<'a>,
}

/// Where the rpm database lives (EL9 links one to the other).
const RPMDB: &[&str] = &["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

impl<'a> DnfProbe<'a> {
    pub fn new(opened: &Opened, host: &'a Host) -> Result<DnfProbe<'a>, BundleError> {
        let release = opened.manifest.release.trim_start_matches("rhel-");
        let dnf = Dnf::new(host.runner.as_ref(), release, &opened.manifest.arch)?;
        let root = dnf.root();
        for db in RPMDB {
            if let Ok(real) = host.root.resolve(db)
                && real.is_dir()
            {
                copy_tree(&real, &root.join(db.trim_start_matches('/')))?;
            }
        }
        let modules = "etc/dnf/modules.d";
        fs_err::create_dir_all(root.join(modules)).map_err(io)?;
        for name in host
            .root
            .read_dir(format!("/{modules}"))
            .unwrap_or_default()
        {
            if let Ok(bytes) = host.root.read_bytes(format!("/{modules}/{name}")) {
                fs_err::write(root.join(modules).join(&name), bytes).map_err(io)?;
            }
        }
        if let Ok(bytes) = host.root.read_bytes("/etc/os-release") {
            fs_err::write(root.join("etc/os-release"), bytes).map_err(io)?;
        }
        let metadata = |name: &str| name.starts_with("repodata/");
        let repo = repository(opened, metadata, &dnf.path().join("bundle"))?;
        fs_err::write(
            dnf.path().join("repos.d/bundle.repo"),
            format!(
                "[{}]\nname=the bundle\nbaseurl=file://{}/\nenabled=1\ngpgcheck=0\n",
                distro::dnf::BUNDLE_ID,
                repo.display()
            ),
        )
        .map_err(io)?;
        Ok(DnfProbe { dnf })
    }

    /// Enables the plan's module stream in the copy, as `apply` does first.
    pub fn enable(&self, stream: Option<&(String, String)>) -> Result<(), BundleError> {
        self.dnf.enable(stream)
    }

    /// Every version of each name the bundle offers (module filtering
    /// applies).
    pub fn offered(&self, names: &[String]) -> Result<BTreeMap<String, Vec<String>>, BundleError> {
        self.dnf.available(names)
    }

    /// Simulates the install: Ok, or what dnf says it cannot do.
    pub fn simulate(
        &self,
        exact: &[(String, String)],
    ) -> Result<Result<(), Vec<String>>, BundleError> {
        if exact.is_empty() {
            return Ok(Ok(()));
        }
        let output = self
            .dnf
            .runner
            .run(
                &self
                    .dnf
                    .cmd()
                    .args(["install", "--assumeno"])
                    .args(exact.iter().map(|(n, v)| distro::dnf::spec(n, v))),
            )
            .map_err(|e| BundleError::Build(e.to_string()))?;
        let text = format!("{}\n{}", output.stdout, output.stderr);
        // --assumeno answers "no": "Operation aborted" after a transaction
        // that resolved; a problem prints "Error:".
        if text.contains("Operation aborted") && !text.contains("Error:") || output.success() {
            return Ok(Ok(()));
        }
        let mut said: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| {
                l.starts_with("Error:")
                    || l.starts_with("Problem")
                    || l.starts_with("- ")
                    || l.starts_with("No match for argument")
            })
            .map(str::to_string)
            .collect();
        if said.is_empty() {
            said.push(output.tail.trim().to_string());
        }
        Ok(Err(said))
    }
}

/// Copies a directory tree (files and directories; links as files).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<(), BundleError> {
    fs_err::create_dir_all(to).map_err(io)?;
    for entry in fs_err::read_dir(from).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            fs_err::copy(&path, &target).map_err(io)?;
        }
    }
    Ok(())
}

/// What apt's failure names: the packages it would have to fetch
/// elsewhere, and its own lines.
fn unmet(text: &str) -> Vec<String> {
    let mut said = Vec::new();
    for line in text.lines().map(str::trim) {
        let problem = line.contains("but it is not installable")
            || line.contains("but it is not going to be installed")
            || line.starts_with("E: Unable to locate package")
            || line.starts_with("E: Version ");
        if problem && !said.contains(&line.to_string()) {
            said.push(line.to_string());
        }
    }
    if said.is_empty() {
        said.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| l.starts_with("E:"))
                .map(str::to_string),
        );
    }
    said
}

/// The refusal: what the bundle lacks, and the `provision bundle` line
/// that would carry it.
pub fn refusal(opened: &Opened, facts: &Facts, plan: &str, lacks: &[String]) -> String {
    let kernels: Vec<&str> = facts
        .os
        .kernels
        .iter()
        .map(|k| k.release.as_str())
        .collect();
    let made_for = if opened.manifest.kernels.is_empty() {
        String::new()
    } else {
        format!(
            " (it carries headers for kernel {})",
            opened.manifest.kernels.join(", ")
        )
    };
    let flags: String = kernels.iter().map(|k| format!(" --kernel {k}")).collect();
    format!(
        "the bundle {} does not serve this host{made_for}: installing the plan from it alone, this host would lack:\n  - {}\nmake one that does: `provision bundle {plan} --for {}{flags}`, or `provision bundle {plan} --host HOST.json` with this host's `provision detect --json --packages > HOST.json`; nothing was changed",
        opened.path.display(),
        lacks.join("\n  - "),
        opened.manifest.release,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apts_unmet_dependencies_are_named() {
        let text = "Reading package lists...\nSome packages could not be installed.\nThe following packages have unmet dependencies:\n nvidia-kernel-dkms : Depends: linux-headers-6.1.0-50-amd64 but it is not installable\n dkms : Depends: gcc but it is not going to be installed\nE: Unable to correct problems, you have held broken packages.\n";
        assert_eq!(
            unmet(text),
            [
                "nvidia-kernel-dkms : Depends: linux-headers-6.1.0-50-amd64 but it is not installable",
                "dkms : Depends: gcc but it is not going to be installed"
            ]
        );
        assert_eq!(
            unmet("E: Unable to correct problems\n"),
            ["E: Unable to correct problems"]
        );
    }
}
