//! Debian's real NVIDIA 535 driver, from Debian's own archive, in the
//! bookworm rootfs with Secure Boot modelled as on, one test for the first
//! install, the bundle and the upgrade (each real module build takes minutes
//! of both cores: they share the first install's). 535.261.03 (bookworm) is
//! bundled and installed on node B online and on its twin offline
//! (`bundle.rs`: `real_bundle_fits_its_hosts_and_applies_offline_like_online`).
//! DKMS builds the real module, signed with a freshly generated key pair
//! (`[secure_boot]`), before the package step (`driver:build`), which then
//! only installs it: on the fresh host once dkms, the compiler and the
//! headers are installed. Node B then takes the shipped plan at that release
//! (the CUDA 11.8 toolkit, a 1.8 GB download, beside the driver it keeps),
//! and is upgraded to 535.309.01 (bookworm-security), the module built before
//! anything is stopped. A build that fails is refused with its make.log
//! before anything changed; a rollback brings 535.261.03 back from the
//! module built before, and the next rollbacks remove the toolkit, then it
//! all (the DKMS signing configuration byte for byte). Three module builds:
//! ignored by a plain `cargo test`, run by `scripts/test` (CI).

use std::path::Path;

use crate::secure_boot::{generate_mok, secure_boot_on, secure_boot_section};
use crate::support::{
    Rootfs, apply_ok, assert_same_tree, mounts_under, plan_file, provision, repo,
};

const OLD: &str = "535.261.03";
const NEW: &str = "535.309.01";

/// The seconds of each phase of an apply, by name, and their order.
fn phases(report: &serde_json::Value) -> Vec<(String, f64, f64)> {
    report["phases"]
        .as_array()
        .unwrap_or_else(|| panic!("no phases: {report:#}"))
        .iter()
        .map(|p| {
            (
                p["phase"].as_str().unwrap().to_string(),
                p["at"].as_f64().unwrap(),
                p["seconds"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The build came before the package step, which loaded what it built
/// (Debian's common.postinst: "Loading tarball") and built nothing:
/// `(build seconds, packages seconds)`.
pub(crate) fn built_before_packages(report: &serde_json::Value, release: &str) -> (f64, f64) {
    let log = fs_err::read_to_string(report["log"].as_str().unwrap()).unwrap();
    assert!(
        log.contains(&format!("Loading tarball for nvidia-current-{release}")),
        "the package step loads the module built before:\n{log}"
    );
    assert!(!log.contains("Building initial module"), "{log}");
    let phases = phases(report);
    let find = |name: &str| {
        phases
            .iter()
            .find(|(p, _, _)| p == name)
            .unwrap_or_else(|| panic!("no {name} phase: {phases:?}"))
            .clone()
    };
    let (_, build_at, build) = find("build");
    let (_, packages_at, packages) = find("packages");
    assert!(build_at < packages_at, "{phases:?}");
    (build, packages)
}

/// Nothing of the build is left: no scratch tree, no tarball beside the package.
fn nothing_left_of_the_build(root: &Path) {
    assert!(!root.join("var/lib/provision/build").exists());
    assert!(
        !root.join("usr/share/nvidia-current-dkms").exists(),
        "the handed-over tarball is removed"
    );
}

fn module_version(rootfs: &Rootfs, module: &str) -> String {
    rootfs
        .chroot(&["modinfo", "-F", "version", module])
        .trim()
        .to_string()
}

/// Secure Boot on in `rootfs`, the key pair under `keys` (a root of its
/// own, made by `generate_mok`) copied in: every host of the test signs
/// with the same key, as a fleet's would.
fn signed_host(rootfs: &Rootfs, keys: &Path) {
    use std::os::unix::fs::PermissionsExt;
    secure_boot_on(rootfs.path());
    let dir = "var/lib/shim-signed/mok";
    fs_err::create_dir_all(rootfs.path().join(dir)).unwrap();
    for name in ["MOK.priv", "MOK.der"] {
        let to = rootfs.path().join(dir).join(name);
        fs_err::copy(keys.join(dir).join(name), &to).unwrap();
    }
    fs_err::set_permissions(
        rootfs.path().join(dir).join("MOK.priv"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// The module of the first install: built by DKMS for node B's kernel,
/// of the installed release, signed with the plan's key (the signer is
/// the certificate's name, the key id its serial number).
fn check_signed_module(rootfs: &Rootfs, module: &str, release: &str, cert: &str) {
    assert!(
        rootfs.path().join(module.trim_start_matches('/')).is_file(),
        "{module}"
    );
    assert_eq!(
        module_version(rootfs, module),
        release,
        "the built module is the installed release"
    );
    assert!(
        rootfs
            .chroot(&["modinfo", "-F", "license", module])
            .contains("NVIDIA")
    );
    let signer = rootfs.chroot(&["modinfo", "-F", "signer", module]);
    assert_eq!(signer.trim(), "provision test MOK");
    let sig_key = rootfs.chroot(&["modinfo", "-F", "sig_key", module]);
    let serial = rootfs.chroot(&[
        "openssl", "x509", "-inform", "DER", "-in", cert, "-noout", "-serial",
    ]);
    let hex = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect::<String>()
            .to_ascii_uppercase()
            .trim_start_matches('0')
            .to_string()
    };
    assert_eq!(
        hex(sig_key.trim()),
        hex(serial.trim().trim_start_matches("serial=")),
        "sig_key {sig_key} is the certificate's {serial}"
    );
}

#[test]
#[ignore = "downloads Debian's real 535 driver and the CUDA 11.8 toolkit (1.8 GB), builds the real module three times (about 15 minutes): scripts/test runs it"]
fn debian_12_real_535_driver_with_dkms() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key, cert) = generate_mok(keys.path());
    let signing = secure_boot_section(&key, &cert);
    let driver_only = format!(
        "[driver]\nversion = \"{OLD}\"\nflavor = \"proprietary\"\nsource = \"distro\"\n{signing}"
    );
    let shipped = fs_err::read_to_string(repo().join("plans/debian-12-distro-535.toml")).unwrap();
    let signed = format!("{shipped}{signing}");
    // The shipped plan at the installed release: its toolkit, the driver kept.
    let plan = plan_file(
        dir.path(),
        "old.toml",
        &signed.replace("branch = \"535\"", &format!("version = \"{OLD}\"")),
    );
    // A branch plan keeps a driver already on the branch: the upgrade names
    // the release.
    let upgrade = plan_file(
        dir.path(),
        "new.toml",
        &signed.replace("branch = \"535\"", &format!("version = \"{NEW}\"")),
    );

    // The first install, bundled, online and offline (bundle.rs): node B
    // took it online.
    let online = crate::bundle::real_bundle_fits_its_hosts_and_applies_offline_like_online(
        dir.path(),
        &driver_only,
        OLD,
        |rootfs| signed_host(rootfs, keys.path()),
    );
    let rootfs = &online.host;
    let report = &online.report;
    let (before_tree, before_packages) = (&online.before_tree, &online.before_packages);
    let kernel = rootfs.kernel();
    assert_eq!(report["changed"], true);
    // A fresh host: dkms, the compiler and the headers came first, then the
    // build, then the package step, which only loaded the module.
    let (build, packages_seconds) = built_before_packages(report, OLD);
    eprintln!("fresh install: build {build:.1} s, packages {packages_seconds:.1} s");
    nothing_left_of_the_build(rootfs.path());
    assert!(
        mounts_under(rootfs.path()).is_empty(),
        "nothing stays mounted"
    );

    // Debian's packages, one 535 release, held.
    let packages = rootfs.packages();
    let (driver, held) = &packages["nvidia-kernel-dkms"];
    assert!(driver.starts_with(OLD), "{driver}");
    assert!(*held);
    for name in ["firmware-nvidia-gsp", "nvidia-smi", "libcuda1"] {
        assert_eq!(&packages[name].0, driver, "{name} at the driver's release");
    }
    // Installed ahead of the driver, dkms is still marked as its dependency,
    // as the one transaction marks it (autoremovable with the driver).
    assert_eq!(
        rootfs.chroot(&["apt-mark", "showauto", "dkms"]).trim(),
        "dkms",
        "dkms is marked as installed automatically"
    );

    // DKMS built the real module for node B's kernel, signed with the
    // plan's key, not the one DKMS would make up; verify says so too.
    let module = format!("/lib/modules/{kernel}/updates/dkms/nvidia-current.ko");
    check_signed_module(rootfs, &module, crate::support::upstream(driver), &cert);
    let signature = report["verify"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "signature")
        .unwrap_or_else(|| panic!("no signature check: {report:#}"))
        .clone();
    assert_eq!(signature["passed"], true, "{signature:#}");

    // The shipped plan at that release: the toolkit and its environment
    // join, the driver stays (nothing is built).
    let toolkit = apply_ok(&plan, rootfs.arg());
    assert_eq!(toolkit["changed"], true, "{toolkit:#}");
    assert!(
        phases(&toolkit).iter().all(|(p, _, _)| p != "build"),
        "the driver kept, nothing built: {:?}",
        phases(&toolkit)
    );
    let packages = rootfs.packages();
    assert!(packages["nvidia-cuda-toolkit"].0.starts_with("11.8."));
    assert_eq!(
        &packages["nvidia-kernel-dkms"].0, driver,
        "the driver is kept"
    );

    // nouveau is blacklisted in the initramfs too.
    let listing = rootfs.chroot(&["lsinitramfs", &format!("/boot/initrd.img-{kernel}")]);
    assert!(
        listing.contains("etc/modprobe.d/provision-nouveau.conf"),
        "{listing}"
    );

    // detect sees it as a user would.
    let facts = provision(&["detect", "--root", rootfs.arg(), "--json"]).json();
    let installed = &facts["os"]["kernels"][0];
    assert_eq!(installed["nvidia_module"], module);
    assert_eq!(installed["headers"], true);

    // A second apply changes nothing and runs no changing command.
    let again = provision(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ])
    .json();
    assert_eq!(again["changed"], false, "{again:#}");
    assert!(
        again["commands"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["effect"] == "read")
    );

    let installed = rootfs.packages();
    let installed_tree = rootfs.tree(&["etc", "boot"]);

    // A build that fails (headers broken) is refused before anything
    // changes, with the end of make.log. NVIDIA's Makefile builds through
    // the kernel's source tree (lib/modules/K/source, Debian's -common
    // headers).
    let source =
        fs_err::read_link(rootfs.path().join(format!("lib/modules/{kernel}/source"))).unwrap();
    let makefile = rootfs
        .path()
        .join(source.strip_prefix("/").unwrap())
        .join("Makefile");
    let original = fs_err::read(&makefile).unwrap();
    let mut broken = original.clone();
    broken.extend_from_slice(b"\n$(error provision test: these kernel headers are broken)\n");
    fs_err::write(&makefile, &broken).unwrap();
    let refused = provision(&[
        "apply",
        upgrade.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let msg = refused.json()["msg"].as_str().unwrap().to_string();
    for part in [
        &format!("nvidia-kernel-dkms {NEW}"),
        "did not build for kernel",
        "nothing was stopped or replaced",
        "these kernel headers are broken",
    ] {
        assert!(msg.contains(part), "{part:?} in {msg}");
    }
    fs_err::write(&makefile, &original).unwrap();
    assert_eq!(installed, rootfs.packages(), "no package moved");
    assert_same_tree(
        &installed_tree,
        &rootfs.tree(&["etc", "boot"]),
        "a build that failed",
    );
    assert_eq!(module_version(rootfs, &module), OLD);
    nothing_left_of_the_build(rootfs.path());

    // The upgrade to bookworm-security's release: the module is built
    // before the package step, which then takes a fraction of the build.
    let report = apply_ok(&upgrade, rootfs.arg());
    let (build, packages) = built_before_packages(&report, NEW);
    eprintln!("upgrade {OLD} -> {NEW}: build {build} s, packages {packages} s");
    assert!(
        packages * 3.0 <= build,
        "the package step ({packages} s) takes at most a third of the build ({build} s)"
    );
    assert!(rootfs.packages()["nvidia-kernel-dkms"].0.starts_with(NEW));
    assert_eq!(module_version(rootfs, &module), NEW);
    let signer = rootfs.chroot(&["modinfo", "-F", "signer", &module]);
    assert_eq!(signer.trim(), "provision test MOK");
    nothing_left_of_the_build(rootfs.path());

    // Rollback brings 535.261.03 back from the module built before: its
    // maintainer script loads it, nothing is built.
    let rolled = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_eq!(installed, rootfs.packages());
    assert_eq!(module_version(rootfs, &module), OLD);
    // The upgrade's log, the rollback's lines appended: DKMS loaded both
    // releases' modules and built neither.
    let log = fs_err::read_to_string(rolled.json()["log"].as_str().unwrap()).unwrap();
    for release in [NEW, OLD] {
        assert!(
            log.contains(&format!("Loading tarball for nvidia-current-{release}")),
            "{release} loaded from what was built before:\n{log}"
        );
    }
    assert!(!log.contains("Building initial module"), "{log}");
    assert!(
        !rootfs.path().join("usr/share/nvidia-current-dkms").exists(),
        "and removes it once loaded"
    );

    // The next rollback takes the toolkit away, the driver stays.
    let rolled = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    let packages = rootfs.packages();
    assert!(
        !packages.contains_key("nvidia-cuda-toolkit"),
        "the toolkit is gone"
    );
    assert_eq!(
        &packages["nvidia-kernel-dkms"].0, driver,
        "the driver stays"
    );
    assert_eq!(module_version(rootfs, &module), OLD);

    // The next rollback removes it all: no module, the earlier packages,
    // etc/ and boot/ as before.
    let rolled = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert!(!rootfs.path().join(module.trim_start_matches('/')).exists());
    assert_eq!(before_packages, &rootfs.packages());
    assert_same_tree(
        before_tree,
        &rootfs.tree(&["etc", "boot"]),
        "rollback of the real driver",
    );
}
