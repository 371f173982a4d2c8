//! `provision recommend` and `[driver] branch = "recommended"`: the branch
//! and flavour for every GPU of the knowledge base's PCI table, for each
//! fixture host, and inside a plan.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{fixture, plan_file, provision, repo};

/// The branch and flavour wanted, or a text the refusal must contain.
type Want = Result<(i64, &'static str), &'static str>;

fn recommend(args: &[&str]) -> (i32, Value) {
    let mut argv = vec!["recommend"];
    argv.extend_from_slice(args);
    argv.push("--json");
    let run = provision(&argv);
    (run.code, run.json())
}

/// The [[gpu]] and [[arch]] rows, read straight from the knowledge base.
fn table() -> (Vec<toml::Value>, Vec<toml::Value>) {
    let text = fs_err::read_to_string(repo().join("src/compat/knowledge.toml")).unwrap();
    let kb: toml::Value = toml::from_str(&text).unwrap();
    let rows = |key: &str| kb[key].as_array().unwrap().clone();
    (rows("gpu"), rows("arch"))
}

/// Every GPU of the PCI table: a supported branch that drives it (within
/// its min and last branch), the flavour its open_module column allows,
/// long-term for data-center parts; none, with the reason, for a GPU whose
/// last branch reached its end of life (Kepler).
#[test]
fn every_gpu_in_the_pci_table_gets_a_branch_that_drives_it() {
    let (gpus, arches) = table();
    let arch_last = |cc: &str| {
        arches.iter().find_map(|a| {
            let has = a["compute_capabilities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c.as_str() == Some(cc));
            has.then(|| a.get("last_driver_branch").and_then(|b| b.as_integer()))
        })?
    };
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for gpu in &gpus {
        let device = gpu["device"].as_str().unwrap();
        if !seen.insert(device.to_string()) {
            continue;
        }
        let name = gpu["name"].as_str().unwrap();
        let last = gpu
            .get("last_driver_branch")
            .and_then(|b| b.as_integer())
            .or_else(|| arch_last(gpu["compute_capability"].as_str().unwrap()));
        let min = gpu
            .get("min_driver_branch")
            .and_then(|b| b.as_integer())
            .unwrap_or(0);
        let (code, report) = recommend(&["--gpu", device]);
        if last.is_some_and(|l| l < 535) {
            if code != 1
                || !report["msg"]
                    .as_str()
                    .unwrap_or("")
                    .contains("whose support ended")
            {
                failures.push(format!("{name} ({device}): want a refusal, got {report}"));
            }
            continue;
        }
        if code != 0 {
            failures.push(format!("{name} ({device}): {report}"));
            continue;
        }
        let branch = report["branch"].as_str().unwrap().parse::<i64>().unwrap();
        if branch < min || last.is_some_and(|l| branch > l) {
            failures.push(format!(
                "{name} ({device}): R{branch} outside R{min}..{last:?}"
            ));
        }
        let want_flavor = match gpu["open_module"].as_str().unwrap() {
            "unsupported" => "proprietary",
            _ => "open",
        };
        if report["flavor"] != want_flavor {
            failures.push(format!(
                "{name} ({device}): flavor {} (want {want_flavor})",
                report["flavor"]
            ));
        }
        let datacenter = gpu["class"].as_str() == Some("datacenter");
        if datacenter && report["type"] != "LTSB" {
            failures.push(format!(
                "{name} ({device}): data-center part on {} R{branch}",
                report["type"]
            ));
        }
        let cites = report["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().ends_with(&format!("[gpu {device}]")));
        if !cites {
            failures.push(format!("{name} ({device}): no reason cites its row"));
        }
    }
    assert!(seen.len() >= 40, "{} GPUs", seen.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One GPU of each family, with and without a toolkit: the branch and
/// flavour by the rules (knowledge base of 2026-11-22: R580 LTSB until
/// 2028, R595 PB until 2027-03, R535 and R570 past their end of life).
#[test]
fn each_gpu_family_with_and_without_a_toolkit() {
    #[rustfmt::skip]
    let cases: &[(&str, Option<&str>, Want)] = &[
        ("0x2330", None, Ok((580, "open"))),           // H100 SXM5: long-term
        ("0x2330", Some("13.2"), Ok((595, "open"))),   // 13.2 needs R595: the production branch
        ("0x20b2", Some("12.8"), Ok((580, "open"))),   // A100
        ("0x2901", None, Ok((580, "open"))),           // B200: open required
        ("0x1eb8", None, Ok((580, "open"))),           // T4 (Turing): open from R560
        ("0x1db5", Some("12.9"), Ok((580, "proprietary"))), // V100: last R580, no open module
        ("0x1db5", Some("13.0"), Err("runs CUDA up to 12.x")), // CUDA 13 dropped Volta
        ("0x15f8", None, Ok((580, "proprietary"))),    // P100
        ("RTX 4090", None, Ok((595, "open"))),         // GeForce: newest production
        ("RTX 5090", None, Ok((595, "open"))),
        ("0x2230", None, Ok((595, "open"))),           // RTX A6000 (workstation)
        ("Tesla K80", None, Err("ends with R470, whose support ended 2024-07-20")),
    ];
    for &(gpu, cuda, want) in cases {
        let mut args = vec!["--gpu", gpu];
        if let Some(cuda) = cuda {
            args.extend(["--cuda", cuda]);
        }
        let (code, report) = recommend(&args);
        match want {
            Ok((branch, flavor)) => {
                assert_eq!(code, 0, "{gpu} {cuda:?}: {report}");
                assert_eq!(
                    (
                        report["branch"].as_str().unwrap().parse::<i64>().unwrap(),
                        report["flavor"].as_str().unwrap()
                    ),
                    (branch, flavor),
                    "{gpu} {cuda:?}"
                );
            }
            Err(text) => {
                assert_eq!(code, 1, "{gpu} {cuda:?}: {report}");
                assert!(
                    report["msg"].as_str().unwrap().contains(text),
                    "{gpu} {cuda:?}: {report}"
                );
            }
        }
    }
    // GPUs that no one flavour serves are refused.
    let (code, report) = recommend(&["--gpu", "0x2901", "--gpu", "0x1db5"]);
    assert_eq!(code, 1);
    assert!(
        report["msg"]
            .as_str()
            .unwrap()
            .contains("no one module flavour serves these GPUs")
    );
    // A data-center part passes over the newer production branch, and says so.
    let (_, report) = recommend(&["--gpu", "0x2330"]);
    let alt = report["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["branch"] == "595")
        .unwrap();
    assert_eq!(alt["eligible"], true);
}

/// Each fixture host: its GPUs, its /usr/local/cuda toolkit, and the branch
/// it runs (kept while it still qualifies).
#[test]
fn each_fixture_host_gets_its_branch() {
    #[rustfmt::skip]
    let hosts: &[(&str, Want, &str)] = &[
        ("ubuntu-24.04-h200-580-open", Ok((580, "open")), "R580 is installed and still qualifies"),
        ("rocky-9-a100-holders", Ok((580, "open")), "data-center GPUs prefer NVIDIA's long-term branches"),
        ("ubuntu-22.04-l40s-mismatch", Ok((580, "open")), "long-term"),
        ("ubuntu-24.04-l4-broken", Ok((580, "open")), "runs CUDA 13.0 natively"),
        ("debian-12-a6000-nouveau", Ok((595, "open")), "newest production or long-term branch"),
        ("ubuntu-22.04-v100-open", Ok((580, "proprietary")), "predates Turing"),
        ("ubuntu-22.04-b200-proprietary", Ok((580, "open")), "run only with the open kernel module"),
        ("ubuntu-24.04-l40s-two-toolkits", Ok((580, "open")), "runs CUDA 12.9 natively"),
    ];
    for &(host, want, reason) in hosts {
        let root = fixture(host);
        let (code, report) = recommend(&["--root", root.to_str().unwrap()]);
        let (branch, flavor) = want.unwrap();
        assert_eq!(code, 0, "{host}: {report}");
        assert_eq!(
            (
                report["branch"].as_str().unwrap().parse::<i64>().unwrap(),
                report["flavor"].as_str().unwrap()
            ),
            (branch, flavor),
            "{host}"
        );
        assert!(
            report["reasons"].to_string().contains(reason),
            "{host}: {report}"
        );
    }
    let empty = tempfile::tempdir().unwrap();
    let (code, report) = recommend(&["--root", empty.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        report["msg"]
            .as_str()
            .unwrap()
            .contains("no NVIDIA GPU on this host"),
        "{report}"
    );
}

/// `branch = "recommended"` in a plan: plan settles the branch from the
/// host, shows it with its reasons, and plans the swap to it.
#[test]
fn a_plan_with_the_recommended_branch_plans_that_branch() {
    let dir = tempfile::tempdir().unwrap();
    let text = fs_err::read_to_string(repo().join("plans/rhel-9-cuda-repo-580.toml"))
        .unwrap()
        .replace("branch = \"580\"", "branch = \"recommended\"");
    assert!(text.contains("\"recommended\""));
    let plan = plan_file(dir.path(), "recommended.toml", &text);
    let root = fixture("rocky-9-a100-holders");
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ]);
    let report = run.json();
    assert_eq!(report["recommendation"]["branch"], "580", "{report:#}");
    assert!(
        report["msg"]
            .as_str()
            .unwrap()
            .contains("570.124.06 -> 580"),
        "{report:#}"
    );
    let human = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    // The holders refuse this plan, so the report goes to stderr.
    assert!(
        format!("{}{}", human.stdout, human.stderr)
            .contains("[driver] branch = \"recommended\" is R580 (LTSB), flavor open:"),
        "{human:?}"
    );
    // No GPU, no recommendation: a clear refusal, nothing planned.
    let empty = tempfile::tempdir().unwrap();
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        empty.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap()
            .starts_with("[driver] branch = \"recommended\": no NVIDIA GPU"),
        "{run:?}"
    );
}

#[test]
fn the_recommended_branch_is_one_the_plans_source_carries() {
    // Debian 12's archive carries R535 only (ended 2026-06-01): with
    // source = "distro" the recommendation is R535, said with its end of
    // life and the way to a supported branch; never R595, which the
    // source cannot install.
    let (dir, root) = crate::support::fixture_copy("debian-12-a6000-nouveau");
    for entry in fs_err::read_dir(root.join("sys/firmware/efi/efivars")).unwrap() {
        let entry = entry.unwrap();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("SecureBoot-")
        {
            fs_err::remove_file(entry.path()).unwrap();
        }
    }
    let distro = plan_file(
        dir.path(),
        "distro.toml",
        "[driver]\nbranch = \"recommended\"\nsource = \"distro\"\n",
    );
    let run = provision(&[
        "plan",
        distro.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["recommendation"]["branch"], "535", "{report:#}");
    let first = report["recommendation"]["reasons"][0].as_str().unwrap();
    assert!(
        first.contains("Debian 12's archive (source = \"distro\")"),
        "{first}"
    );
    assert!(first.contains("support ended 2026-06-01"), "{first}");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("R535 reached its end of life on 2026-06-01"),
        "{warnings}"
    );
    // From NVIDIA's repository the same host gets a supported branch.
    let repo_plan = plan_file(
        dir.path(),
        "repo.toml",
        "[driver]\nbranch = \"recommended\"\nsource = \"cuda-repo\"\n",
    );
    let run = provision(&[
        "plan",
        repo_plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["recommendation"]["branch"], "595", "{run:?}");
    // The shipped R535 plan warns the same way.
    let shipped = repo().join("plans/debian-12-distro-535.toml");
    let run = provision(&[
        "plan",
        shipped.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        run.json()["warnings"].to_string().contains("end of life"),
        "{run:?}"
    );
}
