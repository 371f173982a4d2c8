//! apt and dpkg: the commands provision runs on the Debian family, and the
//! parsers for what they print.

use std::collections::BTreeMap;

use crate::host::Cmd;

fn apt_get() -> Cmd {
    Cmd::change("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("APT_LISTCHANGES_FRONTEND", "none")
}

/// Refreshes the package lists.
pub fn update() -> Cmd {
    apt_get().args(["update", "-q"])
}

/// Every version of each package the configured repositories offer.
pub fn madison(names: &[String]) -> Cmd {
    Cmd::read("apt-cache")
        .arg("madison")
        .args(names.iter().cloned())
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
pub fn install(exact: &[(String, String)], purge: &[String], allow_downgrades: bool) -> Cmd {
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
    if allow_downgrades {
        cmd = cmd.args(["--allow-downgrades", "--allow-change-held-packages"]);
    }
    // An empty version leaves the choice to apt (under the pin).
    cmd.args(exact.iter().map(|(name, version)| match version.as_str() {
        "" => name.clone(),
        version => format!("{name}={version}"),
    }))
    .args(purge.iter().map(|name| format!("{name}-")))
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

pub fn hold(names: &[String]) -> Cmd {
    Cmd::change("apt-mark")
        .arg("hold")
        .args(names.iter().cloned())
}

pub fn unhold(names: &[String]) -> Cmd {
    Cmd::change("apt-mark")
        .arg("unhold")
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
        assert!(text.starts_with(
            "DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none apt-get install -y"
        ));
        assert!(
            text.ends_with("libcuda1=535.261.03-1 nvidia-kernel-dkms-"),
            "{text}"
        );
    }
}
