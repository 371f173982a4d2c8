//! `provision compat`: a table of questions taken from the reference tables,
//! each with the verdict, the mode, the package and the knowledge-base row
//! the answer must cite. Run through the CLI: the JSON contract, the exit
//! codes (1 only for incompatible), and the human sentences.

use crate::support::{fixture, provision};

struct Case {
    driver: &'static str,
    /// "cuda:12.8" or "torch:2.9.1+cu130"
    target: &'static str,
    gpu: Option<&'static str>,
    flavor: Option<&'static str>,
    verdict: &'static str,
    mode: &'static str,
    package: Option<&'static str>,
    /// A row the reasons must cite.
    row: &'static str,
}

const fn case(
    driver: &'static str,
    target: &'static str,
    gpu: Option<&'static str>,
    verdict: &'static str,
    mode: &'static str,
    row: &'static str,
) -> Case {
    Case {
        driver,
        target,
        gpu,
        flavor: None,
        verdict,
        mode,
        package: None,
        row,
    }
}

const fn fc(
    driver: &'static str,
    target: &'static str,
    gpu: Option<&'static str>,
    package: &'static str,
) -> Case {
    Case {
        driver,
        target,
        gpu,
        flavor: None,
        verdict: "needs-compat-package",
        mode: "forward-compat",
        package: Some(package),
        row: "",
    }
}

const fn flavored(
    driver: &'static str,
    target: &'static str,
    gpu: &'static str,
    flavor: &'static str,
    verdict: &'static str,
    mode: &'static str,
    row: &'static str,
) -> Case {
    Case {
        driver,
        target,
        gpu: Some(gpu),
        flavor: Some(flavor),
        verdict,
        mode,
        package: None,
        row,
    }
}

/// Forward compatibility that only some sources allow: ambiguous, and the
/// package in question named.
const fn disputed(
    driver: &'static str,
    target: &'static str,
    gpu: Option<&'static str>,
    package: &'static str,
    row: &'static str,
) -> Case {
    Case {
        driver,
        target,
        gpu,
        flavor: None,
        verdict: "ambiguous",
        mode: "forward-compat",
        package: Some(package),
        row,
    }
}

const H100: Option<&str> = Some("H100 SXM5");
const A100: Option<&str> = Some("10de:20b0");

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Native: Table 3 floors, per release (GA and each Update).
    case("580.95.05", "cuda:13.0", None, "compatible", "native", "toolkit 13.0.0"),
    case("580.95.05", "cuda:13.0.2", None, "compatible", "native", "toolkit 13.0.2"),
    case("570.124.06", "cuda:12.8.1", None, "compatible", "native", "toolkit 12.8.1"),
    case("570.86.15", "cuda:12.8", None, "compatible", "native", "toolkit 12.8.0"),
    case("535.104.05", "cuda:12.2.2", None, "compatible", "native", "toolkit 12.2.2"),
    case("535.54.03", "cuda:12.2", None, "compatible", "native", "toolkit 12.2.0"),
    case("560.35.05", "cuda:12.6.3", None, "compatible", "native", "toolkit 12.6.3"),
    case("550.54.14", "cuda:12.4", None, "compatible", "native", "toolkit 12.4.0"),
    case("525.60.13", "cuda:12.0", None, "compatible", "native", "toolkit 12.0.0"),
    case("520.61.05", "cuda:11.8", None, "compatible", "native", "toolkit 11.8.0"),
    case("470.82.01", "cuda:11.4.4", None, "compatible", "native", "toolkit 11.4.4"),
    case("450.51.05", "cuda:11.0", None, "compatible", "native", "toolkit 11.0.2"),
    case("610.43.02", "cuda:13.3", None, "compatible", "native", "toolkit 13.3.0"),
    case("595.71.05", "cuda:13.2.2", None, "compatible", "native", "toolkit 13.2.2"),
    case("440.33", "cuda:10.2", None, "compatible", "native", "toolkit 10.2.89"),
    case("418.39", "cuda:10.1", None, "compatible", "native", "toolkit 10.1.105"),
    case("410.48", "cuda:10.0", None, "compatible", "native", "toolkit 10.0.130"),
    case("620.10.01", "cuda:13.2", None, "compatible", "native", "toolkit 13.2.0"),
    // Minor-version compatibility: below the release's floor, inside the major's range.
    case("580.82.07", "cuda:13.0.2", None, "compatible", "minor-version", "minor_compat 13.x"),
    case("570.86.15", "cuda:12.8.1", None, "compatible", "minor-version", "minor_compat 12.x"),
    case("535.86.10", "cuda:12.2.2", None, "compatible", "minor-version", "minor_compat 12.x"),
    case("560.35.03", "cuda:12.6.3", None, "compatible", "minor-version", "minor_compat 12.x"),
    case("525.60.13", "cuda:12.9", None, "compatible", "minor-version", "minor_compat 12.x"),
    case("535.104.05", "cuda:12.8", H100, "compatible", "minor-version", "minor_compat 12.x"),
    case("580.95.05", "cuda:13.2", None, "compatible", "minor-version", "minor_compat 13.x"),
    case("470.42.01", "cuda:11.8", None, "compatible", "minor-version", "minor_compat 11.x"),
    case("450.80.02", "cuda:11.8", None, "compatible", "minor-version", "minor_compat 11.x"),
    case("580.65.06", "cuda:13.4", None, "compatible", "minor-version", "minor_compat 13.x"),
    // Where the printed and the precise floors disagree (notes §10.1, §10.2).
    case("450.51.06", "cuda:11.8", None, "ambiguous", "minor-version", "minor_compat 11.x"),
    case("580.10.01", "cuda:13.0", None, "ambiguous", "minor-version", "minor_compat 13.x"),
    // Below the major's range, no minor-version compatibility before CUDA 11.
    case("525.53", "cuda:12.1", None, "incompatible", "none", "minor_compat 12.x"),
    // ... though forward compatibility (historical rows) serves data-center GPUs.
    fc("418.39", "cuda:10.2", None, "cuda-compat-10-2"),
    case("396.37", "cuda:10.0", None, "incompatible", "none", "minor_compat 10.x"),
    fc("440.33", "cuda:11.0", None, "cuda-compat-11-0"),
    case("410.48", "cuda:11.0", None, "incompatible", "none", "minor_compat 11.x"),
    // Forward compatibility on data-center GPUs, branches the matrix lists.
    // Historical forward compatibility (S-DC-2021, March 2021): R418 runs
    // 10.2, 11.0 and 11.1 through cuda-compat, R440 11.0 and 11.1, on
    // data-center GPUs; nothing past 11.1 on R418, nothing for GeForce.
    fc("418.87.01", "cuda:10.2", Some("0x1db5"), "cuda-compat-10-2"),
    fc("418.87.01", "cuda:11.0", Some("0x1db5"), "cuda-compat-11-0"),
    fc("418.87.01", "cuda:11.1", Some("0x1eb8"), "cuda-compat-11-1"),
    fc("440.95.01", "cuda:11.0", Some("0x1eb8"), "cuda-compat-11-0"),
    fc("440.95.01", "cuda:11.1", Some("0x1eb8"), "cuda-compat-11-1"),
    case("410.48", "cuda:10.2", Some("0x1db5"), "incompatible", "none", "forward_compat cuda-compat-10-2"),
    case("418.87.01", "cuda:11.2", Some("0x1eb8"), "incompatible", "none", "forward_compat (none)"),
    case("418.87.01", "cuda:11.0", Some("0x1e04"), "incompatible", "none", "gpu 0x1e04"),
    fc("535.104.05", "cuda:13.0", H100, "cuda-compat-13-0"),
    fc("535.104.05", "cuda:13.2", A100, "cuda-compat-13-2"),
    fc("570.124.06", "cuda:13.1", Some("L40S"), "cuda-compat-13-1"),
    fc("570.124.06", "cuda:13.0", H100, "cuda-compat-13-0"),
    fc("535.104.05", "cuda:13.4", H100, "cuda-compat-13-4"),
    fc("535.104.05", "cuda:13.0", None, "cuda-compat-13-0"),
    fc("570.124.06", "cuda:13.3", Some("10de:2335"), "cuda-compat-13-3"),
    // Branches only the ELF note or the container images list (notes §10.6).
    disputed("575.57.08", "cuda:13.0", H100, "cuda-compat-13-0", "forward_compat cuda-compat-13-0"),
    disputed("550.54.15", "cuda:13.0", H100, "cuda-compat-13-0", "forward_compat cuda-compat-13-0"),
    disputed("550.54.15", "cuda:13.1", H100, "cuda-compat-13-1", "forward_compat cuda-compat-13-1"),
    disputed("470.82.01", "cuda:12.8", A100, "cuda-compat-12-8", "forward_compat cuda-compat-12-8"),
    // Branches nobody lists: no forward compatibility.
    case("560.35.05", "cuda:13.0", H100, "incompatible", "none", "forward_compat cuda-compat-13-0"),
    case("565.57.01", "cuda:13.1", H100, "incompatible", "none", "forward_compat cuda-compat-13-1"),
    case("470.82.01", "cuda:12.9", A100, "incompatible", "none", "forward_compat cuda-compat-12-9"),
    // Forward compatibility needs a data-center GPU.
    case("535.104.05", "cuda:13.0", Some("RTX 4090"), "incompatible", "none", "gpu 0x2684"),
    case("570.124.06", "cuda:13.2", Some("RTX 5090"), "incompatible", "none", "gpu 0x2b85"),
    disputed("535.104.05", "cuda:13.0", Some("RTX A6000"), "cuda-compat-13-0", "gpu 0x2230"),
    // The driver must support the GPU: its branch range and module flavour.
    case("535.104.05", "cuda:12.2", Some("B200"), "incompatible", "none", "gpu 0x2901"),
    case("535.104.05", "cuda:13.0", Some("RTX PRO 6000 Blackwell Server Edition"), "incompatible", "none", "gpu 0x2bb5"),
    case("525.60.13", "cuda:12.0", Some("H200"), "incompatible", "none", "gpu 0x2335"),
    case("550.90.07", "cuda:12.4", Some("H200"), "compatible", "native", "toolkit 12.4.0"),
    case("535.104.05", "cuda:11.8", Some("K80"), "incompatible", "none", "gpu 0x102d"),
    case("470.82.01", "cuda:11.4", Some("K80"), "compatible", "native", "toolkit 11.4.0"),
    case("590.44.01", "cuda:12.8", Some("V100 SXM2 32GB"), "incompatible", "none", "gpu 0x1db5"),
    flavored("580.95.05", "cuda:12.8", "V100 SXM2 32GB", "proprietary", "compatible", "native", "toolkit 12.8.0"),
    flavored("580.95.05", "cuda:12.8", "V100 SXM2 32GB", "open", "incompatible", "none", "gpu 0x1db5"),
    flavored("570.86.15", "cuda:12.8", "B200", "proprietary", "incompatible", "none", "gpu 0x2901"),
    flavored("570.86.15", "cuda:12.8", "B200", "open", "compatible", "native", "toolkit 12.8.0"),
    flavored("580.95.05", "cuda:13.0", "T4", "open", "compatible", "native", "toolkit 13.0.0"),
    // The toolkit must support the architecture.
    case("580.95.05", "cuda:13.0", Some("V100 SXM2 32GB"), "incompatible", "none", "arch Volta"),
    case("580.95.05", "cuda:13.0", Some("P100 PCIe 16GB"), "incompatible", "none", "arch Pascal"),
    case("470.82.01", "cuda:12.0", Some("K80"), "incompatible", "none", "arch Kepler"),
    case("580.95.05", "cuda:11.0", H100, "incompatible", "none", "arch Hopper"),
    case("570.86.15", "cuda:12.6", Some("B200"), "incompatible", "none", "arch Blackwell"),
    // A component's full version: every release of the minor is a reading.
    case("570.124.06", "cuda:12.8.93", None, "compatible", "native", "toolkit 12.8.1"),
    // The newest candidate's reading leads (the most demanding one).
    case("570.86.15", "cuda:12.8.93", None, "ambiguous", "minor-version", "toolkit 12.8.0"),
    // PyTorch wheels (bundled runtime: the major's floors apply).
    case("580.95.05", "torch:2.9.1+cu130", Some("H200"), "compatible", "native", "pytorch_wheel cu130"),
    case("550.127.05", "torch:2.8.0+cu128", Some("RTX 4090"), "compatible", "minor-version", "pytorch_wheel cu128"),
    fc("570.124.06", "torch:2.9.1+cu130", H100, "cuda-compat-13-0"),
    case("570.124.06", "torch:2.9.1+cu130", Some("RTX 4090"), "incompatible", "none", "pytorch_wheel cu130"),
    case("525.60.13", "torch:2.6.0+cu124", None, "compatible", "minor-version", "pytorch_wheel cu124"),
    case("580.95.05", "torch:2.13.0+cu132", None, "compatible", "minor-version", "pytorch_wheel cu132"),
    case("595.45.04", "torch:2.13.0+cu132", None, "compatible", "native", "toolkit 13.2.0"),
    case("580.95.05", "torch:2.8.0+cu128", Some("V100 SXM2 32GB"), "incompatible", "none", "pytorch_arch cu128/cu129 from 2.8"),
    case("570.124.06", "torch:2.7.0+cu128", Some("V100 SXM2 32GB"), "compatible", "native", "pytorch_wheel cu128"),
    case("580.95.05", "torch:2.12.0+cu126", Some("B200"), "incompatible", "none", "pytorch_arch cu126 from 2.12"),
    case("575.57.08", "torch:2.10.0+cu129", None, "ambiguous", "native", "pytorch_wheel cu129"),
];

fn args(case: &Case) -> Vec<String> {
    let (kind, value) = case.target.split_once(':').unwrap();
    let mut args = vec![
        "compat".to_string(),
        "--driver".into(),
        case.driver.into(),
        format!("--{kind}"),
        value.into(),
    ];
    if let Some(gpu) = case.gpu {
        args.extend(["--gpu".into(), gpu.into()]);
    }
    if let Some(flavor) = case.flavor {
        args.extend(["--flavor".into(), flavor.into()]);
    }
    args
}

#[test]
fn the_table_of_questions() {
    assert!(CASES.len() >= 60, "{} cases", CASES.len());
    let mut failures = Vec::new();
    for case in CASES {
        let mut argv = args(case);
        argv.push("--json".into());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let run = provision(&argv);
        let describe = format!(
            "{} on {} gpu {:?} flavor {:?}",
            case.target, case.driver, case.gpu, case.flavor
        );
        if run.stdout.trim().is_empty() {
            failures.push(format!("{describe}: no answer: {run:?}"));
            continue;
        }
        let answer = run.json();
        let expected_code = if case.verdict == "incompatible" { 1 } else { 0 };
        let mut problems = Vec::new();
        if run.code != expected_code {
            problems.push(format!("exit {} (want {expected_code})", run.code));
        }
        if answer["verdict"] != case.verdict {
            problems.push(format!(
                "verdict {} (want {})",
                answer["verdict"], case.verdict
            ));
        }
        if answer["mode"] != case.mode {
            problems.push(format!("mode {} (want {})", answer["mode"], case.mode));
        }
        let package = answer["package"].as_str();
        if package != case.package {
            problems.push(format!("package {package:?} (want {:?})", case.package));
        }
        let rows: Vec<&str> = answer["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["row"].as_str().unwrap())
            .collect();
        let row = if case.row.is_empty() {
            format!("forward_compat {}", case.package.unwrap())
        } else {
            case.row.to_string()
        };
        if !rows.iter().any(|r| *r == row) {
            problems.push(format!("no reason cites {row} (rows: {rows:?})"));
        }
        if answer["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["sources"].as_array().unwrap().is_empty())
        {
            problems.push("no reason cites a source".into());
        }
        if case.mode == "minor-version" && answer["limitations"].as_array().unwrap().is_empty() {
            problems.push("minor-version answers list their limitations".into());
        }
        if case.verdict == "ambiguous" && answer["readings"].as_array().unwrap().len() < 2 {
            problems.push("an ambiguous answer names both readings".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{describe}: {}", problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn human_answers_are_sentences_with_their_reasons() {
    let run = provision(&[
        "compat",
        "--driver",
        "535.104.05",
        "--cuda",
        "13.0",
        "--gpu",
        "H100 SXM5",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("needs-compat-package: CUDA 13.0 GA runs on driver 535.104.05"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("only with cuda-compat-13-0 (forward compatibility)"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("[forward_compat cuda-compat-13-0: S-FC"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("Lowest driver that runs it natively: 580.65.06"),
        "{run:?}"
    );
    let run = provision(&[
        "compat",
        "--driver",
        "535.104.05",
        "--cuda",
        "13.0",
        "--gpu",
        "RTX 4090",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.starts_with(
            "incompatible: CUDA 13.0 GA does not run on driver 535.104.05 with GeForce RTX 4090"
        ),
        "{run:?}"
    );
    assert!(run.stdout.contains("error 804"), "{run:?}");
}

#[test]
fn bad_questions_are_clear_errors() {
    for (argv, expected) in [
        (
            vec!["compat", "--driver", "565.57.01", "--cuda", "12.7"],
            "CUDA 12.7 is not a release the knowledge base knows",
        ),
        (
            vec!["compat", "--driver", "abc", "--cuda", "12.8"],
            "expected a driver release",
        ),
        (
            vec![
                "compat",
                "--driver",
                "580.95.05",
                "--cuda",
                "12.8",
                "--gpu",
                "Voodoo 3",
            ],
            "no GPU of that name",
        ),
        (
            vec!["compat", "--driver", "580.95.05", "--torch", "2.1.0+cu130"],
            "torch 2.1 was not published with cu130",
        ),
        (
            vec!["compat", "--driver", "580.95.05", "--cuda", "12.8.7"],
            "no Update 7 of 12.8",
        ),
        (
            vec!["compat", "--driver", "580.95.05"],
            "--driver needs --cuda or --torch",
        ),
        (
            vec!["compat", "--driver", "999", "--cuda", "12.4"],
            "branch 999 is unknown: far beyond R620, the newest the knowledge base knows",
        ),
        (
            vec!["compat", "--driver", "999", "--cuda", "12.4"],
            "known branches: 346, 352, 367, 375, 384, 390, 396, 410, 418, 440",
        ),
        (
            vec!["compat", "--driver", "540.10.01", "--torch", "2.9.1"],
            "branch 540 is unknown: the knowledge base knows no NVIDIA release of it",
        ),
    ] {
        let mut with_json = argv.clone();
        with_json.push("--json");
        let run = provision(&with_json);
        assert_eq!(run.code, 1, "{argv:?}: {run:?}");
        let report = run.json();
        assert_eq!(report["failed"], true);
        assert!(
            report["msg"].as_str().unwrap().contains(expected),
            "{argv:?}: {}",
            report["msg"]
        );
    }
}

/// A release past every one the knowledge base cites for its branch is
/// answered for the branch, with a warning that the base is older; the
/// newest real release seen (580.159.04 on the H200) draws none.
#[test]
fn a_driver_newer_than_the_knowledge_base_is_answered_with_a_warning() {
    let run = provision(&[
        "compat",
        "--driver",
        "580.999.99",
        "--cuda",
        "12.4",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["verdict"], "compatible");
    let warning = report["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["text"].as_str().unwrap().starts_with("warning:"))
        .expect("a warning");
    assert!(
        warning["text"]
            .as_str()
            .unwrap()
            .contains("newer than every 580 release the knowledge base cites (newest 580.159.04)"),
        "{warning}"
    );
    let seen = provision(&[
        "compat",
        "--driver",
        "580.159.04",
        "--cuda",
        "13.0",
        "--json",
    ])
    .json();
    assert!(!seen.to_string().contains("warning:"), "{seen}");
}

#[test]
fn the_detected_h200_host_has_a_stale_compat_package() {
    // A healthy host: the old compat directory is not on the loader path,
    // so nothing loads it. A note to remove it, not a failure (doctor
    // calls it a warning).
    let host = fixture("ubuntu-24.04-h200-580-open");
    let run = provision(&["compat", "--root", host.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["driver"], "580.159.04");
    assert_eq!(report["gpus"][0], "NVIDIA H200");
    assert_eq!(report["verdict"], "compatible");
    let checks = report["checks"].as_array().unwrap();
    let toolkit = checks
        .iter()
        .find(|c| c["subject"] == "toolkit /usr/local/cuda-13.0")
        .unwrap();
    assert_eq!(toolkit["verdict"], "compatible");
    assert_eq!(toolkit["mode"], "native");
    let compat = checks
        .iter()
        .find(|c| c["subject"] == "compat /usr/local/cuda-13.0/compat")
        .unwrap();
    assert_eq!(compat["verdict"], "compatible", "{compat}");
    let summary = compat["summary"].as_str().unwrap();
    assert!(
        summary.contains("580.95.05 is not newer than the driver 580.159.04")
            && summary.contains("not on the loader path")
            && summary.contains("remove cuda-compat-13-0"),
        "{compat}"
    );

    // The same directory on the loader path is what breaks applications
    // (error 803): that is incompatible, exit 1.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("root");
    assert!(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&host)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    fs_err::write(
        copy.join("etc/ld.so.conf.d/00-cuda-compat.conf"),
        "/usr/local/cuda-13.0/compat\n",
    )
    .unwrap();
    let run = provision(&["compat", "--root", copy.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    let compat = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["subject"] == "compat /usr/local/cuda-13.0/compat")
        .unwrap();
    assert_eq!(compat["verdict"], "incompatible", "{compat}");
    assert!(
        compat["summary"].as_str().unwrap().contains("error 803"),
        "{compat}"
    );

    // "Will CUDA 13.2 run here?": the host's driver, GPU and flavour.
    let run = provision(&[
        "compat",
        "--root",
        host.to_str().unwrap(),
        "--cuda",
        "13.2",
        "--json",
    ]);
    let answer = run.json();
    assert_eq!(answer["driver"], "580.159.04");
    assert_eq!(answer["mode"], "minor-version");

    // The mismatch host's compat package is doing its job.
    let host = fixture("ubuntu-22.04-l40s-mismatch");
    let report = provision(&["compat", "--root", host.to_str().unwrap(), "--json"]).json();
    let compat = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["subject"] == "compat /usr/local/cuda-12.9/compat")
        .unwrap();
    assert_eq!(compat["verdict"], "compatible", "{compat}");
    assert_eq!(compat["mode"], "forward-compat");
}

#[test]
fn a_torch_release_without_a_tag_lists_every_wheel_with_its_verdict_and_pip_line() {
    let run = provision(&[
        "compat",
        "--driver",
        "535.104.05",
        "--torch",
        "2.9.1",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["torch"], "2.9.1");
    assert_eq!(report["best"], "cu128", "{report:#}");
    let tags: Vec<&str> = report["wheels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["cu126", "cu128", "cu130", "cpu"]);
    let cu130 = &report["wheels"][2];
    assert_eq!(cu130["verdict"], "needs-compat-package", "{cu130:#}");
    assert_eq!(cu130["cuda"], "13.0");
    let human = provision(&["compat", "--driver", "535.104.05", "--torch", "2.9.1"]);
    assert!(
        human.stdout.contains(
            "pip install torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1 --index-url https://download.pytorch.org/whl/cu128"
        ),
        "{}",
        human.stdout
    );
    // Nothing runs: exit 1, best null, the CPU wheel named.
    let none = provision(&[
        "compat",
        "--driver",
        "470.82.01",
        "--torch",
        "2.9",
        "--json",
    ]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.json()["best"].is_null());
}

/// `compat --cuda X --torch latest|RELEASE`: the newest torch release with
/// a wheel of that CUDA line (pytorch_wheel rows, S-TESTINFRA/S-TORCH-REL),
/// its exact versions from the pytorch_release rows (S-TORCH-VERSIONS), or
/// a clear "none" with the lines either side.
#[test]
fn the_reverse_question_names_the_newest_torch_for_a_cuda_line() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        ("11.6", "latest", Some("cu116"), Some("1.13.1")),
        ("11.7", "latest", Some("cu117"), Some("2.0.1")),
        ("11.8", "latest", Some("cu118"), Some("2.7.1")),
        ("12.1", "latest", Some("cu121"), Some("2.5.1")),
        ("12.4", "latest", Some("cu124"), Some("2.6.0")),
        ("12.4.1", "2.5", Some("cu124"), Some("2.5.1")),
        ("12.6", "latest", Some("cu126"), Some("2.13.0")),
        ("12.8", "latest", Some("cu128"), Some("2.11.0")),
        ("12.8", "0.23.0", Some("cu128"), Some("2.8.0")),
        ("12.9", "latest", Some("cu129"), Some("2.8.0")),
        ("13.0", "latest", Some("cu130"), Some("2.13.0")),
        ("13.2", "latest", Some("cu132"), Some("2.13.0")),
        ("12.4", "2.9", Some("cu124"), None),
        ("12.5", "latest", None, None),
        ("13.1", "latest", None, None),
        ("10.2", "latest", None, None),
    ];
    let mut failures = Vec::new();
    for &(cuda, torch, tag, version) in cases {
        let run = provision(&["compat", "--cuda", cuda, "--torch", torch, "--json"]);
        let report = run.json();
        let want_code = if version.is_some() { 0 } else { 1 };
        let got = (report["tag"].as_str(), report["torch"].as_str(), run.code);
        if got != (tag, version, want_code) {
            failures.push(format!(
                "--cuda {cuda} --torch {torch}: {got:?}, want {:?}",
                (tag, version, want_code)
            ));
            continue;
        }
        if let (Some(tag), Some(version)) = (tag, version) {
            let install = report["install"].as_str().unwrap();
            if !install.starts_with(&format!("pip install torch=={version} "))
                || !install.ends_with(&format!("/whl/{tag}"))
            {
                failures.push(format!("--cuda {cuda}: install line {install}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // No line: the lines either side, and what is known about nightlies.
    let none = provision(&["compat", "--cuda", "13.1", "--torch", "latest"]);
    assert_eq!(none.code, 1);
    assert!(
        none.stdout
            .contains("published cu131 wheels; only PyTorch's nightly index"),
        "{none:?}"
    );
    assert!(
        none.stdout
            .contains("cu130 (torch 2.9, 2.10, 2.11, 2.12, 2.13) runs where CUDA 13.1 runs"),
        "{none:?}"
    );
    // A newer line of the major is named, with minor-version compatibility.
    let older = provision(&["compat", "--cuda", "12.4", "--torch", "latest"]);
    assert!(older.stdout.contains("torch 2.13.0+cu126"), "{older:?}");
    // A wheel tag is not a release.
    let tagged = provision(&[
        "compat",
        "--cuda",
        "12.4",
        "--torch",
        "2.9.1+cu124",
        "--json",
    ]);
    assert_eq!(tagged.code, 1);
    assert!(
        tagged.json()["msg"]
            .as_str()
            .unwrap()
            .contains("give --torch latest or a release")
    );
}

/// The L4 host of ubuntu-24.04-l4-broken with an RTX 4090 in its place.
fn geforce_host() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, root) = crate::support::fixture_copy("ubuntu-24.04-l4-broken");
    fs_err::write(
        root.join("sys/bus/pci/devices/0000:3b:00.0/device"),
        "0x2684\n",
    )
    .unwrap();
    (dir, root)
}

#[test]
fn questions_on_a_host_are_judged_on_its_gpus() {
    // R570 on a GeForce: CUDA 13.0 needs R580; cuda-compat cannot help a
    // GeForce (error 804). compat --root, --cuda and --torch agree, as
    // doctor does.
    let (_dir, root) = geforce_host();
    let root = root.to_str().unwrap();
    for question in [vec!["--cuda", "13.0"], vec!["--torch", "2.9.1+cu130"]] {
        let mut args = vec!["compat", "--root", root, "--json"];
        args.extend(&question);
        let run = provision(&args);
        assert_eq!(run.code, 1, "{question:?}: {run:?}");
        let answer = run.json();
        assert_eq!(answer["verdict"], "incompatible", "{answer:#}");
        assert_eq!(answer["package"], serde_json::Value::Null);
        assert!(answer["gpu"].as_str().unwrap().contains("GeForce RTX 4090"));
        assert!(answer.to_string().contains("error 804"), "{answer:#}");
    }
    // Every wheel of the release on that host: the best runs natively,
    // none is offered with a compat package.
    let run = provision(&["compat", "--root", root, "--torch", "2.9.1", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["best"], "cu128", "{report:#}");
    let cu130 = report["wheels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["tag"] == "cu130")
        .unwrap();
    assert_eq!(cu130["verdict"], "incompatible", "{cu130:#}");
    // --gpu overrides the host's GPU: an L4 is a data-center GPU.
    let run = provision(&[
        "compat", "--root", root, "--cuda", "13.0", "--gpu", "L4", "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["verdict"], "needs-compat-package");
}

fn answer_for_gpu(gpu: &str) -> crate::support::Run {
    provision(&[
        "compat",
        "--driver",
        "580.95.05",
        "--cuda",
        "13.0",
        "--gpu",
        gpu,
        "--json",
    ])
}

#[test]
fn gpus_are_found_by_the_names_and_ids_people_copy() {
    // nvidia-smi's name, lspci's ids, nvidia-smi's pci.device_id, any case.
    for (typed, device) in [
        ("NVIDIA GeForce RTX 4090", "0x2684"),
        ("nvidia geforce rtx 4090", "0x2684"),
        ("1e04", "0x1e04"),
        ("[10de:1e04]", "0x1e04"),
        ("0x233510DE", "0x2335"),
        ("NVIDIA H100 80GB HBM3", "0x2330"),
        ("Tesla V100-SXM2-32GB", "0x1db5"),
    ] {
        let run = answer_for_gpu(typed);
        assert_ne!(run.json()["failed"], true, "{typed}: {run:?}");
        let gpu = run.json()["gpu"].as_str().unwrap().to_string();
        assert!(gpu.contains(device), "{typed}: {gpu}");
    }
    // Case does not change the answer.
    assert_eq!(
        answer_for_gpu("h100").json()["gpu"],
        answer_for_gpu("H100").json()["gpu"]
    );
    // A name several GPUs share is answered when they are alike, naming
    // them all; V100s differ from the 580 driver's view in nothing either.
    let a100 = answer_for_gpu("A100");
    assert_eq!(a100.code, 0, "{a100:?}");
    let gpu = a100.json()["gpu"].as_str().unwrap().to_string();
    for id in ["0x20b0", "0x20b2", "0x20b3", "0x20b5", "0x20f1"] {
        assert!(gpu.contains(id), "{gpu}");
    }
    let v100 = answer_for_gpu("V100");
    assert_eq!(v100.code, 1, "Volta has no CUDA 13: {v100:?}");
    assert_eq!(v100.json()["verdict"], "incompatible");
    // GPUs that would get different answers: listed, each with its id.
    let tesla = answer_for_gpu("Tesla");
    assert_eq!(tesla.code, 1, "{tesla:?}");
    let msg = tesla.json()["msg"].as_str().unwrap().to_string();
    assert!(msg.contains("get different answers"), "{msg}");
    assert!(msg.contains("--gpu 0x102d (Tesla K80)"), "{msg}");
    assert!(msg.contains("--gpu 0x1eb8 (Tesla T4)"), "{msg}");
    // recommend takes the same names.
    let run = provision(&[
        "recommend",
        "--gpu",
        "NVIDIA GeForce RTX 4090",
        "--gpu",
        "a100",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn without_a_driver_the_question_is_what_each_wheel_needs() {
    // A CPU machine where an image is built: no driver, no GPU.
    let empty = tempfile::tempdir().unwrap();
    let root = empty.path().to_str().unwrap();
    let run = provision(&["compat", "--root", root, "--torch", "2.6.0", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["question"], "torch 2.6.0");
    let needs = report["needs"].as_array().unwrap();
    let tags: Vec<&str> = needs.iter().map(|n| n["tag"].as_str().unwrap()).collect();
    assert_eq!(tags, ["cu118", "cu124", "cu126"]);
    let cu126 = &needs[2];
    assert_eq!(cu126["native_driver"], "560.28.03");
    assert_eq!(cu126["minor_version_driver"], "525.60.13");
    assert!(cu126["install"].as_str().unwrap().contains("whl/cu126"));
    // The human form says the same, and a CUDA release is answered alike.
    let text = provision(&["compat", "--root", root, "--torch", "2.6.0"]).stdout;
    assert!(
        text.contains("cu126  (CUDA 12.6.0): driver 560.28.03 or newer natively"),
        "{text}"
    );
    let run = provision(&["compat", "--root", root, "--cuda", "12.4", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["needs"][0]["native_driver"], "550.54.14");
}
