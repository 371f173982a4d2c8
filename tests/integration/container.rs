//! Container hosts in the Debian rootfs, through stand-ins of NVIDIA's CUDA
//! and libnvidia-container repositories (real package names, versions and
//! dependencies, signed, keys pinned by fingerprint): the container toolkit
//! and DCGM held with the driver, docker's daemon.json gaining the nvidia
//! runtime with every other key kept, DCGM's service enabled; re-apply is
//! a no-op and rollback restores the files byte for byte.

use crate::support::http::Server;
use crate::support::{
    Rootfs, assert_same_tree, cuda_repo_section, plan_file, provision, repo, step,
};

const DAEMON_JSON: &str = "{\n  \"log-driver\": \"journald\",\n  \"data-root\": \"/srv/docker\",\n  \"runtimes\": {\n    \"crun\": {\"path\": \"/usr/bin/crun\"}\n  }\n}\n";

fn container_section(url: &str) -> String {
    let fingerprint =
        fs_err::read_to_string(repo().join("target/test-repos/nvidia-debian12.fpr")).unwrap();
    format!(
        "container = \"{url}\"\ncontainer_key = \"{url}provision-test.pub\"\ncontainer_fingerprint = \"{}\"\n",
        fingerprint.trim()
    )
}

fn run(args: &[&str]) -> serde_json::Value {
    let run = provision(args);
    assert_eq!(run.code, 0, "{args:?}: {run:?}");
    run.json()
}

#[test]
fn docker_gains_the_nvidia_runtime_and_dcgm_runs_with_the_driver_and_both_roll_back() {
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = Rootfs::new();
    // systemd from Debian's archive, so units can be enabled in the root.
    fs_err::copy("/etc/resolv.conf", rootfs.path().join("etc/resolv.conf")).unwrap();
    rootfs.chroot(&["apt-get", "update", "-q"]);
    rootfs.chroot(&[
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "systemd",
    ]);
    rootfs.no_apt_sources();
    fs_err::create_dir_all(rootfs.path().join("etc/docker")).unwrap();
    fs_err::write(rootfs.path().join("etc/docker/daemon.json"), DAEMON_JSON).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_file(
        dir.path(),
        "container.toml",
        &format!(
            "[driver]\nbranch = \"580\"\nflavor = \"open\"\nsource = \"cuda-repo\"\n[container]\nruntime = \"docker\"\n[dcgm]\nenable = true\n{}{}",
            cuda_repo_section(&server.url("nvidia-debian12/")),
            container_section(&server.url("libnvidia-container/"))
        ),
    );
    let tracked = ["etc", "boot"];
    let before_tree = rootfs.tree(&tracked);
    let before_packages = rootfs.packages();

    let planned = run(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    let runtime = step(&planned, "container:runtime");
    assert_eq!(runtime["action"], "update", "{runtime:#}");
    let diff =
        runtime["diff"].as_str().unwrap_or_default().to_string() + &runtime["diff"].to_string();
    assert!(diff.contains("nvidia-container-runtime"), "{diff}");
    assert_eq!(
        fs_err::read_to_string(rootfs.path().join("etc/docker/daemon.json")).unwrap(),
        DAEMON_JSON,
        "plan changed nothing"
    );

    let applied = run(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    let ids: Vec<&str> = applied["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let at = |id: &str| {
        ids.iter()
            .position(|i| *i == id)
            .unwrap_or_else(|| panic!("{id}: {ids:?}"))
    };
    assert!(at("repository:container") < at("packages"));
    assert!(at("packages") < at("container:runtime"));
    assert!(at("packages") < at("dcgm:service"));

    // The toolkit from the libnvidia-container repository, DCGM for the
    // driver's CUDA 13, both held like the driver set.
    let packages = rootfs.packages();
    assert_eq!(
        packages["nvidia-container-toolkit"],
        ("1.18.0-1".to_string(), true)
    );
    assert_eq!(packages["nvidia-container-toolkit-base"].0, "1.18.0-1");
    assert_eq!(
        packages["datacenter-gpu-manager-4-cuda13"],
        ("1:4.4.1-1".to_string(), true)
    );
    assert!(!packages.contains_key("datacenter-gpu-manager-4-cuda12"));
    assert!(packages["nvidia-driver-cuda"].0.starts_with("580."));
    assert!(
        rootfs
            .path()
            .join("etc/apt/sources.list.d/provision-container.list")
            .is_file(),
        "the repository is configured"
    );

    // daemon.json: every key kept, in its order; the nvidia runtime added.
    let text = fs_err::read_to_string(rootfs.path().join("etc/docker/daemon.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&String> = config.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["log-driver", "data-root", "runtimes"], "{text}");
    assert_eq!(config["data-root"], "/srv/docker");
    assert_eq!(config["runtimes"]["crun"]["path"], "/usr/bin/crun");
    assert_eq!(
        config["runtimes"]["nvidia"]["path"],
        "nvidia-container-runtime"
    );

    // DCGM's host engine starts at boot (a link into the root's /lib).
    let wants = rootfs
        .path()
        .join("etc/systemd/system/multi-user.target.wants/nvidia-dcgm.service");
    assert_eq!(
        fs_err::read_link(&wants).unwrap(),
        std::path::Path::new("/lib/systemd/system/nvidia-dcgm.service")
    );

    let again = run(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(again["changed"], false, "{again:#}");

    run(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(
        fs_err::read_to_string(rootfs.path().join("etc/docker/daemon.json")).unwrap(),
        DAEMON_JSON,
        "daemon.json byte for byte"
    );
    assert_same_tree(&before_tree, &rootfs.tree(&tracked), "rollback");
    assert_eq!(before_packages, rootfs.packages());
}

#[test]
fn a_daemon_json_docker_cannot_read_is_refused_before_any_change() {
    let rootfs = Rootfs::new();
    fs_err::create_dir_all(rootfs.path().join("etc/docker")).unwrap();
    fs_err::write(
        rootfs.path().join("etc/docker/daemon.json"),
        "{ \"log-driver\": ",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_file(
        dir.path(),
        "plan.toml",
        "[driver]\nbranch = \"535\"\nflavor = \"open\"\n[container]\nruntime = \"docker\"\n",
    );
    let before = rootfs.tree(&["etc"]);
    let run = provision(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    let msg = run.json()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("/etc/docker/daemon.json is not valid JSON"),
        "{msg}"
    );
    assert_same_tree(&before, &rootfs.tree(&["etc"]), "refused");
    // DCGM needs NVIDIA's CUDA repository.
    let plan = plan_file(
        dir.path(),
        "dcgm.toml",
        "[driver]\nbranch = \"535\"\nflavor = \"open\"\n[dcgm]\nenable = true\n",
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
            .contains("[dcgm] comes from NVIDIA's CUDA repository"),
        "{run:?}"
    );
}

const CONTAINERD_TOML: &str = "version = 2\nroot = \"/var/lib/containerd\"\n\n[grpc]\naddress = \"/run/containerd/containerd.sock\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"runc\"\n";

#[test]
fn containerd_and_cri_o_gain_the_runtime_on_a_toolkit_only_host_and_roll_back() {
    let server = Server::serve(&repo().join("target/test-repos"));
    for (runtime, path) in [
        ("containerd", "etc/containerd/config.toml"),
        ("cri-o", "etc/crio/crio.conf.d/99-nvidia.toml"),
    ] {
        let rootfs = Rootfs::new();
        rootfs.no_apt_sources();
        if runtime == "containerd" {
            fs_err::create_dir_all(rootfs.path().join("etc/containerd")).unwrap();
            fs_err::write(rootfs.path().join(path), CONTAINERD_TOML).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        // A node whose driver is someone else's: the toolkit for it, and the
        // container runtime.
        let plan = plan_file(
            dir.path(),
            "plan.toml",
            &format!(
                "[toolkit]\nversion = \"12.8\"\nfor_driver = \"580\"\n[container]\nruntime = \"{runtime}\"\n{}{}",
                cuda_repo_section(&server.url("nvidia-debian12/")),
                container_section(&server.url("libnvidia-container/"))
            ),
        );
        let before = rootfs.tree(&["etc"]);
        let before_packages = rootfs.packages();
        run(&[
            "apply",
            plan.to_str().unwrap(),
            "--root",
            rootfs.arg(),
            "--json",
        ]);
        let text = fs_err::read_to_string(rootfs.path().join(path)).unwrap();
        assert!(
            text.contains("/usr/bin/nvidia-container-runtime"),
            "{runtime}: {text}"
        );
        if runtime == "containerd" {
            let config: toml::Table = text.parse().unwrap();
            assert_eq!(
                config["root"].as_str(),
                Some("/var/lib/containerd"),
                "{text}"
            );
            assert_eq!(
                config["grpc"]["address"].as_str(),
                Some("/run/containerd/containerd.sock")
            );
            let cri = &config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
            assert_eq!(cri["default_runtime_name"].as_str(), Some("runc"), "{text}");
            assert_eq!(
                cri["runtimes"]["nvidia"]["runtime_type"].as_str(),
                Some("io.containerd.runc.v2")
            );
        } else {
            assert!(text.contains("[crio.runtime.runtimes.nvidia]"), "{text}");
        }
        let packages = rootfs.packages();
        assert!(packages["nvidia-container-toolkit"].1, "held");
        assert!(
            !packages.contains_key("nvidia-driver-cuda"),
            "no driver on a toolkit-only host"
        );
        let again = run(&[
            "apply",
            plan.to_str().unwrap(),
            "--root",
            rootfs.arg(),
            "--json",
        ]);
        assert_eq!(again["changed"], false, "{runtime}: {again:#}");
        run(&["rollback", "--root", rootfs.arg(), "--json"]);
        assert_same_tree(&before, &rootfs.tree(&["etc"]), runtime);
        assert_eq!(before_packages, rootfs.packages());
    }
}
