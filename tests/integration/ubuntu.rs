//! `source = "distro"` on Ubuntu: the archive's -server compute set, with
//! Canonical's precompiled kernel module when the archive has one for the
//! kernel and DKMS otherwise (real apt in the rootfs, its os-release made
//! Ubuntu 24.04's; the repository has Ubuntu's names and dependency shapes).

use crate::support::http::Server;
use crate::support::{Rootfs, apply_ok, assert_same_tree, plan_file, provision, repo};

const TRACKED: &[&str] = &["etc", "boot"];

const PLAN: &str = "[driver]\nbranch = \"580\"\nflavor = \"open\"\nsource = \"distro\"\n";

fn ubuntu_rootfs(server: &Server, repository: &str) -> Rootfs {
    let rootfs = Rootfs::new();
    fs_err::write(
        rootfs.path().join("etc/os-release"),
        "PRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n",
    )
    .unwrap();
    rootfs.use_apt_repo(&server.url(repository));
    rootfs
}

#[test]
fn ubuntu_takes_the_precompiled_module_when_the_archive_has_it_for_the_kernel() {
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = ubuntu_rootfs(&server, "ubuntu-noble");
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_file(dir.path(), "ubuntu.toml", PLAN);
    let before = rootfs.tree(TRACKED);
    let before_packages = rootfs.packages();

    apply_ok(&plan, rootfs.arg());
    let packages = rootfs.packages();
    let module = format!("linux-modules-nvidia-580-server-open-{}", rootfs.kernel());
    assert_eq!(
        packages[&module],
        ("6.1.0.1+2".to_string(), true),
        "the precompiled module built for 580.105.08, held"
    );
    assert!(
        !packages.contains_key("nvidia-dkms-580-server-open"),
        "no DKMS build"
    );
    for name in [
        "nvidia-headless-no-dkms-580-server-open",
        "nvidia-utils-580-server",
        "libnvidia-compute-580-server",
    ] {
        assert_eq!(
            packages[name],
            ("580.105.08-0ubuntu0.24.04.1".to_string(), true),
            "{name}"
        );
    }
    assert!(
        rootfs
            .path()
            .join(format!(
                "lib/modules/{}/kernel/nvidia-580srv-open/nvidia.ko",
                rootfs.kernel()
            ))
            .is_file()
    );
    let again = apply_ok(&plan, rootfs.arg());
    assert_eq!(again["changed"], false, "{again:#}");

    let rolled = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_same_tree(&before, &rootfs.tree(TRACKED), "rollback");
    assert_eq!(before_packages, rootfs.packages());
}

#[test]
fn ubuntu_builds_with_dkms_when_no_precompiled_module_exists_for_the_kernel() {
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = ubuntu_rootfs(&server, "ubuntu-noble-dkms");
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_file(dir.path(), "ubuntu.toml", PLAN);
    apply_ok(&plan, rootfs.arg());
    let packages = rootfs.packages();
    assert_eq!(
        packages["nvidia-dkms-580-server-open"],
        ("580.105.08-0ubuntu0.24.04.1".to_string(), true)
    );
    assert!(
        !packages
            .keys()
            .any(|name| name.starts_with("linux-modules-nvidia")),
        "{packages:?}"
    );
    let again = apply_ok(&plan, rootfs.arg());
    assert_eq!(again["changed"], false, "{again:#}");
}

#[test]
fn the_ubuntu_24_04_cuda_repo_plan_converges_holds_against_cuda_drivers_and_rolls_back() {
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = ubuntu_rootfs(&server, "ubuntu-noble");
    rootfs.no_apt_sources();
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        fs_err::read_to_string(repo().join("plans/ubuntu-24.04-cuda-repo-580.toml")).unwrap();
    let plan = plan_file(
        dir.path(),
        "ubuntu-cuda.toml",
        &format!(
            "{shipped}\n{}",
            crate::support::cuda_repo_section(&server.url("nvidia-ubuntu2404/"))
        ),
    );
    let before = rootfs.tree(TRACKED);
    let before_packages = rootfs.packages();

    apply_ok(&plan, rootfs.arg());
    let packages = rootfs.packages();
    for name in [
        "nvidia-headless-580-open",
        "nvidia-utils-580",
        "libnvidia-compute-580",
    ] {
        assert_eq!(
            packages[name],
            ("580.105.08-0ubuntu1".to_string(), true),
            "{name}"
        );
    }
    assert_eq!(packages["nvidia-dkms-580-open"].0, "580.105.08-0ubuntu1");
    assert_eq!(
        packages["cuda-toolkit-13-0"],
        ("13.0.2-1".to_string(), true)
    );
    assert!(
        !packages.contains_key("cuda-compat-13-0"),
        "580 runs 13.0 natively"
    );
    assert!(
        rootfs
            .read("/etc/apt/sources.list.d/provision-cuda.list")
            .contains("signed-by=")
    );

    // cuda-drivers follows 590 in the repository: under the pin it takes 580.
    rootfs.chroot(&["apt-get", "-y", "-q", "upgrade"]);
    rootfs.chroot(&[
        "apt-get",
        "-y",
        "-q",
        "--no-install-recommends",
        "install",
        "cuda-drivers",
    ]);
    let after = rootfs.packages();
    assert_eq!(after["cuda-drivers"].0, "580.105.08-0ubuntu1");
    for name in [
        "nvidia-headless-580-open",
        "nvidia-dkms-580-open",
        "libnvidia-compute-580",
    ] {
        assert_eq!(after[name].0, "580.105.08-0ubuntu1", "{name} moved");
    }
    assert!(!after.keys().any(|name| name.contains("590")), "{after:?}");
    rootfs.chroot(&["apt-get", "-y", "-q", "purge", "cuda-drivers"]);

    let again = apply_ok(&plan, rootfs.arg());
    assert_eq!(again["changed"], false, "{again:#}");
    let rolled = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_same_tree(&before, &rootfs.tree(TRACKED), "rollback");
    assert_eq!(before_packages, rootfs.packages());
}
