//! `provision doctor`: each finding on a host that has the problem, none
//! on a healthy one, the three versions explained, exit 1 on errors.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::support::http::Server;
use crate::support::{Rootfs, fixture, provision, repo};

fn doctor(root: &Path) -> (i32, Value) {
    let run = provision(&["doctor", "--root", root.to_str().unwrap(), "--json"]);
    (run.code, run.json())
}

/// (id, severity) of every finding.
fn findings(report: &Value) -> BTreeSet<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id}: {report:#}"))
}

#[test]
fn the_h200_host_has_a_stale_compat_package_and_its_versions_explained() {
    let (code, report) = doctor(&fixture("ubuntu-24.04-h200-580-open"));
    assert_eq!(code, 0, "a warning is not an error: {report:#}");
    assert_eq!(
        findings(&report),
        set(&[("compat-older-than-driver", "warning")])
    );
    let stale = finding(&report, "compat-older-than-driver");
    assert!(
        stale["title"]
            .as_str()
            .unwrap()
            .contains("580.95.05 is not newer than the driver 580.159.04")
    );
    assert!(
        stale["remedy"]
            .as_str()
            .unwrap()
            .contains("apt-get purge cuda-compat-13-0")
    );
    let versions = &report["versions"];
    assert_eq!(versions["kernel_module"], "580.159.04");
    assert_eq!(versions["user_mode_driver"], "580.159.04");
    assert_eq!(versions["driver_cuda"], "13.0");
    assert_eq!(versions["toolkits"][0]["nvcc"], "13.0.88");
    let explanation = versions["explanation"].to_string();
    assert!(
        explanation.contains("nvidia-smi prints as \\\"CUDA Version\\\""),
        "{explanation}"
    );
    assert_eq!(report["driver_from_host"], true);
    // The human form says the same.
    let human = provision(&[
        "doctor",
        "--root",
        fixture("ubuntu-24.04-h200-580-open").to_str().unwrap(),
    ]);
    assert!(
        human.stdout.contains("warning [compat-older-than-driver]"),
        "{human:?}"
    );
    assert!(
        human
            .stdout
            .contains("The kernel module (nvidia.ko) is 580.159.04"),
        "{human:?}"
    );
}

#[test]
fn a_healthy_host_has_no_findings() {
    let (code, report) = doctor(&fixture("rocky-9-a100-holders"));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(findings(&report), BTreeSet::new(), "{report:#}");
    assert_eq!(report["msg"], "no problems found");
}

#[test]
fn nouveau_holding_the_gpu_is_an_error() {
    let (code, report) = doctor(&fixture("debian-12-a6000-nouveau"));
    assert_eq!(code, 1);
    assert_eq!(
        findings(&report),
        set(&[
            ("nouveau-loaded", "error"),
            ("nouveau-bound", "error"),
            ("nouveau-not-blacklisted", "warning"),
            ("no-kernel-driver", "warning"),
        ])
    );
}

#[test]
fn a_mismatch_another_toolkit_on_path_and_unheld_packages() {
    let (code, report) = doctor(&fixture("ubuntu-22.04-l40s-mismatch"));
    assert_eq!(code, 1);
    assert_eq!(
        findings(&report),
        set(&[
            ("driver-library-mismatch", "error"),
            ("environment-other-toolkit", "warning"),
            ("unattended-upgrades-unheld", "warning"),
            ("persistence-unknown", "info"),
        ])
    );
    let mismatch = finding(&report, "driver-library-mismatch");
    assert_eq!(mismatch["evidence"][0]["value"], "570.124.06");
    assert_eq!(mismatch["evidence"][1]["value"], "570.172.08");
    assert!(mismatch["remedy"].as_str().unwrap().contains("modprobe -r"));
    let path = finding(&report, "environment-other-toolkit");
    assert_eq!(path["evidence"][0]["file"], "/etc/profile.d/cuda-12.4.sh");
    assert!(
        finding(&report, "unattended-upgrades-unheld")["remedy"]
            .as_str()
            .unwrap()
            .contains("apt-mark hold nvidia-driver-570-open")
    );
}

#[test]
fn secure_boot_headers_a_too_new_toolkit_and_a_shadowing_compat_library() {
    let (code, report) = doctor(&fixture("ubuntu-24.04-l4-broken"));
    assert_eq!(code, 1);
    assert_eq!(
        findings(&report),
        set(&[
            ("secure-boot-unsigned-module", "error"),
            ("headers-missing", "error"),
            ("toolkit-newer-than-driver", "error"),
            ("compat-older-than-driver", "error"),
            ("persistence-unknown", "info"),
        ])
    );
    assert!(
        finding(&report, "headers-missing")["remedy"]
            .as_str()
            .unwrap()
            .contains("linux-headers-6.8.0-50-generic")
    );
    assert!(
        finding(&report, "toolkit-newer-than-driver")["remedy"]
            .as_str()
            .unwrap()
            .contains("[compat] package = \"auto\"")
    );
    // It is the toolkit /usr/local/cuda points at: what builds get by default.
    assert!(
        finding(&report, "toolkit-newer-than-driver")["title"]
            .as_str()
            .unwrap()
            .starts_with("/usr/local/cuda (toolkit /usr/local/cuda-13.0), the default toolkit:")
    );
    assert!(
        finding(&report, "compat-older-than-driver")["title"]
            .as_str()
            .unwrap()
            .contains("error 803")
    );
    assert!(
        finding(&report, "secure-boot-unsigned-module")["remedy"]
            .as_str()
            .unwrap()
            .contains("mokutil --import")
    );
}

#[test]
fn a_loaded_driver_that_dropped_the_gpu_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let full = dir.path().join(path);
        fs_err::create_dir_all(full.parent().unwrap()).unwrap();
        fs_err::write(full, text).unwrap();
    };
    write("etc/os-release", "ID=ubuntu\nVERSION_ID=\"24.04\"\n");
    write("proc/modules", "nvidia 1 0 - Live 0x0 (POE)\n");
    write(
        "proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  590.44.01  Tue Dec  2 2025\n",
    );
    let dev = "sys/bus/pci/devices/0000:01:00.0";
    write(&format!("{dev}/vendor"), "0x10de\n");
    write(&format!("{dev}/device"), "0x1db5\n");
    write(&format!("{dev}/class"), "0x030200\n");
    let (code, report) = doctor(dir.path());
    assert_eq!(code, 1, "{report:#}");
    let finding = finding(&report, "driver-does-not-support-gpu");
    assert!(
        finding["title"]
            .as_str()
            .unwrap()
            .contains("R590 no longer supports Tesla V100 SXM2 32GB"),
        "{finding}"
    );
}

/// Real initramfs-tools and the stand-in nvidia-smi, in the bookworm rootfs.
#[test]
fn nouveau_in_a_real_initramfs_and_persistence_off_from_nvidia_smi() {
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = Rootfs::new();
    rootfs.use_apt_repo(&server.url("debian"));
    // An image that carries nouveau.ko and no blacklist.
    fs_err::write(
        rootfs.path().join("etc/initramfs-tools/modules"),
        "nouveau\n",
    )
    .unwrap();
    rootfs.chroot_with_proc(&["update-initramfs", "-u", "-k", "all"]);
    let (_, report) = doctor(rootfs.path());
    let stale = finding(&report, "nouveau-in-initramfs");
    assert!(
        stale["title"]
            .as_str()
            .unwrap()
            .contains("carries nouveau.ko and no blacklist"),
        "{stale}"
    );

    // The plan blacklists nouveau and rebuilds the image: the finding goes.
    let plan = repo().join("plans/debian-12-distro-535.toml");
    crate::support::apply_ok(&plan, rootfs.arg());
    let (_, report) = doctor(rootfs.path());
    assert!(
        !findings(&report)
            .iter()
            .any(|(id, _)| id == "nouveau-in-initramfs"),
        "{report:#}"
    );

    // A loaded driver on a headless GPU, no persistence daemon, and the
    // installed nvidia-smi (the stand-in) answering "Disabled".
    let write = |path: &str, text: &str| {
        let full = rootfs.path().join(path);
        fs_err::create_dir_all(full.parent().unwrap()).unwrap();
        fs_err::write(full, text).unwrap();
    };
    write("proc/modules", "nvidia 1 0 - Live 0x0 (POE)\n");
    write(
        "proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.247.01  Tue Apr  1 2025\n",
    );
    let dev = "sys/bus/pci/devices/0000:3b:00.0";
    write(&format!("{dev}/vendor"), "0x10de\n");
    write(&format!("{dev}/device"), "0x27b8\n");
    write(&format!("{dev}/class"), "0x030200\n");
    let (_, report) = doctor(rootfs.path());
    let off = finding(&report, "persistence-off");
    assert_eq!(off["severity"], "warning");
    assert_eq!(off["evidence"][0]["value"], "Disabled");
    assert!(
        off["remedy"]
            .as_str()
            .unwrap()
            .contains("nvidia-persistenced")
    );
}

/// Each modelled host (tests/fixtures/hosts/*/MODEL.md) has the one
/// problem it was built for: doctor names it with its evidence and remedy,
/// and nothing else above info.
fn only_finding(host: &str, id: &str, severity: &str) -> Value {
    let (code, report) = doctor(&fixture(host));
    let serious: BTreeSet<(String, String)> = findings(&report)
        .into_iter()
        .filter(|(_, s)| s != "info")
        .collect();
    assert_eq!(serious, set(&[(id, severity)]), "{host}: {report:#}");
    assert_eq!(code, if severity == "error" { 1 } else { 0 }, "{host}");
    finding(&report, id).clone()
}

fn evidence_of(finding: &Value) -> Vec<(String, String)> {
    finding["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["file"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_stale_libcuda_first_on_the_loader_path_and_in_ld_library_path() {
    let found = only_finding(
        "ubuntu-22.04-h100-stale-libcuda",
        "libcuda-shadowed",
        "error",
    );
    let evidence = evidence_of(&found);
    assert!(
        evidence.contains(&(
            "/opt/nvidia-535/lib/libcuda.so.1".into(),
            "535.104.05".into()
        )),
        "{evidence:?}"
    );
    assert!(evidence.contains(&(
        "/etc/profile.d/nvidia-535.sh".into(),
        "LD_LIBRARY_PATH=/opt/nvidia-535/lib holds libcuda 535.104.05".into()
    )));
    let remedy = found["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("/etc/ld.so.conf.d/00-nvidia-535.conf"),
        "{remedy}"
    );
    assert!(remedy.contains("ldconfig"));
}

#[test]
fn two_toolkits_on_the_loader_path() {
    let found = only_finding(
        "ubuntu-24.04-l40s-two-toolkits",
        "loader-two-toolkits",
        "warning",
    );
    let evidence = evidence_of(&found);
    assert_eq!(
        evidence,
        [
            (
                "/etc/ld.so.conf.d/cuda-12-4.conf".to_string(),
                "/usr/local/cuda-12.4".to_string()
            ),
            (
                "/etc/ld.so.conf.d/cuda-12-9.conf".to_string(),
                "/usr/local/cuda-12.9".to_string()
            ),
        ]
    );
    // The default stays; the other toolkit's file goes.
    let remedy = found["remedy"].as_str().unwrap();
    assert!(remedy.contains("[toolkit] version = \"12.9\""), "{remedy}");
    assert!(
        remedy.contains("remove /etc/ld.so.conf.d/cuda-12-4.conf"),
        "{remedy}"
    );
}

#[test]
fn a_compat_package_the_driver_does_not_need() {
    let found = only_finding(
        "ubuntu-24.04-h100-compat-unneeded",
        "compat-not-needed",
        "warning",
    );
    assert!(
        found["title"]
            .as_str()
            .unwrap()
            .contains("driver 580.65.06 runs CUDA 13.0 natively"),
        "{found}"
    );
    assert!(
        found["remedy"]
            .as_str()
            .unwrap()
            .contains("cuda-compat-13-0")
    );
    assert!(
        found["remedy"]
            .as_str()
            .unwrap()
            .contains("/etc/ld.so.conf.d/00-cuda-compat.conf")
    );
}

#[test]
fn the_module_flavour_wrong_for_the_gpu() {
    let open = only_finding(
        "ubuntu-22.04-v100-open",
        "module-flavor-wrong-for-gpu",
        "error",
    );
    assert!(open["title"].as_str().unwrap().contains("Volta"), "{open}");
    assert!(
        open["remedy"]
            .as_str()
            .unwrap()
            .starts_with("[driver] flavor = \"proprietary\"")
    );
    let proprietary = only_finding(
        "ubuntu-22.04-b200-proprietary",
        "module-flavor-wrong-for-gpu",
        "error",
    );
    assert!(
        proprietary["title"]
            .as_str()
            .unwrap()
            .contains("runs only with the open kernel module")
    );
    assert!(
        proprietary["remedy"]
            .as_str()
            .unwrap()
            .starts_with("[driver] flavor = \"open\"")
    );
}

#[test]
fn dnf_automatic_applying_updates_with_the_driver_unlocked() {
    let found = only_finding(
        "rocky-9-l40s-dnf-automatic",
        "dnf-automatic-unlocked",
        "warning",
    );
    assert_eq!(
        evidence_of(&found)[0],
        (
            "/etc/systemd/system/timers.target.wants/dnf-automatic.timer".to_string(),
            "enabled; /etc/dnf/automatic.conf: apply_updates = yes".to_string()
        )
    );
    // A versionlock entry for the driver quiets it.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("host");
    let status = std::process::Command::new("cp")
        .args([
            "-a",
            fixture("rocky-9-l40s-dnf-automatic").to_str().unwrap(),
            copy.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    fs_err::write(
        copy.join("etc/dnf/plugins/versionlock.list"),
        "kmod-nvidia-open-dkms-3:570.172.08-1.el9.*\n",
    )
    .unwrap();
    let (_, report) = doctor(&copy);
    assert!(
        !findings(&report)
            .iter()
            .any(|(id, _)| id == "dnf-automatic-unlocked"),
        "{report:#}"
    );
}

#[test]
fn a_mismatch_names_the_processes_still_mapping_the_old_libraries() {
    let found = only_finding(
        "ubuntu-24.04-a10-mismatch-old-maps",
        "driver-library-mismatch",
        "error",
    );
    // The job started before the upgrade still maps the replaced files;
    // tritonserver, mapping the new libcuda, is not named there.
    let mapped: Vec<(String, String)> = evidence_of(&found)
        .into_iter()
        .filter(|(file, _)| file.ends_with("/maps"))
        .collect();
    assert_eq!(
        mapped,
        [(
            "/proc/3120/maps".to_string(),
            "3120 (python3) maps /usr/lib/x86_64-linux-gnu/libcuda.so.570.124.06 (deleted)"
                .to_string()
        )]
    );
    // Every holder must stop before the module can reload.
    let remedy = found["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("3311 (tritonserver)") && remedy.contains("3120 (python3)"),
        "{remedy}"
    );
}
