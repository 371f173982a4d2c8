//! Plans checked against the detected GPUs and the knowledge base before
//! anything changes: refused with the reason and a fix, host untouched.

use std::path::Path;

use serde_json::Value;

use crate::support::{fixture, plan_file, provision};

/// A host root with these GPUs (device, subsystem) and nothing installed.
fn gpu_host(gpus: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let full = dir.path().join(path);
        fs_err::create_dir_all(full.parent().unwrap()).unwrap();
        fs_err::write(full, text).unwrap();
    };
    write(
        "etc/os-release",
        "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\nPRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\n",
    );
    write("var/lib/dpkg/status", "");
    for (index, (device, subsystem)) in gpus.iter().enumerate() {
        let base = format!("sys/bus/pci/devices/0000:{:02x}:00.0", index + 1);
        write(&format!("{base}/vendor"), "0x10de\n");
        write(&format!("{base}/device"), &format!("{device}\n"));
        write(&format!("{base}/class"), "0x030200\n");
        let (vendor, sub) = subsystem.split_once(':').unwrap();
        write(
            &format!("{base}/subsystem_vendor"),
            &format!("0x{vendor}\n"),
        );
        write(&format!("{base}/subsystem_device"), &format!("0x{sub}\n"));
    }
    dir
}

const B200: (&str, &str) = ("0x2901", "10de:1999");
const V100: (&str, &str) = ("0x1db5", "10de:1249");
const H100: (&str, &str) = ("0x2330", "10de:16c0");
const RTX_4090: (&str, &str) = ("0x2684", "10de:167c");

fn plan(root: &Path, text: &str) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = plan_file(dir.path(), "plan.toml", text);
    let run = provision(&[
        "plan",
        path.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ]);
    (run.code, run.json())
}

fn refused(root: &Path, text: &str, expected: &[&str]) {
    let (code, report) = plan(root, text);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["failed"], true);
    let msg = report["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("the plan cannot work on this host"),
        "{msg}"
    );
    for part in expected {
        assert!(msg.contains(part), "expected {part:?} in:\n{msg}");
    }
}

const REPO: &str = "source = \"cuda-repo\"\n";

#[test]
fn a_driver_branch_the_gpu_needs_newer_is_refused() {
    let host = fixture("ubuntu-24.04-h200-580-open");
    refused(
        &host,
        &format!("[driver]\nbranch = \"535\"\nflavor = \"open\"\n{REPO}"),
        &[
            "NVIDIA H200 needs driver R550 or newer",
            "plan driver branch 550 or newer",
        ],
    );
}

#[test]
fn blackwell_needs_the_open_module_and_r570() {
    let host = gpu_host(&[B200]);
    refused(
        host.path(),
        &format!("[driver]\nbranch = \"580\"\nflavor = \"proprietary\"\n{REPO}"),
        &[
            "runs only with the open kernel module",
            "set [driver] flavor = \"open\"",
        ],
    );
    refused(
        host.path(),
        &format!("[driver]\nbranch = \"550\"\nflavor = \"open\"\n{REPO}"),
        &["plan driver branch 570 or newer"],
    );
    // flavor = "auto" picks open for it.
    let (code, report) = plan(
        host.path(),
        &format!("[driver]\nbranch = \"580\"\nflavor = \"auto\"\n{REPO}"),
    );
    assert_eq!(code, 0, "{report:#}");
    assert!(
        report["steps"]
            .to_string()
            .contains("nvidia-headless-580-open"),
        "{report:#}"
    );
}

#[test]
fn volta_needs_the_proprietary_module_r580_at_most_and_cuda_12() {
    let host = gpu_host(&[V100]);
    refused(
        host.path(),
        &format!("[driver]\nbranch = \"580\"\nflavor = \"open\"\n{REPO}"),
        &[
            "the open kernel module needs a Turing or newer GPU",
            "set [driver] flavor = \"proprietary\"",
        ],
    );
    refused(
        host.path(),
        &format!("[driver]\nbranch = \"590\"\nflavor = \"proprietary\"\n{REPO}"),
        &[
            "driver R590 no longer supports",
            "plan driver branch 580 or older",
        ],
    );
    refused(
        host.path(),
        &format!(
            "[driver]\nbranch = \"580\"\nflavor = \"proprietary\"\n{REPO}[toolkit]\nversion = \"13.0\"\n"
        ),
        &["CUDA 13 dropped Volta", "plan an older toolkit"],
    );
    let (code, report) = plan(
        host.path(),
        &format!(
            "[driver]\nbranch = \"580\"\nflavor = \"auto\"\n{REPO}[toolkit]\nversion = \"12.8\"\n"
        ),
    );
    assert_eq!(code, 0, "{report:#}");
    assert!(
        report["steps"]
            .to_string()
            .contains("nvidia-headless-580\""),
        "auto picks proprietary: {report:#}"
    );
}

#[test]
fn mixed_gpus_that_need_different_flavours_are_refused() {
    let host = gpu_host(&[B200, V100]);
    refused(
        host.path(),
        &format!("[driver]\nbranch = \"580\"\nflavor = \"open\"\n{REPO}"),
        &["needs the proprietary module"],
    );
    let (code, report) = plan(
        host.path(),
        &format!("[driver]\nbranch = \"580\"\nflavor = \"auto\"\n{REPO}"),
    );
    assert_eq!(code, 1);
    assert!(
        report["msg"]
            .as_str()
            .unwrap()
            .contains("one driver cannot serve them all"),
        "{report:#}"
    );
}

#[test]
fn a_toolkit_newer_than_the_driver_needs_the_compat_package_or_is_refused() {
    let h100 = gpu_host(&[H100]);
    refused(
        h100.path(),
        &format!(
            "[driver]\nbranch = \"570\"\nflavor = \"open\"\n{REPO}[toolkit]\nversion = \"13.0\"\n[compat]\npackage = \"none\"\n"
        ),
        &[
            "set [compat] package = \"auto\" to install cuda-compat-13-0",
            "or plan driver branch 580 or newer",
        ],
    );
    // auto: the package and its loader entry are part of the plan.
    let (code, report) = plan(
        h100.path(),
        &format!(
            "[driver]\nbranch = \"570\"\nflavor = \"open\"\n{REPO}[toolkit]\nversion = \"13.0\"\n[compat]\npackage = \"auto\"\n"
        ),
    );
    assert_eq!(code, 0, "{report:#}");
    let steps = report["steps"].to_string();
    assert!(steps.contains("cuda-compat-13-0"), "{report:#}");
    let compat = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "compat:loader")
        .unwrap();
    assert_eq!(compat["action"], "create");
    assert!(
        compat["diff"]
            .as_str()
            .unwrap()
            .contains("+/usr/local/cuda-13.0/compat")
    );
    // auto where the driver runs the toolkit: no package, no loader entry.
    let (_, report) = plan(
        h100.path(),
        &format!(
            "[driver]\nbranch = \"580\"\nflavor = \"open\"\n{REPO}[toolkit]\nversion = \"13.0\"\n[compat]\npackage = \"auto\"\n"
        ),
    );
    assert!(
        !report["steps"].to_string().contains("+ cuda-compat-13-0"),
        "{report:#}"
    );
    let compat = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "compat:loader")
        .unwrap();
    assert_eq!(compat["action"], "none");
    // A GeForce cannot use forward compatibility at all.
    let geforce = gpu_host(&[RTX_4090]);
    refused(
        geforce.path(),
        &format!(
            "[driver]\nbranch = \"570\"\nflavor = \"open\"\n{REPO}[toolkit]\nversion = \"13.0\"\n[compat]\npackage = \"auto\"\n"
        ),
        &[
            "CUDA 13.0 cannot run on driver R570",
            "not a data-center GPU",
            "plan driver branch 580 or newer",
        ],
    );
}

#[test]
fn an_explicit_compat_package_must_make_sense() {
    let h100 = gpu_host(&[H100]);
    let base = format!(
        "[driver]\nbranch = \"580\"\nflavor = \"open\"\n{REPO}[toolkit]\nversion = \"12.8\"\n"
    );
    refused(
        h100.path(),
        &format!("{base}[compat]\npackage = \"cuda-compat-12-8\"\n"),
        &["older than the planned driver R580", "error 803"],
    );
    refused(
        h100.path(),
        &format!("{base}[compat]\npackage = \"cuda-compat-13-0\"\n"),
        &["pointless with driver R580"],
    );
    refused(
        h100.path(),
        &format!(
            "[driver]\nbranch = \"550\"\nflavor = \"open\"\n{REPO}[toolkit]\nversion = \"13.0\"\n[compat]\npackage = \"cuda-compat-13-0\"\n"
        ),
        &["supports driver branches R535, R570 only, not R550"],
    );
    let geforce = gpu_host(&[RTX_4090]);
    refused(
        geforce.path(),
        &format!(
            "[driver]\nbranch = \"570\"\nflavor = \"open\"\n{REPO}[compat]\npackage = \"cuda-compat-13-0\"\n"
        ),
        &["needs a data-center GPU", "GeForce RTX 4090"],
    );
    refused(
        h100.path(),
        &format!("{base}[compat]\npackage = \"cuda-compat-12-7\"\n"),
        &["not in NVIDIA's forward-compatibility matrix"],
    );
}

/// `plan PLAN --root ROOT --json`, refused: its message.
fn refused_message(plan: &std::path::Path, root: &std::path::Path) -> String {
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    run.json()["msg"].as_str().unwrap().to_string()
}

#[test]
fn a_container_whose_driver_is_the_machines_own_is_refused_a_driver() {
    // The real H200 snapshot is a container: its driver lives in
    // /usr/local/nvidia, mounted from the machine, with no /.dockerenv.
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture("ubuntu-24.04-h200-580-open"))
        .arg(dir.path().join("root"))
        .status()
        .unwrap();
    assert!(status.success());
    let root = dir.path().join("root");
    let shipped = crate::support::repo().join("plans/ubuntu-24.04-cuda-repo-580.toml");
    // holders = "terminate" would end the user's job: the refusal comes
    // first, before any holder is discussed, and names the way out.
    let text = fs_err::read_to_string(&shipped).unwrap() + "\n[upgrade]\nholders = \"terminate\"\n";
    let terminate = crate::support::plan_file(dir.path(), "terminate.toml", &text);
    for plan in [&shipped, &terminate] {
        let msg = refused_message(plan, &root);
        assert!(
            msg.contains("this is a container (libcuda at /usr/local/nvidia/lib64/libcuda.so.1"),
            "{msg}"
        );
        assert!(msg.contains("kernel module 580.159.04"), "{msg}");
        assert!(
            msg.contains("leave out [driver] to install the toolkit only"),
            "{msg}"
        );
        assert!(!msg.contains("holding the GPU"), "{msg}");
    }
    // The container's own marker names the runtime; pid 1's environment
    // (systemd's container interface) does too, without any marker file.
    fs_err::write(root.join(".dockerenv"), "").unwrap();
    let msg = refused_message(&shipped, &root);
    assert!(
        msg.contains("this is a docker container (/.dockerenv exists"),
        "{msg}"
    );
    fs_err::remove_file(root.join(".dockerenv")).unwrap();
    fs_err::create_dir_all(root.join("proc/1")).unwrap();
    fs_err::write(
        root.join("proc/1/environ"),
        "PATH=/usr/bin\0container=podman\0",
    )
    .unwrap();
    let msg = refused_message(&shipped, &root);
    assert!(
        msg.contains("this is a podman container (/proc/1/environ: container=podman"),
        "{msg}"
    );
}
