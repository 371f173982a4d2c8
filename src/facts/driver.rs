//! The two driver layers: the kernel driver (`nvidia.ko` loaded now, and
//! what is installed on disk for the running kernel) and the user-mode
//! driver (`libcuda.so` as the loader finds it, and the CUDA version it
//! supports: what `nvidia-smi` prints as "CUDA Version").

use serde::{Deserialize, Serialize};

use super::Unknown;
use super::loader::CacheEntry;
use super::modules::{LoadedModule, parse_nvrm_version, parse_proc_modules};
use crate::compat::knowledge::Knowledge;
use crate::host::Root;
use crate::version::Dotted;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KernelDriver {
    /// nvidia* modules loaded now, with their versions.
    pub modules: Vec<NvidiaModule>,
    /// Version of the loaded `nvidia` module.
    pub version: Option<String>,
    /// "open" or "proprietary", from /proc/driver/nvidia/version.
    pub flavor: Option<String>,
    /// Version built for the running kernel on disk (DKMS tree), if known.
    pub installed: Option<String>,
    pub installed_source: Option<String>,
    /// Version of the userspace driver (libnvidia-ml) the loader finds.
    pub userspace: Option<String>,
    /// Loaded module and installed userspace differ: NVML reports
    /// "Driver/library version mismatch" until the module is reloaded.
    pub mismatch: Option<String>,
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NvidiaModule {
    pub name: String,
    pub version: Option<String>,
    pub refcount: Option<u32>,
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserDriver {
    /// The `libcuda.so.1` the loader uses (first match in ld.so.cache).
    pub libcuda: Option<String>,
    /// Its driver version, from the file the link chain ends at.
    pub version: Option<String>,
    /// Newest CUDA it supports: nvidia-smi's "CUDA Version".
    pub cuda_version: Option<String>,
    /// Every libcuda.so.1 the loader knows, in search order.
    pub candidates: Vec<Library>,
    pub nvml: Option<Library>,
    pub unknown: Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Library {
    /// Path as the loader names it.
    pub path: String,
    /// Where the link chain ends (inside the root).
    pub resolved: Option<String>,
    pub version: Option<String>,
}

/// "libcuda.so.580.159.04" -> "580.159.04".
pub fn version_from_file_name(name: &str, stem: &str) -> Option<String> {
    let rest = name.strip_prefix(stem)?.strip_prefix(".so.")?;
    let version = Dotted::parse(rest)?;
    (version.components().len() >= 2).then(|| rest.to_string())
}

/// Resolves a library path inside the root and reads the version from the
/// name of the file it ends at.
pub fn library(root: &Root, path: &str, stem: &str) -> Library {
    let resolved = root.resolve(path).ok().filter(|p| root.exists(p));
    let version = resolved
        .as_ref()
        .and_then(|p| p.file_name())
        .and_then(|n| version_from_file_name(&n.to_string_lossy(), stem));
    Library {
        path: path.to_string(),
        resolved: resolved.map(|p| p.to_string_lossy().into_owned()),
        version,
    }
}

/// Directories searched when there is no ld.so.cache (ld.so(8) defaults
/// plus the multiarch ones distributions configure).
const DEFAULT_LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
];

/// Where the loader finds `soname`: cache entries first (in cache order),
/// otherwise the configured and default directories.
pub fn find_library(
    root: &Root,
    cache: Option<&[CacheEntry]>,
    conf_dirs: &[String],
    soname: &str,
) -> Vec<String> {
    if let Some(entries) = cache {
        let from_cache: Vec<String> = entries
            .iter()
            .filter(|e| e.name == soname && !e.kind.contains("x32"))
            .map(|e| e.path.clone())
            .collect();
        if !from_cache.is_empty() {
            return from_cache;
        }
    }
    conf_dirs
        .iter()
        .map(String::as_str)
        .chain(DEFAULT_LIBRARY_DIRS.iter().copied())
        .map(|dir| format!("{dir}/{soname}"))
        .filter(|path| root.exists(path))
        .collect()
}

pub fn gather_kernel(root: &Root, running_kernel: Option<&str>) -> KernelDriver {
    let mut driver = KernelDriver::default();
    match root.read_string("/proc/modules") {
        Ok(text) => {
            let loaded: Vec<LoadedModule> = parse_proc_modules(&text);
            for module in loaded.into_iter().filter(|m| m.name.starts_with("nvidia")) {
                let version = root
                    .read_trimmed(format!("/sys/module/{}/version", module.name))
                    .ok()
                    .flatten();
                driver.modules.push(NvidiaModule {
                    name: module.name,
                    version,
                    refcount: module.refcount,
                    used_by: module.used_by,
                });
            }
        }
        Err(error) => driver.unknown.note(
            "modules",
            format!("cannot read proc/modules: {error} (not a running host)"),
        ),
    }
    match root.read_string("/proc/driver/nvidia/version") {
        Ok(text) => match parse_nvrm_version(&text) {
            Some(nvrm) => {
                driver.version = Some(nvrm.version);
                driver.flavor = Some(nvrm.flavor);
            }
            None => driver.unknown.note(
                "version",
                "proc/driver/nvidia/version does not start with an \"NVRM version:\" line",
            ),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let reason = if driver.modules.iter().any(|m| m.name == "nvidia") {
                "the nvidia module is listed but proc/driver/nvidia/version is absent"
            } else {
                "no NVIDIA kernel driver is loaded (proc/driver/nvidia/version is absent)"
            };
            driver.unknown.note("version", reason);
            driver.unknown.note("flavor", reason);
        }
        Err(error) => driver.unknown.note("version", error.to_string()),
    }
    if driver.version.is_none()
        && let Some(module) = driver.modules.iter().find(|m| m.name == "nvidia")
    {
        driver.version = module.version.clone();
    }
    match running_kernel {
        Some(kernel) => {
            if let Some((version, source)) = dkms_installed(root, kernel) {
                driver.installed = Some(version);
                driver.installed_source = Some(source);
            } else {
                driver.unknown.note(
                    "installed",
                    format!("no DKMS build of an nvidia module for {kernel} under var/lib/dkms"),
                );
            }
        }
        None => driver
            .unknown
            .note("installed", "the running kernel is unknown"),
    }
    driver
}

/// The DKMS tree records every built module: var/lib/dkms/<module>/<version>/<kernel>/.
fn dkms_installed(root: &Root, kernel: &str) -> Option<(String, String)> {
    for module in ["nvidia", "nvidia-current", "nvidia-open", "nvidia-srv"] {
        let base = format!("/var/lib/dkms/{module}");
        let Ok(versions) = root.read_dir(&base) else {
            continue;
        };
        let mut built: Vec<Dotted> = versions
            .iter()
            .filter(|v| root.is_dir(format!("{base}/{v}/{kernel}")))
            .filter_map(|v| Dotted::parse(v))
            .collect();
        built.sort();
        if let Some(version) = built.pop() {
            return Some((version.to_string(), format!("{base}/{version}/{kernel}")));
        }
    }
    None
}

pub fn gather_user(root: &Root, cache: Option<&[CacheEntry]>, conf_dirs: &[String]) -> UserDriver {
    let mut user = UserDriver {
        candidates: find_library(root, cache, conf_dirs, "libcuda.so.1")
            .iter()
            .map(|path| library(root, path, "libcuda"))
            .collect(),
        ..UserDriver::default()
    };
    if let Some(first) = user.candidates.iter().find(|c| c.resolved.is_some()) {
        user.libcuda = Some(first.path.clone());
        user.version = first.version.clone();
        if first.version.is_none() {
            user.unknown.note(
                "version",
                format!("{} does not end at a libcuda.so.<version> file", first.path),
            );
        }
    } else if user.candidates.is_empty() {
        user.unknown.note(
            "libcuda",
            "the loader finds no libcuda.so.1 (no user-mode driver installed)",
        );
        user.unknown.note("version", "no libcuda.so.1");
    } else {
        user.unknown.note(
            "libcuda",
            "every libcuda.so.1 the loader names is a dangling link",
        );
    }
    if let Some(version) = user.version.as_deref().and_then(Dotted::parse) {
        match Knowledge::get()
            .branch(version.major())
            .and_then(|b| b.max_cuda.clone())
        {
            Some(cuda) => user.cuda_version = Some(cuda),
            None => user.unknown.note(
                "cuda_version",
                format!("branch {} is not in the knowledge base", version.major()),
            ),
        }
    }
    user.nvml = find_library(root, cache, conf_dirs, "libnvidia-ml.so.1")
        .iter()
        .map(|path| library(root, path, "libnvidia-ml"))
        .find(|lib| lib.resolved.is_some());
    user
}

/// Fills `userspace` and `mismatch` once both layers are known.
pub fn compare_layers(kernel: &mut KernelDriver, user: &UserDriver) {
    kernel.userspace = user
        .nvml
        .as_ref()
        .and_then(|l| l.version.clone())
        .or_else(|| user.version.clone());
    if let (Some(loaded), Some(userspace)) = (&kernel.version, &kernel.userspace)
        && loaded != userspace
    {
        kernel.mismatch = Some(format!(
            "the loaded kernel module is {loaded} but the installed userspace driver is {userspace}: \
             NVML and nvidia-smi fail with \"Driver/library version mismatch\" until the module is reloaded or the host reboots"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_library_names() {
        assert_eq!(
            version_from_file_name("libcuda.so.580.159.04", "libcuda").as_deref(),
            Some("580.159.04")
        );
        assert_eq!(version_from_file_name("libcuda.so.1", "libcuda"), None);
        assert_eq!(version_from_file_name("libcuda.so", "libcuda"), None);
        assert_eq!(
            version_from_file_name("libcudart.so.13.0.96", "libcudart").as_deref(),
            Some("13.0.96")
        );
    }
}
