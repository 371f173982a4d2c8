//! `provision metrics`: Prometheus' own `promtool check metrics` accepts
//! every host's exposition, the numbers agree with doctor and detect, and
//! Debian's real `prometheus-node-exporter` serves the textfile that apply
//! and rollback refresh.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TEXTFILE_DIR: &str = "var/lib/node_exporter/textfile_collector";

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// The value of the sample whose line starts with `series` (name and
/// labels as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn hosts() -> Vec<std::path::PathBuf> {
    let mut hosts: Vec<_> = fs_err::read_dir(repo().join("tests/fixtures/hosts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    hosts.push(fixture("ubuntu-24.04-h200-580-open"));
    hosts.sort();
    hosts
}

#[test]
fn every_host_s_metrics_pass_promtool_and_agree_with_doctor_and_detect() {
    for host in hosts() {
        let root = host.to_str().unwrap();
        let run = provision(&["metrics", "--root", root]);
        assert_eq!(run.code, 0, "{run:?}");
        let (ok, said) = promtool_check(&run.stdout);
        assert!(ok && said.trim().is_empty(), "{root}: promtool: {said}");
        let docs = fs_err::read_to_string(repo().join("docs/json.md")).unwrap();
        for family in run.stdout.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = family.split(' ').next().unwrap();
            assert!(
                docs.contains(&format!("| `{name}` |")),
                "docs/json.md does not describe {name}"
            );
        }

        let doctor = provision(&["doctor", "--root", root, "--json"]).json();
        for severity in ["error", "warning", "info"] {
            let expected = doctor["findings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["severity"] == severity)
                .count() as f64;
            let series = format!("provision_doctor_findings{{severity=\"{severity}\"}}");
            assert_eq!(
                sample(&run.stdout, &series),
                Some(expected),
                "{root}: {severity}"
            );
        }
        let facts = provision(&["detect", "--root", root, "--json"]).json();
        let kernel = facts["kernel_driver"]["version"].as_str().unwrap_or("none");
        let user = facts["user_driver"]["version"].as_str().unwrap_or("none");
        assert!(
            run.stdout.contains(&format!(
                "provision_driver_info{{kernel_module=\"{kernel}\",user_space=\"{user}\","
            )),
            "{root}: driver layers {kernel}/{user}:\n{}",
            run.stdout
        );
        // The loaded module against the user space installed with a driver
        // (a stale libcuda elsewhere on the loader path is doctor's).
        let mismatch = !facts["kernel_driver"]["mismatch"].is_null();
        if host.ends_with("ubuntu-22.04-l40s-mismatch") {
            assert!(mismatch, "the mismatch host");
        }
        assert_eq!(
            sample(&run.stdout, "provision_driver_mismatch"),
            Some(if mismatch { 1.0 } else { 0.0 }),
            "{root}"
        );
        if mismatch {
            assert_eq!(sample(&run.stdout, "provision_reboot_required"), Some(1.0));
        }
        let verify = provision(&["verify", "--root", root, "--json"]);
        assert_eq!(
            sample(&run.stdout, "provision_verify_passed"),
            Some(if verify.code == 0 { 1.0 } else { 0.0 }),
            "{root}: {verify:?}"
        );
    }
}

/// Debian's node_exporter with only its textfile collector, on a free
/// loopback port.
struct NodeExporter {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl NodeExporter {
    fn start(dir: &Path) -> NodeExporter {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("prometheus-node-exporter")
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("prometheus-node-exporter (scripts/setup installs it)");
        let exporter = NodeExporter { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "node_exporter did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        exporter
    }

    /// What it logged (why a textfile was not read).
    fn log(&self) -> String {
        fs_err::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn scrape(&self) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        response
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn node_exporter_serves_what_apply_and_rollback_write() {
    let server = serve_test_repos();
    let rootfs = Rootfs::new();
    rootfs.no_apt_sources();
    let textfiles = rootfs.path().join(TEXTFILE_DIR);
    fs_err::create_dir_all(&textfiles).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan = toolkit_plan(
        dir.path(),
        &server,
        "\n[metrics]\ntextfile = \"/srv/metrics\"\n",
    );
    // A second collector directory, named by the plan.
    let configured = rootfs.path().join("srv/metrics");
    fs_err::create_dir_all(&configured).unwrap();
    let exporter = NodeExporter::start(&textfiles);
    let before = exporter.scrape();
    assert!(!before.contains("provision_generation"), "{before}");

    let applied = apply_ok(&plan, rootfs.arg());
    assert_eq!(applied["generation"], 1);
    let scraped = exporter.scrape();
    assert_eq!(
        sample(&scraped, "node_textfile_scrape_error"),
        Some(0.0),
        "node_exporter could not read the textfile:\n{}\n{}",
        exporter.log(),
        fs_err::read_to_string(textfiles.join("provision.prom")).unwrap_or_default()
    );
    assert_eq!(
        sample(&scraped, "provision_generation{state=\"applied\"}"),
        Some(1.0),
        "{scraped}"
    );
    // The plan is where it was and unchanged: nothing drifted.
    assert_eq!(sample(&scraped, "provision_plan_drift"), Some(0.0));
    let finished = sample(&scraped, "provision_last_apply_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - finished).abs() < 600.0, "{finished} vs now {now}");
    let written = |dir: &Path| fs_err::read_to_string(dir.join("provision.prom")).unwrap();
    assert_eq!(
        written(&configured),
        written(&textfiles),
        "[metrics] textfile"
    );
    let (ok, said) =
        promtool_check(&fs_err::read_to_string(textfiles.join("provision.prom")).unwrap());
    assert!(ok, "{said}");

    // Someone edits the loader configuration: the drift shows.
    let loader = rootfs.path().join("etc/ld.so.conf.d/provision-cuda.conf");
    let kept = fs_err::read(&loader).unwrap();
    fs_err::remove_file(&loader).unwrap();
    let run = provision(&[
        "metrics",
        "--root",
        rootfs.arg(),
        "--textfile",
        "/var/lib/node_exporter/textfile_collector",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.is_empty(), "--textfile prints nothing: {run:?}");
    let drifted = sample(&exporter.scrape(), "provision_plan_drift").unwrap();
    assert!(drifted >= 1.0, "the removed loader file is drift");
    fs_err::write(&loader, kept).unwrap();

    let undone = provision(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(undone.code, 0, "{undone:?}");
    let scraped = exporter.scrape();
    assert_eq!(
        sample(&scraped, "provision_generation{state=\"rolled-back\"}"),
        Some(1.0),
        "{scraped}"
    );
    assert_eq!(
        sample(&scraped, "provision_generation{state=\"applied\"}"),
        None
    );
    assert_eq!(
        written(&configured),
        written(&textfiles),
        "rollback writes both"
    );
    let leftovers: Vec<_> = fs_err::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        ["provision.prom"],
        "no temporary file left beside it"
    );
}
