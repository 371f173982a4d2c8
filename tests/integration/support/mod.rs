//! Test support: the provision binary, a per-test copy-on-write rootfs
//! (overlayfs over the cached bookworm rootfs), a loopback HTTP server and
//! tree hashes to prove "byte for byte".

#![allow(dead_code)]

pub mod http;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/hosts").join(name)
}

/// Every key path of a JSON document (`steps[].id`), the first element
/// of each list of objects standing for all; `unknown` maps are not
/// walked (their keys are field names).
pub fn key_paths(
    value: &serde_json::Value,
    prefix: &str,
    out: &mut std::collections::BTreeSet<String>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                out.insert(path.clone());
                if key != "unknown" {
                    key_paths(child, &path, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items.iter().filter(|v| v.is_object()) {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// A writable copy of a fixture host, at `<tempdir>/root`.
pub fn fixture_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let status = Command::new("cp")
        .arg("-a")
        .arg(fixture(name))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {name}");
    (dir, root)
}

/// What a provision run left.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn provision(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run provision");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A writable copy of the cached bookworm rootfs (overlayfs: the cache is
/// the lower layer, each test writes to its own upper layer).
pub struct Rootfs {
    dir: tempfile::TempDir,
    merged: PathBuf,
}

pub fn base_rootfs() -> PathBuf {
    let path = std::env::var_os("PROVISION_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/rootfs/bookworm"));
    assert!(
        path.join("boot").is_dir(),
        "the test rootfs is missing at {}: run scripts/build-rootfs (as root)",
        path.display()
    );
    path
}

impl Rootfs {
    pub fn new() -> Rootfs {
        let base = base_rootfs();
        let dir = tempfile::Builder::new()
            .prefix("provision-rootfs-")
            .tempdir_in(repo().join("target"))
            .expect("tempdir");
        let (upper, work, merged) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("root"),
        );
        for d in [&upper, &work, &merged] {
            fs_err::create_dir_all(d).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.display(),
            upper.display(),
            work.display()
        );
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&merged)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting the overlay rootfs needs root");
        Rootfs { dir, merged }
    }

    pub fn path(&self) -> &Path {
        &self.merged
    }

    pub fn arg(&self) -> &str {
        self.merged.to_str().unwrap()
    }

    /// No apt sources at all: the plan's [repositories] add what is needed.
    pub fn no_apt_sources(&self) {
        fs_err::write(self.merged.join("etc/apt/sources.list"), "").unwrap();
    }

    /// Points apt at `url` only, as an air-gapped mirror would.
    pub fn use_apt_repo(&self, url: &str) {
        fs_err::write(
            self.merged.join("etc/apt/sources.list"),
            format!("deb [trusted=yes] {url} ./\n"),
        )
        .unwrap();
    }

    /// The release of the rootfs's (only) kernel.
    pub fn kernel(&self) -> String {
        fs_err::read_dir(self.merged.join("lib/modules"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .next()
            .expect("a kernel in lib/modules")
    }

    pub fn read(&self, path: &str) -> String {
        fs_err::read_to_string(self.merged.join(path.trim_start_matches('/'))).unwrap()
    }

    /// Runs a command chrooted in the rootfs.
    pub fn chroot(&self, args: &[&str]) -> String {
        let output = Command::new("chroot")
            .arg(&self.merged)
            .args(args)
            .output()
            .expect("chroot");
        assert!(
            output.status.success(),
            "chroot {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a command chrooted in the rootfs with /proc, /sys and /dev
    /// mounted in a private mount namespace (what update-initramfs needs).
    pub fn chroot_with_proc(&self, args: &[&str]) -> String {
        let root = self.merged.display().to_string();
        let script = format!(
            "mount -t proc proc {root}/proc && mount --rbind /sys {root}/sys && mount --rbind /dev {root}/dev && exec chroot {root} \"$@\""
        );
        let output = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .args(args)
            .output()
            .expect("unshare");
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// name -> (version, held) of every installed package.
    pub fn packages(&self) -> BTreeMap<String, (String, bool)> {
        let text = self.read("/var/lib/dpkg/status");
        let mut packages = BTreeMap::new();
        for stanza in text.split("\n\n") {
            let field = |key: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                    .map(str::to_string)
            };
            if let (Some(name), Some(version), Some(status)) =
                (field("Package"), field("Version"), field("Status"))
                && status.ends_with(" installed")
            {
                packages.insert(name, (version, status.starts_with("hold")));
            }
        }
        packages
    }

    /// Content hash of every entry under `dirs` (type, mode, bytes or target).
    pub fn tree(&self, dirs: &[&str]) -> BTreeMap<String, String> {
        let mut tree = BTreeMap::new();
        for dir in dirs {
            hash_tree(&self.merged, &self.merged.join(dir), &mut tree);
        }
        tree
    }
}

/// Adds the hashes of everything under `path` (keys relative to `base`).
pub fn hash_tree_into(base: &Path, path: &Path, tree: &mut BTreeMap<String, String>) {
    hash_tree(base, path, tree);
}

fn hash_tree(base: &Path, path: &Path, tree: &mut BTreeMap<String, String>) {
    let Ok(meta) = fs_err::symlink_metadata(path) else {
        return;
    };
    let key = path
        .strip_prefix(base)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        tree.insert(
            key,
            format!("link {}", fs_err::read_link(path).unwrap().display()),
        );
    } else if meta.is_dir() {
        tree.insert(key, format!("dir {mode:o} {}:{}", meta.uid(), meta.gid()));
        let mut names: Vec<_> = fs_err::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for child in names {
            hash_tree(base, &child, tree);
        }
    } else {
        let bytes = fs_err::read(path).unwrap();
        tree.insert(
            key,
            format!("file {mode:o} {}", hex::encode(Sha256::digest(&bytes))),
        );
    }
}

/// Panics with the entries that differ.
pub fn assert_same_tree(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    what: &str,
) {
    let mut differences = Vec::new();
    for (path, hash) in before {
        match after.get(path) {
            None => differences.push(format!("- {path} (gone)")),
            Some(other) if other != hash => {
                differences.push(format!("~ {path}: {hash} -> {other}"))
            }
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        differences.push(format!("+ {path} (new)"));
    }
    assert!(
        differences.is_empty(),
        "{what}: the tree differs:\n{}",
        differences.join("\n")
    );
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.merged).status();
    }
}

/// The `[repositories]` lines that point a plan at the NVIDIA-repository
/// stand-in served at `url`, trusting the test key by its fingerprint.
pub fn cuda_repo_section(url: &str) -> String {
    let fingerprint =
        fs_err::read_to_string(repo().join("target/test-repos/nvidia-debian12.fpr")).unwrap();
    format!(
        "[repositories]\ncuda = \"{url}\"\ncuda_key = \"{url}provision-test.pub\"\ncuda_fingerprint = \"{}\"\n",
        fingerprint.trim()
    )
}

/// Upstream part of a Debian version: "535.309.01-0+deb12u1" -> "535.309.01".
pub fn upstream(version: &str) -> &str {
    let without_epoch = version.split_once(':').map_or(version, |(_, rest)| rest);
    without_epoch
        .rsplit_once('-')
        .map_or(without_epoch, |(upstream, _)| upstream)
}

/// The step `id` of a plan/apply report.
pub fn step<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {report:#}"))
}

/// `provision apply PLAN --root ROOT --json`, which must succeed.
pub fn apply_ok(plan: &Path, root: &str) -> serde_json::Value {
    let run = provision(&["apply", plan.to_str().unwrap(), "--root", root, "--json"]);
    assert_eq!(run.code, 0, "apply failed: {run:?}");
    run.json()
}

/// Writes a plan file into a temp dir and returns its path.
pub fn plan_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs_err::write(&path, text).unwrap();
    path
}

/// Mount points under `path` right now (ours must leave none behind).
pub fn mounts_under(path: &Path) -> Vec<String> {
    let text = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = format!("{}/", path.display());
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|point| point.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// The test repositories (scripts/build-test-repos) served on loopback.
pub fn serve_test_repos() -> http::Server {
    let test_repos = repo().join("target/test-repos");
    assert!(
        test_repos.join("debian/Packages").is_file(),
        "run scripts/build-test-repos first"
    );
    http::Server::serve(&test_repos)
}

/// DIR/toolkit.toml: CUDA 12.8 alone, baked for R580, from the stand-in of
/// NVIDIA's debian12 repository that `server` serves; `extra` appended.
pub fn toolkit_plan(dir: &Path, server: &http::Server, extra: &str) -> PathBuf {
    plan_file(
        dir,
        "toolkit.toml",
        &format!(
            "[toolkit]\nversion = \"12.8\"\nfor_driver = \"580\"\n{}{extra}",
            cuda_repo_section(&server.url("nvidia-debian12/"))
        ),
    )
}

/// Writes an NVSwitch (H100 generation, class 0x0680) into a root's
/// sysfs, the way an HGX board shows one.
pub fn add_nvswitch(root: &Path) {
    let dir = root.join("sys/bus/pci/devices/0000:05:00.0");
    fs_err::create_dir_all(&dir).unwrap();
    for (file, value) in [
        ("vendor", "0x10de"),
        ("device", "0x22a3"),
        ("class", "0x068000"),
        ("numa_node", "0"),
    ] {
        fs_err::write(dir.join(file), format!("{value}\n")).unwrap();
    }
}
