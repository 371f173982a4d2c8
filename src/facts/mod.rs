//! Facts: everything provision knows about a host, gathered once into plain
//! data by reading files (never by starting nvidia-smi or NVML). Every
//! section carries an `unknown` map: a field that could not be read is null
//! and `unknown` says why. See docs/facts.md for the JSON schema.

pub mod driver;
pub mod enrolled;
pub mod environment;
pub mod holders;
pub mod loader;
pub mod modules;
pub mod nouveau;
pub mod os;
pub mod packages;
pub mod pci;
pub mod services;
pub mod toolkit;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::host::Host;

/// Why fields of a section are null, by field name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Unknown(pub BTreeMap<String, String>);

impl Unknown {
    pub fn note(&mut self, field: &str, reason: impl Into<String>) {
        self.0
            .entry(field.to_string())
            .or_insert_with(|| reason.into());
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Facts {
    /// The directory read as `/`.
    pub root: String,
    pub os: os::Os,
    pub gpus: Vec<pci::Gpu>,
    pub nouveau: nouveau::Nouveau,
    pub kernel_driver: driver::KernelDriver,
    pub user_driver: driver::UserDriver,
    pub toolkits: toolkit::Toolkits,
    pub environment: environment::Environment,
    pub holders: holders::Holders,
    #[serde(default)]
    pub services: services::Services,
    pub packages: packages::Packages,
    /// Whole-host notes: sections that could not be read at all.
    pub unknown: Unknown,
    /// Every installed package (not only GPU ones): the package steps need
    /// the full set; reports leave it out.
    #[serde(skip)]
    pub all_packages: Vec<packages::Package>,
}

/// What `gather` may do beyond reading files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// List initramfs images whose listing is not cached (runs the lister).
    pub list_initramfs: bool,
    /// Read every installed package, not only the GPU ones (the package
    /// steps need the whole set to restore it).
    pub all_packages: bool,
    /// Ask the package manager which repository each GPU package came from.
    pub origins: bool,
}

/// The installed packages (the GPU's, and all when asked), with where the
/// GPU's came from when `--origins` asks.
fn package_facts(
    host: &Host,
    family: Option<os::Family>,
    options: &Options,
) -> (packages::Packages, Vec<packages::Package>) {
    let (mut packages, all_packages) = packages::gather(host, family, options.all_packages);
    if options.origins {
        packages::fill_origins(host, family, &mut packages);
    } else if !packages.gpu.is_empty() {
        packages.unknown.note(
            "origin",
            "not asked: `provision detect --origins` asks the package manager",
        );
    }
    (packages, all_packages)
}

/// /etc/ld.so.cache's entries, or why they cannot be read.
fn loader_cache(
    root: &crate::host::Root,
    unknown: &mut Unknown,
) -> Option<Vec<loader::CacheEntry>> {
    let cache = root
        .read_bytes("/etc/ld.so.cache")
        .map_err(|error| error.to_string())
        .and_then(|bytes| loader::parse_ld_so_cache(&bytes));
    match cache {
        Ok(entries) => Some(entries),
        Err(reason) => {
            unknown.note("ld.so.cache", reason);
            None
        }
    }
}

/// nouveau: loaded, bound to which GPUs, blacklisted, in which initramfs
/// (each image listed only when asked: lsinitramfs takes seconds).
fn nouveau_facts(
    host: &Host,
    os: &os::Os,
    gpus: &[pci::Gpu],
    list_initramfs: bool,
) -> nouveau::Nouveau {
    let bound: Vec<String> = gpus
        .iter()
        .filter(|g| g.driver.as_deref() == Some("nouveau"))
        .map(|g| g.address.clone())
        .collect();
    let kernels: Vec<(String, Option<String>)> = if list_initramfs {
        os.kernels
            .iter()
            .map(|k| (k.release.clone(), k.initramfs.clone()))
            .collect()
    } else {
        Vec::new()
    };
    nouveau::gather(host, os.family, bound, &kernels)
}

impl Facts {
    pub fn gather(host: &Host, options: Options) -> Facts {
        // The /proc scan is the one fact that grows with the host (one
        // directory per process): it runs beside everything else.
        std::thread::scope(|scope| {
            let holders = scope.spawn(|| holders::gather(&host.root));
            Facts::gather_rest(host, options, holders)
        })
    }

    fn gather_rest(
        host: &Host,
        options: Options,
        holders: std::thread::ScopedJoinHandle<'_, holders::Holders>,
    ) -> Facts {
        let root = &host.root;
        let mut unknown = Unknown::default();
        let mut os = os::gather(host);
        let gpus = pci::gather(root, &mut unknown);
        let (packages, all_packages) = package_facts(host, os.family, &options);

        let cache = loader_cache(root, &mut unknown);
        let conf = loader::ld_so_conf(root);
        let conf_dirs: Vec<String> = conf.iter().map(|d| d.dir.clone()).collect();

        let running = os.kernels.iter().find(|k| k.running);
        let mut kernel_driver = driver::gather_kernel(
            host,
            os.running_kernel.as_deref(),
            running.and_then(|k| k.nvidia_module.as_deref()),
        );
        let user_driver = driver::gather_user(root, cache.as_deref(), &conf_dirs);
        driver::compare_layers(&mut kernel_driver, &user_driver);
        os.driver_mounted_from_outside(user_driver.libcuda.as_deref());

        let driver_version = kernel_driver
            .version
            .clone()
            .or_else(|| user_driver.version.clone());
        // The toolkit's meta packages (cuda-libraries-13-0 13.0.2-1) are GPU
        // packages: the short list is enough, even when all were read.
        let toolkits = toolkit::gather(root, &packages.gpu, &conf_dirs, driver_version.as_deref());
        let environment = environment::gather(root, &conf);

        let nouveau = nouveau_facts(host, &os, &gpus, options.list_initramfs);
        let services = services::gather(root, os.systemd);
        let holders = holders.join().unwrap_or_else(|_| {
            let mut holders = holders::Holders::default();
            holders.unknown.note("processes", "the /proc scan failed");
            holders
        });

        Facts {
            root: root.path().to_string_lossy().into_owned(),
            os,
            gpus,
            nouveau,
            kernel_driver,
            user_driver,
            toolkits,
            environment,
            holders,
            services,
            packages,
            unknown,
            all_packages,
        }
    }

    /// GPUs proper (NVSwitches left out).
    pub fn gpu_devices(&self) -> impl Iterator<Item = &pci::Gpu> {
        self.gpus.iter().filter(|g| g.kind == pci::Kind::Gpu)
    }

    /// The toolkits whose library directories the loader configuration
    /// lists (compat/ directories aside), each with the file that lists
    /// it: more than one, and programs get whichever ldconfig lists first.
    pub fn loader_toolkits(&self) -> Vec<(String, String)> {
        let mut toolkits: Vec<(String, String)> = Vec::new();
        for entry in &self.environment.loader {
            let Some(toolkit) = &entry.toolkit else {
                continue;
            };
            let compat_only = self
                .toolkits
                .installed
                .iter()
                .any(|t| &t.path == toolkit && t.compat_only);
            if entry.value.contains("/compat") || compat_only {
                continue;
            }
            if !toolkits.iter().any(|(t, _)| t == toolkit) {
                toolkits.push((toolkit.clone(), entry.file.clone()));
            }
        }
        toolkits
    }

    /// The driver version running now, else the one installed.
    pub fn driver_version(&self) -> Option<&str> {
        self.kernel_driver
            .version
            .as_deref()
            .or(self.user_driver.version.as_deref())
    }
}
