//! Does a bundle serve this host? Asked of apt itself before anything
//! changes: the host's dpkg status read in place, the bundle's repository
//! as the only source, and the transaction `apply` would run simulated
//! against the two. Whatever apt would have to fetch from elsewhere (the
//! headers of a kernel the bundle was not made for, a dependency the host
//! lacks) is named, with the `provision bundle` command line that carries
//! it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::apt::{Apt, io};
use super::{BundleError, Opened, REPO_DIR, read_repo_file};
use crate::distro;
use crate::facts::Facts;
use crate::host::Host;

/// apt with the host's packages and the bundle alone.
pub struct Probe<'a> {
    apt: Apt<'a>,
}

impl<'a> Probe<'a> {
    /// Points a throwaway apt at the host's dpkg status and the bundle's
    /// repository (its unpacked copy, or its index read out of the tar).
    pub fn new(opened: &Opened, host: &'a Host) -> Result<Probe<'a>, BundleError> {
        let arch = match opened.manifest.arch.as_str() {
            "x86_64" => "amd64",
            _ => "arm64",
        };
        let status = host.root.join(crate::facts::packages::DPKG_STATUS);
        let apt = Apt::new(host.runner.as_ref(), arch, Some(status))?;
        let repo: PathBuf = match &opened.dir {
            Some(dir) => dir.join(REPO_DIR),
            None => {
                let repo = apt.path().join("bundle");
                fs_err::create_dir_all(&repo).map_err(io)?;
                for name in ["Packages", "Release"] {
                    let bytes = read_repo_file(&opened.path, name)?;
                    fs_err::write(repo.join(name), bytes).map_err(io)?;
                }
                repo
            }
        };
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
