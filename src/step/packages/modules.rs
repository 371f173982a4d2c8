//! After the package step: the DKMS module the driver's package registered
//! must be built for every installed kernel with headers. NVIDIA's RHEL
//! `kmod-nvidia-*-dkms` `%post` ends each dkms command with `|| :`
//! (yum-packaging-dkms-nvidia), so dnf exits 0 with no module built; in an
//! image nothing loads it until the first boot fails. Found here, it fails
//! the step and the generation is undone.

use crate::distro::dkms::{Exclusive, kernels_with_headers};
use crate::facts::driver::dkms_driver_modules;
use crate::host::{Cmd, Host, Root};
use crate::step::StepError;

/// Whether DKMS holds a built module of `module` `release` for `kernel`:
/// `/var/lib/dkms/M/V/K/<arch>/module/` with a file in it.
fn built(root: &Root, module: &str, release: &str, kernel: &str) -> bool {
    let base = format!("/var/lib/dkms/{module}/{release}/{kernel}");
    root.read_dir(&base).unwrap_or_default().iter().any(|arch| {
        root.read_dir(format!("{base}/{arch}/module"))
            .is_ok_and(|files| !files.is_empty())
    })
}

/// The driver modules registered with DKMS at `release` that are not built
/// for a kernel with headers their `BUILD_EXCLUSIVE` rules let DKMS build
/// for: `(module, kernel)`.
fn missing(root: &Root, release: &str) -> Vec<(String, String)> {
    let kernels = kernels_with_headers(root);
    let mut missing = Vec::new();
    for module in dkms_driver_modules(root) {
        if !root.is_dir(format!("/var/lib/dkms/{module}/{release}")) {
            continue; // not registered at this release
        }
        let rules = Exclusive::of(root, &module, release);
        for kernel in kernels.iter().filter(|k| rules.allows(root, k)) {
            if !built(root, &module, release, kernel) {
                missing.push((module.clone(), kernel.clone()));
            }
        }
    }
    missing
}

/// NVIDIA's RHEL `%post` builds for the running kernel only
/// (`dkms build -m nvidia -v V -q || :`): a kernel installed since, or an
/// image's kernel, gets its module at a later boot, if at all. provision
/// builds them now, as `dkms autoinstall` would, so that the check that
/// follows holds for every kernel; a failure there is reported by it.
pub(super) fn build_missing(host: &Host, release: &str) {
    for (module, kernel) in missing(&host.root, release) {
        let cmd =
            Cmd::change("dkms").args(["install", "-m", &module, "-v", release, "-k", &kernel]);
        let _ = host.runner.run(&cmd);
    }
}

/// Fails when a driver module registered with DKMS at `release` is not
/// built for a kernel with headers that its `BUILD_EXCLUSIVE` rules let
/// DKMS build for, naming each and DKMS's log.
pub(super) fn check_built(root: &Root, release: &str) -> Result<(), StepError> {
    let missing: Vec<String> = missing(root, release)
        .into_iter()
        .map(|(module, kernel)| format!("{module}/{release} for kernel {kernel}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let module = missing[0].split('/').next().unwrap_or("nvidia");
    let log = format!("/var/lib/dkms/{module}/{release}/build/make.log");
    let excerpt = root
        .read_string(&log)
        .map(|text| format!(":\n{}", crate::distro::dkms::make_log_excerpt(&text, 8)))
        .unwrap_or_default();
    Err(StepError::Failed(format!(
        "the package manager finished, but DKMS built no module {}: the package's script went on past the failure (NVIDIA's %post ends each dkms command with `|| :`), and the host would boot without a driver; {log}{excerpt}",
        missing.join(", ")
    )))
}
