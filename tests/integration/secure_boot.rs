//! Secure Boot in the Debian rootfs, its state modelled as on (the
//! SecureBoot EFI variable under the root's /sys): a plan whose module is
//! built here needs an enrolled key, DKMS is configured to sign with it,
//! and rollback removes that configuration byte for byte. The real DKMS
//! build signed with a generated key is in `real_driver`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::http::Server;
use crate::support::{Rootfs, assert_same_tree, plan_file, provision, repo, step};

const SECURE_BOOT_VAR: &str =
    "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Secure Boot on, as the kernel's efivarfs shows it (attributes, then 1).
pub fn secure_boot_on(root: &Path) {
    let path = root.join(SECURE_BOOT_VAR);
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    fs_err::write(path, [6u8, 0, 0, 0, 1]).unwrap();
}

/// A fresh key pair, as a user makes one to enroll with `mokutil
/// --import`, under /var/lib/shim-signed/mok in the root (key mode 600).
pub fn generate_mok(root: &Path) -> (String, String) {
    let dir = root.join("var/lib/shim-signed/mok");
    fs_err::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .args(["-subj", "/CN=provision test MOK/", "-outform", "DER"])
        .arg("-keyout")
        .arg(dir.join("MOK.priv"))
        .arg("-out")
        .arg(dir.join("MOK.der"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req");
    fs_err::set_permissions(dir.join("MOK.priv"), std::fs::Permissions::from_mode(0o600)).unwrap();
    (
        "/var/lib/shim-signed/mok/MOK.priv".into(),
        "/var/lib/shim-signed/mok/MOK.der".into(),
    )
}

/// A copy of a fixture host (read-only snapshot) with a MOK key pair in
/// it, and a plan file: the shipped `plan` with `[secure_boot]` naming it.
pub fn signed_copy(
    fixture: &str,
    plan: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(crate::support::fixture(fixture))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let (key, cert) = generate_mok(&root);
    let shipped = fs_err::read_to_string(repo().join(plan)).unwrap();
    let plan = plan_file(
        dir.path(),
        "signed.toml",
        &format!("{shipped}{}", secure_boot_section(&key, &cert)),
    );
    (dir, root, plan)
}

pub fn secure_boot_section(key: &str, cert: &str) -> String {
    format!("[secure_boot]\nkey = \"{key}\"\ncert = \"{cert}\"\n")
}

fn distro_rootfs(server: &Server) -> Rootfs {
    let rootfs = Rootfs::new();
    rootfs.use_apt_repo(&server.url("debian"));
    rootfs
}

fn distro_plan() -> String {
    fs_err::read_to_string(repo().join("plans/debian-12-distro-535.toml")).unwrap()
}

#[test]
fn without_a_key_a_module_build_under_secure_boot_is_refused_before_any_change() {
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = distro_rootfs(&server);
    secure_boot_on(rootfs.path());
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_file(dir.path(), "plan.toml", &distro_plan());
    let before = rootfs.tree(&["etc", "boot", "var/lib/dpkg"]);
    for verb in ["plan", "apply"] {
        let run = provision(&[
            verb,
            plan.to_str().unwrap(),
            "--root",
            rootfs.arg(),
            "--json",
        ]);
        assert_eq!(run.code, 1, "{verb}: {run:?}");
        let msg = run.json()["msg"].as_str().unwrap().to_string();
        assert!(msg.contains("Secure Boot is on"), "{msg}");
        assert!(msg.contains("DKMS builds nvidia.ko here"), "{msg}");
        assert!(msg.contains("mokutil --import MOK.der"), "{msg}");
        assert!(msg.contains("[secure_boot] key and cert"), "{msg}");
    }
    assert_same_tree(
        &before,
        &rootfs.tree(&["etc", "boot", "var/lib/dpkg"]),
        "refused",
    );

    // A key anyone can read, or one that is not there, is refused too.
    let (key, cert) = generate_mok(rootfs.path());
    let keyfile = rootfs.path().join(key.trim_start_matches('/'));
    fs_err::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let plan = plan_file(
        dir.path(),
        "signed.toml",
        &format!("{}{}", distro_plan(), secure_boot_section(&key, &cert)),
    );
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap()
            .contains("is readable by every user (mode 644)"),
        "{run:?}"
    );
    let missing = plan_file(
        dir.path(),
        "missing.toml",
        &format!(
            "{}{}",
            distro_plan(),
            secure_boot_section("/root/none.priv", &cert)
        ),
    );
    let run = provision(&[
        "plan",
        missing.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap()
            .contains("[secure_boot] key /root/none.priv does not exist"),
        "{run:?}"
    );
}

#[test]
fn a_half_secure_boot_table_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_file(
        dir.path(),
        "plan.toml",
        "[driver]\nbranch = \"535\"\n[secure_boot]\nkey = \"/root/mok.priv\"\n",
    );
    let run = provision(&["plan", plan.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let msg = run.json()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("plan.toml:3:1: [secure_boot] needs both key"),
        "{msg}"
    );
    let plan = plan_file(
        dir.path(),
        "relative.toml",
        "[driver]\nbranch = \"535\"\n[secure_boot]\nkey = \"mok.priv\"\ncert = \"/root/mok.der\"\n",
    );
    let run = provision(&["plan", plan.to_str().unwrap(), "--json"]);
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap()
            .contains("relative.toml:4:7: invalid path \"mok.priv\""),
        "{run:?}"
    );
}

#[test]
fn dkms_is_told_to_sign_with_the_key_and_rollback_removes_it_byte_for_byte() {
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = distro_rootfs(&server);
    secure_boot_on(rootfs.path());
    let (key, cert) = generate_mok(rootfs.path());
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_file(
        dir.path(),
        "plan.toml",
        &format!("{}{}", distro_plan(), secure_boot_section(&key, &cert)),
    );
    let before = rootfs.tree(&["etc", "boot"]);
    let planned = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(planned.code, 0, "{planned:?}");
    let signing = step(&planned.json(), "secure-boot:dkms-signing").clone();
    assert_eq!(signing["action"], "create", "{signing:#}");
    assert!(
        signing["diff"]
            .to_string()
            .contains(&format!("mok_signing_key=\\\"{key}\\\"")),
        "{signing:#}"
    );

    let applied = provision(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let conf = rootfs.read("/etc/dkms/framework.conf.d/provision-signing.conf");
    assert!(
        conf.contains(&format!("mok_signing_key=\"{key}\"\n")),
        "{conf}"
    );
    assert!(
        conf.contains(&format!("mok_certificate=\"{cert}\"\n")),
        "{conf}"
    );
    // The steps run in order: the key is in place before DKMS builds.
    let ids: Vec<String> = applied.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let at = |id: &str| ids.iter().position(|i| i == id).unwrap();
    assert!(at("secure-boot:dkms-signing") < at("packages"), "{ids:?}");

    let rolled = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert!(!rootfs.path().join("etc/dkms/framework.conf.d").exists());
    assert_same_tree(&before, &rootfs.tree(&["etc", "boot"]), "rollback");
}

/// One EFI_SIGNATURE_LIST with an X.509 entry, as shim exports MokListRT.
fn signature_list(der: &[u8]) -> Vec<u8> {
    let guid = [
        0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0,
        0x72,
    ];
    let each = 16 + der.len();
    let mut list = guid.to_vec();
    list.extend(((28 + each) as u32).to_le_bytes());
    list.extend(0u32.to_le_bytes());
    list.extend((each as u32).to_le_bytes());
    list.extend([0x11; 16]);
    list.extend(der);
    list
}

#[test]
fn a_key_that_is_not_enrolled_is_refused_and_an_enrolled_one_plans() {
    let (_dir, root, plan) =
        signed_copy("debian-12-a6000-nouveau", "plans/debian-12-distro-535.toml");
    let mok = root.join("sys/firmware/efi/mok-variables/MokListRT");
    fs_err::create_dir_all(mok.parent().unwrap()).unwrap();
    // Shim's list holds some other key only.
    fs_err::write(&mok, signature_list(b"\x30\x82another certificate")).unwrap();
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    let msg = run.json()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("MOK.der is not enrolled (not in MokListRT)"),
        "{msg}"
    );
    assert!(
        msg.contains("mokutil --import /var/lib/shim-signed/mok/MOK.der"),
        "{msg}"
    );
    // Enrolled (the certificate's DER in the list): planned, no warning about it.
    let der = fs_err::read(root.join("var/lib/shim-signed/mok/MOK.der")).unwrap();
    let mut lists = signature_list(b"\x30\x82another certificate");
    lists.extend(signature_list(&der));
    fs_err::write(&mok, lists).unwrap();
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("cannot confirm"), "{run:?}");
    // No list readable: planned with a warning.
    fs_err::remove_file(&mok).unwrap();
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.json()["warnings"]
            .to_string()
            .contains("cannot confirm that /var/lib/shim-signed/mok/MOK.der is enrolled"),
        "{run:?}"
    );
}
