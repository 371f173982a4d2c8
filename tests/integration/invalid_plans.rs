//! A bad plan is refused with file:line:col and changes nothing.

use crate::support::{Rootfs, plan_file, provision};

const CASES: &[(&str, &[u8], &str)] = &[
    (
        "unknown-key.toml",
        b"[driver]\nbranch = \"535\"\nflavour = \"open\"\n",
        ":3:1: unknown field `flavour`, expected one of",
    ),
    (
        "wrong-type.toml",
        b"[driver]\nbranch = 535\n",
        ":2:10: invalid type: integer `535`, expected a string",
    ),
    (
        "branch-abc.toml",
        b"[driver]\nbranch = \"abc\"\n",
        ":2:10: invalid driver branch \"abc\"",
    ),
    (
        "version-path.toml",
        b"[driver]\nversion = \"../../x\"\n",
        ":2:11: invalid driver version \"../../x\"",
    ),
    ("empty.toml", b"", ":1:1: the plan is empty"),
    (
        "runfile-without-hash.toml",
        b"[driver]\nversion = \"580.95.05\"\nsource = \"runfile\"\nrunfile = \"https://example.invalid/NVIDIA-Linux-x86_64-580.95.05.run\"\n",
        ":1:1: source = \"runfile\" needs [driver] runfile (its URL) and sha256",
    ),
    (
        "runfile-bad-hash.toml",
        b"[driver]\nversion = \"580.95.05\"\nsource = \"runfile\"\nrunfile = \"https://example.invalid/x.run\"\nsha256 = \"abc\"\n",
        ":5:10: invalid sha256 \"abc\": expected 64 hexadecimal digits",
    ),
    (
        "runfile-branch.toml",
        b"[driver]\nbranch = \"580\"\nsource = \"runfile\"\nrunfile = \"https://example.invalid/x.run\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
        ":1:1: source = \"runfile\" installs one release: set [driver] version",
    ),
    (
        "toolkit-runfile-with-packages.toml",
        b"[driver]\nbranch = \"580\"\n[toolkit]\nversion = \"12.8\"\nrunfile = \"https://example.invalid/cuda.run\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
        ":3:1: [toolkit] runfile goes with [driver] source = \"runfile\"",
    ),
    (
        "driver-twice.toml",
        b"[driver]\nbranch = \"580\"\n[driver]\nflavor = \"open\"\n",
        ":3:2: [driver] is given twice: merge the two tables into one",
    ),
    (
        "key-twice.toml",
        b"[driver]\nbranch = \"580\"\nbranch = \"570\"\n",
        ":3:1: `branch` is given twice in its table: keep one",
    ),
    (
        "version-two-parts.toml",
        b"[driver]\nversion = \"580.95\"\n",
        ":2:11: invalid driver version \"580.95\": releases of R418 and later have three parts",
    ),
    (
        "dcgm-diag-level.toml",
        b"[driver]\nbranch = \"580\"\n[dcgm]\nenable = true\ndiag = 7\n",
        ":5:8: diag = 7: dcgmi diag runs levels 1 to 4 (0: none)",
    ),
    (
        "metrics-relative.toml",
        b"[driver]\nbranch = \"580\"\n[metrics]\ntextfile = \"textfiles\"\n",
        ":4:12: invalid path \"textfiles\": expected an absolute path on the host",
    ),
    (
        "garbage.toml",
        b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe\x00\x00",
        ":1:11: not a TOML plan: invalid UTF-8",
    ),
];

#[test]
fn invalid_plans_are_located_and_leave_the_rootfs_untouched() {
    let rootfs = Rootfs::new();
    let dir = tempfile::tempdir().unwrap();
    let before = rootfs.tree(&["etc", "boot", "var/lib/dpkg", "var/lib/provision"]);
    for (name, text, expected) in CASES {
        let path = plan_file(dir.path(), name, std::str::from_utf8(text).unwrap_or(""));
        fs_err::write(&path, text).unwrap();
        for verb in ["plan", "apply"] {
            let run = provision(&[
                verb,
                path.to_str().unwrap(),
                "--root",
                rootfs.arg(),
                "--json",
            ]);
            assert_eq!(run.code, 1, "{verb} {name}: {run:?}");
            let report = run.json();
            assert_eq!(report["failed"], true);
            assert_eq!(report["changed"], false);
            let msg = report["msg"].as_str().unwrap();
            assert!(
                msg.starts_with(path.to_str().unwrap()),
                "{verb} {name}: {msg}"
            );
            assert!(
                msg.contains(expected),
                "{verb} {name}: expected {expected:?} in {msg:?}"
            );
            // The human form says the same on stderr.
            let human = provision(&[verb, path.to_str().unwrap(), "--root", rootfs.arg()]);
            assert_eq!(human.code, 1);
            assert!(human.stderr.contains(expected), "{verb} {name}: {human:?}");
        }
    }
    assert_eq!(
        before,
        rootfs.tree(&["etc", "boot", "var/lib/dpkg", "var/lib/provision"]),
        "invalid plans changed the rootfs"
    );
}

/// `plan PLAN --root ROOT`: the exit code and the whole message.
fn plan_on(plan: &std::path::Path, root: &std::path::Path) -> crate::support::Run {
    provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ])
}

#[test]
fn plans_that_cannot_work_here_say_where_and_why_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let rocky = crate::support::fixture("rocky-9-a100-holders");
    // The default source is the distribution's: on Rocky that has no
    // driver, and the message says it was the default.
    let plan = plan_file(dir.path(), "default.toml", "\n[driver]\nbranch = \"580\"\n");
    let run = plan_on(&plan, &rocky);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("default.toml:2:1: [driver] source = \"distro\" (the default"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("set [driver] source = \"cuda-repo\""),
        "{run:?}"
    );
    // An unknown branch names the plan's table, not a command-line flag.
    let plan = plan_file(
        dir.path(),
        "581.toml",
        "[driver]\nbranch = \"581\"\nsource = \"cuda-repo\"\n",
    );
    let run = plan_on(&plan, &rocky);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("581.toml:1:1 [driver]: driver 581: branch 581 is unknown"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("--driver"), "{run:?}");
    // Branch 620 ships the open kernel modules only.
    let plan = plan_file(
        dir.path(),
        "620.toml",
        "[driver]\nbranch = \"620\"\nflavor = \"proprietary\"\nsource = \"cuda-repo\"\n",
    );
    let run = plan_on(&plan, &rocky);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(
            "flavor = \"proprietary\", and driver branch 620 ships the open kernel modules only"
        ) && run.stderr.contains("set flavor = \"open\""),
        "{run:?}"
    );
    // DCGM's diagnostic without DCGM: nothing would answer dcgmi.
    let plan = plan_file(
        dir.path(),
        "diag.toml",
        "[driver]\nbranch = \"580\"\nsource = \"cuda-repo\"\n[dcgm]\ndiag = 1\n",
    );
    let run = plan_on(&plan, &rocky);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("diag.toml:4:1: [dcgm] diag = 1 asks nv-hostengine, which [dcgm] enable = true installs and runs"),
        "{run:?}"
    );
    // A release no one lists is said before apply finds out.
    let plan = plan_file(
        dir.path(),
        "typo.toml",
        "[driver]\nversion = \"580.95.99\"\nsource = \"cuda-repo\"\n[upgrade]\nholders = \"stop-services\"\n",
    );
    let run = plan_on(&plan, &rocky);
    assert!(
        run.stderr
            .contains("version = \"580.95.99\" is not among the R580 releases"),
        "{run:?}"
    );
    // No internal numbers, no errno.
    let run = provision(&["compat", "--driver", "535", "--cuda", "12.2"]);
    assert!(!run.stdout.contains("9999"), "{run:?}");
    assert!(
        run.stdout.contains("R535's newest release meets that"),
        "{run:?}"
    );
    let run = provision(&["plan", "/nonexistent/plan.toml"]);
    assert!(!run.stderr.contains("os error"), "{run:?}");
    let run = provision(&["detect", "--root", "/nonexistent"]);
    assert!(
        !run.stderr.contains("canonicalize") && !run.stderr.contains("os error"),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains("--root /nonexistent: no such directory"),
        "{run:?}"
    );
}

#[test]
fn a_compat_package_on_a_toolkit_that_cannot_run_is_one_problem_not_two() {
    // R570, CUDA 13.0 and cuda-compat-13-0 on a GeForce: the toolkit cannot
    // run (forward compatibility needs a data-center GPU); the package is
    // not also called pointless.
    let (dir, root) = crate::support::fixture_copy("ubuntu-24.04-l4-broken");
    fs_err::write(
        root.join("sys/bus/pci/devices/0000:3b:00.0/device"),
        "0x2684\n",
    )
    .unwrap();
    let plan = plan_file(
        dir.path(),
        "plan.toml",
        "[driver]\nbranch = \"570\"\nsource = \"cuda-repo\"\n[toolkit]\nversion = \"13.0\"\n[compat]\npackage = \"cuda-compat-13-0\"\n",
    );
    let run = plan_on(&plan, &root);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("needs a data-center GPU"), "{run:?}");
    assert!(!run.stderr.contains("pointless"), "{run:?}");
    assert!(run.stderr.contains("plan.toml:6:1 [compat]"), "{run:?}");
    assert!(run.stderr.contains("plan.toml:4:1 [toolkit]"), "{run:?}");
}

#[test]
fn drain_settings_are_checked_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "[driver]\nbranch = \"580\"\n[upgrade]\ndrain = \"slurm\"\ndrain_command = [\"x\"]\nresume_command = [\"y\"]\n",
            ":3:1: [upgrade] drain = \"slurm\" asks Slurm itself",
        ),
        (
            "[driver]\nbranch = \"580\"\n[upgrade]\ndrain_command = [\"x\"]\n",
            ":3:1: [upgrade] drain_command and resume_command go together",
        ),
        (
            "[driver]\nbranch = \"580\"\n[upgrade]\ndrain_command = []\nresume_command = [\"y\"]\n",
            ":3:1: [upgrade] drain_command and resume_command are argument lists",
        ),
        (
            "[driver]\nbranch = \"580\"\n[upgrade]\ndrain = \"slurm\"\nslurm_node = \"gpu01; rm -rf /\"\n",
            ":5:14: invalid slurm_node",
        ),
        (
            "[driver]\nbranch = \"580\"\n[upgrade]\ndrain = \"kubernetes\"\n",
            ":4:9: unknown variant `kubernetes`",
        ),
    ] {
        let plan = plan_file(dir.path(), "drain.toml", text);
        let run = provision(&["plan", plan.to_str().unwrap()]);
        assert_eq!(run.code, 1, "{text}: {run:?}");
        assert!(
            run.stderr.contains(expected),
            "{text}: expected {expected:?} in {run:?}"
        );
    }
}
