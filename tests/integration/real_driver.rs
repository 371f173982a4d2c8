//! Debian's real NVIDIA 535 driver, from Debian's own archive, in the
//! bookworm rootfs: DKMS builds the real nvidia-current.ko for the rootfs's
//! kernel, nouveau is blacklisted in the initramfs, a second apply changes
//! nothing, rollback removes it all. About five minutes (a 1.8 GB download
//! with the CUDA 11.8 toolkit, and the module build): ignored by a plain
//! `cargo test`, run by `scripts/test` (CI).

use crate::support::{Rootfs, apply_ok, assert_same_tree, mounts_under, provision, repo};

#[test]
#[ignore = "downloads 1.8 GB and builds the real module (about 5 minutes): scripts/test runs it"]
fn debian_12_real_535_driver_with_dkms() {
    let rootfs = Rootfs::new();
    let plan = repo().join("plans/debian-12-distro-535.toml");
    let kernel = rootfs.kernel();
    let before_tree = rootfs.tree(&["etc", "boot"]);
    let before_packages = rootfs.packages();

    let report = apply_ok(&plan, rootfs.arg());
    assert_eq!(report["changed"], true);
    assert!(
        mounts_under(rootfs.path()).is_empty(),
        "nothing stays mounted"
    );

    // Debian's packages, one 535 release, held.
    let packages = rootfs.packages();
    let (driver, held) = &packages["nvidia-kernel-dkms"];
    assert!(driver.starts_with("535."), "{driver}");
    assert!(*held);
    for name in ["firmware-nvidia-gsp", "nvidia-smi", "libcuda1"] {
        assert_eq!(&packages[name].0, driver, "{name} at the driver's release");
    }
    assert!(packages["nvidia-cuda-toolkit"].0.starts_with("11.8."));

    // DKMS built the real module for the rootfs's kernel: modinfo reads it.
    let module = format!("/lib/modules/{kernel}/updates/dkms/nvidia-current.ko");
    assert!(
        rootfs.path().join(module.trim_start_matches('/')).is_file(),
        "{module}"
    );
    let version = rootfs.chroot(&["modinfo", "-F", "version", &module]);
    assert_eq!(
        version.trim(),
        crate::support::upstream(driver),
        "the built module is the installed release"
    );
    assert!(
        rootfs
            .chroot(&["modinfo", "-F", "license", &module])
            .contains("NVIDIA")
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

    // Rollback removes it: no module, the earlier packages, etc/ and boot/ as before.
    let rolled = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert!(!rootfs.path().join(module.trim_start_matches('/')).exists());
    assert_eq!(before_packages, rootfs.packages());
    assert_same_tree(
        &before_tree,
        &rootfs.tree(&["etc", "boot"]),
        "rollback of the real driver",
    );
}
