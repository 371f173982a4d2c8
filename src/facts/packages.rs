//! Installed packages: dpkg's status file on the Debian family (read
//! directly, no process), the rpm database through the Runner on RHEL.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Unknown;
use super::os::Family;
use crate::host::{Cmd, Host, Root};

pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    /// Held (`apt-mark hold`, dnf versionlock).
    pub held: bool,
    pub source: Option<String>,
    /// The repository the installed version came from, when the package
    /// manager was asked (`detect --origins`).
    #[serde(default)]
    pub origin: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Packages {
    /// "dpkg" or "rpm".
    pub manager: Option<String>,
    /// NVIDIA, CUDA and related packages.
    pub gpu: Vec<Package>,
    pub unattended_upgrades: Option<bool>,
    pub unknown: Unknown,
}

/// Every installed package in a dpkg status file. Stanzas without a name
/// or version, or not in an installed state, are skipped.
pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    parse_dpkg_status_where(text, |_| true)
}

/// Like [`parse_dpkg_status`], for the packages whose name `wanted`
/// accepts: other stanzas are skipped after their first line, without
/// allocating (a full Ubuntu status file holds thousands).
pub fn parse_dpkg_status_where(text: &str, wanted: impl Fn(&str) -> bool) -> Vec<Package> {
    let mut packages = Vec::new();
    for stanza in text.split("\n\n") {
        let first = stanza.trim_start_matches('\n').lines().next().unwrap_or("");
        if let Some(name) = first.strip_prefix("Package:")
            && !wanted(name.trim())
        {
            continue;
        }
        let mut name = None;
        let mut version = None;
        let mut arch = None;
        let mut status = None;
        let mut source = None;
        for line in stanza.lines() {
            if line.starts_with(' ') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Package" => name = Some(value),
                "Version" => version = Some(value),
                "Architecture" => arch = Some(value),
                "Status" => status = Some(value),
                "Source" => source = Some(value.split_whitespace().next().unwrap_or(value)),
                _ => {}
            }
        }
        let (Some(name), Some(version), Some(status)) = (name, version, status) else {
            continue;
        };
        let mut words = status.split_whitespace();
        let want = words.next().unwrap_or("");
        let state = words.nth(1).unwrap_or("");
        if !matches!(
            state,
            "installed"
                | "half-configured"
                | "half-installed"
                | "unpacked"
                | "triggers-awaited"
                | "triggers-pending"
        ) {
            continue;
        }
        packages.push(Package {
            name: name.to_string(),
            version: version.to_string(),
            arch: arch.map(str::to_string),
            held: want == "hold",
            source: source.map(str::to_string),
            origin: None,
        });
    }
    packages
}

/// NVIDIA, CUDA and the libraries that ride with them.
pub fn is_gpu_package(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "libcuda",
        "libcublas",
        "libcufft",
        "libcufile",
        "libcurand",
        "libcusolver",
        "libcusparse",
        "libcudnn",
        "libcutensor",
        "libcupti",
        "libnpp",
        "libnvjpeg",
        "libnccl",
        "libnvidia",
        "libxnvctrl",
        "libnvjitlink",
        "libnvfatbin",
        "nsight",
        "datacenter-gpu-manager",
        "firmware-nvidia",
        "kmod-nvidia",
        "dkms",
        "gds-tools",
    ];
    name.contains("nvidia")
        || name.starts_with("cuda")
        || name.contains("-cuda")
        || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Every installed package (all of them, not only GPU ones).
pub fn installed(host: &Host, family: Option<Family>) -> Result<Vec<Package>, String> {
    match family {
        Some(Family::Rhel) => rpm_installed(host),
        _ => {
            let text = host
                .root
                .read_string(DPKG_STATUS)
                .map_err(|error| format!("cannot read {DPKG_STATUS}: {error}"))?;
            Ok(parse_dpkg_status(&text))
        }
    }
}

pub fn parse_rpm_query(text: &str, locked: &[String]) -> Vec<Package> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next()?.to_string();
            let version = fields.next()?;
            let version = version.strip_prefix("0:").unwrap_or(version).to_string();
            let arch = fields.next().map(str::to_string);
            let held = locked.iter().any(|l| versionlock_matches(l, &name));
            Some(Package {
                name,
                version,
                arch,
                held,
                source: None,
                origin: None,
            })
        })
        .collect()
}

/// A `dnf versionlock` entry ("nvidia-driver-3:580.95.05-1.el9.*") names `name`.
fn versionlock_matches(entry: &str, name: &str) -> bool {
    let entry = entry.trim_start_matches('!');
    entry
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// `rpm -qa` with an exact, tab-separated format.
const RPM_PACKAGES: &[&str] = &[
    "-qa",
    "--qf",
    "%{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\n",
];

/// `rpm -qa` listing every path the installed packages own, one a line.
const RPM_FILES: &[&str] = &["-qa", "--qf", "[%{FILENAMES}\\n]"];

/// `rpm ARGS` by the root's own rpm, or from outside with `--root` when
/// the root carries a database but no rpm (an image built with dnf
/// --installroot); none without either.
fn rpm_command(host: &Host, args: &[&str]) -> Option<Cmd> {
    if host.has_tool("rpm") {
        Some(Cmd::read("rpm").args(args.iter().copied()))
    } else if has_rpm_database(&host.root) {
        Some(crate::distro::dnf::Dnf::for_host(host, None).rpm_read(args))
    } else {
        None
    }
}

/// The query for every path the installed rpms own.
pub fn rpm_files_query(host: &Host) -> Option<Cmd> {
    rpm_command(host, RPM_FILES)
}

fn rpm_installed(host: &Host) -> Result<Vec<Package>, String> {
    let query = rpm_command(host, RPM_PACKAGES).ok_or_else(|| {
        "the root has neither rpm nor an rpm database (/var/lib/rpm, /usr/lib/sysimage/rpm)"
            .to_string()
    })?;
    let output = host.runner.run(&query).map_err(|error| error.to_string())?;
    if !output.success() {
        return Err(format!("`rpm -qa` failed: {}", output.tail));
    }
    let locked = versionlocks(&host.root);
    Ok(parse_rpm_query(&output.stdout, &locked))
}

pub use crate::distro::dnf::VERSIONLOCK_LIST;

/// Where rpm keeps its database: RHEL 8/9, RHEL 10 and Fedora, and the
/// per-user default of Debian's rpm (dnf --installroot from a Debian host).
const RPM_DATABASES: &[&str] = &["/var/lib/rpm", "/usr/lib/sysimage/rpm", "/root/.rpmdb"];

pub fn has_rpm_database(root: &Root) -> bool {
    RPM_DATABASES.iter().any(|db| root.is_dir(db))
}

pub fn versionlocks(root: &Root) -> Vec<String> {
    root.read_string(VERSIONLOCK_LIST)
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `detect` reports this package (GPU packages and the automatic
/// upgraders that can move them).
fn reported(name: &str) -> bool {
    is_gpu_package(name) || name == "unattended-upgrades" || name == "dnf-automatic"
}

/// `apt-cache policy` for the installed version of each package: the
/// first repository line under the `***` entry ("local" when only dpkg's
/// status file has it: no configured repository offers that version).
pub fn parse_apt_policy(text: &str) -> BTreeMap<String, String> {
    let mut origins = BTreeMap::new();
    let mut package: Option<String> = None;
    let mut in_installed = false;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            package = Some(line.trim_end_matches(':').to_string());
            in_installed = false;
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("*** ") {
            in_installed = true;
            continue;
        }
        let Some(name) = &package else { continue };
        if in_installed {
            let mut words = trimmed.split_whitespace();
            let priority = words.next().unwrap_or("");
            if !priority.bytes().all(|b| b.is_ascii_digit()) {
                in_installed = false;
                continue;
            }
            // "URL suite/component arch Packages" -> "URL suite/component".
            let mut rest: Vec<&str> = words.collect();
            if rest.last() == Some(&"Packages") {
                rest.pop();
            }
            if rest.len() > 1 && matches!(rest.last(), Some(&("amd64" | "arm64" | "i386" | "all")))
            {
                rest.pop();
            }
            let origin = rest.join(" ");
            if origin == "/var/lib/dpkg/status" {
                origins
                    .entry(name.clone())
                    .or_insert_with(|| "local".to_string());
            } else {
                origins.insert(name.clone(), origin);
                in_installed = false;
            }
        }
    }
    origins
}

/// `dnf list --installed` lines ("name.arch  version  @repo").
pub fn parse_dnf_installed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name_arch = words.next()?;
            let _version = words.next()?;
            let repo = words.next()?.strip_prefix('@')?;
            let name = name_arch.rsplit_once('.').map_or(name_arch, |(n, _)| n);
            Some((name.to_string(), repo.to_string()))
        })
        .collect()
}

/// Asks the package manager where the installed GPU packages came from.
pub fn fill_origins(host: &Host, family: Option<Family>, packages: &mut Packages) {
    if packages.gpu.is_empty() {
        return;
    }
    let names: Vec<String> = packages.gpu.iter().map(|p| p.name.clone()).collect();
    type Parser = fn(&str) -> BTreeMap<String, String>;
    let (cmd, parse): (Cmd, Parser) = match family {
        Some(Family::Rhel) => (
            crate::distro::dnf::Dnf::for_host(host, None).list_installed(&names),
            parse_dnf_installed,
        ),
        _ => (
            crate::distro::apt::apt_cache().arg("policy").args(names),
            parse_apt_policy,
        ),
    };
    match host.runner.run(&cmd) {
        Ok(output) if output.success() => {
            let origins = parse(&output.stdout);
            for package in &mut packages.gpu {
                package.origin = origins.get(&package.name).cloned();
            }
        }
        Ok(output) => packages
            .unknown
            .note("origin", format!("`{cmd}` failed: {}", output.tail)),
        Err(error) => packages.unknown.note("origin", error.to_string()),
    }
}

/// The packages section, and every installed package when `full` (the
/// package steps need the full set; `detect` does not).
pub fn gather(host: &Host, family: Option<Family>, full: bool) -> (Packages, Vec<Package>) {
    let mut packages = Packages {
        manager: match family {
            Some(Family::Rhel) => Some("rpm".into()),
            Some(Family::Debian) => Some("dpkg".into()),
            None if host.root.exists(DPKG_STATUS) => Some("dpkg".into()),
            None => None,
        },
        ..Packages::default()
    };
    let listed = match family {
        Some(Family::Rhel) => rpm_installed(host),
        _ => host
            .root
            .read_string(DPKG_STATUS)
            .map_err(|error| format!("cannot read {DPKG_STATUS}: {error}"))
            .map(|text| {
                if full {
                    parse_dpkg_status(&text)
                } else {
                    parse_dpkg_status_where(&text, reported)
                }
            }),
    };
    let listed = match listed {
        Ok(listed) => listed,
        Err(reason) => {
            packages.unknown.note("gpu", reason);
            return (packages, Vec::new());
        }
    };
    packages.gpu = listed
        .iter()
        .filter(|p| is_gpu_package(&p.name))
        .cloned()
        .collect();
    packages.unattended_upgrades = Some(
        listed
            .iter()
            .any(|p| !is_gpu_package(&p.name) && reported(&p.name)),
    );
    (packages, if full { listed } else { Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_of_the_h200_host() {
        let text = include_str!(
            "../../tests/fixtures/hosts/ubuntu-24.04-h200-580-open/var/lib/dpkg/status"
        );
        let packages = parse_dpkg_status(text);
        assert_eq!(packages.len(), 53);
        let compat = packages
            .iter()
            .find(|p| p.name == "cuda-compat-13-0")
            .unwrap();
        assert_eq!(compat.version, "580.95.05-0ubuntu1");
        assert!(!compat.held);
        let cudnn = packages
            .iter()
            .find(|p| p.name == "libcudnn9-cuda-13")
            .unwrap();
        assert!(cudnn.held, "libcudnn9 is held on that host");
        assert!(
            packages.iter().all(|p| is_gpu_package(&p.name)),
            "the snapshot is filtered to GPU packages"
        );
    }

    #[test]
    fn origins_from_apt_cache_policy() {
        let text = "\
cuda-compat-13-0:
  Installed: 580.95.05-0ubuntu1
  Candidate: 580.95.05-0ubuntu1
  Version table:
 *** 580.95.05-0ubuntu1 600
        600 https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64  Packages
        100 /var/lib/dpkg/status
     580.82.07-0ubuntu1 600
        600 https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64  Packages
libcudnn9-cuda-13:
  Installed: 9.14.0.64-1
  Candidate: 9.14.0.64-1
  Version table:
 *** 9.14.0.64-1 100
        100 /var/lib/dpkg/status
";
        let origins = parse_apt_policy(text);
        assert_eq!(
            origins["cuda-compat-13-0"],
            "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64"
        );
        assert_eq!(origins["libcudnn9-cuda-13"], "local");
    }

    #[test]
    fn origins_from_dnf() {
        let origins = parse_dnf_installed(
            "Installed Packages\nnvidia-driver.x86_64   3:580.95.05-1.el9   @cuda-rhel9-x86_64\nkernel.x86_64 5.14.0 @anaconda\n",
        );
        assert_eq!(origins["nvidia-driver"], "cuda-rhel9-x86_64");
        assert_eq!(origins["kernel"], "anaconda");
    }

    #[test]
    fn removed_packages_are_not_installed() {
        let text = "Package: a\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: b\nStatus: install ok installed\nVersion: 2\n";
        let packages = parse_dpkg_status(text);
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].name, "b");
    }

    #[test]
    fn rpm_query_with_versionlocks() {
        let text = "nvidia-driver\t3:580.95.05-1.el9\tx86_64\nkernel\t0:5.14.0-427.el9\tx86_64\n";
        let packages = parse_rpm_query(text, &["nvidia-driver-3:580.95.05-1.el9.*".into()]);
        assert!(packages[0].held);
        assert_eq!(packages[1].version, "5.14.0-427.el9");
        assert!(!packages[1].held);
    }
}
