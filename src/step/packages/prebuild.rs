//! The package set's module built before the window (`step::build`), apt
//! side: the DKMS package's archive from apt's cache after the download,
//! `dpkg-deb` to unpack it.

use std::sync::Arc;

use super::{Packages, installed_now};
use crate::distro::{Manager, apt};
use crate::host::{Cmd, Host, run_checked};
use crate::journal::{Journal, PackageState, Undo};
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

/// What to install for a build ahead: `tools` and what they pull in
/// (`alone`: apt's simulation of them by themselves), each at the version
/// the `whole` transaction takes; what that transaction would not install
/// is left out (it chose another alternative, `gcc-12` for `gcc`).
/// `None` when the whole transaction does not bring every tool.
fn tools_as_in(
    whole: &apt::Transaction,
    tools: &[String],
    alone: impl FnOnce(&[(String, String)]) -> Result<apt::Transaction, StepError>,
) -> Result<Option<Vec<(String, String)>>, StepError> {
    let version = |name: &str| {
        whole
            .install
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v.clone())
    };
    let Some(mut exact) = tools
        .iter()
        .map(|t| version(t).map(|v| (t.clone(), v)))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    dkms_last(&mut exact);
    let pulled = alone(&exact)?;
    let mut wanted: Vec<(String, String)> = pulled
        .install
        .iter()
        .filter_map(|(name, _, _)| version(name).map(|v| (name.clone(), v)))
        .collect();
    for tool in exact {
        if !wanted.contains(&tool) {
            wanted.push(tool);
        }
    }
    dkms_last(&mut wanted);
    Ok(Some(wanted))
}

/// apt settles an or-group (dkms's `gcc | c-compiler`) with its first
/// alternative unless a name before it on the command line satisfies it:
/// `apt-get install dkms linux-headers-K` adds the `gcc` meta package,
/// `apt-get install linux-headers-K dkms` does not (the headers bring
/// `gcc-12`, a `c-compiler`). dkms goes last, the rest keep their order.
fn dkms_last(list: &mut [(String, String)]) {
    list.sort_by_key(|(name, _)| name == "dkms");
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

    fn install_tools(
        &self,
        ctx: &Context,
        journal: &mut Journal,
        tools: &[String],
    ) -> Result<bool, StepError> {
        let host = ctx.host;
        let Some(prepared) = self.prepared() else {
            return Ok(false);
        };
        let installed = installed_now(host)?;
        let settled = self.settle(host, &installed);
        let (_, _, remove) = settled.pending(&installed);
        let pin = prepared
            .release
            .as_deref()
            .and_then(|r| settled.pin_content(r));
        let whole = settled.simulate(host, &prepared.exact, &remove, pin.as_deref(), &installed)?;
        let Some(wanted) = tools_as_in(&whole, tools, |exact| {
            let output = run_checked(host.runner.as_ref(), &apt::simulate(exact, &[]))?;
            Ok(apt::parse_simulation(&output.stdout))
        })?
        else {
            return Ok(false);
        };
        let before = installed
            .iter()
            .map(|p| {
                let state = PackageState {
                    version: p.version.clone(),
                    held: p.held,
                };
                (p.name.clone(), state)
            })
            .collect();
        journal.record(
            crate::step::build::ID,
            Undo::Packages {
                manager: "apt".into(),
                before,
                modules: Vec::new(),
            },
        )?;
        ctx.progress.command_line(&format!(
            "installing {} for the build (the versions the driver's transaction takes)",
            tools.join(", ")
        ));
        run_checked(host.runner.as_ref(), &apt::install(&wanted, &[], false))?;
        Ok(true)
    }

    fn hand_over(&self, prebuilt: Prebuilt) {
        let _ = self.prebuilt.set(prebuilt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(names: &[(&str, &str)]) -> apt::Transaction {
        apt::Transaction {
            install: names
                .iter()
                .map(|(n, v)| (n.to_string(), None, v.to_string()))
                .collect(),
            remove: Vec::new(),
        }
    }

    #[test]
    fn the_tools_come_at_the_transactions_versions_and_its_alternatives() {
        let whole = tx(&[
            ("nvidia-kernel-dkms", "535.261.03-1"),
            ("dkms", "3.0.10-8+deb12u1"),
            ("gcc-12", "12.2.0-14"),
            ("make", "4.3-4.1"),
            ("linux-headers-6.1.0-30-amd64", "6.1.124-1"),
        ]);
        let tools = ["dkms".to_string(), "linux-headers-6.1.0-30-amd64".into()];
        let wanted = tools_as_in(&whole, &tools, |exact| {
            // The headers first: apt then takes gcc-12 for dkms's c-compiler.
            assert_eq!(exact[1], ("dkms".into(), "3.0.10-8+deb12u1".into()));
            // By itself, dkms would take the gcc meta package too.
            Ok(tx(&[
                ("dkms", "3.0.10-8+deb12u1"),
                ("gcc", "4:12.2.0-3"),
                ("gcc-12", "12.2.0-14"),
                ("make", "4.3-4.1"),
                ("linux-headers-6.1.0-30-amd64", "6.1.124-1"),
            ]))
        })
        .unwrap()
        .unwrap();
        let names: Vec<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["gcc-12", "make", "linux-headers-6.1.0-30-amd64", "dkms"]
        );
        // A transaction that brings no dkms: nothing to install ahead.
        let without = tx(&[("nvidia-kernel-dkms", "535.261.03-1")]);
        assert!(
            tools_as_in(&without, &tools, |_| unreachable!())
                .unwrap()
                .is_none()
        );
    }

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
