//! Debian's real NVIDIA 535 driver, from Debian's own archive, in the
//! bookworm rootfs with Secure Boot modelled as on: DKMS builds the real
//! nvidia-current.ko for the rootfs's kernel, signed with a freshly
//! generated key pair (`[secure_boot]`), nouveau is blacklisted in the
//! initramfs, a second apply changes nothing, rollback removes it all
//! (the DKMS signing configuration byte for byte). About five minutes (a 1.8 GB download
//! with the CUDA 11.8 toolkit, and the module build): ignored by a plain
//! `cargo test`, run by `scripts/test` (CI).

use crate::secure_boot::{generate_mok, secure_boot_on, secure_boot_section};
use crate::support::{
    Rootfs, apply_ok, assert_same_tree, mounts_under, plan_file, provision, repo,
};

#[test]
#[ignore = "downloads 1.8 GB and builds the real module (about 5 minutes): scripts/test runs it"]
fn debian_12_real_535_driver_with_dkms() {
    let rootfs = Rootfs::new();
    secure_boot_on(rootfs.path());
    let (key, cert) = generate_mok(rootfs.path());
    let dir = tempfile::tempdir().unwrap();
    let shipped = fs_err::read_to_string(repo().join("plans/debian-12-distro-535.toml")).unwrap();
    let plan = plan_file(
        dir.path(),
        "signed.toml",
        &format!("{shipped}{}", secure_boot_section(&key, &cert)),
    );
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

    // Signed with the plan's key, not the one DKMS would make up: the
    // signer is the certificate's name, the key id its serial number.
    let signer = rootfs.chroot(&["modinfo", "-F", "signer", &module]);
    assert_eq!(signer.trim(), "provision test MOK");
    let sig_key = rootfs.chroot(&["modinfo", "-F", "sig_key", &module]);
    let serial = rootfs.chroot(&[
        "openssl", "x509", "-inform", "DER", "-in", &cert, "-noout", "-serial",
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
    let signature = report["verify"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "signature")
        .unwrap_or_else(|| panic!("no signature check: {report:#}"))
        .clone();
    assert_eq!(signature["passed"], true, "{signature:#}");

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
