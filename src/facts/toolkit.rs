//! CUDA toolkits under `/usr/local/cuda-X.Y`: their versions (release,
//! runtime, nvcc), which one `/usr/local/cuda` resolves to (through
//! `/etc/alternatives` too), and each `compat/` directory's libcuda.

use serde::{Deserialize, Serialize};

use super::Unknown;
use super::driver::version_from_file_name;
use super::packages::Package;
use crate::host::Root;
use crate::version::Dotted;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Toolkits {
    pub installed: Vec<Toolkit>,
    /// The toolkit `/usr/local/cuda` resolves to.
    pub default: Option<String>,
    /// The links followed from /usr/local/cuda to it.
    pub default_chain: Vec<String>,
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Toolkit {
    pub path: String,
    /// "13.0" from the directory name.
    pub short: Option<String>,
    /// The release ("13.0.2"), from version.json or the meta packages.
    pub release: Option<String>,
    pub release_source: Option<String>,
    /// libcudart's version ("13.0.96").
    pub runtime: Option<String>,
    /// nvcc's version ("13.0.88"): what `nvcc --version` prints.
    pub nvcc: Option<String>,
    pub nvcc_source: Option<String>,
    /// Links in /usr/local naming this toolkit (cuda, cuda-13).
    pub aliases: Vec<String>,
    /// Only a `compat/` directory (cuda-compat-X-Y without the toolkit).
    pub compat_only: bool,
    pub compat: Option<CompatDir>,
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompatDir {
    pub path: String,
    pub libcuda: Option<String>,
    /// The forward-compat libcuda's driver version ("580.95.05").
    pub version: Option<String>,
    /// The loader configuration puts this directory on the search path.
    pub on_loader_path: bool,
    /// Relation to the running (or installed) driver: "newer", "same", "older".
    pub against_driver: Option<String>,
}

/// Reads `version.json` (CUDA 11.1+): {"cuda": {"version": ...}, "cuda_nvcc": ...}.
pub fn parse_version_json(text: &str) -> (Option<String>, Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return (None, None, None);
    };
    let get = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.get("version"))
            .and_then(|v| v.as_str())
            .filter(|v| Dotted::parse(v).is_some())
            .map(str::to_string)
    };
    (get("cuda"), get("cuda_cudart"), get("cuda_nvcc"))
}

/// "Cuda compilation tools, release 13.0, V13.0.88" -> "13.0.88".
pub fn parse_nvcc_version(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.contains("Cuda compilation tools"))?;
    let word = line.split_whitespace().last()?;
    let version = word.trim_start_matches('V');
    Dotted::parse(version).map(|_| version.to_string())
}

pub fn gather(
    root: &Root,
    packages: &[Package],
    loader_dirs: &[String],
    driver: Option<&str>,
) -> Toolkits {
    let mut toolkits = Toolkits::default();
    let names = match root.read_dir("/usr/local") {
        Ok(names) => names,
        Err(error) => {
            toolkits
                .unknown
                .note("installed", format!("cannot list /usr/local: {error}"));
            return toolkits;
        }
    };
    let mut links: Vec<(String, String)> = Vec::new();
    for name in &names {
        if !(name == "cuda" || name.starts_with("cuda-")) {
            continue;
        }
        let path = format!("/usr/local/{name}");
        if root.is_link(&path) {
            match root.resolve(&path) {
                Ok(target) => links.push((path, target.to_string_lossy().into_owned())),
                Err(error) => toolkits
                    .unknown
                    .note(&format!("link {path}"), format!("cannot resolve: {error}")),
            }
            continue;
        }
        if root.is_dir(&path) {
            toolkits
                .installed
                .push(inspect(root, &path, name, packages, loader_dirs, driver));
        }
    }
    for toolkit in &mut toolkits.installed {
        toolkit.aliases = links
            .iter()
            .filter(|(_, target)| *target == toolkit.path)
            .map(|(link, _)| link.clone())
            .collect();
    }
    match root.resolve("/usr/local/cuda") {
        Ok(target) if root.exists("/usr/local/cuda") => {
            let target = target.to_string_lossy().into_owned();
            toolkits.default_chain = link_chain(root, "/usr/local/cuda");
            if toolkits.installed.iter().any(|t| t.path == target) {
                toolkits.default = Some(target);
            } else {
                toolkits.unknown.note(
                    "default",
                    format!("/usr/local/cuda points at {target}, which is not a toolkit"),
                );
            }
        }
        Ok(_) => toolkits
            .unknown
            .note("default", "/usr/local/cuda does not exist"),
        Err(error) => toolkits.unknown.note(
            "default",
            format!("/usr/local/cuda cannot be resolved: {error}"),
        ),
    }
    toolkits
}

/// The links from `path` to its final target, each hop as written.
fn link_chain(root: &Root, path: &str) -> Vec<String> {
    let mut chain = Vec::new();
    let mut current = std::path::PathBuf::from(path);
    for _ in 0..40 {
        let Ok(target) = root.read_link(&current) else {
            break;
        };
        let next = if target.is_absolute() {
            target
        } else {
            current
                .parent()
                .unwrap_or(std::path::Path::new("/"))
                .join(target)
        };
        chain.push(next.to_string_lossy().into_owned());
        current = next;
    }
    chain
}

fn inspect(
    root: &Root,
    path: &str,
    name: &str,
    packages: &[Package],
    loader_dirs: &[String],
    driver: Option<&str>,
) -> Toolkit {
    let short = name
        .strip_prefix("cuda-")
        .filter(|v| Dotted::parse(v).is_some())
        .map(str::to_string);
    let mut toolkit = Toolkit {
        path: path.to_string(),
        short: short.clone(),
        release: None,
        release_source: None,
        runtime: None,
        nvcc: None,
        nvcc_source: None,
        aliases: Vec::new(),
        compat_only: false,
        compat: None,
        unknown: Unknown::default(),
    };
    from_version_json(root, path, &mut toolkit);
    if let Some(short) = &short {
        from_packages(packages, short, &mut toolkit);
    }
    if toolkit.runtime.is_none() {
        toolkit.runtime = libcudart_version(root, path);
    }
    toolkit.compat = compat_dir(root, path, loader_dirs, driver);
    toolkit.compat_only = toolkit.compat.is_some()
        && ["bin", "lib64", "targets", "version.json"]
            .iter()
            .all(|entry| !root.exists(format!("{path}/{entry}")));
    if toolkit.compat_only {
        for field in ["release", "nvcc"] {
            toolkit.unknown.note(
                field,
                "only a compat/ directory: the forward-compatibility package without its toolkit",
            );
        }
        return toolkit;
    }
    if toolkit.release.is_none() {
        match (&toolkit.runtime, &short) {
            (Some(_), Some(short)) => {
                toolkit.release = Some(short.clone());
                toolkit.release_source =
                    Some("directory name (no version.json, no package record)".into());
            }
            _ => toolkit.unknown.note(
                "release",
                "no version.json, no package record and no libcudart",
            ),
        }
    }
    if toolkit.nvcc.is_none() {
        toolkit.unknown.note(
            "nvcc",
            "neither version.json nor the package database names nvcc's version; `nvcc --version` tells",
        );
    }
    toolkit
}

/// What the toolkit's version.json says: release, runtime, nvcc.
fn from_version_json(root: &Root, path: &str, toolkit: &mut Toolkit) {
    if let Ok(text) = root.read_string(format!("{path}/version.json")) {
        let (release, runtime, nvcc) = parse_version_json(&text);
        if release.is_some() {
            toolkit.release = release;
            toolkit.release_source = Some(format!("{path}/version.json"));
        }
        toolkit.runtime = runtime;
        if nvcc.is_some() {
            toolkit.nvcc = nvcc;
            toolkit.nvcc_source = Some(format!("{path}/version.json"));
        }
    }
}

/// NVIDIA's packages carry the release in the meta packages' versions
/// (cuda-toolkit-13-0 13.0.2-1) and nvcc's in cuda-nvcc-13-0.
fn from_packages(packages: &[Package], short: &str, toolkit: &mut Toolkit) {
    let dashed = short.replace('.', "-");
    if toolkit.release.is_none()
        && let Some(package) = [
            "cuda-toolkit",
            "cuda-libraries",
            "cuda-compiler",
            "cuda-command-line-tools",
            "cuda-runtime",
        ]
        .iter()
        .find_map(|meta| {
            packages
                .iter()
                .find(|p| p.name == format!("{meta}-{dashed}"))
        })
    {
        toolkit.release = Some(crate::version::upstream(&package.version).to_string());
        toolkit.release_source = Some(format!("package {} {}", package.name, package.version));
    }
    if toolkit.nvcc.is_none()
        && let Some(package) = packages
            .iter()
            .find(|p| p.name == format!("cuda-nvcc-{dashed}"))
    {
        toolkit.nvcc = Some(crate::version::upstream(&package.version).to_string());
        toolkit.nvcc_source = Some(format!("package {} {}", package.name, package.version));
    }
}

/// The newest libcudart.so.X.Y.Z among the toolkit's library directories.
fn libcudart_version(root: &Root, path: &str) -> Option<String> {
    for lib in [
        format!("{path}/lib64"),
        format!("{path}/targets/x86_64-linux/lib"),
        format!("{path}/targets/sbsa-linux/lib"),
    ] {
        if let Ok(names) = root.read_dir(&lib)
            && let Some(version) = names
                .iter()
                .filter_map(|n| version_from_file_name(n, "libcudart"))
                .filter(|v| v.split('.').count() == 3)
                .max_by_key(|v| Dotted::parse(v))
        {
            return Some(version);
        }
    }
    None
}

fn compat_dir(
    root: &Root,
    toolkit: &str,
    loader_dirs: &[String],
    driver: Option<&str>,
) -> Option<CompatDir> {
    let path = format!("{toolkit}/compat");
    let names = root.read_dir(&path).ok()?;
    let (libcuda, version) = names
        .iter()
        .find_map(|n| version_from_file_name(n, "libcuda").map(|v| (format!("{path}/{n}"), v)))
        .map_or((None, None), |(l, v)| (Some(l), Some(v)));
    let resolved_compat = root.resolve(&path).ok();
    let on_loader_path = loader_dirs.iter().any(|dir| {
        dir.trim_end_matches('/') == path
            || root
                .resolve(dir)
                .ok()
                .zip(resolved_compat.as_ref())
                .is_some_and(|(a, b)| a == *b)
    });
    let against_driver = match (
        version.as_deref().and_then(Dotted::parse),
        driver.and_then(Dotted::parse),
    ) {
        (Some(compat), Some(driver)) => Some(
            match compat.cmp(&driver) {
                std::cmp::Ordering::Greater => "newer",
                std::cmp::Ordering::Equal => "same",
                std::cmp::Ordering::Less => "older",
            }
            .to_string(),
        ),
        _ => None,
    };
    Some(CompatDir {
        path,
        libcuda,
        version,
        on_loader_path,
        against_driver,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_json_of_a_12_8_toolkit() {
        let text = r#"{"cuda": {"name": "CUDA SDK", "version": "12.8.1"},
            "cuda_cudart": {"name": "CUDA Runtime (cudart)", "version": "12.8.90"},
            "cuda_nvcc": {"name": "CUDA NVCC", "version": "12.8.93"}}"#;
        assert_eq!(
            parse_version_json(text),
            (
                Some("12.8.1".into()),
                Some("12.8.90".into()),
                Some("12.8.93".into())
            )
        );
        assert_eq!(parse_version_json("\u{0}garbage{"), (None, None, None));
    }

    #[test]
    fn nvcc_banner_from_the_h200_host() {
        let text = include_str!(
            "../../tests/fixtures/hosts/ubuntu-24.04-h200-580-open/usr/local/cuda-13.0/bin/nvcc.version"
        );
        assert_eq!(parse_nvcc_version(text).as_deref(), Some("13.0.88"));
    }
}
