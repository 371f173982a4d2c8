//! apt and dpkg: the commands provision runs on the Debian family, and the
//! parsers for what they print.

use std::collections::BTreeMap;

use crate::host::{Cmd, Root};

fn apt_get() -> Cmd {
    Cmd::change("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("APT_LISTCHANGES_FRONTEND", "none")
}

/// Refreshes the package lists.
pub fn update() -> Cmd {
    apt_get().args(["update", "-q"])
}

/// The offline bundle's apt source (see step::bundle).
pub const BUNDLE_LIST: &str = "/etc/apt/sources.list.d/provision-bundle.list";

/// Refreshes the package lists of the root: only the offline bundle's
/// when it is served from one, keeping the others (on an air-gapped host
/// the usual sources cannot be reached, and apt would spend its retries on
/// each).
pub fn update_for(root: &Root) -> Cmd {
    if !root.exists(BUNDLE_LIST) {
        return update();
    }
    apt_get().args([
        "update".to_string(),
        "-q".into(),
        "-o".into(),
        format!("Dir::Etc::SourceList={BUNDLE_LIST}"),
        "-o".into(),
        "Dir::Etc::SourceParts=-".into(),
        "-o".into(),
        "APT::Get::List-Cleanup=0".into(),
    ])
}

/// apt options for a command that only reads: no binary cache files
/// (`pkgcache.bin`, `srcpkgcache.bin`) written beside the lists, so asking
/// apt leaves `/var/cache/apt` as it was (and works on a read-only root).
pub const READ_ONLY: [&str; 4] = [
    "-o",
    "Dir::Cache::pkgcache=",
    "-o",
    "Dir::Cache::srcpkgcache=",
];

/// `apt-cache` that only reads.
pub fn apt_cache() -> Cmd {
    Cmd::read("apt-cache").args(READ_ONLY)
}

/// Every version of each package the configured repositories offer.
pub fn madison(names: &[String]) -> Cmd {
    apt_cache().arg("madison").args(names.iter().cloned())
}

/// `apt-cache madison` lines: " name | version | source". Versions keep
/// the order apt prints (newest first), without duplicates.
pub fn parse_madison(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split('|').map(str::trim);
        let (Some(name), Some(version), Some(source)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if source.ends_with("Sources") || name.is_empty() || version.is_empty() {
            continue;
        }
        let list = versions.entry(name.to_string()).or_default();
        if !list.iter().any(|v| v == version) {
            list.push(version.to_string());
        }
    }
    versions
}

/// One transaction: install exact versions, purge the packages to remove.
/// Recommends are left out: a compute node gets what the plan names.
/// `change_held`: apt may change held packages (an undo returning to a
/// recorded set, or a transaction simulated so, holds in place, and vetted
/// ahead); else every hold is left to the caller (a held blocker stops it).
pub fn install(exact: &[(String, String)], purge: &[String], change_held: bool) -> Cmd {
    let mut cmd = apt_get().args([
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "--purge",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ]);
    cmd = cmd.arg("--allow-downgrades");
    if change_held {
        cmd = cmd.arg("--allow-change-held-packages");
    }
    // An empty version leaves the choice to apt (under the pin).
    cmd.args(exact.iter().map(|(name, version)| match version.as_str() {
        "" => name.clone(),
        version => format!("{name}={version}"),
    }))
    .args(purge.iter().map(|name| format!("{name}-")))
}

/// Downloads the archives of exact versions into apt's cache, installing
/// nothing: what the transaction will need, fetched ahead of it.
pub fn download(exact: &[(String, String)], purge: &[String]) -> Cmd {
    apt_get()
        .args([
            "install",
            "-y",
            "-q",
            "--download-only",
            "--no-install-recommends",
        ])
        .arg("--allow-downgrades")
        .arg("--allow-change-held-packages")
        .args(exact.iter().map(|(name, version)| match version.as_str() {
            "" => name.clone(),
            version => format!("{name}={version}"),
        }))
        .args(purge.iter().map(|name| format!("{name}-")))
}

/// What dpkg says is left half-done (`dpkg --audit`): packages an
/// interrupted dpkg left unpacked, half-installed or half-configured.
pub fn audit() -> Cmd {
    Cmd::read("dpkg").arg("--audit")
}

/// Finishes what an interrupted dpkg left: apt refuses to run until it is
/// done ("dpkg was interrupted, you must manually run 'dpkg --configure -a'").
pub fn configure_pending() -> Cmd {
    Cmd::change("dpkg")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["--configure", "-a", "--force-confdef", "--force-confold"])
}

/// Packages dpkg marks "reinstall required" (killed mid-unpack), with the
/// version it was unpacking.
pub fn reinstall_required(status: &str) -> Vec<(String, String)> {
    let mut broken = Vec::new();
    for stanza in status.split("\n\n") {
        let field = |key: &str| {
            stanza
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(|value| value.trim().to_string())
        };
        if let (Some(name), Some(version), Some(state)) =
            (field("Package:"), field("Version:"), field("Status:"))
            && state.split_whitespace().nth(1) == Some("reinstreq")
        {
            broken.push((name, version));
        }
    }
    broken
}

/// Makes half-installed packages whole again, at the version they were.
pub fn reinstall(packages: &[(String, String)]) -> Cmd {
    apt_get()
        .args([
            "install",
            "-y",
            "-q",
            "--reinstall",
            "--no-install-recommends",
            "--allow-downgrades",
            "--allow-change-held-packages",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ])
        .args(
            packages
                .iter()
                .map(|(name, version)| format!("{name}={version}")),
        )
}

/// The last resort for a half-installed package no repository offers any
/// more: dpkg removes it although it is not whole.
pub fn force_remove_broken(names: &[String]) -> Cmd {
    Cmd::change("dpkg")
        .args(["--purge", "--force-remove-reinstreq"])
        .args(names.iter().cloned())
}

/// Purges packages (and nothing else).
pub fn purge(names: &[String]) -> Cmd {
    apt_get()
        .args(["purge", "-y", "-q", "--allow-change-held-packages"])
        .args(names.iter().cloned())
}

/// Where provision pins the driver release.
pub const PIN_FILE: &str = "/etc/apt/preferences.d/provision-nvidia-driver.pref";

/// apt preferences (apt_preferences(5)) that make every package matching
/// `globs` take the driver's release: a dependency the plan does not name
/// (libnvidia-ml1 under nvidia-smi) cannot drift to a newer branch, and a
/// meta package pointing at another release cannot move the host.
pub fn pin_file(globs: &[String], upstream: &str) -> String {
    format!(
        "{}Explanation: the NVIDIA driver stays at {upstream} until the plan changes\nPackage: {}\nPin: version {upstream}-*\nPin-Priority: 1001\n",
        crate::step::file::header("pin the NVIDIA driver release"),
        globs.join(" ")
    )
}

/// `apt-mark hold`. apt-mark skips a package its binary cache already
/// shows held, and that cache is trusted while dpkg's status keeps its size
/// and mtime second; with the cache files off, it reads dpkg's state now.
pub fn hold(names: &[String]) -> Cmd {
    apt_mark("hold", names)
}

pub fn unhold(names: &[String]) -> Cmd {
    apt_mark("unhold", names)
}

/// `apt-mark auto`: installed as a dependency (autoremovable once nothing
/// needs it), as the one transaction would have marked it.
pub fn mark_auto(names: &[String]) -> Cmd {
    apt_mark("auto", names)
}

fn apt_mark(verb: &str, names: &[String]) -> Cmd {
    Cmd::change("apt-mark")
        .args([
            "-o",
            "Dir::Cache::pkgcache=",
            "-o",
            "Dir::Cache::srcpkgcache=",
            verb,
        ])
        .args(names.iter().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madison_of_bookworm() {
        // `apt-cache madison nvidia-driver nvidia-open-kernel-dkms` in the bookworm rootfs.
        let text = "\
nvidia-driver | 535.309.01-0+deb12u1 | http://deb.debian.org/debian-security bookworm-security/non-free amd64 Packages
nvidia-driver | 535.261.03-1 | http://deb.debian.org/debian bookworm/non-free amd64 Packages
nvidia-open-kernel-dkms | 535.261.03-1 | http://deb.debian.org/debian bookworm/contrib amd64 Packages
nvidia-graphics-drivers | 535.261.03-1 | http://deb.debian.org/debian bookworm/non-free Sources
";
        let versions = parse_madison(text);
        assert_eq!(
            versions["nvidia-driver"],
            ["535.309.01-0+deb12u1", "535.261.03-1"]
        );
        assert_eq!(versions["nvidia-open-kernel-dkms"], ["535.261.03-1"]);
        assert!(!versions.contains_key("nvidia-graphics-drivers"));
    }

    #[test]
    fn install_is_one_transaction() {
        let cmd = install(
            &[("libcuda1".into(), "535.261.03-1".into())],
            &["nvidia-kernel-dkms".into()],
            false,
        );
        let text = cmd.display();
        assert!(
            !text.contains("--allow-change-held-packages"),
            "a held blocker must stop a forward transaction"
        );
        assert!(text.starts_with(
            "DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none apt-get install -y"
        ));
        assert!(
            text.ends_with("libcuda1=535.261.03-1 nvidia-kernel-dkms-"),
            "{text}"
        );
    }
}

/// What `apt-get -s` says a transaction would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    /// (name, version before if any, version after)
    pub install: Vec<(String, Option<String>, String)>,
    /// (name, version)
    pub remove: Vec<(String, String)>,
}

/// The same transaction as [`install`], simulated (`apt-get -s`): nothing
/// changes.
pub fn simulate(exact: &[(String, String)], purge: &[String]) -> Cmd {
    // The simulation's planner log (var/log/apt/eipp.log.xz) goes nowhere.
    let cmd = Cmd::read("apt-get")
        .args(READ_ONLY)
        .args(["-o", "Dir::Log::Planner=/dev/null"])
        .args(["-s", "-q", "-o", "Debug::NoLocking=1"]);
    let install = install(exact, purge, false);
    // The same arguments as the real transaction, after "apt-get". Held
    // packages may change here so that the simulation shows which ones
    // would: any the plan does not name is a blocker the caller names; the
    // transaction vetted this way then runs as simulated, holds in place
    // (or, not vetted ahead, after the plan's own are unheld).
    cmd.args(install.args.into_iter().filter(|a| a != "-y"))
        .arg("--allow-change-held-packages")
}

/// Parses `apt-get -s` lines: "Inst name [old] (new ...)", "Remv name [v]",
/// "Purg name [v]".
pub fn parse_simulation(text: &str) -> Transaction {
    let mut tx = Transaction::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        let bracketed = rest
            .first()
            .filter(|w| w.starts_with('['))
            .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string());
        match kind {
            "Inst" => {
                let new = rest
                    .iter()
                    .find(|w| w.starts_with('('))
                    .map(|w| w.trim_start_matches('(').to_string());
                if let Some(new) = new {
                    tx.install.push((name.to_string(), bracketed, new));
                }
            }
            "Remv" | "Purg" => tx
                .remove
                .push((name.to_string(), bracketed.unwrap_or_default())),
            _ => {}
        }
    }
    tx
}

/// Whether `name` matches a shell-style glob with `*` wildcards.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name.ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod simulation_tests {
    use super::*;

    #[test]
    fn simulation_output_of_bookworm_apt() {
        // `apt-get -s install ...` in the bookworm rootfs, with an unrelated
        // package that conflicts with nvidia-smi installed.
        let text = "\
The following packages will be REMOVED:
  gpu-burn-legacy*
Purg gpu-burn-legacy [1.0-1]
Inst libcuda1 (535.247.01-1~deb12u1 127.0.0.1 [amd64])
Inst nvidia-smi [535.216.03-1~deb12u1] (535.247.01-1~deb12u1 127.0.0.1 [amd64])
Conf libcuda1 (535.247.01-1~deb12u1 127.0.0.1 [amd64])
";
        let tx = parse_simulation(text);
        assert_eq!(
            tx.remove,
            vec![("gpu-burn-legacy".to_string(), "1.0-1".to_string())]
        );
        assert_eq!(
            tx.install,
            vec![
                (
                    "libcuda1".to_string(),
                    None,
                    "535.247.01-1~deb12u1".to_string()
                ),
                (
                    "nvidia-smi".to_string(),
                    Some("535.216.03-1~deb12u1".to_string()),
                    "535.247.01-1~deb12u1".to_string()
                ),
            ]
        );
    }

    #[test]
    fn half_installed_packages_are_found() {
        let status = "Package: libcuda1\nStatus: install reinstreq half-installed\nVersion: 570.124.06-1\n\nPackage: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b7\n";
        assert_eq!(
            reinstall_required(status),
            [("libcuda1".to_string(), "570.124.06-1".to_string())]
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*nvidia*", "libnvidia-ml1"));
        assert!(glob_match("libcuda*", "libcuda1"));
        assert!(!glob_match("libcuda*", "xlibcuda"));
        assert!(glob_match("cuda-drivers*", "cuda-drivers-580"));
        assert!(!glob_match("*nvidia*", "gpu-burn-legacy"));
    }
}
