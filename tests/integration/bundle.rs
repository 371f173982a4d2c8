//! Offline bundles. The slow part (run by `real_driver.rs`'s test, which
//! goes on from its node B) bundles Debian 12's real NVIDIA 535
//! driver (non-free, from Debian's registry) for the hosts it serves, from
//! their `detect --json --packages` documents: a host as the release
//! installs today, and one with an older kernel only. A bundle made for the
//! first is refused on the second before any change, naming the headers it
//! lacks and the `--kernel` to give; one made for both serves both, and on
//! the older host, with the network cut for provision and everything it
//! starts (`unshare -n`), DKMS builds nvidia-current.ko from the bundle
//! alone, the result equals an online apply's, re-apply is a no-op,
//! rollback is byte-exact, and a bundle with one flipped byte is refused
//! before any change. The fast tests check the verifier on a bundle made
//! here by hand, and what `bundle` refuses before fetching anything.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::support::{Rootfs, assert_same_tree, plan_file, provision};

const DRIVER_PLAN: &str =
    "[driver]\nbranch = \"535\"\nflavor = \"proprietary\"\nsource = \"distro\"\n";

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// provision under `unshare -n`: no network for it or anything it starts.
fn offline(args: &[&str]) -> crate::support::Run {
    offline_with_cache(args, None)
}

/// [`offline`], its download and bundle cache under `cache` when given.
pub(crate) fn offline_with_cache(args: &[&str], cache: Option<&Path>) -> crate::support::Run {
    let mut command = std::process::Command::new("unshare");
    command
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .env("NO_COLOR", "1");
    if let Some(cache) = cache {
        command.env("PROVISION_CACHE", cache.join("downloads"));
    }
    let output = command.output().expect("unshare -n provision");
    crate::support::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The tar's byte offset of the middle of `name`'s data.
fn data_offset(tar_path: &Path, name: &str) -> u64 {
    let mut archive = tar::Archive::new(fs_err::File::open(tar_path).unwrap());
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == name {
            return entry.raw_file_position() + entry.size() / 2;
        }
    }
    panic!("{name} is not in {}", tar_path.display());
}

/// A copy of the bundle with one byte of `name` flipped.
pub(crate) fn flipped(bundle: &Path, name: &str, dir: &Path) -> std::path::PathBuf {
    let copy = dir.join("tampered.tar");
    fs_err::copy(bundle, &copy).unwrap();
    let offset = data_offset(&copy, name);
    let mut bytes = fs_err::read(&copy).unwrap();
    bytes[offset as usize] ^= 0x01;
    fs_err::write(&copy, bytes).unwrap();
    copy
}

pub(crate) fn manifest_of(bundle: &Path) -> serde_json::Value {
    let mut archive = tar::Archive::new(fs_err::File::open(bundle).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == "manifest.json" {
            return serde_json::from_reader(&mut entry).unwrap();
        }
    }
    panic!("no manifest");
}

/// A bundle made by hand: one file in its repository, the manifest.
fn hand_made(dir: &Path) -> (std::path::PathBuf, String) {
    let content = b"Package: example\nVersion: 1.0\n\n".to_vec();
    let manifest = serde_json::json!({
        "format": 1,
        "release": "debian-12",
        "arch": "x86_64",
        "plan_sha256": "0".repeat(64),
        "created": "2026-12-04T00:00:00Z",
        "sources": ["http://deb.debian.org/debian"],
        "packages": [],
        "files": [{"path": "repo/Packages", "sha256": hex(&content), "size": content.len()}],
    });
    let json = serde_json::to_vec_pretty(&manifest).unwrap();
    let path = dir.join("bundle.tar");
    let mut tar = tar::Builder::new(fs_err::File::create(&path).unwrap());
    for (name, data) in [("manifest.json", &json), ("repo/Packages", &content)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, data.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().flush().unwrap();
    (path, hex(&json))
}

#[test]
fn a_tampered_bundle_or_another_manifest_is_refused_before_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, sha) = hand_made(dir.path());
    let plan = plan_file(dir.path(), "plan.toml", DRIVER_PLAN);
    let root = tempfile::tempdir().unwrap();
    fs_err::create_dir_all(root.path().join("etc")).unwrap();
    fs_err::write(
        root.path().join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let run = |bundle: &Path, sha: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_provision"))
            .args(["apply", plan.to_str().unwrap(), "--root"])
            .arg(root.path())
            .arg("--bundle")
            .arg(bundle)
            .args(["--bundle-sha256", sha, "--json"])
            .env("PROVISION_CACHE", cache.path().join("downloads"))
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        (
            output.status.code(),
            report["msg"].as_str().unwrap_or("").to_string(),
        )
    };
    // Another manifest than the one the operator was given.
    let (code, msg) = run(&bundle, &"ab".repeat(32));
    assert_eq!(code, Some(1));
    assert!(
        msg.contains(&format!(
            "the manifest's sha256 is {sha}, not the {}",
            "ab".repeat(32)
        )),
        "{msg}"
    );
    // One flipped byte in a file: named, with both hashes.
    let tampered = flipped(&bundle, "repo/Packages", dir.path());
    let (code, msg) = run(&tampered, &sha);
    assert_eq!(code, Some(1));
    let listed = manifest_of(&bundle)["files"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("repo/Packages is tampered with or damaged"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("the manifest says {listed}")),
        "{msg}"
    );
    assert!(msg.contains("nothing was changed"), "{msg}");
    // Nothing reached the root or stayed in the cache.
    let left: Vec<_> = fs_err::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        [std::ffi::OsString::from("etc")],
        "the root is as it was"
    );
    let bundles = cache.path().join("bundles");
    let cached: Vec<_> = fs_err::read_dir(&bundles)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        cached.is_empty(),
        "a refused bundle is not cached: {cached:?}"
    );
}

/// A kernel of the release older than `newest`: the one an older
/// `linux-image-amd64` in the registry depends on (the point release's,
/// when the security archive has a newer one).
fn older_kernel(newest: &str) -> String {
    let output = std::process::Command::new("apt-cache")
        .args(["show", "linux-image-amd64"])
        .output()
        .expect("apt-cache");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|l| l.strip_prefix("Depends: linux-image-"))
        .filter_map(|d| d.split([' ', ',']).next())
        .map(str::to_string)
        .find(|k| k.as_str() != newest && k.ends_with("-amd64"))
        .unwrap_or_else(|| panic!("the registry offers no kernel older than {newest}: {text}"))
}

/// Makes `rootfs` a host that has not taken the release's newest kernel:
/// `kernel` (Debian's real package) installed, the newest one purged; named
/// `name`.
fn with_only_kernel(rootfs: &Rootfs, kernel: &str, newest: &str, name: &str) {
    let dir = rootfs.path().join("tmp/kernel");
    fs_err::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new("apt-get")
        .args(["download", "-q", &format!("linux-image-{kernel}")])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "apt-get download linux-image-{kernel}");
    let script = format!(
        "dpkg -i /tmp/kernel/*.deb && dpkg --purge linux-image-amd64 linux-image-{newest} && rm -r /tmp/kernel"
    );
    rootfs.chroot_with_proc(&["sh", "-c", &script]);
    assert_eq!(rootfs.kernel(), kernel);
    fs_err::write(rootfs.path().join("etc/hostname"), format!("{name}\n")).unwrap();
}

/// `provision detect --json --packages` of `rootfs`, written to `path`.
fn detect_document(rootfs: &Rootfs, path: &Path) -> std::path::PathBuf {
    let run = provision(&["detect", "--root", rootfs.arg(), "--json", "--packages"]);
    assert_eq!(run.code, 0, "{run:?}");
    fs_err::write(path, &run.stdout).unwrap();
    path.to_path_buf()
}

/// `provision VERB PLAN --root ROOT --bundle BUNDLE [--bundle-sha256 SHA]
/// --json` under `unshare -n`, the download and bundle cache under `cache`
/// when given.
fn served(
    verb: &str,
    plan: &Path,
    root: &Rootfs,
    bundle: &Path,
    sha: Option<&str>,
    cache: Option<&Path>,
) -> crate::support::Run {
    let mut args = vec![
        verb,
        plan.to_str().unwrap(),
        "--root",
        root.arg(),
        "--bundle",
        bundle.to_str().unwrap(),
        "--json",
    ];
    if let Some(sha) = sha {
        args.extend(["--bundle-sha256", sha]);
    }
    offline_with_cache(&args, cache)
}

/// `provision bundle PLAN ARGS... -o OUT --json`: (manifest sha256, package names).
fn bundle_with(plan: &Path, args: &[&str], out: &Path) -> (String, Vec<String>, serde_json::Value) {
    let mut all = vec!["bundle", plan.to_str().unwrap()];
    all.extend(args);
    all.extend(["-o", out.to_str().unwrap(), "--json"]);
    let made = provision(&all);
    assert_eq!(made.code, 0, "{made:?}");
    let sha = made.json()["manifest_sha256"].as_str().unwrap().to_string();
    let manifest = manifest_of(out);
    assert_eq!(
        hex(&serde_json::to_vec_pretty(&manifest).unwrap()),
        sha,
        "the printed hash is the manifest's"
    );
    let names = manifest["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    (sha, names, manifest)
}

/// Node B after its online apply, for the upgrade that follows
/// (`real_driver.rs`): the host, that apply's report, and its `etc/` and
/// `boot/` and packages before it.
pub(crate) struct Online {
    pub host: Rootfs,
    pub report: serde_json::Value,
    pub before_tree: std::collections::BTreeMap<String, String>,
    pub before_packages: std::collections::BTreeMap<String, (String, bool)>,
}

/// Debian 12's real driver of `plan_text` (release `release`), bundled for
/// the hosts it serves and applied on node B online and on its twin
/// offline: see the module's documentation. `prepare` makes each host
/// ready (Secure Boot and its key, as the plan expects). Returns node B,
/// applied online. The test is `real_driver::debian_12_real_535_driver_with_dkms`,
/// which goes on with the upgrade on node B: the two share the first
/// install's build.
pub(crate) fn real_bundle_fits_its_hosts_and_applies_offline_like_online(
    dir: &Path,
    plan_text: &str,
    release: &str,
    prepare: impl Fn(&Rootfs),
) -> Online {
    let cache = dir.join("cache");
    let plan = plan_file(dir, "bundled.toml", plan_text);
    // Host A as the release installs today; hosts B with an older kernel
    // only (air-gapped hosts seldom take the newest): one for the online
    // apply, one for the offline one.
    let host_a = Rootfs::new();
    prepare(&host_a);
    let newest = host_a.kernel();
    fs_err::write(host_a.path().join("etc/hostname"), "node-a\n").unwrap();
    let old = older_kernel(&newest);
    let online = Rootfs::new();
    prepare(&online);
    with_only_kernel(&online, &old, &newest, "node-b");
    let offline_root = Rootfs::new();
    prepare(&offline_root);
    with_only_kernel(&offline_root, &old, &newest, "node-b");
    let a_doc = detect_document(&host_a, &dir.join("node-a.json"));
    let b_doc = detect_document(&offline_root, &dir.join("node-b.json"));

    // Made for A alone: it carries A's kernel headers, and B is refused
    // before any change, naming what it lacks and how to make the right one.
    let only_a = dir.join("node-a.tar");
    let (sha_a, names, manifest) =
        bundle_with(&plan, &["--host", a_doc.to_str().unwrap()], &only_a);
    assert_eq!(manifest["release"], "debian-12");
    assert_eq!(manifest["kernels"], serde_json::json!([newest]));
    assert_eq!(manifest["hosts"], serde_json::json!(["node-a"]));
    for needed in [
        "nvidia-kernel-dkms",
        "dkms",
        "gcc-12",
        "make",
        &format!("linux-headers-{newest}"),
    ] {
        assert!(
            names.iter().any(|n| n == needed),
            "{needed} is not in the bundle: {names:?}"
        );
    }
    let untouched = ["etc", "boot", "var/lib/dpkg"];
    let before_b = offline_root.tree(&untouched);
    for verb in ["plan", "apply"] {
        let refused = served(verb, &plan, &offline_root, &only_a, Some(&sha_a), None);
        assert_eq!(refused.code, 1, "{verb}: {refused:?}");
        let msg = refused.json()["msg"].as_str().unwrap().to_string();
        for expected in [
            format!("linux-headers-{old}"),
            format!("--for debian-12 --kernel {old}"),
            "does not serve this host".to_string(),
            "nothing was changed".to_string(),
        ] {
            assert!(msg.contains(&expected), "{verb}: {expected}: {msg}");
        }
        assert_same_tree(&before_b, &offline_root.tree(&untouched), verb);
        assert!(
            !offline_root
                .path()
                .join("var/lib/provision/generations")
                .exists(),
            "{verb}: no generation began"
        );
    }

    // Made for both: headers of both kernels, and the plan fits each host.
    let bundle = dir.join("debian-12.tar");
    let (sha, names, manifest) = bundle_with(
        &plan,
        &[
            "--host",
            a_doc.to_str().unwrap(),
            "--host",
            b_doc.to_str().unwrap(),
        ],
        &bundle,
    );
    let mut kernels = vec![old.clone(), newest.clone()];
    kernels.sort();
    assert_eq!(manifest["kernels"], serde_json::json!(kernels));
    assert_eq!(manifest["hosts"], serde_json::json!(["node-a", "node-b"]));
    for kernel in &kernels {
        let headers = format!("linux-headers-{kernel}");
        assert!(names.contains(&headers), "{headers}: {names:?}");
    }
    let fits_a = served("plan", &plan, &host_a, &bundle, None, None);
    assert_eq!(fits_a.code, 0, "the bundle serves node-a: {fits_a:?}");

    // Online: B with Debian's registry.
    let tracked = ["etc", "boot"];
    let before = offline_root.tree(&tracked);
    let before_online = (online.tree(&tracked), online.packages());
    let applied = provision(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        online.arg(),
        "--json",
    ]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let online_report = applied.json();
    // dkms, the compiler and the headers first, then the module's build,
    // then the driver's packages, which only load it: online and offline.
    let (online_build, _) = crate::real_driver::built_before_packages(&online_report, release);

    // Offline: the other B, the network cut, the bundle alone. DKMS builds
    // node B's module again from the bundle's source.
    let with_bundle = |verb: &str| {
        let run = served(
            verb,
            &plan,
            &offline_root,
            &bundle,
            Some(&sha),
            Some(&cache),
        );
        assert_eq!(run.code, 0, "{verb}: {run:?}");
        run.json()
    };
    let applied = with_bundle("apply");
    let (offline_build, _) = crate::real_driver::built_before_packages(&applied, release);
    eprintln!("node B's build: online {online_build:.1} s, offline {offline_build:.1} s");
    // Only the bundle's list is refreshed: the rootfs's own sources cannot
    // be reached, and apt would spend its retries on each.
    // (The check that the bundle serves the host refreshed a throwaway
    // apt of its own, which only reads.)
    let updates: Vec<&str> = applied["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["effect"] == "change")
        .filter_map(|c| c["command"].as_str())
        .filter(|c| c.contains("apt-get update"))
        .collect();
    assert!(
        !updates.is_empty()
            && updates.iter().all(|c| c
                .contains("Dir::Etc::SourceList=/etc/apt/sources.list.d/provision-bundle.list")
                && c.contains("Dir::Etc::SourceParts=-")),
        "{updates:?}"
    );
    let module = format!("lib/modules/{old}/updates/dkms/nvidia-current.ko");
    assert!(
        offline_root.path().join(&module).is_file(),
        "DKMS built {module} offline"
    );
    assert_eq!(
        offline_root.packages(),
        online.packages(),
        "the same package set"
    );
    // etc/ byte for byte (the bundle's source aside); the initramfs images
    // (cpio archives with build times) by what they hold.
    let mut offline_tree = offline_root.tree(&["etc"]);
    let list = offline_tree.remove("etc/apt/sources.list.d/provision-bundle.list");
    assert!(list.is_some(), "the bundle's source is the one difference");
    assert_same_tree(
        &online.tree(&["etc"]),
        &offline_tree,
        "offline against online",
    );
    let image = format!("/boot/initrd.img-{old}");
    assert_eq!(
        offline_root.chroot(&["lsinitramfs", &image]),
        online.chroot(&["lsinitramfs", &image]),
        "the initramfs holds the same files"
    );

    let again = with_bundle("apply");
    assert_eq!(again["changed"], false, "{again:#}");
    let rolled = offline(&["rollback", "--root", offline_root.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_same_tree(
        &before,
        &offline_root.tree(&tracked),
        "rollback of the offline apply",
    );
    assert!(
        !offline_root
            .path()
            .join("var/lib/provision/bundles")
            .exists()
    );

    // A host the bundle was not made for: told so, then checked all the
    // same (it is like node-a, so the bundle serves it).
    let fresh = Rootfs::new();
    prepare(&fresh);
    fs_err::write(fresh.path().join("etc/hostname"), "node-c\n").unwrap();
    let other = served("plan", &plan, &fresh, &bundle, None, None);
    assert_eq!(other.code, 0, "{other:?}");
    let warnings = other.json()["warnings"].to_string();
    assert!(
        warnings.contains(
            "this host (node-c) is not among those the bundle was made for (node-a, node-b)"
        ),
        "{warnings}"
    );
    assert!(
        !fits_a.json()["warnings"]
            .to_string()
            .contains("not among those the bundle was made for"),
        "node-a is among them"
    );

    // One flipped byte in the kernel module's package: refused, nothing changed.
    let deb = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .find(|p| p.contains("nvidia-kernel-dkms"))
        .unwrap()
        .to_string();
    let tampered = flipped(&bundle, &deb, dir);
    let before = fresh.tree(&["etc", "boot", "var", "usr"]);
    let refused = std::process::Command::new("unshare")
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_provision"))
        .args([
            "apply",
            plan.to_str().unwrap(),
            "--root",
            fresh.arg(),
            "--bundle",
            tampered.to_str().unwrap(),
            "--json",
        ])
        .env("PROVISION_CACHE", dir.join("other-cache/downloads"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&refused.stdout).to_string();
    assert!(
        msg.contains(&format!("{deb} is tampered with or damaged")),
        "{msg}"
    );
    assert_same_tree(
        &before,
        &fresh.tree(&["etc", "boot", "var", "usr"]),
        "a tampered bundle",
    );
    Online {
        host: online,
        report: online_report,
        before_tree: before_online.0,
        before_packages: before_online.1,
    }
}

#[test]
fn what_a_bundle_cannot_be_made_for_is_refused_before_anything_is_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.tar");
    let cases = [
        (
            DRIVER_PLAN,
            "fedora-41",
            "provision bundles for debian-12, debian-13, ubuntu-22.04, ubuntu-24.04, rhel-8, rhel-9",
        ),
        (
            DRIVER_PLAN,
            "rhel-9",
            "nothing to resolve against: the plan uses none of NVIDIA's repositories",
        ),
        (
            "[driver]\nbranch = \"580\"\nflavor = \"open\"\nsource = \"cuda-repo\"\n",
            "rhel-9 --mirror http://127.0.0.1:9/baseos/",
            "--mirror needs --mirror-key",
        ),
        (
            DRIVER_PLAN,
            "debian-12 --mirror-key /dev/null",
            "one --mirror (the distribution's archive, checked with its keyring) and no --mirror-key",
        ),
        (
            "[driver]\nbranch = \"535\"\n",
            "debian-12",
            "set [driver] flavor",
        ),
        (
            "[driver]\nbranch = \"recommended\"\nflavor = \"open\"\n",
            "debian-12",
            "name the branch",
        ),
        (
            "[driver]\nversion = \"580.95.05\"\nflavor = \"open\"\nsource = \"runfile\"\nrunfile = \"https://example.invalid/x.run\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
            "debian-12",
            "copy the cache",
        ),
    ];
    // Host documents that cannot say what to bundle for.
    let plan = plan_file(dir.path(), "plan.toml", DRIVER_PLAN);
    let bare = dir.path().join("bare.json");
    let detected = provision(&[
        "detect",
        "--root",
        &crate::support::fixture("debian-12-a6000-nouveau")
            .display()
            .to_string(),
        "--json",
    ]);
    assert_eq!(detected.code, 0, "{detected:?}");
    fs_err::write(&bare, &detected.stdout).unwrap();
    let listed = dir.path().join("listed.json");
    let mut document = detected.json();
    document["installed"] = serde_json::json!([
        {"name": "dpkg", "version": "1.21.22", "arch": "amd64", "held": false, "source": null}
    ]);
    fs_err::write(&listed, document.to_string()).unwrap();
    for (args, expected) in [
        (
            vec!["--host", bare.to_str().unwrap()],
            "it lists no installed packages: make it on the host with `provision detect --json --packages`",
        ),
        (
            vec!["--for", "ubuntu-24.04", "--host", listed.to_str().unwrap()],
            "is debian-12, and the bundle is for ubuntu-24.04",
        ),
        (
            vec!["--host", listed.to_str().unwrap(), "--arch", "sbsa"],
            "is x86_64, and the bundle is for --arch sbsa",
        ),
    ] {
        let mut all = vec!["bundle", plan.to_str().unwrap()];
        all.extend(args);
        all.extend(["-o", out.to_str().unwrap(), "--json"]);
        let run = offline(&all);
        assert_eq!(run.code, 1, "{run:?}");
        let msg = run.json()["msg"].as_str().unwrap().to_string();
        assert!(msg.contains(expected), "{expected}: {msg}");
        assert!(!out.exists(), "nothing written");
    }
    for (text, release, expected) in cases {
        let plan = plan_file(dir.path(), "plan.toml", text);
        // No network: a refusal must not need one.
        let mut args = vec!["bundle", plan.to_str().unwrap(), "--for"];
        args.extend(release.split(' '));
        args.extend(["-o", out.to_str().unwrap(), "--json"]);
        let run = offline(&args);
        assert_eq!(run.code, 1, "{text}: {run:?}");
        assert!(
            run.json()["msg"].as_str().unwrap().contains(expected),
            "{expected}: {run:?}"
        );
        assert!(!out.exists(), "nothing written");
    }
}
