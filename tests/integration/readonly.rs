//! A plan only reads: `plan`, `detect`, `doctor` and `compat` write nothing
//! under the root, neither files nor directories (mtimes compared too, so
//! a file made and removed again shows), for every shipped plan and both
//! back ends, on fresh roots and on roots provision already changed; and
//! `plan` on the same root mounted read-only gives the same answer.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::rhel::{ElRoot, shipped_plan};
use crate::support::http::Server;
use crate::support::{Rootfs, apply_ok, cuda_repo_section, plan_file, provision, repo};

/// Everything a write could change, file by file: type, mode, owner, size,
/// mtime, content (files) or target (links). /proc, /sys and /dev are
/// mount points, left out.
fn full_tree(root: &Path) -> BTreeMap<String, String> {
    let mut tree = BTreeMap::new();
    walk(root, root, &mut tree);
    tree
}

fn walk(base: &Path, path: &Path, tree: &mut BTreeMap<String, String>) {
    let Ok(meta) = fs_err::symlink_metadata(path) else {
        return;
    };
    let key = path
        .strip_prefix(base)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    if ["proc", "sys", "dev"].contains(&key.as_str()) {
        return;
    }
    let stamp = format!(
        "{:o} {}:{} {} {}.{}",
        meta.mode(),
        meta.uid(),
        meta.gid(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    if meta.file_type().is_symlink() {
        let target = fs_err::read_link(path).unwrap();
        tree.insert(key, format!("link {} {stamp}", target.display()));
    } else if meta.is_dir() {
        tree.insert(key, format!("dir {stamp}"));
        let mut children: Vec<PathBuf> = fs_err::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        children.sort();
        for child in children {
            walk(base, &child, tree);
        }
    } else {
        // Size and mtime catch any rewrite; hashing 600 MB would add nothing.
        tree.insert(key, format!("file {stamp}"));
    }
}

fn assert_unchanged(before: &BTreeMap<String, String>, root: &Path, what: &str) {
    let after = full_tree(root);
    let mut differences = Vec::new();
    for (path, stamp) in before {
        match after.get(path) {
            None => differences.push(format!("- {path}")),
            Some(other) if other != stamp => {
                differences.push(format!("~ {path}: {stamp} -> {other}"))
            }
            _ => {}
        }
    }
    differences.extend(
        after
            .keys()
            .filter(|p| !before.contains_key(*p))
            .map(|p| format!("+ {p}")),
    );
    assert!(
        differences.is_empty(),
        "{what} wrote under the root:\n{}",
        differences.join("\n")
    );
}

/// Every read-only verb on `root`, with `plan` for the plan.
fn read_only_verbs(root: &str, plan: &Path) -> Vec<serde_json::Value> {
    let plan = plan.to_str().unwrap();
    let mut reports = Vec::new();
    for args in [
        vec!["plan", plan, "--root", root, "--json"],
        vec!["detect", "--root", root, "--json"],
        vec![
            "detect",
            "--root",
            root,
            "--json",
            "--origins",
            "--initramfs",
        ],
        vec!["doctor", "--root", root, "--json"],
        vec!["compat", "--root", root, "--json"],
        vec!["history", "--root", root, "--json"],
    ] {
        let run = provision(&args);
        assert!(run.code == 0 || run.code == 1, "{args:?}: {run:?}");
        reports.push(run.json());
    }
    reports
}

/// A root mounted read-only elsewhere, unmounted on drop.
struct ReadOnly(tempfile::TempDir);

impl ReadOnly {
    fn mount(root: &Path) -> ReadOnly {
        let dir = tempfile::tempdir().unwrap();
        for args in [
            vec![
                "--bind".to_string(),
                root.display().to_string(),
                dir.path().display().to_string(),
            ],
            vec![
                "-o".into(),
                "remount,bind,ro".into(),
                dir.path().display().to_string(),
            ],
        ] {
            let status = Command::new("mount").args(&args).status().unwrap();
            assert!(status.success(), "mount {args:?}");
        }
        ReadOnly(dir)
    }

    fn arg(&self) -> &str {
        self.0.path().to_str().unwrap()
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// What plan answers, without what differs by path or timing alone.
fn answer(report: &serde_json::Value, root: &str) -> String {
    let mut answer = report.clone();
    answer.as_object_mut().unwrap().remove("commands");
    answer.to_string().replace(root, "ROOT")
}

/// `plan` reads only, and answers the same on the read-only mount.
fn plan_reads_only(root: &Path, plan: &Path, context: &str) {
    let arg = root.to_str().unwrap();
    let before = full_tree(root);
    let reports = read_only_verbs(arg, plan);
    assert_unchanged(&before, root, context);
    let mounted = ReadOnly::mount(root);
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        mounted.arg(),
        "--json",
    ]);
    let (here, there) = (answer(&reports[0], arg), answer(&run.json(), mounted.arg()));
    if here != there {
        let here: serde_json::Value = serde_json::from_str(&here).unwrap();
        let there: serde_json::Value = serde_json::from_str(&there).unwrap();
        let differing: Vec<String> = here
            .as_object()
            .unwrap()
            .iter()
            .filter(|(key, value)| there.get(key.as_str()) != Some(value))
            .map(|(key, value)| format!("{key}: {value:#}\n  read-only: {:#}", there[key.as_str()]))
            .collect();
        panic!(
            "{context}: plan on the read-only mount answers otherwise:\n{}",
            differing.join("\n")
        );
    }
    assert_unchanged(&before, root, &format!("{context} (read-only mount)"));
}

fn ubuntu(rootfs: &Rootfs) {
    fs_err::write(
        rootfs.path().join("etc/os-release"),
        "PRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n",
    )
    .unwrap();
}

#[test]
fn every_shipped_plan_only_reads_a_fresh_apt_root() {
    let server = Server::serve(&repo().join("target/test-repos"));
    for name in [
        "debian-12-distro-535.toml",
        "ubuntu-24.04-cuda-repo-580.toml",
        "ubuntu-24.04-distro-580.toml",
        "ubuntu-22.04-cuda-repo-570.toml",
    ] {
        let rootfs = Rootfs::new();
        if name.starts_with("ubuntu") {
            ubuntu(&rootfs);
            rootfs.use_apt_repo(&server.url("ubuntu-noble"));
        } else {
            rootfs.use_apt_repo(&server.url("debian"));
        }
        // The lists a host has: apt-get update ran before provision came.
        rootfs.chroot_with_proc(&["apt-get", "update", "-q"]);
        plan_reads_only(rootfs.path(), &repo().join("plans").join(name), name);
    }
}

#[test]
fn a_plan_that_moves_the_driver_only_reads_an_apt_root_provision_changed() {
    // The simulation of a move (apt-get -s under the pin it will write) and
    // the package lists after an apply.
    let server = Server::serve(&repo().join("target/test-repos"));
    let rootfs = Rootfs::new();
    rootfs.use_apt_repo(&server.url("debian"));
    let dir = tempfile::tempdir().unwrap();
    let repositories = cuda_repo_section(&server.url("nvidia-debian12/"));
    let plan = |branch: &str| {
        plan_file(
            dir.path(),
            &format!("{branch}.toml"),
            &format!(
                "[driver]\nbranch = \"{branch}\"\nflavor = \"open\"\nsource = \"cuda-repo\"\n{repositories}"
            ),
        )
    };
    apply_ok(&plan("570"), rootfs.arg());
    plan_reads_only(rootfs.path(), &plan("580"), "plan 570 -> 580");
}

#[test]
fn the_rhel_plan_only_reads_a_fresh_and_a_changed_dnf_root() {
    let root = ElRoot::new();
    let dir = tempfile::tempdir().unwrap();
    let shipped = repo().join("plans/rhel-9-cuda-repo-580.toml");
    plan_reads_only(root.path(), &shipped, "rhel-9-cuda-repo-580.toml, fresh");
    let plan = shipped_plan(&root, dir.path(), "");
    apply_ok(&plan, root.arg());
    let moved = plan_file(
        dir.path(),
        "rhel-590.toml",
        &fs_err::read_to_string(&plan)
            .unwrap()
            .replace("branch = \"580\"", "branch = \"590\""),
    );
    plan_reads_only(root.path(), &moved, "rhel 580 -> 590 after an apply");
}
