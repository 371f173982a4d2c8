//! The package set's module built before the window (`step::build`), apt
//! side: the DKMS package's archive from apt's cache after the download,
//! `dpkg-deb` to unpack it.

use std::sync::Arc;

use super::{Packages, installed_now};
use crate::distro::Manager;
use crate::host::{Cmd, Host, run_checked};
use crate::step::build::{Build, Fetched, Prebuild, Prebuilt};
use crate::step::window::download::Prefetch;
use crate::step::{Context, StepError};

const ARCHIVES: &str = "/var/cache/apt/archives";

/// The build step for an apt set that moves the driver: its module is
/// built through DKMS unless the set carries it precompiled.
pub(super) fn builder(packages: &Packages) -> Option<Box<dyn crate::step::Step>> {
    let precompiled_only = packages
        .desired
        .install
        .iter()
        .any(|s| precompiled(&s.name))
        && !packages.desired.install.iter().any(|s| {
            std::iter::once(&s.name)
                .chain(s.alternatives.iter().map(|(n, _)| n))
                .any(|n| is_module_source(n))
        });
    (packages.desired.manager == Manager::Apt && !precompiled_only).then(|| {
        Box::new(Build {
            source: Arc::new(packages.clone()),
        }) as Box<dyn crate::step::Step>
    })
}

/// Canonical's precompiled modules, signed for the kernel: nothing to build.
fn precompiled(name: &str) -> bool {
    name.starts_with("linux-modules-nvidia-") || name.starts_with("linux-objects-nvidia-")
}

/// A package that carries a DKMS module's source (`nvidia-kernel-dkms`,
/// `nvidia-dkms-580-open`, `nvidia-open-kernel-dkms`), not DKMS itself.
fn is_module_source(name: &str) -> bool {
    name != "dkms" && !name.contains("no-dkms") && name.split('-').any(|part| part == "dkms")
}

/// The module source among apt's downloaded archives at `release`
/// (pulled in by a meta package such as `nvidia-headless-580-open`):
/// `(name, version, file)`.
fn downloaded_source(files: &[String], release: &str) -> Option<(String, String, String)> {
    files.iter().find_map(|file| {
        let stem = file.strip_suffix(".deb")?;
        let mut parts = stem.splitn(3, '_');
        let (name, version) = (parts.next()?, parts.next()?.replace("%3a", ":"));
        (is_module_source(name) && crate::version::upstream(&version) == release)
            .then(|| (name.to_string(), version, file.clone()))
    })
}

/// Removes the tarballs the maintainer script has loaded, and the
/// directory made for them when it is empty again.
pub(super) fn remove_handed(host: &Host, prebuilt: &Prebuilt) {
    for tarball in &prebuilt.tarballs {
        let _ = host.root.remove_file(tarball);
        if let Some(dir) = std::path::Path::new(tarball).parent() {
            let _ = std::fs::remove_dir(host.root.join(dir));
        }
    }
}

impl Prebuild for Packages {
    fn planned(&self, ctx: &Context) -> Option<(String, String)> {
        let settled = self.settle(ctx.host, &ctx.facts.all_packages);
        let install = &settled.desired.install;
        let release = self
            .prepared()
            .and_then(|p| p.release.clone())
            .unwrap_or_else(|| self.driver_range());
        if let Some(spec) = install.iter().find(|s| is_module_source(&s.name)) {
            return Some((spec.name.clone(), release));
        }
        if install.iter().any(|s| precompiled(&s.name)) {
            return None;
        }
        Some(("the driver's DKMS package".into(), release))
    }

    fn fetch(&self, ctx: &Context) -> Result<Option<Fetched>, StepError> {
        if self.prepared().is_none() {
            self.prefetch(ctx)?;
        }
        let Some(prepared) = self.prepared() else {
            return Ok(None);
        };
        let Some(release) = prepared.release.as_deref() else {
            return Ok(None); // the driver set does not move
        };
        let files = ctx.host.root.read_dir(ARCHIVES).unwrap_or_default();
        let Some((package, version, file)) = downloaded_source(&files, release) else {
            return Ok(None); // precompiled, or no module package in the set
        };
        let archive = format!("{ARCHIVES}/{file}");
        let installed = installed_now(ctx.host)?;
        let tools = prepared
            .exact
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| name.starts_with("linux-headers-"))
            .chain(std::iter::once("dkms".to_string()))
            .filter(|name| !installed.iter().any(|p| &p.name == name))
            .collect();
        Ok(Some(Fetched {
            package,
            version,
            archive,
            tools,
        }))
    }

    fn unpack(&self, ctx: &Context, archive: &str, dir: &str) -> Result<String, StepError> {
        let control = format!("{dir}/../control");
        let runner = ctx.host.runner.as_ref();
        run_checked(runner, &Cmd::change("dpkg-deb").args(["-x", archive, dir]))?;
        run_checked(
            runner,
            &Cmd::change("dpkg-deb").args(["-e", archive, &control]),
        )?;
        let postinst = format!("{control}/postinst");
        Ok(ctx.host.root.read_string(&postinst).unwrap_or_default())
    }

    fn hand_over(&self, prebuilt: Prebuilt) {
        let _ = self.prebuilt.set(prebuilt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_sources_by_name() {
        for name in [
            "nvidia-kernel-dkms",
            "nvidia-open-kernel-dkms",
            "nvidia-dkms-580-open",
            "nvidia-dkms-535-server",
            "nvidia-tesla-535-kernel-dkms",
        ] {
            assert!(is_module_source(name), "{name}");
        }
        for name in ["dkms", "nvidia-headless-no-dkms-580-open", "libcuda1"] {
            assert!(!is_module_source(name), "{name}");
        }
        let files = [
            "nvidia-kernel-dkms_535.261.03-1_amd64.deb".to_string(),
            "nvidia-kernel-dkms_535.309.01-0+deb12u1_amd64.deb".into(),
            "dkms_3.0.10-8+deb12u1_all.deb".into(),
            "nvidia-dkms-580-open_1%3a580.95.05-0ubuntu1_amd64.deb".into(),
        ];
        assert_eq!(
            downloaded_source(&files, "535.309.01"),
            Some((
                "nvidia-kernel-dkms".into(),
                "535.309.01-0+deb12u1".into(),
                files[1].clone()
            ))
        );
        assert_eq!(
            downloaded_source(&files, "580.95.05").map(|f| f.1),
            Some("1:580.95.05-0ubuntu1".into())
        );
        assert_eq!(downloaded_source(&files, "590.1.1"), None);
    }
}
