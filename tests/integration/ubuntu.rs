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

/// `apt-get upgrade`, then a meta package installed by hand, as an
/// administrator would after provision: the packages afterwards.
fn upgrade_then_install(
    rootfs: &Rootfs,
    meta: &str,
) -> std::collections::BTreeMap<String, (String, bool)> {
    rootfs.chroot(&["apt-get", "-y", "-q", "upgrade"]);
    rootfs.chroot(&[
        "apt-get",
        "-y",
        "-q",
        "--no-install-recommends",
        "install",
        meta,
    ]);
    rootfs.packages()
}

/// An open-flavour plan from the stand-in of NVIDIA's ubuntu2404
/// repository; `target` is its `branch = ...` or `version = ...` line.
fn open_cuda_plan(
    server: &Server,
    dir: &std::path::Path,
    name: &str,
    target: &str,
) -> std::path::PathBuf {
    plan_file(
        dir,
        name,
        &format!(
            "[driver]\n{target}\nflavor = \"open\"\nsource = \"cuda-repo\"\n{}",
            crate::support::cuda_repo_section(&server.url("nvidia-ubuntu2404/"))
        ),
    )
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
    let after = upgrade_then_install(&rootfs, "cuda-drivers");
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

/// Branch 590 and later from NVIDIA's Ubuntu repository: the names carry no
/// branch (libnvidia-compute, nvidia-dkms-open, nvidia-utils), the meta
/// packages depend with ">=", and nvidia-driver-pinning-<branch> chooses
/// the branch (the stand-in copies that packaging: scripts/build-test-repos).
#[test]
fn ubuntu_590_installs_the_unversioned_set_pinned_by_nvidias_package_and_stays_on_its_branch() {
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = ubuntu_rootfs(&server, "ubuntu-noble");
    rootfs.no_apt_sources();
    let dir = tempfile::tempdir().unwrap();
    let plan_for = |name: &str, target: &str| open_cuda_plan(&server, dir.path(), name, target);
    let plan = plan_for("590.toml", "branch = \"590\"");
    // An HGX board: Fabric Manager by its new name too.
    crate::support::add_nvswitch(rootfs.path());
    let before = rootfs.tree(TRACKED);
    let before_packages = rootfs.packages();

    let report = apply_ok(&plan, rootfs.arg());
    let packages = rootfs.packages();
    for name in [
        "nvidia-dkms-open",
        "nvidia-utils",
        "libnvidia-compute",
        "nvidia-fabricmanager",
    ] {
        assert_eq!(
            packages[name],
            ("590.48.01-0ubuntu1".to_string(), true),
            "{name}: {report:#}"
        );
    }
    // NVIDIA's pinning package, unheld (it has no driver version).
    assert_eq!(
        packages["nvidia-driver-pinning-590"],
        ("590-1".into(), false)
    );
    assert!(
        !packages
            .keys()
            .any(|n| n.ends_with("-590") && !n.contains("pinning")),
        "no branch-named package from 590 on: {packages:?}"
    );
    assert!(
        rootfs
            .read("/etc/apt/preferences.d/nvidia-driver-pin")
            .contains("Pin: version 590.*")
    );

    // A meta package that would pull 595 (nvidia-open 595.45.04 depends on
    // nvidia-dkms-open >= 595.45.04) stays at 590: with provision's pin,
    // and with NVIDIA's alone.
    let policy = rootfs.chroot(&["apt-cache", "policy", "nvidia-open"]);
    assert!(policy.contains("Candidate: 590.48.01-0ubuntu1"), "{policy}");
    let unpinned = rootfs.chroot(&[
        "apt-cache",
        "-o",
        "Dir::Etc::PreferencesParts=/usr/share/doc",
        "policy",
        "nvidia-open",
    ]);
    assert!(
        unpinned.contains("Candidate: 595.45.04-0ubuntu1"),
        "without the pins apt would take 595: {unpinned}"
    );
    fs_err::remove_file(
        rootfs
            .path()
            .join("etc/apt/preferences.d/provision-nvidia-driver.pref"),
    )
    .unwrap();
    let after = upgrade_then_install(&rootfs, "nvidia-open");
    assert_eq!(after["nvidia-open"].0, "590.48.01-0ubuntu1");
    for name in ["nvidia-dkms-open", "nvidia-utils", "libnvidia-compute"] {
        assert_eq!(after[name].0, "590.48.01-0ubuntu1", "{name} moved");
    }
    assert!(
        !after.values().any(|(v, _)| v.starts_with("595")),
        "{after:?}"
    );
    rootfs.chroot(&["apt-get", "-y", "-q", "purge", "nvidia-open"]);
    // apply puts provision's pin back, and nothing else.
    let again = apply_ok(&plan, rootfs.arg());
    assert_eq!(again["changed"], true, "{again:#}");
    assert!(
        rootfs
            .path()
            .join("etc/apt/preferences.d/provision-nvidia-driver.pref")
            .is_file()
    );

    // A release NVIDIA ships no pinning package for: provision's pin alone
    // keeps it, and plan says so.
    let older = plan_for("590.44.toml", "version = \"590.44.01\"");
    let run = provision(&[
        "plan",
        older.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    let summary = crate::support::step(&run.json(), "packages")["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        summary.contains(
            "the repositories offer no nvidia-driver-pinning-590.44.01 (NVIDIA's pinning package)"
        ),
        "{summary}"
    );

    // To 595: its pinning package replaces 590's (a removal the plan's
    // pin covers, not an unrelated one), and the set follows.
    let next = plan_for("595.toml", "branch = \"595\"");
    apply_ok(&next, rootfs.arg());
    let moved = rootfs.packages();
    assert_eq!(
        moved["nvidia-dkms-open"],
        ("595.45.04-0ubuntu1".into(), true)
    );
    assert!(moved.contains_key("nvidia-driver-pinning-595"), "{moved:?}");
    assert!(
        !moved.contains_key("nvidia-driver-pinning-590"),
        "{moved:?}"
    );
    assert!(
        rootfs
            .read("/etc/apt/preferences.d/nvidia-driver-pin")
            .contains("Pin: version 595.*")
    );

    // Back to 590 with its pinning package, then (the pin's restoring
    // apply, the first install) to the host before provision, byte for byte.
    let rollback = || {
        let rolled = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
        assert_eq!(rolled.code, 0, "{rolled:?}");
    };
    rollback();
    let back = rootfs.packages();
    assert_eq!(
        back["nvidia-dkms-open"],
        ("590.48.01-0ubuntu1".into(), true)
    );
    assert_eq!(back["nvidia-driver-pinning-590"].0, "590-1");
    assert!(!back.contains_key("nvidia-driver-pinning-595"), "{back:?}");
    rollback();
    rollback();
    assert_eq!(before_packages, rootfs.packages());
    assert_same_tree(&before, &rootfs.tree(TRACKED), "rollback");
}

/// NVIDIA's cuda-keyring (1.1-1, as its install guide has users `dpkg -i`
/// it) ships the repository's keyring and its own sources file; the
/// repository pin comes beside it (cuda-repository-pin-600). The stand-in
/// is built here because its sources line names the loopback server.
fn install_cuda_keyring(rootfs: &Rootfs, url: &str) {
    let build = tempfile::tempdir().unwrap();
    let pkg = build.path().join("cuda-keyring");
    fs_err::create_dir_all(pkg.join("DEBIAN")).unwrap();
    fs_err::create_dir_all(pkg.join("usr/share/keyrings")).unwrap();
    fs_err::create_dir_all(pkg.join("etc/apt/sources.list.d")).unwrap();
    fs_err::write(
        pkg.join("DEBIAN/control"),
        "Package: cuda-keyring\nVersion: 1.1-1\nArchitecture: all\nMaintainer: provision tests <tests@provision.invalid>\nDescription: test stand-in for NVIDIA's cuda-keyring\n",
    )
    .unwrap();
    fs_err::write(
        pkg.join("DEBIAN/conffiles"),
        "/etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list\n",
    )
    .unwrap();
    let key = repo().join("target/test-repos/nvidia-debian12/provision-test.pub");
    let dearmored = std::process::Command::new("gpg")
        .args(["--dearmor", "-o"])
        .arg(pkg.join("usr/share/keyrings/cuda-archive-keyring.gpg"))
        .arg(&key)
        .status()
        .unwrap();
    assert!(dearmored.success());
    fs_err::write(
        pkg.join("etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list"),
        format!("deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {url} /\n"),
    )
    .unwrap();
    let deb = rootfs.path().join("tmp/cuda-keyring_1.1-1_all.deb");
    let built = std::process::Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    rootfs.chroot(&["dpkg", "-i", "/tmp/cuda-keyring_1.1-1_all.deb"]);
    fs_err::remove_file(&deb).unwrap();
    fs_err::write(
        rootfs
            .path()
            .join("etc/apt/preferences.d/cuda-repository-pin-600"),
        "Package: *\nPin: origin developer.download.nvidia.com\nPin-Priority: 600\n",
    )
    .unwrap();
}

#[test]
fn an_existing_cuda_keyring_setup_is_adopted_not_duplicated() {
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = ubuntu_rootfs(&server, "ubuntu-noble");
    rootfs.no_apt_sources();
    let url = server.url("nvidia-ubuntu2404/");
    install_cuda_keyring(&rootfs, &url);
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        fs_err::read_to_string(repo().join("plans/ubuntu-24.04-cuda-repo-580.toml")).unwrap();
    let plan = plan_file(
        dir.path(),
        "keyring.toml",
        &format!("{shipped}\n{}", crate::support::cuda_repo_section(&url)),
    );
    let before = rootfs.tree(TRACKED);
    let before_packages = rootfs.packages();

    let report = apply_ok(&plan, rootfs.arg());
    let repository = crate::support::step(&report, "repository:cuda");
    assert_eq!(repository["action"], "none", "{repository:#}");
    assert!(
        repository["summary"]
            .as_str()
            .unwrap()
            .contains("already configured in /etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list"),
        "{repository:#}"
    );
    assert!(
        !rootfs
            .path()
            .join("etc/apt/sources.list.d/provision-cuda.list")
            .exists(),
        "a second source for the same repository"
    );
    let packages = rootfs.packages();
    assert_eq!(
        packages["nvidia-headless-580-open"].0,
        "580.105.08-0ubuntu1"
    );
    assert_eq!(packages["cuda-keyring"].0, "1.1-1");
    // One source, verified by cuda-keyring's keyring: apt warns of nothing.
    let update = std::process::Command::new("chroot")
        .arg(rootfs.path())
        .args(["apt-get", "update"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&update.stderr);
    assert!(update.status.success(), "{stderr}");
    assert!(
        !stderr.contains("configured multiple times") && !stderr.contains("NO_PUBKEY"),
        "{stderr}"
    );

    let rolled = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_eq!(before_packages, rootfs.packages(), "cuda-keyring stays");
    assert_same_tree(&before, &rootfs.tree(TRACKED), "rollback");
}

/// From 580 (branch-named packages) to 590 (unversioned): the old names go
/// in the same transaction, held as they were, and rollback brings them back.
#[test]
fn ubuntu_580_to_590_replaces_the_branch_named_set() {
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = ubuntu_rootfs(&server, "ubuntu-noble");
    rootfs.no_apt_sources();
    let dir = tempfile::tempdir().unwrap();
    let plan = |name: &str, target: &str| open_cuda_plan(&server, dir.path(), name, target);
    apply_ok(&plan("580.toml", "branch = \"580\""), rootfs.arg());
    let before = rootfs.tree(TRACKED);
    let on_580 = rootfs.packages();
    assert_eq!(
        on_580["nvidia-dkms-580-open"],
        ("580.105.08-0ubuntu1".into(), false)
    );

    let report = apply_ok(&plan("590.toml", "branch = \"590\""), rootfs.arg());
    let packages = rootfs.packages();
    assert_eq!(
        packages["nvidia-dkms-open"],
        ("590.48.01-0ubuntu1".into(), true),
        "{report:#}"
    );
    let left: Vec<&String> = packages.keys().filter(|n| n.contains("-580")).collect();
    assert!(left.is_empty(), "branch-named 580 packages left: {left:?}");

    let rolled = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_eq!(on_580, rootfs.packages());
    assert_same_tree(&before, &rootfs.tree(TRACKED), "rollback to 580");
}
