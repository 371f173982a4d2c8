//! The package set on the RHEL family: dnf module stream (EL8/EL9), exact
//! versions through dnf, and `dnf versionlock` entries that keep them. The
//! transaction is asked first (`dnf install --assumeno`) and vetted the
//! same way as apt's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::{Packages, Resolved, action_of, add_transaction, by_name, planned_changes};
use crate::distro::dnf::{
    Dnf, Plugins, module_state_file, parse_available, parse_module_state, parse_transaction,
    versionlock_list,
};
use crate::distro::{PackageSpec, apt};
use crate::facts::os::Family;
use crate::facts::packages::{VERSIONLOCK_LIST, installed};
use crate::host::{Host, run_checked};
use crate::journal::{Journal, PackageState};
use crate::step::{Change, Check, Context, Diff, StepError, io_error};
use crate::version::rpm_compare;

use super::ID;

fn dnf_for(ctx: &Context) -> Dnf {
    Dnf::for_host(ctx.host, ctx.facts.os.version_id.as_deref())
}

fn installed_now(host: &Host) -> Result<Vec<crate::facts::packages::Package>, StepError> {
    if !host.has_tool("rpm") && !crate::facts::packages::has_rpm_database(&host.root) {
        // An image root before its first package: nothing installed yet.
        return Ok(Vec::new());
    }
    installed(host, Some(Family::Rhel)).map_err(StepError::Failed)
}

/// The package a versionlock entry locks: "name-epoch:version-release.*"
/// (the plugin's own format, provision's entries) or "name-version-...".
fn entry_name(entry: &str) -> Option<&str> {
    let entry = entry.trim_start_matches('!');
    let starts_version = |i: usize| entry[i + 1..].starts_with(|c: char| c.is_ascii_digit());
    let with_epoch = entry.match_indices('-').map(|(i, _)| i).find(|&i| {
        starts_version(i)
            && entry[i + 1..]
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with(':')
    });
    with_epoch
        .or_else(|| {
            entry
                .match_indices('-')
                .map(|(i, _)| i)
                .find(|&i| starts_version(i))
        })
        .map(|i| &entry[..i])
}

/// A versionlock entry names `name` ("name-epoch:version-release.*").
fn entry_names(entry: &str, name: &str) -> bool {
    entry_name(entry) == Some(name)
}

impl Packages {
    /// The versionlock list with provision's entries for `versions` (the
    /// held packages at their versions) and every entry of someone else's
    /// kept as it was.
    fn lock_list(&self, existing: &str, versions: &[(String, String)]) -> String {
        let mut ours = self.held_names();
        ours.extend(versions.iter().map(|(name, _)| name.as_str()));
        let mut text = versionlock_list(versions);
        for line in existing.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !ours.iter().any(|name| entry_names(line, name)) {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// The existing list without entries for `changing` packages, nor for
    /// the driver's own (its pin globs: the set moves as one): what dnf
    /// obeys while they move.
    fn unlocked_list(&self, existing: &str, changing: &[String]) -> String {
        let drivers = |line: &str| entry_name(line).is_some_and(|name| self.desired.pinned(name));
        existing
            .lines()
            .filter(|line| !changing.iter().any(|name| entry_names(line.trim(), name)))
            .filter(|line| !drivers(line.trim()))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// What provision locks at the installed versions: the held packages,
    /// and every other installed package of the driver's release that its
    /// pin globs name (nvidia-modprobe, nvidia-persistenced, -cuda-libs,
    /// nvidia-kmod-common), the way NVIDIA's guide locks `*nvidia*<branch>*`.
    fn held_versions(
        &self,
        installed: &[crate::facts::packages::Package],
    ) -> Vec<(String, String)> {
        let now = by_name(installed);
        let mut locked: Vec<(String, String)> = self
            .held_names()
            .into_iter()
            .filter_map(|name| now.get(name).map(|p| (name.to_string(), p.version.clone())))
            .collect();
        let Some(release) = self.installed_driver(installed) else {
            return locked;
        };
        for package in installed {
            if self.desired.pinned(&package.name)
                && crate::version::upstream(&package.version) == release
                && !locked.iter().any(|(name, _)| name == &package.name)
            {
                locked.push((package.name.clone(), package.version.clone()));
            }
        }
        locked
    }

    fn stream_ok(&self, host: &Host) -> bool {
        match &self.desired.stream {
            None => true,
            Some((module, stream)) => host
                .root
                .read_string(module_state_file(module))
                .ok()
                .and_then(|text| parse_module_state(&text))
                .is_some_and(|(now, state)| &now == stream && state == "enabled"),
        }
    }

    fn dnf_resolve(
        &self,
        host: &Host,
        dnf: &Dnf,
        plugins: Option<&Plugins>,
        installed: &[crate::facts::packages::Package],
        specs: &[&PackageSpec],
    ) -> Result<Resolved, String> {
        if specs.is_empty() {
            return Ok((Vec::new(), self.installed_driver(installed)));
        }
        let mut names: Vec<String> = self
            .desired
            .install
            .iter()
            .map(|s| s.name.clone())
            .collect();
        names.dedup();
        let output = host
            .runner
            .run(&dnf.available(&names, plugins))
            .map_err(|e| e.to_string())?;
        let available = parse_available(&output.stdout);
        self.choose(
            &available,
            installed,
            specs,
            rpm_compare,
            "dnf repoquery --showduplicates",
        )
    }

    fn dnf_simulate(
        &self,
        host: &Host,
        dnf: &Dnf,
        plugins: Option<&Plugins>,
        exact: &[(String, String)],
        remove: &[String],
        installed: &[crate::facts::packages::Package],
    ) -> Result<apt::Transaction, StepError> {
        let output = host.runner.run(&dnf.simulate(exact, plugins))?;
        // --assumeno answers "no": exit 1 with "Operation aborted" is the
        // normal end; a dependency problem prints "Error:".
        let failed = output.stderr.contains("Error:") || output.stdout.contains("Error:");
        let aborted = output.stderr.contains("Operation aborted")
            || output.stdout.contains("Operation aborted");
        if failed || (!output.success() && !aborted) {
            let problems: Vec<&str> = output
                .stderr
                .lines()
                .chain(output.stdout.lines())
                .map(str::trim)
                .filter(|l| {
                    l.starts_with("Error:")
                        || l.starts_with("Problem")
                        || l.starts_with("- ")
                        || l.starts_with("package ")
                })
                .collect();
            let locked: Vec<&str> = installed
                .iter()
                .filter(|p| p.held)
                .map(|p| p.name.as_str())
                .collect();
            return Err(StepError::Failed(format!(
                "dnf cannot do this transaction: {}{}",
                if problems.is_empty() {
                    output.tail.trim().to_string()
                } else {
                    problems.join("; ")
                },
                if locked.is_empty() {
                    String::new()
                } else {
                    format!(" (version-locked packages: {})", locked.join(", "))
                }
            )));
        }
        let mut tx = parse_transaction(&output.stdout);
        let now = by_name(installed);
        for (name, before, _) in &mut tx.install {
            *before = now.get(name.as_str()).map(|p| p.version.clone());
        }
        // Removals the plan names are done after the install, by name.
        for name in remove {
            if let Some(package) = now.get(name.as_str())
                && !tx.remove.iter().any(|(n, _)| n == name)
            {
                tx.remove.push((name.clone(), package.version.clone()));
            }
        }
        self.vet(&tx, exact, remove, rpm_compare, "dnf")?;
        Ok(tx)
    }
}

/// The exact versions and release the plan's driver set resolves to from
/// the cached metadata (for the window's `after`), when dnf knows them.
pub(super) fn resolve_for_plan(
    packages: &Packages,
    ctx: &Context,
    install: &[&PackageSpec],
) -> Option<Resolved> {
    if !packages.stream_ok(ctx.host) {
        return None;
    }
    let dnf = dnf_for(ctx);
    let lock_now = ctx
        .host
        .root
        .read_string(VERSIONLOCK_LIST)
        .unwrap_or_default();
    let changing: Vec<String> = install.iter().map(|s| s.name.clone()).collect();
    let plugins = dnf
        .plugins(
            ctx.host,
            Some(&packages.unlocked_list(&lock_now, &changing)),
        )
        .ok()?;
    packages
        .dnf_resolve(
            ctx.host,
            &dnf,
            plugins.as_ref(),
            &ctx.facts.all_packages,
            install,
        )
        .ok()
}

pub(super) fn describe_download(ctx: &Context) -> Vec<String> {
    let dnf = dnf_for(ctx);
    vec![
        dnf.makecache(None).display(),
        dnf.download(&[], None).display() + " <the driver set>",
    ]
}

/// The window's download: fresh metadata, the stream, and every package
/// of the transaction in dnf's cache before the first holder stops.
pub(super) fn prefetch(packages: &Packages, ctx: &Context) -> Result<(), StepError> {
    let host = ctx.host;
    let dnf = dnf_for(ctx);
    let installed = installed_now(host)?;
    let (install, _, _) = packages.pending(&installed);
    let lock_now = host.root.read_string(VERSIONLOCK_LIST).unwrap_or_default();
    let changing: Vec<String> = install.iter().map(|s| s.name.clone()).collect();
    let plugins = dnf
        .plugins(host, Some(&packages.unlocked_list(&lock_now, &changing)))
        .map_err(io_error("dnf plugin configuration"))?;
    run_checked(host.runner.as_ref(), &dnf.makecache(plugins.as_ref()))?;
    let (exact, release) = if packages.stream_ok(host) {
        packages
            .dnf_resolve(host, &dnf, plugins.as_ref(), &installed, &install)
            .map_err(StepError::Failed)?
    } else {
        // The stream changes inside the transaction: dnf resolves then.
        (Vec::new(), None)
    };
    if !exact.is_empty() {
        run_checked(
            host.runner.as_ref(),
            &dnf.download(&exact, plugins.as_ref()),
        )?;
    }
    let _ = packages.prepared.set(super::Prepared {
        exact,
        release,
        transaction: Default::default(),
        offered: Default::default(),
    });
    Ok(())
}

/// What check found to do: the packages to install, hold and remove, and
/// whether the lock list and the module stream are as planned.
struct Pending<'a> {
    install: &'a [&'a PackageSpec],
    hold: &'a [&'a PackageSpec],
    remove: &'a [String],
    lock_ok: bool,
    stream_ok: bool,
}

/// The commands apply will run, as plan shows them.
fn planned_commands(
    packages: &Packages,
    dnf: &Dnf,
    pending: &Pending,
    resolved: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut commands = Vec::new();
    if let (false, Some((module, stream))) = (pending.stream_ok, &packages.desired.stream) {
        commands.push(dnf.module_reset(module, None).display());
        commands.push(dnf.module_enable(module, stream, None).display());
    }
    if !pending.install.is_empty() || !pending.remove.is_empty() {
        commands.push(dnf.makecache(None).display());
    }
    if !pending.install.is_empty() {
        let exact: Vec<(String, String)> = pending
            .install
            .iter()
            .map(|spec| {
                let version = resolved
                    .get(spec.name.as_str())
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                (spec.name.clone(), version)
            })
            .collect();
        commands.push(dnf.install(&exact, None).display());
    }
    if !pending.remove.is_empty() {
        commands.push(dnf.remove(pending.remove, None).display());
    }
    if !pending.lock_ok || !pending.install.is_empty() || !pending.hold.is_empty() {
        commands.push(format!(
            "write {VERSIONLOCK_LIST} (lock {}{})",
            packages.held_names().join(", "),
            if packages.desired.pin.is_empty() {
                ""
            } else {
                ", and every other installed package of the driver's release"
            }
        ));
    }
    commands
}

pub fn check(packages: &Packages, ctx: &Context) -> Result<Check, StepError> {
    let host = ctx.host;
    let installed = &ctx.facts.all_packages;
    let (install, hold, remove) = packages.pending(installed);
    let lock_now = host.root.read_string(VERSIONLOCK_LIST).unwrap_or_default();
    let lock_ok = lock_now == packages.lock_list(&lock_now, &packages.held_versions(installed));
    let stream_ok = packages.stream_ok(host);
    if install.is_empty() && hold.is_empty() && remove.is_empty() && lock_ok && stream_ok {
        return Ok(Check::Satisfied(format!(
            "{} package(s) at the planned versions, version-locked",
            packages.desired.install.len()
        )));
    }
    let dnf = dnf_for(ctx);
    let changing: Vec<String> = install.iter().map(|s| s.name.clone()).collect();
    let plugins = dnf
        .plugins(host, Some(&packages.unlocked_list(&lock_now, &changing)))
        .map_err(io_error("dnf plugin configuration"))?;
    // Exact versions when the cached metadata (and the enabled stream)
    // already offer them; apply refreshes the metadata first.
    let (resolved, _) = if stream_ok {
        packages
            .dnf_resolve(host, &dnf, plugins.as_ref(), installed, &install)
            .unwrap_or_default()
    } else {
        (Vec::new(), None)
    };
    let resolved_map: BTreeMap<String, String> = resolved.iter().cloned().collect();
    let mut changes = planned_changes(installed, &install, &hold, &remove, &resolved_map);
    let simulated = !resolved.is_empty() && resolved.len() == install.len();
    if simulated {
        let tx =
            packages.dnf_simulate(host, &dnf, plugins.as_ref(), &resolved, &remove, installed)?;
        add_transaction(&mut changes, tx);
    }
    drop(plugins);
    let pending = Pending {
        install: &install,
        hold: &hold,
        remove: &remove,
        lock_ok,
        stream_ok,
    };
    let commands = planned_commands(packages, &dnf, &pending, &resolved_map);
    let action = action_of(&changes);
    // Every package locked, the installed ones too: what the
    // versionlock list below names.
    let locked = if !lock_ok || !install.is_empty() || !hold.is_empty() {
        packages.held_names().len()
    } else {
        0
    };
    let mut summary = format!(
        "{} to install or change, {} to remove, {locked} to lock",
        install.len(),
        remove.len(),
    );
    if !stream_ok && let Some((module, stream)) = &packages.desired.stream {
        summary.push_str(&format!("; enable module stream {module}:{stream}"));
    }
    if !simulated && !install.is_empty() {
        summary
            .push_str(" (exact versions and dependencies resolve at apply, after dnf makecache)");
    }
    Ok(Check::Pending(Change {
        action,
        summary,
        diff: Diff::Packages(changes),
        commands,
    }))
}

pub fn apply(packages: &Packages, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
    let host = ctx.host;
    let dnf = dnf_for(ctx);
    let installed = installed_now(host)?;
    super::record_before(ctx, journal, "dnf", versions_before(&installed), None)?;
    let (install, _, remove) = packages.pending(&installed);
    let lock_now = host.root.read_string(VERSIONLOCK_LIST).unwrap_or_default();
    // The packages that move are unlocked for this transaction only (a
    // plugin configuration of its own); the list is rewritten after.
    let changing: Vec<String> = install
        .iter()
        .map(|s| s.name.clone())
        .chain(remove.iter().cloned())
        .collect();
    let plugins = dnf
        .plugins(host, Some(&packages.unlocked_list(&lock_now, &changing)))
        .map_err(io_error("dnf plugin configuration"))?;
    if let (false, Some((module, stream))) = (packages.stream_ok(host), &packages.desired.stream) {
        journal.record_file(ID, &module_state_file(module))?;
        run_checked(
            host.runner.as_ref(),
            &dnf.module_reset(module, plugins.as_ref()),
        )?;
        run_checked(
            host.runner.as_ref(),
            &dnf.module_enable(module, stream, plugins.as_ref()),
        )?;
    }
    // Inside the window the metadata and packages are in dnf's cache
    // already (the download step): the transaction runs from it (-C).
    let prepared = packages.prepared().filter(|p| !p.exact.is_empty());
    if prepared.is_none() && (!install.is_empty() || !remove.is_empty()) {
        run_checked(host.runner.as_ref(), &dnf.makecache(plugins.as_ref()))?;
    }
    if !install.is_empty() {
        let exact = match prepared {
            Some(prepared) => prepared.exact.clone(),
            None => {
                packages
                    .dnf_resolve(host, &dnf, plugins.as_ref(), &installed, &install)
                    .map_err(StepError::Failed)?
                    .0
            }
        };
        packages.dnf_simulate(host, &dnf, plugins.as_ref(), &exact, &remove, &installed)?;
        let mut cmd = dnf.install(&exact, plugins.as_ref());
        if prepared.is_some() {
            cmd = cmd.arg("--cacheonly");
        }
        run_checked(host.runner.as_ref(), &cmd)?;
    }
    let after = installed_now(host)?;
    let still: Vec<String> = remove
        .iter()
        .filter(|name| after.iter().any(|p| &p.name == *name))
        .cloned()
        .collect();
    if !still.is_empty() {
        run_checked(host.runner.as_ref(), &dnf.remove(&still, plugins.as_ref()))?;
    }
    let after = installed_now(host)?;
    if let Some(release) = packages.installed_driver(&after) {
        super::modules::build_missing(host, &release);
        super::modules::check_built(&host.root, &release)?;
    }
    let lock = packages.lock_list(&lock_now, &packages.held_versions(&after));
    if lock != lock_now {
        journal.record_file(ID, VERSIONLOCK_LIST)?;
        host.root
            .write_atomic(VERSIONLOCK_LIST, lock.as_bytes(), 0o644)
            .map_err(io_error(VERSIONLOCK_LIST))?;
    }
    Ok(())
}

/// The installed set as the journal keeps it: one entry per name, and
/// "name=version" for the second and later versions of an installonly
/// package (kernel-devel of several kernels).
fn versions_before(
    installed: &[crate::facts::packages::Package],
) -> BTreeMap<String, PackageState> {
    let mut before = BTreeMap::new();
    for package in installed {
        let key = if before.contains_key(&package.name) {
            format!("{}={}", package.name, package.version)
        } else {
            package.name.clone()
        };
        before.insert(
            key,
            PackageState {
                version: package.version.clone(),
                held: package.held,
            },
        );
    }
    before
}

/// Returns the rpm database to `before`: removes what was added, puts back
/// the recorded versions. Locks are files (restored by their own entries).
/// Where rpm unpacks packages' files (what the sweep below walks).
const RPM_TREES: &[&str] = &["/usr", "/etc", "/opt", "/boot", "/var/lib"];

/// Whether `name` is one of rpm's temporaries: it unpacks each file as
/// `PATH;XXXXXXXX` (eight hex digits) and renames it into place, so a
/// transaction killed mid-unpack leaves them behind, and no later
/// transaction removes them.
fn is_rpm_temporary(name: &str) -> bool {
    name.rsplit_once(';').is_some_and(|(path, suffix)| {
        !path.is_empty() && suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Whether `meta` was made after `began`: its birth time, where the
/// filesystem keeps one.
fn born_since(meta: &std::fs::Metadata, began: Option<SystemTime>) -> bool {
    match (began, meta.created()) {
        (Some(began), Ok(born)) => born > began,
        _ => false,
    }
}

/// Removes rpm's temporaries under the trees packages unpack into, and
/// the directories a killed transaction made for a package it never
/// recorded: empty, made since the generation `began`, owned by no
/// installed package. Links are never followed. Returns what it removed.
pub fn sweep_rpm_temporaries(host: &Host, began: Option<SystemTime>) -> Vec<String> {
    let root = &host.root;
    let mut removed = Vec::new();
    let mut new_dirs = Vec::new();
    let mut pending: Vec<String> = RPM_TREES.iter().map(|d| d.to_string()).collect();
    while let Some(dir) = pending.pop() {
        for name in root.read_dir(&dir).unwrap_or_default() {
            let path = format!("{dir}/{name}");
            let Ok(meta) = root.symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if born_since(&meta, began) {
                    new_dirs.push(path.clone());
                }
                pending.push(path);
            } else if is_rpm_temporary(&name) && root.remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    if new_dirs.is_empty() {
        return removed;
    }
    // Without the database's word, nothing is taken as unowned.
    let Some(owned) = owned_dirs(host) else {
        return removed;
    };
    // Deepest first: a parent empties once its children are gone.
    new_dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    for dir in new_dirs {
        let empty = root.read_dir(&dir).is_ok_and(|names| names.is_empty());
        if empty && !owned.contains(&dir) && std::fs::remove_dir(root.join(&dir)).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

/// Every path the installed packages own (`rpm -qa` of their file lists).
fn owned_dirs(host: &Host) -> Option<BTreeSet<String>> {
    let query = crate::facts::packages::rpm_files_query(host)?;
    let output = host.runner.run(&query).ok().filter(|out| out.success())?;
    Some(output.stdout.lines().map(str::to_string).collect())
}

pub fn undo(
    host: &Host,
    release: Option<&str>,
    before: &BTreeMap<String, PackageState>,
    began: Option<SystemTime>,
) -> Result<(), StepError> {
    // A transaction killed mid-unpack (this run's, or one a killed run
    // left) leaves rpm's temporaries; the database itself is whole (rpm
    // commits each package's header in one sqlite transaction).
    sweep_rpm_temporaries(host, began);
    let dnf = Dnf::for_host(host, release);
    let installed = installed_now(host)?;
    let mut was: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, state) in before {
        let name = key.split_once('=').map_or(key.as_str(), |(n, _)| n);
        was.entry(name).or_default().insert(state.version.as_str());
    }
    let mut now: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for package in &installed {
        now.entry(package.name.as_str())
            .or_default()
            .insert(package.version.as_str());
    }
    let mut remove: Vec<String> = Vec::new();
    let mut restore: Vec<(String, String)> = Vec::new();
    let empty = BTreeSet::new();
    // Keys rpm imported from the repository this generation set up.
    let keys: Vec<String> = now
        .get("gpg-pubkey")
        .into_iter()
        .flatten()
        .filter(|v| !was.get("gpg-pubkey").is_some_and(|w| w.contains(*v)))
        .map(|v| format!("gpg-pubkey-{v}"))
        .collect();
    now.remove("gpg-pubkey");
    was.remove("gpg-pubkey");
    for (name, versions) in &now {
        let previous = was.get(name).unwrap_or(&empty);
        let extra: Vec<&&str> = versions.difference(previous).collect();
        let missing: Vec<&&str> = previous.difference(versions).collect();
        if previous.is_empty() {
            remove.push(name.to_string());
        } else if !extra.is_empty() && (missing.is_empty() || versions.len() > 1) {
            remove.extend(extra.iter().map(|v| format!("{name}-{v}")));
        }
    }
    for (name, versions) in &was {
        let current = now.get(name).unwrap_or(&empty);
        for version in versions.difference(current) {
            restore.push((name.to_string(), version.to_string()));
        }
    }
    // dnf obeys the lock list as it is now (restored by the file entries
    // undone before this one), and needs none to exist.
    let lock = host.root.read_string(VERSIONLOCK_LIST).unwrap_or_default();
    let plugins = dnf
        .plugins(host, Some(&lock))
        .map_err(io_error("dnf plugin configuration"))?;
    if !remove.is_empty() {
        run_checked(host.runner.as_ref(), &dnf.remove(&remove, plugins.as_ref()))?;
    }
    if !restore.is_empty() {
        run_checked(
            host.runner.as_ref(),
            &dnf.install(&restore, plugins.as_ref()),
        )?;
    }
    if !keys.is_empty() {
        run_checked(host.runner.as_ref(), &dnf.rpm_erase(&keys))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distro::{Desired, Manager, VersionSpec};

    fn packages() -> Packages {
        let spec = |name: &str, hold| PackageSpec {
            name: name.into(),
            version: VersionSpec::Any,
            hold,
            alternatives: Vec::new(),
            optional: false,
        };
        Packages::new(Desired {
            manager: Manager::Dnf,
            install: vec![spec("nvidia-driver-cuda", true), spec("dkms", false)],
            ..Desired::default()
        })
    }

    #[test]
    fn the_lock_list_keeps_other_entries_and_replaces_its_own() {
        let existing =
            "# site\nnvidia-driver-cuda-3:570.124.06-1.el9.*\nopenssl-1:3.0.7-27.el9.*\n";
        let list = packages().lock_list(
            existing,
            &[("nvidia-driver-cuda".into(), "3:580.105.08-1.el9".into())],
        );
        assert!(list.contains("nvidia-driver-cuda-3:580.105.08-1.el9.*\n"));
        assert!(!list.contains("570.124.06"), "{list}");
        assert!(list.contains("openssl-1:3.0.7-27.el9.*\n"), "{list}");
        let unlocked = packages().unlocked_list(existing, &["nvidia-driver-cuda".into()]);
        assert!(!unlocked.contains("nvidia-driver-cuda"));
        assert!(unlocked.contains("openssl"));
    }

    #[test]
    fn lock_entries_name_their_package() {
        assert_eq!(
            entry_name("libnvidia-nscq-580-0:580.105.08-1.*"),
            Some("libnvidia-nscq-580")
        );
        assert_eq!(
            entry_name("nvidia-modprobe-3:580.105.08-1.el9.*"),
            Some("nvidia-modprobe")
        );
        assert_eq!(entry_name("openssl-3.0.7-27.el9.*"), Some("openssl"));
        assert!(!entry_names(
            "libnvidia-nscq-580-0:580.105.08-1.*",
            "libnvidia-nscq"
        ));
        // A lock of the driver's own package moves with the set.
        let mut driver = packages();
        driver.desired.pin = vec!["*nvidia*".into()];
        let unlocked = driver.unlocked_list(
            "nvidia-modprobe-3:580.95.05-1.el9.*\nopenssl-1:3.0.7-27.el9.*\n",
            &[],
        );
        assert_eq!(unlocked, "openssl-1:3.0.7-27.el9.*\n");
    }

    #[test]
    fn installonly_versions_are_kept_apart() {
        let package = |name: &str, version: &str| crate::facts::packages::Package {
            name: name.into(),
            version: version.into(),
            arch: None,
            held: false,
            source: None,
            origin: None,
        };
        let before = versions_before(&[
            package("kernel-devel", "5.14.0-427.13.1.el9_4"),
            package("kernel-devel", "5.14.0-503.11.1.el9_5"),
        ]);
        assert_eq!(before.len(), 2);
        assert_eq!(
            before["kernel-devel=5.14.0-503.11.1.el9_5"].version,
            "5.14.0-503.11.1.el9_5"
        );
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::is_rpm_temporary;

    #[test]
    fn rpm_temporaries_are_known_by_their_suffix() {
        assert!(is_rpm_temporary("libcuda.so.1;6b11836a"));
        assert!(!is_rpm_temporary("libcuda.so.1"));
        assert!(!is_rpm_temporary(";6b11836a"));
        assert!(!is_rpm_temporary("a;6b11836"));
        assert!(!is_rpm_temporary("notes;about-it"));
    }
}
