//! `provision detect` on real and modelled host snapshots, and on hostile
//! roots: exact on what real machines showed, never a panic, exit 0.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::support::{fixture, provision, repo};

fn detect(root: &Path) -> Value {
    let run = provision(&["detect", "--root", root.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    run.json()
}

/// The value after `key` in an nvidia-smi header line.
fn header_value<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(key)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
}

fn xml_value<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml.find(&open).unwrap() + open.len();
    let end = start + xml[start..].find('<').unwrap();
    xml[start..end].trim()
}

#[test]
fn detect_reproduces_what_nvidia_smi_showed_on_the_h200_host() {
    let host = fixture("ubuntu-24.04-h200-580-open");
    let truth = fs_err::read_to_string(host.join("GROUND-TRUTH.txt")).unwrap();
    let xml = fs_err::read_to_string(host.join("nvidia-smi-q.xml")).unwrap();
    let facts = detect(&host);

    // The nvidia-smi header: the kernel module and the user-mode driver's CUDA.
    let header = truth
        .lines()
        .find(|l| l.contains("Driver Version:"))
        .unwrap();
    assert_eq!(
        facts["kernel_driver"]["version"],
        header_value(header, "Driver Version:")
    );
    assert_eq!(
        facts["user_driver"]["version"],
        header_value(header, "Driver Version:")
    );
    assert_eq!(
        facts["user_driver"]["cuda_version"],
        header_value(header, "CUDA Version:")
    );
    assert_eq!(
        facts["user_driver"]["cuda_version"],
        xml_value(&xml, "cuda_version")
    );
    assert_eq!(facts["kernel_driver"]["flavor"], "open");
    assert_eq!(facts["kernel_driver"]["mismatch"], Value::Null);

    // --query-gpu: name, pci.device_id, pci.bus_id, driver_version, ..., compute_cap.
    let query = truth
        .lines()
        .skip_while(|l| !l.starts_with("name, pci.device_id"))
        .nth(1)
        .unwrap();
    let fields: Vec<&str> = query.split(", ").collect();
    let gpu = &facts["gpus"][0];
    assert_eq!(facts["gpus"].as_array().unwrap().len(), 1);
    assert_eq!(gpu["name"], fields[0]);
    let device = u16::from_str_radix(&fields[1][2..6], 16).unwrap();
    assert_eq!(gpu["pci_id"], format!("10de:{device:04x}"));
    // nvidia-smi prints an 8-digit domain: 00000000:00:06.0.
    assert_eq!(
        format!("0000{}", gpu["address"].as_str().unwrap()),
        fields[2]
    );
    assert_eq!(gpu["compute_capability"], fields[6]);
    assert_eq!(gpu["architecture"], xml_value(&xml, "product_architecture"));
    assert_eq!(
        gpu["subsystem"],
        "10de:18bf",
        "nvidia-smi -q: pci_sub_system_id {}",
        xml_value(&xml, "pci_sub_system_id")
    );
    assert_eq!(gpu["driver"], "nvidia");
    assert_eq!(gpu["datacenter"], true);

    // --query-compute-apps: the process holding the GPU.
    let app = truth
        .lines()
        .skip_while(|l| !l.starts_with("pid, process_name"))
        .nth(1)
        .unwrap();
    let app: Vec<&str> = app.split(", ").collect();
    let holder = &facts["holders"]["processes"][0];
    assert_eq!(holder["pid"].to_string(), app[0]);
    assert_eq!(holder["command"], app[1]);
    assert!(
        holder["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "/dev/nvidia0")
    );

    // ldconfig -p: the libcuda.so.1 the loader uses first.
    let first = truth
        .lines()
        .find(|l| l.trim_start().starts_with("libcuda.so.1 "))
        .unwrap()
        .split("=> ")
        .nth(1)
        .unwrap();
    assert_eq!(facts["user_driver"]["libcuda"], first);

    // The toolkit: nvcc's banner and torch's CUDA agree with what detect reads.
    let nvcc = fs_err::read_to_string(host.join("usr/local/cuda-13.0/bin/nvcc.version")).unwrap();
    let toolkit = &facts["toolkits"]["installed"][0];
    assert!(
        nvcc.contains(&format!("V{}", toolkit["nvcc"].as_str().unwrap())),
        "{nvcc}"
    );
    let torch = truth
        .lines()
        .skip_while(|l| !l.starts_with("## python torch"))
        .nth(1)
        .unwrap();
    assert!(
        torch.contains(&format!(" {} ", toolkit["short"].as_str().unwrap())),
        "{torch}"
    );
    assert_eq!(facts["toolkits"]["default"], "/usr/local/cuda-13.0");
    assert_eq!(toolkit["release"], "13.0.2");

    // The stale forward-compat library (580.95.05 under a 580.159.04 driver).
    let compat = &toolkit["compat"];
    assert_eq!(compat["version"], "580.95.05");
    assert_eq!(compat["against_driver"], "older");
    assert_eq!(compat["on_loader_path"], false);
    assert_eq!(
        facts["packages"]["gpu"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["held"] == true)
            .count(),
        5
    );
}

/// Copies `from` to `to`, turning every symbolic link into a link stub (a
/// file holding the target), the way copies that lose links store them.
fn flatten(from: &Path, to: &Path) {
    for entry in fs_err::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let meta = fs_err::symlink_metadata(entry.path()).unwrap();
        if meta.file_type().is_symlink() {
            fs_err::write(
                &target,
                fs_err::read_link(entry.path()).unwrap().to_str().unwrap(),
            )
            .unwrap();
        } else if meta.is_dir() {
            fs_err::create_dir_all(&target).unwrap();
            flatten(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_copy_that_lost_its_links_reads_the_same() {
    let host = fixture("ubuntu-24.04-h200-580-open");
    let copy = tempfile::tempdir().unwrap();
    flatten(&host, copy.path());
    assert!(
        !fs_err::symlink_metadata(copy.path().join("usr/local/cuda"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let strip = |mut facts: Value, root: &Path| {
        facts["root"] = Value::Null;
        let text = facts.to_string().replace(root.to_str().unwrap(), "ROOT");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    assert_eq!(
        strip(detect(&host), &host),
        strip(detect(copy.path()), copy.path())
    );
}

#[test]
fn debian_host_with_nouveau_bound() {
    let facts = detect(&fixture("debian-12-a6000-nouveau"));
    let gpu = &facts["gpus"][0];
    assert_eq!(gpu["name"], "NVIDIA RTX A6000");
    assert_eq!(gpu["driver"], "nouveau");
    assert_eq!(gpu["datacenter"], false);
    assert_eq!(gpu["forward_compat"], "unclear");
    assert_eq!(
        facts["gpus"].as_array().unwrap().len(),
        1,
        "the GPU's audio function is not a GPU"
    );
    assert_eq!(facts["nouveau"]["loaded"], true);
    assert_eq!(facts["nouveau"]["bound"][0], "0000:01:00.0");
    assert_eq!(facts["nouveau"]["blacklisted"], false);
    assert_eq!(facts["os"]["family"], "debian");
    assert_eq!(facts["os"]["secure_boot"], true);
    assert_eq!(facts["os"]["systemd"], true);
    assert_eq!(facts["os"]["kernels"][0]["headers"], true);
    assert_eq!(facts["kernel_driver"]["version"], Value::Null);
    assert!(
        facts["kernel_driver"]["unknown"]["version"]
            .as_str()
            .unwrap()
            .contains("no NVIDIA kernel driver is loaded")
    );
    assert_eq!(facts["user_driver"]["libcuda"], Value::Null);
    assert_eq!(facts["packages"]["unattended_upgrades"], true);
}

#[test]
fn rocky_host_with_holders_and_a_dkms_driver() {
    let facts = detect(&fixture("rocky-9-a100-holders"));
    assert_eq!(facts["os"]["family"], "rhel");
    assert_eq!(facts["gpus"].as_array().unwrap().len(), 2);
    assert_eq!(facts["gpus"][0]["name"], "NVIDIA A100-SXM4-80GB");
    assert_eq!(facts["gpus"][1]["numa_node"], 1);
    let kernel = &facts["kernel_driver"];
    assert_eq!(kernel["version"], "570.124.06");
    assert_eq!(kernel["flavor"], "proprietary");
    assert_eq!(kernel["installed"], "570.124.06");
    let nvidia = kernel["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "nvidia")
        .unwrap();
    assert_eq!(nvidia["refcount"], 52);
    assert_eq!(
        nvidia["used_by"],
        serde_json::json!(["nvidia_uvm", "nvidia_modeset"])
    );
    assert_eq!(facts["user_driver"]["libcuda"], "/usr/lib64/libcuda.so.1");
    assert_eq!(facts["user_driver"]["cuda_version"], "12.8");
    assert_eq!(
        facts["os"]["kernels"][0]["nvidia_module"],
        "/lib/modules/5.14.0-427.13.1.el9_4.x86_64/extra/nvidia.ko.xz"
    );
    assert_eq!(facts["nouveau"]["blacklisted"], true);
    assert_eq!(
        facts["nouveau"]["cmdline"][0],
        "rd.driver.blacklist=nouveau"
    );

    let holders = facts["holders"]["processes"].as_array().unwrap();
    let by_pid = |pid: u64| {
        holders
            .iter()
            .find(|h| h["pid"] == pid)
            .unwrap_or_else(|| panic!("pid {pid}"))
    };
    assert_eq!(by_pid(1310)["unit"], "nvidia-persistenced.service");
    assert_eq!(by_pid(22871)["container"], "4f1c0e9a8b7d");
    assert_eq!(by_pid(22871)["cmdline"], "python train.py --gpus 2");
    assert_eq!(by_pid(22871)["devices"].as_array().unwrap().len(), 4);
    assert!(
        !holders.iter().any(|h| h["pid"] == 22900),
        "sshd holds no GPU"
    );
    let services: BTreeSet<&str> = facts["holders"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["nvidia-persistenced", "nvidia-dcgm"])
    );

    // The rpm database needs rpm: unknown, with the reason.
    assert!(
        facts["packages"]["unknown"]["gpu"]
            .as_str()
            .unwrap()
            .contains("rpm"),
        "{}",
        facts["packages"]
    );
    assert!(
        facts["os"]["unknown"]["secure_boot"]
            .as_str()
            .unwrap()
            .contains("mokutil")
    );
}

#[test]
fn ubuntu_host_with_a_driver_library_mismatch() {
    let facts = detect(&fixture("ubuntu-22.04-l40s-mismatch"));
    let kernel = &facts["kernel_driver"];
    assert_eq!(kernel["version"], "570.124.06");
    assert_eq!(kernel["installed"], "570.172.08");
    assert_eq!(kernel["userspace"], "570.172.08");
    assert!(
        kernel["mismatch"]
            .as_str()
            .unwrap()
            .contains("Driver/library version mismatch")
    );
    let user = &facts["user_driver"];
    assert_eq!(user["libcuda"], "/usr/lib/x86_64-linux-gnu/libcuda.so.1");
    assert_eq!(user["cuda_version"], "12.8");
    assert_eq!(user["compat_first"]["version"], "575.57.08");
    assert_eq!(user["effective_cuda_version"], "12.9");
    let toolkits = facts["toolkits"]["installed"].as_array().unwrap();
    let compat_only = toolkits
        .iter()
        .find(|t| t["path"] == "/usr/local/cuda-12.9")
        .unwrap();
    assert_eq!(compat_only["compat_only"], true);
    assert_eq!(compat_only["compat"]["against_driver"], "newer");
    assert_eq!(compat_only["compat"]["on_loader_path"], true);
    assert_eq!(facts["toolkits"]["default"], "/usr/local/cuda-12.8");
    assert_eq!(
        facts["environment"]["path"][0]["toolkit"],
        "/usr/local/cuda-12.4"
    );
    assert_eq!(facts["packages"]["unattended_upgrades"], true);
    assert!(
        facts["packages"]["gpu"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["held"] == false)
    );
}

#[test]
fn hostile_roots_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |path: &str, bytes: &[u8]| {
        let full = root.join(path);
        fs_err::create_dir_all(full.parent().unwrap()).unwrap();
        fs_err::write(full, bytes).unwrap();
    };
    write("etc/os-release", b"\xff\xfeID=\x00garbage\nNOT A LINE\n=\n");
    write(
        "proc/driver/nvidia/version",
        b"\x00\x01\x02\xff binary garbage",
    );
    write("proc/sys/kernel/osrelease", b"\xde\xad\xbe\xef");
    write("proc/modules", b"nvidia \xff\xff\nbroken line\n");
    write("sys/module/nvidia/version", b"\xff\xfe");
    write("etc/ld.so.cache", b"glibc-ld.so.cache1.1\xff\xff\xff\xff");
    write(
        "var/lib/dpkg/status",
        b"Package: nvidia-smi\nStatus: \xff\nVersion:\n\n\xff\xfe\n",
    );
    write(
        "usr/local/cuda-12.8/version.json",
        b"{\"cuda\": {\"version\": \"\xff\"",
    );
    write("proc/77/comm", b"python\n");
    std::os::unix::fs::symlink("/usr/local/cuda-b", root.join("usr/local/cuda")).unwrap();
    std::os::unix::fs::symlink("/usr/local/cuda", root.join("usr/local/cuda-b")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", root.join("proc/77/fd")).unwrap_or(());
    let facts = detect(root);
    assert_eq!(facts["gpus"], serde_json::json!([]));
    assert!(
        facts["unknown"]["gpus"]
            .as_str()
            .unwrap()
            .contains("/sys/bus/pci/devices")
    );
    assert!(
        facts["kernel_driver"]["unknown"]["version"]
            .as_str()
            .unwrap()
            .contains("NVRM")
    );
    assert!(
        facts["toolkits"]["unknown"]["default"]
            .as_str()
            .unwrap()
            .contains("symbolic links"),
        "{}",
        facts["toolkits"]
    );
    assert!(facts["unknown"]["ld.so.cache"].is_string());
    assert_eq!(facts["os"]["id"], Value::Null);
    // The human form copes too.
    let human = provision(&["detect", "--root", root.to_str().unwrap()]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(human.stdout.contains("Versions (the three layers)"));
}

#[test]
fn an_unprivileged_run_reports_the_processes_it_cannot_read() {
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .args([
            "-a",
            fixture("rocky-9-a100-holders").to_str().unwrap(),
            copy.path().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let root = copy.path().join("rocky-9-a100-holders");
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(
        root.join("proc/23001/fd"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    fs_err::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // As nobody (setpriv, util-linux), the 000 directory cannot be listed.
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_provision"),
            "detect",
            "--root",
        ])
        .arg(&root)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let facts: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(facts["holders"]["unreadable"], serde_json::json!([23001]));
    assert!(
        facts["holders"]["unknown"]["processes"]
            .as_str()
            .unwrap()
            .contains("run as root")
    );
    assert_eq!(
        facts["holders"]["processes"].as_array().unwrap().len(),
        3,
        "the others are still found"
    );
}

/// Every field path in detect's JSON, `section.field` or `section[].field`.
#[test]
fn the_schema_document_names_every_field() {
    let doc = fs_err::read_to_string(repo().join("docs/facts.md")).unwrap();
    let mut all = BTreeSet::new();
    for host in [
        "ubuntu-24.04-h200-580-open",
        "rocky-9-a100-holders",
        "ubuntu-22.04-l40s-mismatch",
        "debian-12-a6000-nouveau",
    ] {
        crate::support::key_paths(&detect(&fixture(host)), "", &mut all);
    }
    let missing: Vec<&String> = all
        .iter()
        .filter(|p| {
            !p.contains(".compat.")
                && !p.contains("compat_first.")
                && !p.contains("initramfs[]")
                && !p.contains("packages.gpu[]")
        })
        .filter(|p| !doc.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/facts.md does not document: {missing:?}"
    );
}

/// Every string of a document, with its key path.
fn strings(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                strings(child, &format!("{path}.{key}"), out);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| strings(v, &format!("{path}[]"), out)),
        Value::String(text) => out.push((path.to_string(), text.clone())),
        _ => {}
    }
}

#[test]
fn no_value_names_the_root_directory() {
    // docs/facts.md: values are host paths, never the --root directory,
    // the reasons in `unknown` too.
    for entry in fs_err::read_dir(repo().join("tests/fixtures/hosts")).unwrap() {
        let host = entry.unwrap().path();
        let facts = detect(&host);
        let mut all = Vec::new();
        strings(&facts, "", &mut all);
        let root = facts["root"].as_str().unwrap().to_string();
        let leaks: Vec<_> = all
            .iter()
            .filter(|(path, text)| path != ".root" && text.contains(&root))
            .collect();
        assert!(leaks.is_empty(), "{}: {leaks:#?}", host.display());
    }
}

#[test]
fn origins_that_cannot_be_asked_are_said_in_the_human_form_too() {
    // A capture has no apt-cache to ask: the JSON's reason, in words.
    let host = fixture("ubuntu-24.04-l40s-two-toolkits");
    let run = provision(&["detect", "--origins", "--root", host.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("origins: unknown (could not start `apt-cache"),
        "{run:?}"
    );
    // Not asked: nothing said.
    let run = provision(&["detect", "--root", host.to_str().unwrap()]);
    assert!(!run.stdout.contains("origins:"), "{run:?}");
}
