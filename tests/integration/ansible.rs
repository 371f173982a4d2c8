//! The Ansible collection against real hosts over real SSH: a fleet of
//! copy-on-write Debian rootfs hosts, each with its own sshd in its own
//! network namespace (scripts/fleet), reached by ansible-playbook from a
//! controller namespace. On each host `/` is its rootfs, so provision runs
//! there without `--root`, installed by the role from its .deb. The VM's
//! real reboot through the role is `vm.rs`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{assert_same_tree, hash_tree_into, repo};

/// A fleet up for the length of a test (scripts/fleet), down on drop.
struct Fleet {
    name: String,
    subnet: String,
    count: usize,
    inventory: PathBuf,
    dir: tempfile::TempDir,
}

/// What one ansible-playbook run left: its exit code, its output and the
/// PLAY RECAP of each host (ok, changed, failed, ...).
struct Play {
    code: i32,
    output: String,
    recap: BTreeMap<String, BTreeMap<String, u64>>,
}

impl std::fmt::Debug for Play {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n{}", self.code, self.output)
    }
}

fn parse_recap(output: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut recap = BTreeMap::new();
    let Some(start) = output.rfind("PLAY RECAP") else {
        return recap;
    };
    for line in output[start..].lines().skip(1) {
        let Some((host, counts)) = line.split_once(" : ") else {
            continue;
        };
        let counts: BTreeMap<String, u64> = counts
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .filter_map(|(key, value)| Some((key.to_string(), value.parse().ok()?)))
            .collect();
        recap.insert(host.trim().to_string(), counts);
    }
    recap
}

fn prerequisites() {
    for (path, how) in [
        (
            "target/fleet/base/usr/sbin/sshd",
            "scripts/build-fleet-rootfs",
        ),
        (
            "target/ansible-venv/bin/ansible-playbook",
            "scripts/ansible-env",
        ),
        (
            "target/package/provision_0.1.0_amd64.deb",
            "scripts/package",
        ),
        (
            "target/test-repos/nvidia-debian12/Packages",
            "scripts/build-test-repos",
        ),
    ] {
        assert!(repo().join(path).exists(), "{path} is missing: run {how}");
    }
}

impl Fleet {
    fn up(name: &str, count: usize, subnet: &str) -> Fleet {
        prerequisites();
        let output = Command::new(repo().join("scripts/fleet"))
            .args(["up", name, &count.to_string(), subnet])
            .output()
            .expect("scripts/fleet");
        assert!(
            output.status.success(),
            "scripts/fleet up {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let dir = tempfile::tempdir().unwrap();
        let inventory = dir.path().join("inventory.ini");
        fs_err::write(&inventory, &output.stdout).unwrap();
        Fleet {
            name: name.to_string(),
            subnet: subnet.to_string(),
            count,
            inventory,
            dir,
        }
    }

    fn hosts(&self) -> Vec<String> {
        (1..=self.count).map(|i| format!("host{i}")).collect()
    }

    fn root(&self, host: &str) -> PathBuf {
        repo().join(format!("target/fleet/run/{}/{host}/root", self.name))
    }

    /// The plan every host gets: the NVIDIA debian12 stand-in, branch `branch`.
    fn plan(&self, branch: &str) -> serde_json::Value {
        let fingerprint =
            fs_err::read_to_string(repo().join("target/test-repos/nvidia-debian12.fpr")).unwrap();
        let url = format!("http://{}.1:8080/nvidia-debian12/", self.subnet);
        serde_json::json!({
            "driver": {"branch": branch, "flavor": "open", "source": "cuda-repo"},
            "repositories": {
                "cuda": url,
                "cuda_key": format!("{url}provision-test.pub"),
                "cuda_fingerprint": fingerprint.trim(),
            },
        })
    }

    /// ansible-playbook in the controller's namespace, the role's
    /// variables in an extra-vars file.
    fn playbook(&self, playbook: &Path, vars: serde_json::Value, args: &[&str]) -> Play {
        let venv = repo().join("target/ansible-venv/bin");
        let vars_file = self.dir.path().join("vars.json");
        fs_err::write(&vars_file, vars.to_string()).unwrap();
        let path = format!(
            "{}:{}",
            venv.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = Command::new(repo().join("scripts/fleet"))
            .args(["exec", &self.name, "env"])
            .arg(format!("PATH={path}"))
            .arg(format!(
                "ANSIBLE_COLLECTIONS_PATH={}",
                repo().join("target/ansible-collections").display()
            ))
            .args([
                "ANSIBLE_HOST_KEY_CHECKING=False",
                "ANSIBLE_NOCOLOR=1",
                "ANSIBLE_FORCE_COLOR=0",
                "ANSIBLE_PIPELINING=1",
            ])
            .arg("ansible-playbook")
            .arg("-i")
            .arg(&self.inventory)
            .arg("-e")
            .arg(format!("@{}", vars_file.display()))
            .args(args)
            .arg(playbook)
            .output()
            .expect("ansible-playbook");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Play {
            code: output.status.code().unwrap_or(-1),
            recap: parse_recap(&text),
            output: text,
        }
    }

    /// What provision may change on a host (the role's own plan file, the
    /// journal, apt's lists and downloads left out): etc, boot, usr.
    fn tree(&self, host: &str) -> BTreeMap<String, String> {
        let root = self.root(host);
        let mut tree = BTreeMap::new();
        for dir in ["etc", "boot", "usr", "var/lib/dpkg", "var/cache/apt"] {
            hash_tree_into(&root, &root.join(dir), &mut tree);
        }
        tree.retain(|path, _| {
            !path.starts_with("etc/provision")
                && !path.starts_with("var/cache/apt/archives")
                && !path.ends_with(".bin")
        });
        tree
    }

    /// The package set only: name -> (version, held).
    fn packages(&self, host: &str) -> BTreeMap<String, (String, bool)> {
        let text = fs_err::read_to_string(self.root(host).join("var/lib/dpkg/status")).unwrap();
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

    /// Tree without the package database (compared as a set instead).
    fn files(&self, host: &str) -> BTreeMap<String, String> {
        let mut tree = self.tree(host);
        tree.retain(|path, _| !path.starts_with("var/lib/dpkg") && !path.starts_with("var/cache"));
        tree
    }

    fn role_vars(&self, branch: &str) -> serde_json::Value {
        serde_json::json!({
            "provision_package": repo().join("target/package/provision_0.1.0_amd64.deb"),
            "provision_plan": self.plan(branch),
        })
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/fleet"))
            .args(["down", &self.name])
            .status();
    }
}

fn playbook(name: &str) -> PathBuf {
    repo().join("ansible/playbooks").join(name)
}

fn assert_recap(play: &Play, host: &str, key: &str, expected: u64) {
    let value = play
        .recap
        .get(host)
        .and_then(|counts| counts.get(key))
        .copied();
    assert_eq!(value, Some(expected), "{host} {key}: {play:?}");
}

#[test]
#[ignore = "a fleet of 4 hosts over SSH (about 3 minutes): scripts/test runs it"]
fn a_fleet_plans_in_check_mode_converges_changes_nothing_again_and_rolls_back() {
    let fleet = Fleet::up("pvfa", 4, "10.77.1");
    let vars = fleet.role_vars("570");
    let install = fleet.playbook(
        &playbook("fresh-install.yml"),
        vars.clone(),
        &["--tags", "provision_install"],
    );
    assert_eq!(install.code, 0, "{install:?}");
    let before: Vec<_> = fleet.hosts().iter().map(|h| fleet.tree(h)).collect();
    let packages_before: Vec<_> = fleet.hosts().iter().map(|h| fleet.packages(h)).collect();
    for host in fleet.hosts() {
        assert!(
            fleet.root(&host).join("usr/bin/provision").is_file(),
            "the role installed provision from its .deb on {host}"
        );
    }

    // Check mode with --diff: every host's changes, no host changed.
    let check = fleet.playbook(
        &playbook("fresh-install.yml"),
        vars.clone(),
        &["--check", "--diff"],
    );
    assert_eq!(check.code, 0, "{check:?}");
    assert_eq!(
        check.output.matches("+ nouveau:blacklist").count(),
        4,
        "each host's diff is shown: {check:?}"
    );
    assert!(check.output.contains("nvidia-driver-cuda"), "{check:?}");
    for (host, before) in fleet.hosts().iter().zip(&before) {
        assert_same_tree(before, &fleet.tree(host), &format!("check mode on {host}"));
    }

    // For real: every host converges, and a second run changes nothing.
    let apply = fleet.playbook(&playbook("fresh-install.yml"), vars.clone(), &[]);
    assert_eq!(apply.code, 0, "{apply:?}");
    for host in fleet.hosts() {
        assert_recap(&apply, &host, "failed", 0);
        let packages = fleet.packages(&host);
        let (version, held) = &packages["nvidia-driver-cuda"];
        assert!(version.starts_with("570."), "{host}: {version}");
        assert!(*held, "{host}: the driver is held");
    }
    let again = fleet.playbook(&playbook("fresh-install.yml"), vars.clone(), &[]);
    assert_eq!(again.code, 0, "{again:?}");
    for host in fleet.hosts() {
        assert_recap(&again, &host, "changed", 0);
        assert_recap(&again, &host, "failed", 0);
    }

    // Facts: every host's, and a play that branches on the GPUs.
    let facts = fleet.playbook(&repo().join("tests/ansible/facts.yml"), vars.clone(), &[]);
    assert_eq!(facts.code, 0, "{facts:?}");
    for host in fleet.hosts() {
        assert!(
            facts.output.contains(&format!("no NVIDIA GPU on {host}")),
            "{host}: {facts:?}"
        );
    }

    // The nodes' documents for an offline bundle, on the controller.
    let documents = tempfile::tempdir().unwrap();
    let mut with_dir = vars.clone();
    with_dir["provision_documents"] = documents.path().display().to_string().into();
    let collected = fleet.playbook(&playbook("host-documents.yml"), with_dir, &[]);
    assert_eq!(collected.code, 0, "{collected:?}");
    for host in fleet.hosts() {
        let path = documents.path().join(format!("{host}.json"));
        let text = fs_err::read_to_string(&path).unwrap();
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(document["os"]["id"], "debian", "{host}");
        let installed = document["installed"].as_array().unwrap();
        assert!(
            installed
                .iter()
                .any(|p| p["name"] == "nvidia-driver-cuda" && p["held"] == true),
            "{host}: its packages, the held driver among them"
        );
        assert!(
            !document["os"]["kernels"].as_array().unwrap().is_empty(),
            "{host}: its kernels"
        );
    }

    // state: rolled_back returns each host to its tree and package set.
    let rollback = fleet.playbook(&repo().join("tests/ansible/rollback.yml"), vars, &[]);
    assert_eq!(rollback.code, 0, "{rollback:?}");
    for (index, host) in fleet.hosts().iter().enumerate() {
        assert_recap(&rollback, host, "changed", 1);
        let mut files_before = before[index].clone();
        files_before
            .retain(|path, _| !path.starts_with("var/lib/dpkg") && !path.starts_with("var/cache"));
        assert_same_tree(
            &files_before,
            &fleet.files(host),
            &format!("rollback on {host}"),
        );
        assert_eq!(
            packages_before[index],
            fleet.packages(host),
            "{host}: the package set"
        );
    }
}

#[test]
#[ignore = "a fleet of 4 hosts over SSH (about 3 minutes): scripts/test runs it"]
fn a_rolling_upgrade_stops_at_the_host_that_fails_and_the_rest_keep_their_driver() {
    let fleet = Fleet::up("pvfb", 4, "10.77.2");
    let apply = fleet.playbook(&playbook("fresh-install.yml"), fleet.role_vars("570"), &[]);
    assert_eq!(apply.code, 0, "{apply:?}");

    // host2 runs a held site package that carries the 580 release's GSP
    // firmware: dpkg stops the upgrade half-way (a file conflict no
    // simulation foresees).
    let root = fleet.root("host2");
    let deb = fs_err::read_dir(repo().join("target/test-repos/nvidia-debian12"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("gpu-firmware-site"))
        .expect("the test repository's gpu-firmware-site");
    fs_err::copy(&deb, root.join("tmp/gpu-firmware-site.deb")).unwrap();
    for args in [
        &["dpkg", "-i", "/tmp/gpu-firmware-site.deb"][..],
        &["apt-mark", "hold", "gpu-firmware-site"][..],
    ] {
        let status = Command::new("chroot")
            .arg(&root)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "{args:?}");
    }
    let before: Vec<_> = fleet
        .hosts()
        .iter()
        .map(|h| (fleet.files(h), fleet.packages(h)))
        .collect();

    let upgrade = fleet.playbook(
        &playbook("rolling-upgrade.yml"),
        fleet.role_vars("580"),
        &[],
    );
    assert_ne!(upgrade.code, 0, "the play stops: {upgrade:?}");
    // host1 went first and took 580.
    assert_recap(&upgrade, "host1", "failed", 0);
    assert!(
        fleet.packages("host1")["nvidia-driver-cuda"]
            .0
            .starts_with("580.")
    );
    // host2 failed mid-way and rolled itself back.
    assert_recap(&upgrade, "host2", "failed", 1);
    assert!(
        upgrade
            .output
            .contains("which is also in package gpu-firmware-site"),
        "the failure names the package: {upgrade:?}"
    );
    assert!(upgrade.output.contains("was undone"), "{upgrade:?}");
    assert_same_tree(
        &before[1].0,
        &fleet.files("host2"),
        "host2 after its failed upgrade",
    );
    assert_eq!(before[1].1, fleet.packages("host2"), "host2's package set");
    // The hosts after it were not touched.
    for (index, host) in ["host3", "host4"].iter().enumerate() {
        assert!(
            !upgrade.recap.contains_key(*host),
            "{host} ran: {upgrade:?}"
        );
        assert_same_tree(
            &before[index + 2].0,
            &fleet.files(host),
            &format!("{host} untouched"),
        );
        assert_eq!(before[index + 2].1, fleet.packages(host));
    }

    // The fleet report: host1, the only node on 580, is the outlier.
    let report = fleet.playbook(&playbook("report.yml"), serde_json::json!({}), &[]);
    assert_eq!(report.code, 0, "{report:?}");
    let row = |host: &str| {
        report
            .output
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("\"{host} ")))
            .unwrap_or_else(|| panic!("no row for {host}: {report:?}"))
            .to_string()
    };
    let host1 = row("host1");
    assert!(
        host1.contains("580.") && host1.contains("applied") && host1.contains("<- outlier"),
        "{host1}"
    );
    for host in ["host2", "host3", "host4"] {
        let line = row(host);
        assert!(line.contains("570.") && !line.contains("outlier"), "{line}");
    }
    assert!(report.output.contains("fleet driver: 570."), "{report:?}");
}
