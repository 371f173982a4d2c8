//! The package set: install, upgrade or remove exact `name=version`s, hold
//! them so unattended upgrades cannot move the driver under a running
//! module, and return to the recorded set on rollback.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use super::build::Prebuilt;
use super::window::download::{Download, Prefetch};
use super::{Action, Change, Check, Context, Diff, DriverChange, PackageChange, Step, StepError};
pub mod dnf;
mod modules;
mod prebuild;

use crate::distro::{Desired, Manager, PackageSpec, VersionSpec, apt};
use crate::facts::packages::{DPKG_STATUS, Package, parse_dpkg_status};
use crate::host::{Host, run_checked};
use crate::journal::{Journal, PackageState, Undo};
use crate::version::{Dotted, dpkg_compare, upstream};

pub const ID: &str = "packages";

/// Exact `(name, version)`s to install, and the driver release they make.
pub(crate) type Resolved = (Vec<(String, String)>, Option<String>);
/// Exact versions to install, and names to purge.
pub(crate) type Transaction = (Vec<(String, String)>, Vec<String>);

#[derive(Clone)]
pub struct Packages {
    pub desired: Desired,
    /// Filled by the window's download step: the lists are fresh and the
    /// archives of these exact versions are downloaded.
    prepared: Arc<OnceLock<Prepared>>,
    /// Filled by the build step: the module built ahead of the window.
    prebuilt: Arc<OnceLock<Prebuilt>>,
}

/// What the download step resolved and fetched ahead of the window.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub exact: Vec<(String, String)>,
    pub release: Option<String>,
    /// What `apt-get -s` said the transaction installs and removes (apt
    /// only; empty when nothing was to install).
    pub transaction: apt::Transaction,
    /// The versions `apt-cache madison` offered for the set's names and
    /// their alternatives, read once the lists were fresh: the lists do
    /// not change after, so inside the window the choice between
    /// alternatives is made again from this, without apt.
    pub offered: BTreeMap<String, Vec<String>>,
}

/// Exact versions by name, the driver release, and the simulated
/// transaction when there was one.
type Simulated = (
    BTreeMap<String, String>,
    Option<String>,
    Option<apt::Transaction>,
);

/// Installed packages by name.
/// The commands apt's apply runs, as plan shows them: the pin, apt-get
/// update and install, apt-mark hold.
fn apt_commands(
    ctx: &Context,
    pin_ok: bool,
    release: Option<String>,
    exact: &[(String, String)],
    remove: &[String],
    held: &[String],
) -> Vec<String> {
    let mut commands = Vec::new();
    if !pin_ok {
        let release = release.unwrap_or_else(|| "<release>".into());
        commands.push(format!(
            "write {} (Pin: version {release}-*)",
            apt::PIN_FILE
        ));
    }
    if !exact.is_empty() || !remove.is_empty() {
        commands.push(apt::update_for(&ctx.host.root).display());
        commands.push(apt::install(exact, remove, false).display());
    }
    if !held.is_empty() {
        commands.push(apt::hold(held).display());
    }
    commands
}

fn by_name(packages: &[Package]) -> BTreeMap<&str, &Package> {
    packages.iter().map(|p| (p.name.as_str(), p)).collect()
}

/// The one upstream release the driver set moves to (or stays at): the
/// installed one when every driver package still offers it, else the
/// newest they all offer.
fn driver_release(
    available: &BTreeMap<String, Vec<String>>,
    now: &BTreeMap<&str, &Package>,
    driver_specs: &[&PackageSpec],
) -> Result<String, String> {
    let mut common: Option<Vec<String>> = None;
    for spec in driver_specs {
        let offered: Vec<String> = available
            .get(&spec.name)
            .into_iter()
            .flatten()
            .filter(|v| spec.version.accepts(v))
            .map(|v| upstream(v).to_string())
            .collect();
        common = Some(match common {
            None => offered,
            Some(previous) => previous
                .into_iter()
                .filter(|v| offered.contains(v))
                .collect(),
        });
    }
    let common = common.unwrap_or_default();
    let installed_upstream = driver_specs
        .iter()
        .filter_map(|s| now.get(s.name.as_str()))
        .map(|p| upstream(&p.version).to_string())
        .find(|v| common.contains(v));
    let chosen =
        installed_upstream.or_else(|| common.iter().max_by_key(|v| Dotted::parse(v)).cloned());
    match chosen {
        Some(version) => Ok(version),
        None => {
            let wanted = driver_specs[0].version.describe();
            let offers: Vec<String> = driver_specs
                .iter()
                .map(|s| {
                    let list = available.get(&s.name).cloned().unwrap_or_default();
                    format!(
                        "{}: {}",
                        s.name,
                        if list.is_empty() {
                            "none".to_string()
                        } else {
                            list.join(", ")
                        }
                    )
                })
                .collect();
            Err(format!(
                "no driver release {wanted} is offered for every driver package by the configured repositories ({})",
                offers.join("; ")
            ))
        }
    }
}

impl Packages {
    pub fn new(desired: Desired) -> Packages {
        Packages {
            desired,
            prepared: Arc::default(),
            prebuilt: Arc::default(),
        }
    }

    pub(crate) fn prepared(&self) -> Option<&Prepared> {
        self.prepared.get()
    }

    /// The packages the plan holds (version-locks), each once.
    fn held_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for spec in self.desired.install.iter().filter(|s| s.hold) {
            if !names.contains(&spec.name.as_str()) {
                names.push(&spec.name);
            }
        }
        names
    }

    /// Every version the repositories offer for the set's names and their
    /// alternatives (`apt-cache madison`); empty when apt cannot say.
    fn offered(&self, host: &Host) -> BTreeMap<String, Vec<String>> {
        if !self.desired.has_choices() {
            return BTreeMap::new();
        }
        let names: Vec<String> = self
            .desired
            .install
            .iter()
            .flat_map(|s| {
                std::iter::once(s.name.clone()).chain(s.alternatives.iter().map(|(n, _)| n.clone()))
            })
            .collect();
        host.runner
            .run(&apt::madison(&names))
            .map(|output| apt::parse_madison(&output.stdout))
            .unwrap_or_default()
    }

    /// The specs with every alternative settled: the one installed, else
    /// the first the repositories offer (precompiled modules before DKMS),
    /// else the first. Once the download step has run (inside the window)
    /// what it read is used: the lists have not changed since.
    fn settle(&self, host: &Host, installed: &[Package]) -> Packages {
        match self.prepared() {
            Some(prepared) => self.settle_from(&prepared.offered, installed),
            None => self.settle_from(&self.offered(host), installed),
        }
    }

    /// `settle` with the versions offered already read.
    fn settle_from(
        &self,
        available: &BTreeMap<String, Vec<String>>,
        installed: &[Package],
    ) -> Packages {
        let mut desired = self.desired.clone();
        if !desired.has_choices() {
            return self.clone();
        }
        for spec in &mut desired.install {
            if spec.alternatives.is_empty() {
                continue;
            }
            let choices: Vec<(String, VersionSpec)> =
                std::iter::once((spec.name.clone(), spec.version.clone()))
                    .chain(spec.alternatives.drain(..))
                    .collect();
            let installed_choice = choices.iter().find(|(name, version)| {
                installed
                    .iter()
                    .any(|p| &p.name == name && version.accepts(&p.version))
            });
            let offered = choices.iter().find(|(name, version)| {
                available
                    .get(name)
                    .is_some_and(|versions| versions.iter().any(|v| version.accepts(v)))
            });
            if let Some((name, version)) = installed_choice.or(offered).or(choices.first()) {
                spec.name = name.clone();
                spec.version = version.clone();
            }
        }
        // An optional package neither installed nor offered (lists read,
        // the name absent) is left out, and said so.
        let absent = |spec: &PackageSpec| {
            spec.optional
                && !available.is_empty()
                && !available.contains_key(&spec.name)
                && !installed.iter().any(|p| p.name == spec.name)
        };
        desired.not_offered = desired
            .install
            .iter()
            .filter(|s| absent(s))
            .map(|s| s.name.clone())
            .collect();
        desired.install.retain(|s| !absent(s));
        Packages {
            desired,
            prepared: self.prepared.clone(),
            prebuilt: self.prebuilt.clone(),
        }
    }

    /// Specs whose installed state differs (absent, wrong version, not held),
    /// plus removals still installed.
    fn pending(
        &self,
        installed: &[Package],
    ) -> (Vec<&PackageSpec>, Vec<&PackageSpec>, Vec<String>) {
        let now = by_name(installed);
        let driver_versions: Vec<&str> = self
            .desired
            .install
            .iter()
            .filter(|s| matches!(s.version, VersionSpec::Driver(_)))
            .filter_map(|s| now.get(s.name.as_str()).map(|p| upstream(&p.version)))
            .collect();
        let consistent = driver_versions.windows(2).all(|w| w[0] == w[1]);
        let mut install = Vec::new();
        let mut hold = Vec::new();
        for spec in &self.desired.install {
            let found = match &spec.version {
                // One of several installed versions (kernel-devel per kernel).
                VersionSpec::Exact(_) => installed
                    .iter()
                    .find(|p| p.name == spec.name && spec.version.accepts(&p.version)),
                _ => now.get(spec.name.as_str()).copied(),
            };
            match found {
                Some(package)
                    if spec.version.accepts(&package.version)
                        && (consistent || !matches!(spec.version, VersionSpec::Driver(_))) =>
                {
                    if spec.hold && !package.held {
                        hold.push(spec);
                    }
                }
                _ => install.push(spec),
            }
        }
        let remove = self
            .desired
            .remove
            .iter()
            .filter(|name| now.contains_key(name.as_str()))
            .cloned()
            .collect();
        (install, hold, remove)
    }

    /// Exact versions for `specs` from what the repositories offer, and the
    /// driver release the whole driver set takes.
    fn resolve(
        &self,
        host: &Host,
        installed: &[Package],
        specs: &[&PackageSpec],
    ) -> Result<Resolved, String> {
        if specs.is_empty() {
            return Ok((Vec::new(), self.installed_driver(installed)));
        }
        let names: Vec<String> = self
            .desired
            .install
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let output = host
            .runner
            .run(&apt::madison(&names))
            .map_err(|e| e.to_string())?;
        let available = apt::parse_madison(&output.stdout);
        self.choose(
            &available,
            installed,
            specs,
            dpkg_compare,
            "apt-cache madison",
        )
    }

    /// Picks exact versions for `specs` among `available` (every version
    /// each package is offered at): one upstream release for the whole
    /// driver set, the installed version wherever it still fits.
    pub(crate) fn choose(
        &self,
        available: &BTreeMap<String, Vec<String>>,
        installed: &[Package],
        specs: &[&PackageSpec],
        compare: fn(&str, &str) -> std::cmp::Ordering,
        lister: &str,
    ) -> Result<Resolved, String> {
        if specs.is_empty() {
            return Ok((Vec::new(), self.installed_driver(installed)));
        }

        let now = by_name(installed);
        let driver_specs: Vec<&PackageSpec> = self
            .desired
            .install
            .iter()
            .filter(|s| matches!(s.version, VersionSpec::Driver(_)))
            .collect();
        // One upstream version for the whole driver set: the installed one
        // when it still fits (the driver never moves unless the plan says
        // so), else the newest that every driver package offers.
        let driver_upstream = if driver_specs.is_empty() {
            None
        } else {
            Some(driver_release(available, &now, &driver_specs)?)
        };
        // Every driver package moves with the set: also those installed at
        // another release of the branch (a flavour switch to a release only
        // the other flavour's packages have).
        let mut todo: Vec<&PackageSpec> = specs.to_vec();
        if let Some(chosen) = &driver_upstream {
            for spec in &driver_specs {
                let off = now
                    .get(spec.name.as_str())
                    .is_some_and(|p| upstream(&p.version) != chosen);
                if off && !todo.iter().any(|t| t.name == spec.name) {
                    todo.push(spec);
                }
            }
        }
        let mut exact = Vec::new();
        for spec in todo {
            let offered = available.get(&spec.name).cloned().unwrap_or_default();
            let mut fitting: Vec<String> = offered
                .into_iter()
                .filter(|v| spec.version.accepts(v))
                .filter(|v| match (&spec.version, &driver_upstream) {
                    (VersionSpec::Driver(_), Some(chosen)) => upstream(v) == chosen,
                    _ => true,
                })
                .collect();
            fitting.sort_by(|a, b| compare(b, a));
            let keep = now
                .get(spec.name.as_str())
                .map(|p| p.version.clone())
                .filter(|v| fitting.contains(v));
            match keep.or_else(|| fitting.first().cloned()) {
                Some(version) => exact.push((spec.name.clone(), version)),
                None => {
                    return Err(format!(
                        "the configured repositories offer no {} at {} (run `{lister} {}` on the host to see what they have)",
                        spec.name,
                        spec.version.describe(),
                        spec.name
                    ));
                }
            }
        }
        Ok((exact, driver_upstream))
    }

    /// The transaction `apply` would run were `available` all the
    /// repositories offered (a bundle's): exact versions to install and the
    /// names to purge; Err names each package to install that nothing there
    /// offers at a version the plan accepts ("name (version)").
    pub(crate) fn transaction_with(
        &self,
        installed: &[Package],
        available: &BTreeMap<String, Vec<String>>,
        compare: fn(&str, &str) -> std::cmp::Ordering,
    ) -> Result<Transaction, Vec<String>> {
        let (install, _, remove) = self.pending(installed);
        let missing: Vec<String> = install
            .iter()
            .filter(|spec| {
                !available
                    .get(&spec.name)
                    .is_some_and(|versions| versions.iter().any(|v| spec.version.accepts(v)))
            })
            .map(|spec| format!("{} ({})", spec.name, spec.version.describe()))
            .collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        let (exact, _) = self
            .choose(available, installed, &install, compare, "the bundle's")
            .map_err(|e| vec![e])?;
        Ok((exact, remove))
    }

    /// The module stream the plan enables (EL8/EL9).
    pub(crate) fn stream(&self) -> Option<&(String, String)> {
        self.desired.stream.as_ref()
    }

    /// Every name the plan installs.
    pub(crate) fn names(&self) -> Vec<String> {
        self.desired
            .install
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// The one upstream release of the installed driver set, if it is
    /// complete and consistent.
    fn installed_driver(&self, installed: &[Package]) -> Option<String> {
        let now = by_name(installed);
        let mut versions = self
            .desired
            .install
            .iter()
            .filter(|s| matches!(s.version, VersionSpec::Driver(_)))
            .map(|s| {
                now.get(s.name.as_str())
                    .map(|p| upstream(&p.version).to_string())
            });
        let first = versions.next()??;
        versions
            .all(|v| v.as_deref() == Some(first.as_str()))
            .then_some(first)
    }

    /// Asks apt what the transaction would do and refuses what provision
    /// must not do: remove packages the plan does not name, downgrade
    /// packages outside the driver release, or fight a held package. `pin`:
    /// the pin to simulate with before it is written (through a temporary
    /// preferences directory under the root's /tmp, removed afterwards).
    fn simulate(
        &self,
        host: &Host,
        exact: &[(String, String)],
        remove: &[String],
        pin: Option<&str>,
        installed: &[Package],
    ) -> Result<apt::Transaction, StepError> {
        let preferences = match pin {
            Some(pin) if host.root.read_string(apt::PIN_FILE).ok().as_deref() != Some(pin) => {
                match FuturePreferences::new(host, pin) {
                    Some(dir) => Some(dir),
                    None => return Ok(apt::Transaction::default()),
                }
            }
            _ => None,
        };
        let cmd = apt::simulate(exact, remove);
        let cmd = match &preferences {
            Some(preferences) => preferences.apply_to(cmd),
            None => cmd,
        };
        let result = host.runner.run(&cmd);
        drop(preferences);
        let output = result?;
        if !output.success() {
            let held: Vec<&str> = installed
                .iter()
                .filter(|p| p.held)
                .map(|p| p.name.as_str())
                .collect();
            let problems: Vec<&str> = output
                .stdout
                .lines()
                .chain(output.stderr.lines())
                .filter(|l| l.starts_with(' ') && l.contains(':') || l.starts_with("E:"))
                .map(str::trim)
                .collect();
            return Err(StepError::Failed(format!(
                "apt cannot do this transaction: {}{}",
                problems.join("; "),
                if held.is_empty() {
                    String::new()
                } else {
                    format!(" (held packages: {})", held.join(", "))
                }
            )));
        }
        let tx = apt::parse_simulation(&output.stdout);
        let named =
            |name: &str| exact.iter().any(|(n, _)| n == name) || remove.iter().any(|n| n == name);
        let blockers: Vec<&str> = tx
            .install
            .iter()
            .map(|(name, _, _)| name.as_str())
            .chain(tx.remove.iter().map(|(name, _)| name.as_str()))
            .filter(|name| !named(name))
            .filter(|name| installed.iter().any(|p| p.name == *name && p.held))
            .collect();
        if !blockers.is_empty() {
            let held: Vec<&str> = installed
                .iter()
                .filter(|p| p.held)
                .map(|p| p.name.as_str())
                .collect();
            return Err(StepError::Failed(format!(
                "apt cannot do this transaction: it would change {}, which is held and not in the plan (held packages: {})",
                blockers.join(", "),
                held.join(", ")
            )));
        }
        self.vet(&tx, exact, remove, dpkg_compare, "apt")?;
        Ok(tx)
    }

    /// Refuses what provision must not do: remove packages the plan does
    /// not name, or downgrade packages outside the driver set.
    pub(crate) fn vet(
        &self,
        tx: &apt::Transaction,
        exact: &[(String, String)],
        remove: &[String],
        compare: fn(&str, &str) -> std::cmp::Ordering,
        manager: &str,
    ) -> Result<(), StepError> {
        let named = |name: &str| {
            exact.iter().any(|(n, _)| n == name)
                || remove.iter().any(|n| n == name)
                || self.desired.pinned(name)
        };
        let unrelated: Vec<String> = tx
            .remove
            .iter()
            .filter(|(name, _)| !named(name))
            .map(|(name, version)| format!("{name} {version}"))
            .collect();
        if !unrelated.is_empty() {
            return Err(StepError::Failed(format!(
                "{manager} would also remove {}: provision does not remove packages the plan does not name (remove them yourself, or resolve the conflict)",
                unrelated.join(", ")
            )));
        }
        let downgrades: Vec<String> = tx
            .install
            .iter()
            .filter(|(name, before, after)| {
                before
                    .as_deref()
                    .is_some_and(|b| compare(after, b) == std::cmp::Ordering::Less)
                    && !named(name)
            })
            .map(|(name, before, after)| {
                format!("{name} {} -> {after}", before.as_deref().unwrap_or(""))
            })
            .collect();
        if !downgrades.is_empty() {
            return Err(StepError::Failed(format!(
                "{manager} would downgrade {}, which the plan does not name: refusing",
                downgrades.join(", ")
            )));
        }
        Ok(())
    }

    fn pin_content(&self, upstream: &str) -> Option<String> {
        (!self.desired.pin.is_empty()).then(|| apt::pin_file(&self.desired.pin, upstream))
    }
}

/// apt's preferences as they will be once the plan's pin is written: a
/// copy of the other preference files and the pin, in a directory of the
/// machine (never the root's: a plan writes nothing there), which apt is
/// pointed at with `Dir::Etc::PreferencesParts`. Under `--root` the command
/// sees it as its /tmp. Removed when this is dropped.
struct FuturePreferences {
    dir: tempfile::TempDir,
    /// Where the command finds it.
    path: String,
    chrooted: bool,
}

impl FuturePreferences {
    fn new(host: &Host, pin: &str) -> Option<FuturePreferences> {
        let dir = tempfile::Builder::new()
            .prefix("provision-apt-preferences-")
            .tempdir()
            .ok()?;
        for name in host
            .root
            .read_dir("/etc/apt/preferences.d")
            .unwrap_or_default()
        {
            let from = format!("/etc/apt/preferences.d/{name}");
            if name != "provision-nvidia-driver.pref"
                && let Ok(bytes) = host.root.read_bytes(&from)
            {
                std::fs::write(dir.path().join(&name), bytes).ok()?;
            }
        }
        std::fs::write(dir.path().join("provision-nvidia-driver.pref"), pin).ok()?;
        let chrooted = !host.root.is_host();
        let path = if chrooted {
            "/tmp".to_string()
        } else {
            dir.path().display().to_string()
        };
        Some(FuturePreferences {
            dir,
            path,
            chrooted,
        })
    }

    /// `cmd` pointed at these preferences.
    fn apply_to(&self, cmd: crate::host::Cmd) -> crate::host::Cmd {
        let cmd = cmd.args([
            "-o".to_string(),
            format!("Dir::Etc::PreferencesParts={}", self.path),
        ]);
        if self.chrooted {
            cmd.scratch(self.dir.path())
        } else {
            cmd
        }
    }
}

/// dpkg's own journal of a run it did not finish: numbered files in
/// /var/lib/dpkg/updates, which apt refuses to work past ("dpkg was
/// interrupted, you must manually run 'dpkg --configure -a'").
fn dpkg_interrupted(host: &Host) -> bool {
    host.root
        .read_dir("/var/lib/dpkg/updates")
        .map(|names| names.iter().any(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .unwrap_or(false)
}

/// A dpkg killed mid-transaction is finished before apt is asked anything:
/// `dpkg --configure -a`. Packages it cannot configure (a dependency that
/// was half-unpacked) are left to the transaction that follows, which
/// installs or removes them; only a journal dpkg cannot replay stops here.
/// Returns whether it had to.
pub fn repair_dpkg(host: &Host) -> Result<bool, StepError> {
    let pending = dpkg_interrupted(host);
    let audit = host.runner.run(&apt::audit())?;
    if !pending && audit.stdout.trim().is_empty() {
        return Ok(false);
    }
    let configured = run_checked(host.runner.as_ref(), &apt::configure_pending());
    if let Err(error) = configured
        && dpkg_interrupted(host)
    {
        return Err(StepError::Failed(format!(
            "dpkg was interrupted and `dpkg --configure -a` could not replay its journal: {error}"
        )));
    }
    // A package killed mid-unpack is "half-installed, reinstall required":
    // dpkg removes it only once it is whole again.
    let status = host
        .root
        .read_string(DPKG_STATUS)
        .map_err(super::io_error(DPKG_STATUS))?;
    let broken = apt::reinstall_required(&status);
    if !broken.is_empty() && run_checked(host.runner.as_ref(), &apt::reinstall(&broken)).is_err() {
        let names: Vec<String> = broken.iter().map(|(name, _)| name.clone()).collect();
        run_checked(host.runner.as_ref(), &apt::force_remove_broken(&names)).map_err(|error| {
            StepError::Failed(format!(
                "dpkg left {} half-installed and neither a reinstall nor a forced removal mended it: {error}",
                names.join(", ")
            ))
        })?;
    }
    Ok(true)
}

fn installed_now(host: &Host) -> Result<Vec<Package>, StepError> {
    let text = host
        .root
        .read_string(DPKG_STATUS)
        .map_err(super::io_error(DPKG_STATUS))?;
    Ok(parse_dpkg_status(&text))
}

/// What a package check shows: the specs to install or change (at their
/// resolved versions where known), those only to hold, the removals.
fn planned_changes(
    installed: &[Package],
    install: &[&PackageSpec],
    hold: &[&PackageSpec],
    remove: &[String],
    resolved: &BTreeMap<String, String>,
) -> Vec<PackageChange> {
    let now = by_name(installed);
    let before = |name: &str| now.get(name).map(|p| p.version.clone());
    let mut changes: Vec<PackageChange> = install
        .iter()
        .map(|spec| PackageChange {
            name: spec.name.clone(),
            before: before(&spec.name),
            after: Some(
                resolved
                    .get(&spec.name)
                    .cloned()
                    .unwrap_or_else(|| spec.version.describe()),
            ),
            hold: spec.hold,
        })
        .collect();
    changes.extend(hold.iter().map(|spec| PackageChange {
        name: spec.name.clone(),
        before: before(&spec.name),
        after: before(&spec.name),
        hold: true,
    }));
    changes.extend(remove.iter().map(|name| PackageChange {
        name: name.clone(),
        before: before(name),
        after: None,
        hold: false,
    }));
    changes
}

/// Adds what the package manager's simulation would also change
/// (dependencies, conflicts) to the planned changes.
fn add_transaction(changes: &mut Vec<PackageChange>, tx: apt::Transaction) {
    for (name, before, after) in tx.install {
        if !changes.iter().any(|c| c.name == name) {
            changes.push(PackageChange {
                name,
                before,
                after: Some(after),
                hold: false,
            });
        }
    }
    for (name, version) in tx.remove {
        if !changes.iter().any(|c| c.name == name) {
            changes.push(PackageChange {
                name,
                before: Some(version),
                after: None,
                hold: false,
            });
        }
    }
}

/// Journals the package set to return to, and the initramfs images first:
/// package scripts (dpkg triggers, kernel-install) regenerate them, and a
/// rollback restores them byte for byte.
fn record_before(
    ctx: &Context,
    journal: &mut Journal,
    manager: &str,
    before: BTreeMap<String, PackageState>,
    prebuilt: Option<&Prebuilt>,
) -> Result<(), StepError> {
    for kernel in &ctx.facts.os.kernels {
        if let Some(image) = &kernel.initramfs {
            journal.record_file(ID, image)?;
        }
    }
    // The replaced release's module, built before: a rollback hands it to
    // the old package's maintainer script instead of building it again.
    let modules = prebuilt
        .map(|p| p.previous.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(path, saved)| crate::journal::SavedModule { path, saved })
        .collect();
    journal.record(
        ID,
        Undo::Packages {
            manager: manager.into(),
            before,
            modules,
        },
    )?;
    Ok(())
}

fn action_of(changes: &[PackageChange]) -> Action {
    if changes.is_empty() {
        Action::Update
    } else if changes.iter().all(|c| c.before.is_none()) {
        Action::Create
    } else if changes.iter().all(|c| c.after.is_none()) {
        Action::Delete
    } else {
        Action::Update
    }
}

impl Step for Packages {
    fn id(&self) -> String {
        ID.to_string()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        match self.desired.manager {
            Manager::Dnf => dnf::check(self, ctx),
            Manager::Apt => self
                .settle(ctx.host, &ctx.facts.all_packages)
                .apt_check(ctx),
        }
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        match self.desired.manager {
            Manager::Dnf => dnf::apply(self, ctx, journal),
            Manager::Apt => {
                let installed = installed_now(ctx.host)?;
                let settled = self.settle(ctx.host, &installed);
                if self.desired.has_choices()
                    && self.prepared().is_none()
                    && !settled.pending(&installed).0.is_empty()
                {
                    // Which alternative is offered is known after a refresh.
                    run_checked(ctx.host.runner.as_ref(), &apt::update_for(&ctx.host.root))?;
                    return self.settle(ctx.host, &installed).apt_apply(ctx, journal);
                }
                settled.apt_apply(ctx, journal)
            }
        }
    }

    fn driver_change(&self, ctx: &Context) -> Result<Option<DriverChange>, StepError> {
        let installed = &ctx.facts.all_packages;
        let settled = match self.desired.manager {
            Manager::Apt => self.settle(ctx.host, installed),
            Manager::Dnf => self.clone(),
        };
        let (install, _, remove) = settled.pending(installed);
        let moves = install
            .iter()
            .any(|s| matches!(s.version, VersionSpec::Driver(_)))
            || !remove.is_empty();
        if !moves {
            return Ok(None);
        }
        let before = settled.installed_driver(installed).or_else(|| {
            // A partial or mixed set: the release its main package has.
            settled
                .desired
                .install
                .iter()
                .filter(|s| matches!(s.version, VersionSpec::Driver(_)))
                .find_map(|s| {
                    installed
                        .iter()
                        .find(|p| p.name == s.name)
                        .map(|p| upstream(&p.version).to_string())
                })
        });
        let resolved = match self.desired.manager {
            Manager::Apt => settled.resolve(ctx.host, installed, &install).ok(),
            Manager::Dnf => dnf::resolve_for_plan(&settled, ctx, &install),
        };
        let after = resolved
            .and_then(|(_, release)| release)
            .unwrap_or_else(|| self.driver_range());
        Ok(Some(DriverChange { before, after }))
    }

    fn downloader(&self) -> Option<Box<dyn Step>> {
        Some(Box::new(Download {
            source: Arc::new(self.clone()),
        }))
    }

    fn prebuilder(&self) -> Option<Box<dyn Step>> {
        prebuild::builder(self)
    }

    /// NVIDIA's DKMS kmod packages build in their `%post` (`dkms add`,
    /// `dkms build`, `dkms install`, as dkms-open-nvidia.spec does):
    /// on the RHEL family that build is not taken ahead of the window.
    fn builds_inside(&self) -> Option<String> {
        if self.desired.manager != Manager::Dnf {
            return None;
        }
        let kmod = self
            .desired
            .install
            .iter()
            .find(|s| s.name.starts_with("kmod-nvidia") && s.name.ends_with("-dkms"))?;
        Some(format!(
            "{}'s %post runs dkms build while the GPU is out of service (provision builds the module ahead of the window for apt's DKMS packages only)",
            kmod.name
        ))
    }
}

impl Packages {
    /// What the plan accepts for the driver set ("580.*", "580.105.08").
    fn driver_range(&self) -> String {
        self.desired
            .install
            .iter()
            .find(|s| matches!(s.version, VersionSpec::Driver(_)))
            .map(|s| s.version.describe())
            .unwrap_or_default()
    }
}

impl Prefetch for Packages {
    fn describe(&self, ctx: &Context) -> Result<Vec<String>, StepError> {
        Ok(match self.desired.manager {
            Manager::Apt => vec![
                apt::update_for(&ctx.host.root).display(),
                apt::download(&[], &[]).display() + " <the driver set>",
            ],
            Manager::Dnf => dnf::describe_download(ctx),
        })
    }

    fn prefetch(&self, ctx: &Context) -> Result<(), StepError> {
        if self.desired.manager == Manager::Dnf {
            return dnf::prefetch(self, ctx);
        }
        let host = ctx.host;
        let installed = installed_now(host)?;
        run_checked(host.runner.as_ref(), &apt::update_for(&host.root))?;
        let offered = self.offered(host);
        let settled = self.settle_from(&offered, &installed);
        let (install, _, remove) = settled.pending(&installed);
        let (exact, release) = settled
            .resolve(host, &installed, &install)
            .map_err(StepError::Failed)?;
        let mut transaction = apt::Transaction::default();
        if !exact.is_empty() {
            let pin = release.as_deref().and_then(|r| settled.pin_content(r));
            // Vetted now, with the fresh lists, while nothing is stopped:
            // a refusal (an unrelated removal, a held blocker) comes before
            // the window opens, and inside it only the install runs.
            transaction = settled.simulate(host, &exact, &remove, pin.as_deref(), &installed)?;
            let preferences = pin
                .as_deref()
                .and_then(|pin| FuturePreferences::new(host, pin));
            let mut cmd = apt::download(&exact, &remove);
            if let Some(preferences) = &preferences {
                cmd = preferences.apply_to(cmd);
            }
            run_checked(host.runner.as_ref(), &cmd)?;
        }
        let _ = self.prepared.set(Prepared {
            exact,
            release,
            transaction,
            offered,
        });
        Ok(())
    }
}

impl Packages {
    fn apt_check(&self, ctx: &Context) -> Result<Check, StepError> {
        let installed = &ctx.facts.all_packages;
        let (install, hold, remove) = self.pending(installed);
        let pin_now = ctx.host.root.read_string(apt::PIN_FILE).ok();
        let pin_ok = match self.installed_driver(installed) {
            Some(release) => pin_now == self.pin_content(&release),
            None => false,
        } || self.desired.pin.is_empty();
        if install.is_empty() && hold.is_empty() && remove.is_empty() && pin_ok {
            return Ok(Check::Satisfied(format!(
                "{} package(s) at the planned versions{}",
                self.desired.install.len(),
                if self.desired.install.iter().any(|s| s.hold) {
                    ", held"
                } else {
                    ""
                }
            )));
        }
        let (resolved, release, tx) = self.transaction_now(ctx, &install, &remove)?;
        let mut changes = planned_changes(installed, &install, &hold, &remove, &resolved);
        let simulated = tx.is_some();
        if let Some(tx) = tx {
            add_transaction(&mut changes, tx);
        }
        let action = action_of(&changes);
        // Unresolved specs show as bare names: apt resolves them after
        // `apt-get update`, under the pin.
        let exact: Vec<(String, String)> = install
            .iter()
            .map(|spec| {
                let version = resolved.get(&spec.name).cloned().unwrap_or_default();
                (spec.name.clone(), version)
            })
            .collect();
        let held: Vec<String> = self.held_names().into_iter().map(str::to_string).collect();
        let commands = apt_commands(ctx, pin_ok, release, &exact, &remove, &held);
        let counts = (install.len(), remove.len(), hold.len(), held.len());
        Ok(Check::Pending(Change {
            action,
            summary: self.apt_summary(counts, pin_ok, simulated),
            diff: Diff::Packages(changes),
            commands,
        }))
    }

    /// The exact versions, the release and what apt would really do
    /// (dependencies included, with the pin the plan writes; refused here
    /// if provision would refuse it), as far as the package lists know.
    /// Inside the window the download step has resolved and simulated it
    /// already, with fresh lists, before anything was stopped: its answer
    /// stands, and the GPU does not wait for apt to give it again.
    fn transaction_now(
        &self,
        ctx: &Context,
        install: &[&PackageSpec],
        remove: &[String],
    ) -> Result<Simulated, StepError> {
        if let Some(prepared) = self.prepared() {
            let resolved = prepared.exact.iter().cloned().collect();
            let tx = (!prepared.exact.is_empty()).then(|| prepared.transaction.clone());
            return Ok((resolved, prepared.release.clone(), tx));
        }
        // The lists are refreshed only by `apply`.
        let installed = &ctx.facts.all_packages;
        let Ok((exact, release)) = self.resolve(ctx.host, installed, install) else {
            return Ok((BTreeMap::new(), None, None));
        };
        if exact.is_empty() {
            return Ok((BTreeMap::new(), release, None));
        }
        let pin = release.as_deref().and_then(|r| self.pin_content(r));
        let tx = self.simulate(ctx.host, &exact, remove, pin.as_deref(), installed)?;
        Ok((exact.into_iter().collect(), release, Some(tx)))
    }

    /// The apt step's one line: what changes, counted; `counts` are
    /// (install, remove, hold pending, held in all).
    fn apt_summary(
        &self,
        (install, remove, hold, held): (usize, usize, usize, usize),
        pin_ok: bool,
        simulated: bool,
    ) -> String {
        // Every package held, the installed ones too: what `apt-mark hold`
        // names.
        let held = if hold == 0 && install == 0 { 0 } else { held };
        let mut summary =
            format!("{install} to install or change, {remove} to remove, {held} to hold");
        for name in &self.desired.not_offered {
            summary.push_str(&format!(
                "; the repositories offer no {name} (NVIDIA's pinning package): {} alone keeps the driver at its release",
                apt::PIN_FILE
            ));
        }
        if !pin_ok && install == 0 && remove == 0 {
            summary = format!("pin the driver release in {}", apt::PIN_FILE);
        } else if !simulated && install > 0 {
            summary.push_str(
                " (exact versions and dependencies resolve at apply, after apt-get update)",
            );
        }
        summary
    }

    fn apt_apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        let host = ctx.host;
        if repair_dpkg(host)? {
            ctx.progress
                .warn("dpkg had been interrupted: `dpkg --configure -a` finished its work first");
        }
        let installed = installed_now(host)?;
        record_before(ctx, journal, "apt", states(&installed), self.prebuilt.get())?;
        let (install, _, remove) = self.pending(&installed);
        // Inside the window the lists are already fresh and the archives
        // downloaded: nothing is fetched while the GPU is out of service.
        let (exact, release) = match self.prepared() {
            Some(prepared) => (prepared.exact.clone(), prepared.release.clone()),
            None => {
                if !install.is_empty() || !remove.is_empty() {
                    run_checked(host.runner.as_ref(), &apt::update_for(&host.root))?;
                }
                self.resolve(host, &installed, &install)
                    .map_err(StepError::Failed)?
            }
        };
        if let Some(content) = release.as_deref().and_then(|r| self.pin_content(r)) {
            journal.record_file(ID, apt::PIN_FILE)?;
            host.root
                .write_atomic(apt::PIN_FILE, content.as_bytes(), 0o644)
                .map_err(super::io_error(apt::PIN_FILE))?;
        }
        if !install.is_empty() || !remove.is_empty() {
            let now = by_name(&installed);
            let held_changing: Vec<String> = exact
                .iter()
                .map(|(name, _)| name.clone())
                .chain(remove.iter().cloned())
                .filter(|name| now.get(name.as_str()).is_some_and(|p| p.held))
                .collect();
            // Vetted ahead (the download step simulated this very command
            // with the holds in place, and refused a transaction that
            // changes a held package the plan does not name): apt may change
            // the held ones it names, without an `apt-mark unhold` inside the
            // window. Else the plan's held packages are released first and
            // the transaction vetted here.
            let vetted = self.prepared().is_some();
            if !vetted {
                if !held_changing.is_empty() {
                    run_checked(host.runner.as_ref(), &apt::unhold(&held_changing))?;
                }
                self.simulate(host, &exact, &remove, None, &installed)?;
            }
            // Downgrades only of what the plan names (a flavour switch or an
            // exact older release); the pin keeps the rest of the set along.
            let change_held = vetted && !held_changing.is_empty();
            run_checked(
                host.runner.as_ref(),
                &apt::install(&exact, &remove, change_held),
            )?;
        }
        if let Some(prebuilt) = self.prebuilt.get() {
            prebuild::remove_handed(host, prebuilt);
        }
        if let Some(release) = self.installed_driver(&installed_now(host)?) {
            modules::check_built(&host.root, &release)?;
        }
        let held: Vec<String> = self.held_names().into_iter().map(str::to_string).collect();
        if !held.is_empty() {
            run_checked(host.runner.as_ref(), &apt::hold(&held))?;
            confirm_held(host, &held)?;
        }
        Ok(())
    }
}

/// What a rollback returns to: each installed package's version and hold.
pub(crate) fn states(installed: &[Package]) -> BTreeMap<String, PackageState> {
    installed
        .iter()
        .map(|p| {
            let state = PackageState {
                version: p.version.clone(),
                held: p.held,
            };
            (p.name.clone(), state)
        })
        .collect()
}

/// dpkg's own database shows every name held, or the step fails: an
/// unheld driver is one `apt upgrade` away from a version mismatch.
fn confirm_held(host: &Host, names: &[String]) -> Result<(), StepError> {
    let installed = installed_now(host)?;
    let now = by_name(&installed);
    let missing: Vec<&str> = names
        .iter()
        .filter(|name| !now.get(name.as_str()).is_some_and(|p| p.held))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(StepError::Failed(format!(
        "apt-mark hold left {} unheld in {DPKG_STATUS}",
        missing.join(", ")
    )))
}

/// Returns the package database to `before`: purges what was added,
/// reinstalls the recorded versions, restores holds.
pub fn undo(host: &Host, before: &BTreeMap<String, PackageState>) -> Result<(), StepError> {
    repair_dpkg(host)?;
    let installed = installed_now(host)?;
    let now = by_name(&installed);
    let purge: Vec<String> = installed
        .iter()
        .filter(|p| !before.contains_key(&p.name))
        .map(|p| p.name.clone())
        .collect();
    let restore: Vec<(String, String)> = before
        .iter()
        .filter(|(name, state)| {
            now.get(name.as_str()).map(|p| p.version.as_str()) != Some(state.version.as_str())
        })
        .map(|(name, state)| (name.clone(), state.version.clone()))
        .collect();
    if !purge.is_empty() || !restore.is_empty() {
        let held_now: Vec<String> = installed
            .iter()
            .filter(|p| p.held)
            .map(|p| p.name.clone())
            .collect();
        if !held_now.is_empty() {
            run_checked(host.runner.as_ref(), &apt::unhold(&held_now))?;
        }
        if restore.is_empty() {
            run_checked(host.runner.as_ref(), &apt::purge(&purge))?;
        } else {
            run_checked(host.runner.as_ref(), &apt::update_for(&host.root))?;
            run_checked(host.runner.as_ref(), &apt::install(&restore, &purge, true))?;
        }
    }
    let installed = installed_now(host)?;
    let unhold: Vec<String> = installed
        .iter()
        .filter(|p| p.held && !before.get(&p.name).is_some_and(|s| s.held))
        .map(|p| p.name.clone())
        .collect();
    let hold: Vec<String> = installed
        .iter()
        .filter(|p| !p.held && before.get(&p.name).is_some_and(|s| s.held))
        .map(|p| p.name.clone())
        .collect();
    if !unhold.is_empty() {
        run_checked(host.runner.as_ref(), &apt::unhold(&unhold))?;
    }
    if !hold.is_empty() {
        run_checked(host.runner.as_ref(), &apt::hold(&hold))?;
    }
    Ok(())
}
