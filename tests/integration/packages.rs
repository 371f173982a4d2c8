//! The project's packages (`scripts/package`, which scripts/test runs
//! first) install into test roots with the real dpkg and rpm, carry the
//! binary, man pages and completions, and remove cleanly.

use std::path::Path;
use std::process::Command;

use crate::support::{Rootfs, repo};

const FILES: &[&str] = &[
    "usr/bin/provision",
    "usr/share/man/man1/provision.1.gz",
    "usr/share/man/man1/provision-apply.1.gz",
    "usr/share/bash-completion/completions/provision",
    "usr/share/fish/vendor_completions.d/provision.fish",
];

const DEB_ZSH: &str = "usr/share/zsh/vendor-completions/_provision";
const RPM_ZSH: &str = "usr/share/zsh/site-functions/_provision";

/// The one file in target/package/ whose name ends with `suffix`.
fn package(suffix: &str) -> std::path::PathBuf {
    let dir = repo().join("target/package");
    let found: Vec<_> = fs_err::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}: run scripts/package first"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {suffix} in {}: {found:?}",
        dir.display()
    );
    found[0].clone()
}

/// zsh's completions live where each family's zsh looks: Debian's
/// vendor-completions, Fedora's and RHEL's site-functions.
fn assert_files(root: &Path, zsh: &str, present: bool, what: &str) {
    for file in FILES.iter().copied().chain([zsh]) {
        assert_eq!(root.join(file).exists(), present, "{what}: {file}");
    }
}

#[test]
#[ignore = "needs scripts/package and the cached rootfs: scripts/test runs it"]
fn the_deb_installs_with_dpkg_into_debian_and_runs_there() {
    let rootfs = Rootfs::new();
    let deb = package("_amd64.deb");
    fs_err::copy(&deb, rootfs.path().join("tmp/provision.deb")).unwrap();
    rootfs.chroot(&["dpkg", "-i", "/tmp/provision.deb"]);
    assert_files(rootfs.path(), DEB_ZSH, true, "after dpkg -i");
    let version = rootfs.chroot(&["provision", "--version"]);
    assert!(version.starts_with("provision "), "{version}");
    let status = rootfs.chroot(&["dpkg-query", "-W", "-f", "${Status}", "provision"]);
    assert_eq!(status, "install ok installed");
    rootfs.chroot(&["dpkg", "--purge", "provision"]);
    assert_files(rootfs.path(), DEB_ZSH, false, "after dpkg --purge");
}

#[test]
#[ignore = "needs scripts/package: scripts/test runs it"]
fn the_rpm_installs_with_rpm_into_a_root_and_erases_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let rpm = package(".x86_64.rpm");
    let rpm_cmd = |args: &[&str]| {
        let output = Command::new("rpm")
            .args(["--root", root])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "rpm {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The root has no glibc package to satisfy the dependency: the files
    // and the database entry are what this proves.
    rpm_cmd(&["-i", "--nodeps", rpm.to_str().unwrap()]);
    assert_files(dir.path(), RPM_ZSH, true, "after rpm -i");
    let owned = rpm_cmd(&["-ql", "provision"]);
    assert!(owned.lines().any(|l| l == "/usr/bin/provision"), "{owned}");
    let requires = rpm_cmd(&["-qR", "provision"]);
    assert!(
        requires.contains("libc.so.6(GLIBC_2.34)") || requires.contains("glibc"),
        "{requires}"
    );
    // The packaged binary runs on this machine (its glibc is newer).
    let version = Command::new(dir.path().join("usr/bin/provision"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("provision "));
    rpm_cmd(&["-e", "provision"]);
    assert_files(dir.path(), RPM_ZSH, false, "after rpm -e");
}
