//! The package set's module built before the window (`step::build`), apt
//! side: the DKMS package's archive from apt's cache after the download,
//! `dpkg-deb` to unpack it.

use std::sync::Arc;

use super::{Packages, installed_now, states};
use crate::distro::{Manager, apt};
use crate::host::{Cmd, Host, run_checked};
use crate::journal::{Journal, Undo};
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

/// What `apt-get -s` says a command would install: (name, version).
type Outcome = std::collections::BTreeSet<(String, String)>;

fn outcome(tx: &apt::Transaction) -> Outcome {
    tx.install
        .iter()
        .map(|(name, _, version)| (name.clone(), version.clone()))
        .collect()
}

/// The tools (dkms, the kernel's headers) to install ahead of the driver's
/// transaction, each at the version the `whole` transaction takes, in an
/// order that leaves the host with that transaction's package set;
/// `Ok(Err(why))` when there is none. apt settles an or-group (dkms's
/// `gcc | c-compiler`) by what comes before it on its command line:
/// `apt-get install dkms linux-headers-K` takes the `gcc` meta package,
/// `apt-get install linux-headers-K dkms` does not (the headers bring
/// `gcc-12`, a `c-compiler`), and the one transaction goes one way or the
/// other. An order fits when, by themselves (`alone`), the tools install
/// only what the whole transaction does, at its versions, and the whole
/// transaction with them first on its command line (`first`) installs
/// the same as without.
fn tools_ahead(
    whole: &apt::Transaction,
    tools: &[String],
    mut alone: impl FnMut(&[(String, String)]) -> Result<apt::Transaction, StepError>,
    mut first: impl FnMut(&[(String, String)]) -> Result<apt::Transaction, StepError>,
) -> Result<Result<Vec<(String, String)>, String>, StepError> {
    let version = |name: &str| {
        whole
            .install
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v.clone())
    };
    let Some(exact) = tools
        .iter()
        .map(|t| version(t).map(|v| (t.clone(), v)))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(Err(format!(
            "the driver's transaction does not bring {}",
            tools.join(", ")
        )));
    };
    let whole_set = outcome(whole);
    let mut why = Vec::new();
    for dkms_first in [true, false] {
        let mut order = exact.clone();
        order.sort_by_key(|(name, _)| (name == "dkms") != dkms_first);
        let pulled = alone(&order)?;
        let extra: Vec<String> = outcome(&pulled)
            .difference(&whole_set)
            .map(|(name, v)| format!("{name} {v}"))
            .chain(
                pulled
                    .remove
                    .iter()
                    .map(|(name, _)| format!("{name} (removed)")),
            )
            .collect();
        let names = order.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>();
        if !extra.is_empty() {
            why.push(format!(
                "`{}` by itself would bring {}",
                names.join(" "),
                extra.join(", ")
            ));
            continue;
        }
        let together = outcome(&first(&order)?);
        if together != whole_set {
            let differ: Vec<String> = together
                .symmetric_difference(&whole_set)
                .map(|(name, v)| format!("{name} {v}"))
                .collect();
            why.push(format!(
                "`{}` first would change the transaction ({})",
                names.join(" "),
                differ.join(", ")
            ));
            continue;
        }
        return Ok(Ok(order));
    }
    Ok(Err(format!(
        "installed apart, the build's tools would leave another package set than the driver's transaction: {}",
        why.join("; ")
    )))
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
    ) -> Result<Result<(), String>, StepError> {
        let host = ctx.host;
        let Some(prepared) = self.prepared() else {
            return Ok(Err("the driver's transaction is not known".into()));
        };
        let installed = installed_now(host)?;
        let settled = self.settle(host, &installed);
        let (_, _, remove) = settled.pending(&installed);
        let pin = prepared
            .release
            .as_deref()
            .and_then(|r| settled.pin_content(r));
        let alone = |tools: &[(String, String)]| {
            let output = run_checked(host.runner.as_ref(), &apt::simulate(tools, &[]))?;
            Ok(apt::parse_simulation(&output.stdout))
        };
        let first = |tools: &[(String, String)]| {
            let rest = prepared.exact.iter().filter(|p| !tools.contains(p));
            let exact: Vec<_> = tools.iter().chain(rest).cloned().collect();
            settled.simulate(host, &exact, &remove, pin.as_deref(), &installed)
        };
        // The whole transaction as the download step simulated it.
        let exact = match tools_ahead(&prepared.transaction, tools, alone, first)? {
            Ok(exact) => exact,
            Err(why) => return Ok(Err(why)),
        };
        journal.record(
            crate::step::build::ID,
            Undo::Packages {
                manager: "apt".into(),
                before: states(&installed),
                modules: Vec::new(),
            },
        )?;
        ctx.progress.command_line(&format!(
            "installing {} for the build (the versions the driver's transaction takes)",
            tools.join(", ")
        ));
        let runner = host.runner.as_ref();
        run_checked(runner, &apt::install(&exact, &[], false))?;
        // What the transaction pulls in as a dependency (dkms, under the
        // module's package) is marked so, as it would have been.
        let pulled: Vec<String> = exact
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| !prepared.exact.iter().any(|(n, _)| n == name))
            .collect();
        if !pulled.is_empty() {
            run_checked(runner, &apt::mark_auto(&pulled))?;
        }
        Ok(Ok(()))
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

    const HEADERS: &str = "linux-headers-6.1.0-30-amd64";

    fn tools() -> Vec<String> {
        vec!["dkms".into(), HEADERS.into()]
    }

    /// What apt does with dkms and the headers by themselves: dkms first
    /// takes the `gcc` meta package, the headers first do not.
    fn alone(order: &[(String, String)]) -> Result<apt::Transaction, StepError> {
        let mut set = vec![
            ("dkms", "3.0.10-8+deb12u1"),
            ("gcc-12", "12.2.0-14"),
            ("make", "4.3-4.1"),
            (HEADERS, "6.1.124-1"),
        ];
        if order[0].0 == "dkms" {
            set.push(("gcc", "4:12.2.0-3"));
        }
        Ok(tx(&set))
    }

    fn whole(with_gcc: bool) -> apt::Transaction {
        let mut set = vec![
            ("nvidia-kernel-dkms", "535.261.03-1"),
            ("dkms", "3.0.10-8+deb12u1"),
            ("gcc-12", "12.2.0-14"),
            ("make", "4.3-4.1"),
            (HEADERS, "6.1.124-1"),
        ];
        if with_gcc {
            set.push(("gcc", "4:12.2.0-3"));
        }
        tx(&set)
    }

    #[test]
    fn the_tools_go_ahead_in_the_order_that_ends_with_the_transactions_set() {
        // The transaction takes gcc (its module package brings dkms before
        // the headers): dkms goes first ahead of it too.
        let with_gcc = whole(true);
        let order = tools_ahead(&with_gcc, &tools(), alone, |_| Ok(with_gcc.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(
            order,
            [
                ("dkms".into(), "3.0.10-8+deb12u1".into()),
                (HEADERS.into(), "6.1.124-1".into())
            ]
        );
        // It does not: the headers go first, and apt takes gcc-12 for
        // dkms's c-compiler.
        let without = whole(false);
        let order = tools_ahead(&without, &tools(), alone, |_| Ok(without.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(order[0].0, HEADERS);
        assert_eq!(order[1].0, "dkms");
    }

    #[test]
    fn the_tools_stay_with_the_transaction_when_no_order_gives_its_set() {
        // Tools first, the transaction would change: nothing goes ahead.
        let without = whole(false);
        let why = tools_ahead(&without, &tools(), alone, |_| Ok(whole(true)))
            .unwrap()
            .unwrap_err();
        assert!(
            why.contains("by itself would bring gcc 4:12.2.0-3"),
            "{why}"
        );
        assert!(
            why.contains("first would change the transaction (gcc 4:12.2.0-3)"),
            "{why}"
        );
        // Another version than the transaction's.
        let why = tools_ahead(
            &without,
            &tools(),
            |_| Ok(tx(&[("make", "4.3-4.2")])),
            |_| unreachable!(),
        )
        .unwrap()
        .unwrap_err();
        assert!(why.contains("make 4.3-4.2"), "{why}");
        // A transaction that brings no dkms.
        let none = tx(&[("nvidia-kernel-dkms", "535.261.03-1")]);
        let why = tools_ahead(&none, &tools(), |_| unreachable!(), |_| unreachable!())
            .unwrap()
            .unwrap_err();
        assert!(why.contains("does not bring"), "{why}");
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
