//! The hosts a bundle is made for: `provision detect --json --packages`
//! documents carried out of an air-gapped site. Each gives its release,
//! architecture, installed kernels and installed packages, so the bundle is
//! resolved against the host as it really is instead of a minimal install
//! of its release.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::BundleError;
use crate::facts::packages::Package;

/// One host, as its `detect` document describes it.
#[derive(Debug, Clone)]
pub struct HostDoc {
    pub path: PathBuf,
    /// Its name (`os.hostname`), else the document's file stem.
    pub name: String,
    /// "debian-12", "rhel-9".
    pub release: String,
    /// "x86_64" or "sbsa", from its package manager's own package.
    pub arch: Option<String>,
    pub kernels: Vec<String>,
    pub installed: Vec<Package>,
}

#[derive(Deserialize)]
struct Document {
    os: OsPart,
    installed: Option<Vec<Package>>,
}

#[derive(Deserialize)]
struct OsPart {
    id: Option<String>,
    version_id: Option<String>,
    family: Option<crate::facts::os::Family>,
    hostname: Option<String>,
    #[serde(default)]
    kernels: Vec<KernelPart>,
}

#[derive(Deserialize)]
struct KernelPart {
    release: String,
}

/// Reads every document; they must be of one release (and of `release`
/// when one is given).
pub fn read(paths: &[PathBuf], release: &str) -> Result<Vec<HostDoc>, BundleError> {
    let hosts = paths
        .iter()
        .map(|path| read_one(path))
        .collect::<Result<Vec<_>, _>>()?;
    let wanted = if release.is_empty() {
        hosts.first().map(|h| h.release.clone()).unwrap_or_default()
    } else {
        release.to_string()
    };
    if let Some(other) = hosts.iter().find(|h| h.release != wanted) {
        return Err(BundleError::Build(format!(
            "--host {}: {} is {}, and the bundle is for {wanted}: one bundle serves one release (make one per release)",
            other.path.display(),
            other.name,
            other.release
        )));
    }
    Ok(hosts)
}

fn read_one(path: &Path) -> Result<HostDoc, BundleError> {
    let refuse =
        |message: String| BundleError::Build(format!("--host {}: {message}", path.display()));
    let text = fs_err::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
    let document: Document = serde_json::from_str(&text)
        .map_err(|e| refuse(format!("not a `provision detect --json` document ({e})")))?;
    let Some(installed) = document.installed else {
        return Err(refuse(
            "it lists no installed packages: make it on the host with `provision detect --json --packages`".into(),
        ));
    };
    let os = document.os;
    let (Some(id), Some(version)) = (os.id, os.version_id) else {
        return Err(refuse(
            "its os-release names no ID and VERSION_ID: provision cannot tell the release".into(),
        ));
    };
    let release = crate::facts::os::release_name(&id, &version, os.family);
    let arch = installed
        .iter()
        .find(|p| p.name == "dpkg" || p.name == "rpm")
        .and_then(|p| p.arch.as_deref())
        .and_then(|arch| match arch {
            "amd64" | "x86_64" => Some("x86_64".to_string()),
            "arm64" | "aarch64" => Some("sbsa".to_string()),
            _ => None,
        });
    let name = os.hostname.unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(HostDoc {
        path: path.to_path_buf(),
        name,
        release,
        arch,
        kernels: os.kernels.into_iter().map(|k| k.release).collect(),
        installed,
    })
}

impl HostDoc {
    /// A dpkg status file of the host's packages (of the architecture
    /// bundled, or `all`): what apt resolves the plan against.
    pub fn dpkg_status(&self, debian_arch: &str) -> String {
        let mut text = String::new();
        for package in &self.installed {
            let arch = package.arch.as_deref().unwrap_or(debian_arch);
            if arch != debian_arch && arch != "all" {
                continue;
            }
            text.push_str(&format!(
                "Package: {}\nStatus: install ok installed\nVersion: {}\nArchitecture: {arch}\nDescription: installed on {}\n\n",
                package.name, package.version, self.name
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(dir: &Path, name: &str, json: &str) -> PathBuf {
        let path = dir.join(name);
        fs_err::write(&path, json).unwrap();
        path
    }

    #[test]
    fn a_detect_document_gives_the_host_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let node = doc(
            dir.path(),
            "node.json",
            r#"{"os": {"id": "debian", "version_id": "12", "family": "debian", "hostname": "gpu-07",
                "kernels": [{"release": "6.1.0-50-amd64", "running": true}]},
               "installed": [{"name": "dpkg", "version": "1.21.22", "arch": "amd64", "held": false, "source": null},
                             {"name": "libc6", "version": "2.36-9", "arch": "i386", "held": false, "source": null}]}"#,
        );
        let hosts = read(std::slice::from_ref(&node), "").unwrap();
        let host = &hosts[0];
        assert_eq!(host.name, "gpu-07");
        assert_eq!(host.release, "debian-12");
        assert_eq!(host.arch.as_deref(), Some("x86_64"));
        assert_eq!(host.kernels, ["6.1.0-50-amd64"]);
        let status = host.dpkg_status("amd64");
        assert!(status.contains("Package: dpkg\nStatus: install ok installed\nVersion: 1.21.22\n"));
        assert!(
            !status.contains("libc6"),
            "foreign architectures are left out"
        );

        let refused = read(std::slice::from_ref(&node), "ubuntu-24.04").unwrap_err();
        assert!(
            refused.to_string().contains("gpu-07 is debian-12"),
            "{refused}"
        );
        let bare = doc(
            dir.path(),
            "bare.json",
            r#"{"os": {"id": "debian", "version_id": "12", "kernels": []}}"#,
        );
        let refused = read(&[bare], "").unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("provision detect --json --packages"),
            "{refused}"
        );
    }
}
