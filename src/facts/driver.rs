//! The two driver layers: the kernel driver (`nvidia.ko` loaded now, and
//! what is installed on disk for the running kernel) and the user-mode
//! driver (`libcuda.so` as the loader finds it, and the CUDA version it
//! supports: what `nvidia-smi` prints as "CUDA Version").

use serde::{Deserialize, Serialize};

use super::Unknown;
use super::loader::CacheEntry;
use super::modules::{LoadedModule, parse_nvrm_version, parse_proc_modules};
use crate::compat::knowledge::Knowledge;
use crate::host::{Cmd, Host, Root};
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
    /// Module references: dependent modules plus open files.
    pub refcount: Option<u32>,
    pub used_by: Vec<String>,
    /// Modules that depend on this one (`/sys/module/<name>/holders`).
    #[serde(default)]
    pub holders: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserDriver {
    /// The driver's own `libcuda.so.1` (the first one the loader knows
    /// outside a toolkit's `compat/` directory).
    pub libcuda: Option<String>,
    /// Its driver version, from the file the link chain ends at.
    pub version: Option<String>,
    /// Newest CUDA it supports: nvidia-smi's "CUDA Version".
    pub cuda_version: Option<String>,
    /// A forward-compatibility libcuda that the loader finds first: what
    /// CUDA applications actually load.
    pub compat_first: Option<Library>,
    /// The CUDA version applications get: the compat library's when it
    /// comes first, else `cuda_version`.
    pub effective_cuda_version: Option<String>,
    /// Every libcuda.so.1 the loader knows, in search order.
    pub candidates: Vec<Library>,
    pub nvml: Option<Library>,
    pub unknown: Unknown,
}

/// Whether a library lives in a forward-compatibility directory.
pub fn is_compat(library: &Library) -> bool {
    let in_compat = |p: &str| p.contains("/compat/");
    in_compat(&library.path) || library.resolved.as_deref().is_some_and(in_compat)
}

/// nvidia-smi's "CUDA Version" for a driver version, from the branch table.
pub fn cuda_of_driver(version: &str) -> Result<String, String> {
    let parsed =
        Dotted::parse(version).ok_or_else(|| format!("{version} is not a driver version"))?;
    Knowledge::get()
        .branch(parsed.major())
        .and_then(|b| b.max_cuda.clone())
        .ok_or_else(|| format!("branch {} is not in the knowledge base", parsed.major()))
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

/// The driver version a module file carries, through `modinfo` (which
/// reads compressed modules too).
fn modinfo_version(host: &Host, module: &str) -> Result<String, String> {
    let cmd = Cmd::read("modinfo").args(["-F", "version", module]);
    let output = host.runner.run(&cmd).map_err(|error| error.to_string())?;
    let version = output.stdout.trim();
    if output.success() && Dotted::parse(version).is_some() {
        Ok(version.to_string())
    } else {
        Err(format!("`{cmd}` gave no version: {}", output.tail))
    }
}

/// The nvidia* modules loaded now, each with its version, references and
/// the modules that use it.
fn loaded_modules(root: &Root, driver: &mut KernelDriver) {
    match root.read_string("/proc/modules") {
        Ok(text) => {
            let loaded: Vec<LoadedModule> = parse_proc_modules(&text);
            for module in loaded.into_iter().filter(|m| m.name.starts_with("nvidia")) {
                let version = root
                    .read_trimmed(format!("/sys/module/{}/version", module.name))
                    .ok()
                    .flatten();
                let holders = root
                    .read_dir(format!("/sys/module/{}/holders", module.name))
                    .unwrap_or_default();
                driver.modules.push(NvidiaModule {
                    name: module.name,
                    version,
                    refcount: module.refcount,
                    used_by: module.used_by,
                    holders,
                });
            }
        }
        Err(error) => driver.unknown.note(
            "modules",
            format!("cannot read proc/modules: {error} (not a running host)"),
        ),
    }
}

/// Which driver release is built for the running kernel: DKMS's tree, else
/// the module file's version.
fn installed_module(
    host: &Host,
    running_kernel: Option<&str>,
    module_file: Option<&str>,
    driver: &mut KernelDriver,
) {
    let root = &host.root;
    match (running_kernel, module_file) {
        (Some(kernel), module) => {
            if let Some((version, source)) = dkms_installed(root, kernel) {
                driver.installed = Some(version);
                driver.installed_source = Some(source);
            } else if let Some(module) = module {
                match modinfo_version(host, module) {
                    Ok(version) => {
                        driver.installed = Some(version);
                        driver.installed_source = Some(module.to_string());
                    }
                    Err(reason) => driver.unknown.note("installed", reason),
                }
            } else {
                driver.unknown.note(
                    "installed",
                    format!(
                        "no nvidia module on disk for {kernel} (no DKMS build, no module file)"
                    ),
                );
            }
        }
        (None, _) => driver
            .unknown
            .note("installed", "the running kernel is unknown"),
    }
}

pub fn gather_kernel(
    host: &Host,
    running_kernel: Option<&str>,
    module_file: Option<&str>,
) -> KernelDriver {
    let root = &host.root;
    let mut driver = KernelDriver::default();
    loaded_modules(root, &mut driver);
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
    installed_module(host, running_kernel, module_file, &mut driver);
    driver
}

/// The NVIDIA driver's modules in the DKMS tree, by every name NVIDIA and
/// the distributions give them: `nvidia` (NVIDIA's repositories, Ubuntu;
/// RHEL since 570.148), `nvidia-open` (RHEL before), `nvidia-current` and
/// `nvidia-current-open` (Debian), `nvidia-tesla-535` and the other Tesla
/// branches (Debian), `nvidia-srv` (SUSE). Not GPUDirect Storage's
/// `nvidia-fs`, which is no driver.
pub fn dkms_driver_modules(root: &Root) -> Vec<String> {
    let mut names: Vec<String> = root
        .read_dir("/var/lib/dkms")
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n == "nvidia" || (n.starts_with("nvidia-") && n != "nvidia-fs"))
        .filter(|n| root.is_dir(format!("/var/lib/dkms/{n}")))
        .collect();
    // The plain name first: NVIDIA's own when several are present.
    names.sort_by_key(|n| (n != "nvidia", n.clone()));
    names
}

/// The DKMS tree records every built module: var/lib/dkms/<module>/<version>/<kernel>/.
fn dkms_installed(root: &Root, kernel: &str) -> Option<(String, String)> {
    for module in dkms_driver_modules(root) {
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
    let usable: Vec<&Library> = user
        .candidates
        .iter()
        .filter(|c| c.resolved.is_some())
        .collect();
    if let Some(own) = usable.iter().find(|c| !is_compat(c)) {
        user.libcuda = Some(own.path.clone());
        user.version = own.version.clone();
        if own.version.is_none() {
            user.unknown.note(
                "version",
                format!("{} does not end at a libcuda.so.<version> file", own.path),
            );
        }
    } else if user.candidates.is_empty() {
        user.unknown.note(
            "libcuda",
            "the loader finds no libcuda.so.1 (no user-mode driver installed)",
        );
        user.unknown.note("version", "no libcuda.so.1");
    } else if usable.is_empty() {
        user.unknown.note(
            "libcuda",
            "every libcuda.so.1 the loader names is a dangling link",
        );
    } else {
        user.unknown.note(
            "libcuda",
            "the only libcuda.so.1 the loader finds is a forward-compatibility copy: the driver's own is missing",
        );
    }
    if let Some(first) = usable.first().filter(|c| is_compat(c)) {
        user.compat_first = Some((*first).clone());
    }
    if let Some(version) = user.version.as_deref() {
        match cuda_of_driver(version) {
            Ok(cuda) => user.cuda_version = Some(cuda),
            Err(reason) => user.unknown.note("cuda_version", reason),
        }
    }
    user.effective_cuda_version = match user
        .compat_first
        .as_ref()
        .and_then(|c| c.version.as_deref())
    {
        Some(compat) => cuda_of_driver(compat).ok(),
        None => user.cuda_version.clone(),
    };
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

    #[test]
    fn every_dkms_name_of_the_driver_is_known_and_gds_is_not_a_driver() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "nvidia-current",
            "nvidia-tesla-535",
            "nvidia",
            "nvidia-open",
            "nvidia-fs",
            "gdrdrv",
        ] {
            fs_err::create_dir_all(dir.path().join("var/lib/dkms").join(name)).unwrap();
        }
        let root = Root::new(dir.path()).unwrap();
        assert_eq!(
            dkms_driver_modules(&root),
            [
                "nvidia",
                "nvidia-current",
                "nvidia-open",
                "nvidia-tesla-535"
            ]
        );
    }
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
