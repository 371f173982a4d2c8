//! Every `--json` document: each key a real run prints is described in
//! docs/json.md, and each document (and the human form of the read-only
//! verbs) is snapshotted, with what changes between runs (times, temporary
//! paths, ports) masked.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::support::http::Server;
use crate::support::{Rootfs, fixture, fixture_copy, key_paths, plan_file, provision, repo};
use crate::support::{serve_test_repos, toolkit_plan};

/// The part of docs/json.md about document `name`.
fn section(name: &str) -> String {
    let doc = fs_err::read_to_string(repo().join("docs/json.md")).unwrap();
    let marker = format!("<!-- doc: {name} -->");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/json.md has no section {marker}"));
    let rest = &doc[start + marker.len()..];
    let end = rest.find("<!-- doc:").unwrap_or(rest.len());
    rest[..end].to_string()
}

/// Every key of `document` is in the table of its section.
pub(crate) fn documented(name: &str, document: &Value) {
    let text = section(name);
    let mut keys = BTreeSet::new();
    key_paths(document, "", &mut keys);
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| !text.contains(&format!("| `{key}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/json.md ({name}) does not describe {missing:?} of:\n{document:#}"
    );
}

/// Values that differ between runs of the same thing, masked.
const VOLATILE: &[&str] = &[
    "seconds",
    "at",
    "started",
    "finished",
    "held_lock",
    "created",
    "log",
    "unavailable_seconds",
    // A plan naming a loopback server's port.
    "plan_sha256",
];

fn mask_text(text: &str, masks: &[(String, &str)]) -> String {
    let mut text = text.to_string();
    for (from, to) in masks {
        text = text.replace(from.as_str(), to);
    }
    // Loopback servers' ports.
    while let Some(at) = text.find("http://127.0.0.1:") {
        let after = at + "http://127.0.0.1:".len();
        let digits = text[after..].bytes().take_while(u8::is_ascii_digit).count();
        text.replace_range(at..after + digits, "http://loopback");
    }
    text
}

pub(crate) fn masked(value: &Value, masks: &[(String, &str)]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, child)| {
                    let child = if VOLATILE.contains(&key.as_str()) && !child.is_null() {
                        Value::String("[varies]".into())
                    } else {
                        masked(child, masks)
                    };
                    (key.clone(), child)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| masked(v, masks)).collect()),
        Value::String(text) => Value::String(mask_text(text, masks)),
        other => other.clone(),
    }
}

/// `provision ARGS --json`: documented, then snapshotted as `name`.
fn check(name: &str, doc: &str, args: &[&str], masks: &[(String, &str)]) -> Value {
    let mut argv = args.to_vec();
    argv.push("--json");
    let run = provision(&argv);
    let document = run.json();
    documented(doc, &document);
    insta::assert_json_snapshot!(name, masked(&document, masks));
    document
}

/// The human form of `provision ARGS`, snapshotted as `name`.
fn human(name: &str, args: &[&str], masks: &[(String, &str)]) {
    let run = provision(args);
    let text = format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        run.code, run.stdout, run.stderr
    );
    insta::assert_snapshot!(name, mask_text(&text, masks));
}

fn root_mask(root: &Path, label: &'static str) -> (String, &'static str) {
    (root.to_str().unwrap().to_string(), label)
}

#[test]
fn every_read_only_document_is_described_and_snapshotted() {
    let h200 = fixture("ubuntu-24.04-h200-580-open");
    let broken = fixture("ubuntu-24.04-l4-broken");
    let h200 = h200.to_str().unwrap();
    let broken = broken.to_str().unwrap();
    let masks = vec![(repo().to_str().unwrap().to_string(), "[repo]")];
    let empty = tempfile::tempdir().unwrap();
    let empty_root = empty.path().to_str().unwrap();
    let masks_empty = vec![root_mask(empty.path(), "[empty]")];

    let error = check(
        "error",
        "error",
        &["detect", "--root", "/nonexistent"],
        &masks,
    );
    assert_eq!(error["failed"], true);
    assert_eq!(error["command"], "detect");
    check(
        "compat_answer",
        "answer",
        &[
            "compat",
            "--driver",
            "580.95.05",
            "--cuda",
            "13.0",
            "--gpu",
            "a100",
        ],
        &masks,
    );
    check(
        "compat_wheels",
        "wheels",
        &["compat", "--driver", "535.104.05", "--torch", "2.9.1"],
        &masks,
    );
    check(
        "compat_line",
        "line",
        &["compat", "--cuda", "12.4", "--torch", "latest"],
        &masks,
    );
    check("compat_host", "host", &["compat", "--root", h200], &masks);
    check(
        "compat_needs",
        "needs",
        &["compat", "--root", empty_root, "--torch", "2.6.0"],
        &masks_empty,
    );
    check("doctor", "doctor", &["doctor", "--root", broken], &masks);
    let recommend = check(
        "recommend",
        "recommend",
        &["recommend", "--gpu", "h100"],
        &masks,
    );
    assert_eq!(recommend["branch"], "580", "a branch as plans write it");
    check(
        "history_empty",
        "history",
        &["history", "--root", h200],
        &masks,
    );

    human("human_detect", &["detect", "--root", h200], &masks);
    human("human_doctor", &["doctor", "--root", broken], &masks);
    human("human_compat_host", &["compat", "--root", h200], &masks);
    human(
        "human_compat_needs",
        &["compat", "--root", empty_root, "--torch", "2.6.0"],
        &masks_empty,
    );
    human("human_recommend", &["recommend", "--gpu", "h100"], &masks);
    let healthy = check("verify", "verify", &["verify", "--root", h200], &masks);
    assert_eq!(healthy["passed"], true);
    let mismatch = fixture("ubuntu-22.04-l40s-mismatch");
    let mismatch = mismatch.to_str().unwrap();
    let failing = check(
        "verify_mismatch",
        "verify",
        &["verify", "--root", mismatch],
        &masks,
    );
    assert_eq!(failing["passed"], false);
    human("human_verify", &["verify", "--root", mismatch], &masks);
    human("human_metrics", &["metrics", "--root", mismatch], &masks);
}

#[test]
fn blocked_and_deferred_plan_reports_are_described_and_snapshotted() {
    let masks = vec![(repo().to_str().unwrap().to_string(), "[repo]")];
    // Live, blocked by the user's processes (NVIDIA's daemons stop).
    let dir = tempfile::tempdir().unwrap();
    let text = fs_err::read_to_string(repo().join("plans/rhel-9-cuda-repo-580.toml"))
        .unwrap()
        .replace("branch = \"580\"", "branch = \"590\"");
    let plan = plan_file(dir.path(), "rhel-590.toml", &text);
    let rocky = fixture("rocky-9-a100-holders");
    let mut blocked_masks = masks.clone();
    blocked_masks.push(root_mask(dir.path(), "[plans]"));
    let args = [
        "plan",
        plan.to_str().unwrap(),
        "--root",
        rocky.to_str().unwrap(),
    ];
    let report = check("plan_blocked", "report", &args, &blocked_masks);
    assert_eq!(report["window"]["holders"][2]["action"], "block");
    human("human_plan_blocked", &args, &blocked_masks);
    // Deferred to a reboot: the holder runs on.
    let (_copy, root) = fixture_copy("ubuntu-24.04-h200-580-open");
    fs_err::remove_dir_all(root.join("usr/local/nvidia")).unwrap();
    let plan = repo().join("plans/ubuntu-24.04-cuda-repo-580.toml");
    let mut deferred_masks = masks;
    deferred_masks.insert(0, root_mask(&root, "[root]"));
    let args = [
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ];
    let report = check("plan_deferred", "report", &args, &deferred_masks);
    assert_eq!(
        report["window"]["holders"][0]["action"],
        "runs-until-reboot"
    );
    human("human_plan_deferred", &args, &deferred_masks);
}

#[test]
fn apply_history_and_rollback_documents_are_described_and_snapshotted() {
    let test_repos = repo().join("target/test-repos");
    assert!(
        test_repos.join("debian/Packages").is_file(),
        "run scripts/build-test-repos first"
    );
    let server = serve_test_repos();
    let rootfs = Rootfs::new();
    rootfs.no_apt_sources();
    let dir = tempfile::tempdir().unwrap();
    let plan = toolkit_plan(dir.path(), &server, "");
    let mut masks = vec![
        root_mask(rootfs.path(), "[root]"),
        root_mask(dir.path(), "[plans]"),
    ];
    // scripts/build-test-repos makes a new signing key each time it runs.
    for name in ["nvidia-debian12.fpr", "nvidia-rhel9.fpr"] {
        let fingerprint = fs_err::read_to_string(test_repos.join(name)).unwrap();
        masks.push((fingerprint.trim().to_string(), "[fingerprint]"));
    }
    let plan = plan.to_str().unwrap();
    check(
        "plan_toolkit",
        "report",
        &["plan", plan, "--root", rootfs.arg()],
        &masks,
    );
    let applied = check(
        "apply_toolkit",
        "report",
        &["apply", plan, "--root", rootfs.arg()],
        &masks,
    );
    assert_eq!(applied["generation"], 1, "{applied:#}");
    let history = check(
        "history_applied",
        "history",
        &["history", "--root", rootfs.arg()],
        &masks,
    );
    assert_eq!(history["generations"][0]["state"], "applied");
    let undone = check(
        "rollback_toolkit",
        "report",
        &["rollback", "--root", rootfs.arg()],
        &masks,
    );
    assert_eq!(undone["failed"], false, "{undone:#}");
}

#[test]
fn a_fetch_document_is_described() {
    let dir = tempfile::tempdir().unwrap();
    fs_err::write(dir.path().join("file.run"), b"payload").unwrap();
    let server = Server::serve(dir.path());
    let cache = tempfile::tempdir().unwrap();
    let sha256 = "239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5";
    let run = provision(&[
        "fetch",
        &server.url("file.run"),
        "--sha256",
        sha256,
        "--cache",
        cache.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    documented("fetch", &run.json());
    let masks = vec![root_mask(cache.path(), "[cache]")];
    insta::assert_json_snapshot!("fetch", masked(&run.json(), &masks));
}
