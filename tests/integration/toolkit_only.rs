//! Plans without `[driver]`: the toolkit installed on the driver that runs
//! underneath (the host's module, or a container's machine's), checked
//! against it, and nothing of the driver's touched.

use std::path::Path;

use serde_json::Value;

use crate::support::{
    Rootfs, assert_same_tree, fixture, hash_tree_into, plan_file, provision, repo, step,
};
use crate::support::{serve_test_repos, toolkit_plan};

/// A writable copy of the real H200 snapshot, with `.dockerenv` or not.
fn h200(docker: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture("ubuntu-24.04-h200-580-open"))
        .arg(dir.path().join("root"))
        .status()
        .unwrap();
    assert!(status.success());
    if docker {
        fs_err::write(dir.path().join("root/.dockerenv"), "").unwrap();
    }
    dir
}

fn plan_json(root: &Path, text: &str) -> (i32, Value) {
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

fn tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut tree = std::collections::BTreeMap::new();
    hash_tree_into(root, root, &mut tree);
    tree
}

fn ids(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_toolkit_only_plan_is_valid_on_the_real_h200_as_a_host_and_as_a_container() {
    for docker in [false, true] {
        let dir = h200(docker);
        let root = dir.path().join("root");
        let before = tree(&root);
        let (code, report) = plan_json(&root, "[toolkit]\nversion = \"13.0\"\n");
        assert_eq!(code, 0, "docker {docker}: {report:#}");
        assert_eq!(report["failed"], false);
        // The toolkit and its environment; nothing of the driver's, no
        // window around the python3 process that holds the GPU.
        let steps = ids(&report);
        assert!(
            steps.iter().all(|id| !id.starts_with("nouveau")
                && !id.starts_with("driver")
                && !id.starts_with("window")),
            "docker {docker}: {steps:?}"
        );
        let packages = step(&report, "packages");
        let diff = packages["diff"].to_string();
        assert!(diff.contains("cuda-toolkit-13-0"), "{diff}");
        assert!(!diff.contains("nvidia-"), "{diff}");
        assert!(report["window"].is_null(), "{report:#}");
        assert_eq!(report["reboot_required"], false);
        assert_eq!(before, tree(&root), "plan wrote into the root");
    }
    // The same root with a driver planned: a container is refused one.
    let dir = h200(true);
    let (code, report) = plan_json(
        &dir.path().join("root"),
        "[driver]\nbranch = \"580\"\nsource = \"cuda-repo\"\n[toolkit]\nversion = \"13.0\"\n",
    );
    assert_eq!(code, 1);
    let msg = report["msg"].as_str().unwrap();
    assert!(
        msg.contains("leave out [driver] to install the toolkit only"),
        "{msg}"
    );
}

#[test]
fn a_toolkit_the_running_driver_cannot_run_is_refused_with_the_way_out() {
    let dir = h200(true);
    let root = dir.path().join("root");
    let before = tree(&root);
    // Hopper needs CUDA 11.8: the GPU, not the driver, rules 11.7 out.
    let (code, report) = plan_json(&root, "[toolkit]\nversion = \"11.7\"\n");
    assert_eq!(code, 1, "{report:#}");
    let msg = report["msg"].as_str().unwrap();
    assert!(msg.contains("CUDA 11.7 predates Hopper"), "{msg}");
    assert!(msg.contains("support starts with CUDA 11.8"), "{msg}");

    // An image for R570 nodes: CUDA 13.0 needs forward compatibility there,
    // or an older toolkit.
    let (code, report) = plan_json(
        &root,
        "[toolkit]\nversion = \"13.0\"\nfor_driver = \"570\"\n",
    );
    assert_eq!(code, 1, "{report:#}");
    let msg = report["msg"].as_str().unwrap();
    assert!(
        msg.contains("CUDA 13.0 is newer than the driver 570 runs natively"),
        "{msg}"
    );
    assert!(
        msg.contains("set [compat] package = \"auto\" to install cuda-compat-13-0"),
        "{msg}"
    );
    assert!(
        msg.contains("CUDA 12.8 (the newest R570 runs natively)"),
        "{msg}"
    );

    // ... but here a newer driver runs, which that compat libcuda would shadow.
    let (code, report) = plan_json(
        &root,
        "[toolkit]\nversion = \"13.0\"\nfor_driver = \"570\"\n[compat]\npackage = \"auto\"\n",
    );
    assert_eq!(code, 1, "{report:#}");
    let msg = report["msg"].as_str().unwrap();
    assert!(
        msg.contains(
            "cuda-compat-13-0 carries a libcuda from R580, and the driver 580.159.04 runs here"
        ),
        "{msg}"
    );
    // A compat package older than the running driver is refused by name.
    let (code, report) = plan_json(
        &root,
        "[toolkit]\nversion = \"13.0\"\n[compat]\npackage = \"cuda-compat-13-0\"\n",
    );
    assert_eq!(code, 1, "{report:#}");
    assert!(
        report["msg"]
            .as_str()
            .unwrap()
            .contains("cuda-compat-13-0 is pointless with driver R580"),
        "{report:#}"
    );
    assert_eq!(before, tree(&root));
}

/// An Ubuntu 24.04 root with nothing of NVIDIA's.
fn bare_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs_err::create_dir_all(dir.path().join("etc")).unwrap();
    fs_err::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
    fs_err::write(
        dir.path().join("etc/os-release"),
        "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\nPRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\n",
    )
    .unwrap();
    fs_err::write(dir.path().join("var/lib/dpkg/status"), "").unwrap();
    dir
}

#[test]
fn with_no_driver_at_all_an_image_bake_names_the_driver_it_is_for() {
    let dir = bare_root();
    let before = tree(dir.path());
    let (code, report) = plan_json(dir.path(), "[toolkit]\nversion = \"12.8\"\n");
    assert_eq!(code, 1, "{report:#}");
    let msg = report["msg"].as_str().unwrap();
    assert!(msg.contains("nothing here can run the toolkit"), "{msg}");
    assert!(msg.contains("[toolkit] for_driver = \"580\""), "{msg}");

    let (code, report) = plan_json(
        dir.path(),
        "[toolkit]\nversion = \"12.8\"\nfor_driver = \"580.95.05\"\n",
    );
    assert_eq!(code, 0, "{report:#}");
    assert!(
        step(&report, "packages")["diff"]
            .to_string()
            .contains("cuda-toolkit-12-8")
    );
    // Nodes on R535 would need forward compatibility for 13.0.
    let (code, report) = plan_json(
        dir.path(),
        "[toolkit]\nversion = \"13.0\"\nfor_driver = \"535\"\n",
    );
    assert_eq!(code, 1, "{report:#}");
    let msg = report["msg"].as_str().unwrap();
    assert!(msg.contains("cuda-compat-13-0"), "{msg}");
    assert!(
        msg.contains("CUDA 12.2 (the newest R535 runs natively)"),
        "{msg}"
    );
    assert_eq!(before, tree(dir.path()));
}

#[test]
fn toolkit_only_plan_errors_are_located() {
    let dir = bare_root();
    let cases = [
        (
            "[compat]\npackage = \"auto\"\n",
            "1:1: the plan installs nothing",
        ),
        (
            "[driver]\nbranch = \"580\"\n[toolkit]\nversion = \"13.0\"\nfor_driver = \"570\"\n",
            "3:1: [toolkit] for_driver goes with toolkit-only plans",
        ),
        (
            "[toolkit]\nversion = \"13.0\"\nfor_driver = \"58\"\n",
            "3:14: invalid driver \"58\"",
        ),
        (
            "[toolkit]\nversion = \"13.0\"\nsource = \"runfile\"\n",
            "1:1: [toolkit] source = \"runfile\" needs runfile",
        ),
    ];
    for (text, expected) in cases {
        let (code, report) = plan_json(dir.path(), text);
        assert_eq!(code, 1, "{text}: {report:#}");
        let msg = report["msg"].as_str().unwrap();
        assert!(
            msg.contains(expected),
            "{text}: expected {expected:?} in {msg}"
        );
    }
}

#[test]
fn an_image_bake_installs_the_toolkit_alone_and_rolls_back_byte_for_byte() {
    let server = serve_test_repos();
    let rootfs = Rootfs::new();
    rootfs.no_apt_sources();
    let dir = tempfile::tempdir().unwrap();
    let plan = toolkit_plan(dir.path(), &server, "");
    let tracked = ["etc", "boot", "usr/local"];
    let before_tree = rootfs.tree(&tracked);
    let before_packages = rootfs.packages();

    let run = provision(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    let packages = rootfs.packages();
    assert_eq!(
        packages["cuda-toolkit-12-8"],
        ("12.8.1-1".to_string(), true),
        "held"
    );
    let nvidia: Vec<&String> = packages
        .keys()
        .filter(|name| name.starts_with("nvidia-") || name.starts_with("libcuda"))
        .collect();
    assert!(
        nvidia.is_empty(),
        "a toolkit-only plan installed {nvidia:?}"
    );
    assert!(
        !rootfs
            .path()
            .join("etc/modprobe.d/provision-nouveau.conf")
            .exists()
    );
    let steps = ids(&report);
    assert!(
        !steps.iter().any(|id| id.starts_with("nouveau")),
        "{steps:?}"
    );
    let shell = rootfs.chroot(&["bash", "-lc", "command -v nvcc; nvcc --version"]);
    assert!(shell.contains("/usr/local/cuda-12.8/bin/nvcc"), "{shell}");

    let again = provision(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["changed"], false, "{again:?}");

    let back = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(back.code, 0, "{back:?}");
    assert_same_tree(&before_tree, &rootfs.tree(&tracked), "rollback");
    assert_eq!(before_packages, rootfs.packages());
}

#[test]
fn a_third_toolkit_on_the_loader_path_is_warned_with_the_files_to_remove() {
    // Two toolkits' packages already list their libraries; the plan's
    // default toolkit would be a third. Said, with the files.
    let plan = repo().join("plans/toolkit-only-13.0.toml");
    let (code, report) = plan_json(
        &fixture("ubuntu-24.04-l40s-two-toolkits"),
        &fs_err::read_to_string(&plan).unwrap(),
    );
    assert_eq!(code, 0, "{report:#}");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("the loader path already holds the libraries of /usr/local/cuda-12.4 (/etc/ld.so.conf.d/cuda-12-4.conf), /usr/local/cuda-12.9"),
        "{warnings}"
    );
    assert!(
        warnings.contains("with /usr/local/cuda-13.0 added"),
        "{warnings}"
    );
    // With the loader left to login shells, nothing to warn about.
    let (_, report) = plan_json(
        &fixture("ubuntu-24.04-l40s-two-toolkits"),
        "[toolkit]\nversion = \"13.0\"\n[environment]\nloader = \"profile\"\n",
    );
    assert!(
        !report["warnings"].to_string().contains("already holds"),
        "{report:#}"
    );
}
