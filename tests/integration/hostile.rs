//! Hostile hosts and crowds: managed paths that are links (into /etc/shadow,
//! out of the root, in loops) or directories, a journal others can write,
//! garbage package databases, an unreadable /proc, a file edited by hand;
//! and eight applies and rollbacks started at once on one root. A clear
//! error or a correct result; never a write outside the root, never a
//! panic; runs one at a time.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::http::Server;
use crate::support::{
    Rootfs, apply_ok, assert_same_tree, cuda_repo_section, plan_file, provision, repo,
};

const BLACKLIST: &str = "etc/modprobe.d/provision-nouveau.conf";

fn server() -> Server {
    Server::serve(&repo().join("target/test-repos"))
}

fn rootfs(server: &Server) -> Rootfs {
    let rootfs = Rootfs::new();
    rootfs.use_apt_repo(&server.url("debian"));
    rootfs
}

fn stand_in_plan(server: &Server, dir: &Path, branch: &str) -> std::path::PathBuf {
    plan_file(
        dir,
        &format!("{branch}.toml"),
        &format!(
            "[driver]\nbranch = \"{branch}\"\nflavor = \"open\"\nsource = \"cuda-repo\"\n{}",
            cuda_repo_section(&server.url("nvidia-debian12/"))
        ),
    )
}

fn run(args: &[&str]) -> (i32, serde_json::Value) {
    let run = provision(args);
    assert!(
        !run.stderr.contains("panicked"),
        "provision panicked: {run:?}"
    );
    let json = run.json();
    (run.code, json)
}

#[test]
fn managed_paths_that_are_links_are_replaced_never_followed_and_come_back_on_rollback() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let plan = stand_in_plan(&server, dir.path(), "570");
    let outside = tempfile::tempdir().unwrap();
    let sentinel = outside.path().join("sentinel");
    fs_err::write(&sentinel, "outside the root\n").unwrap();
    for target in [
        "/etc/shadow".to_string(),
        "../../etc/shadow".to_string(),
        sentinel.display().to_string(),
        "/etc/modprobe.d/loop-b".to_string(),
    ] {
        let rootfs = rootfs(&server);
        let link = rootfs.path().join(BLACKLIST);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // A loop: loop-b -> the managed file -> loop-b.
        std::os::unix::fs::symlink(
            "/etc/modprobe.d/provision-nouveau.conf",
            rootfs.path().join("etc/modprobe.d/loop-b"),
        )
        .unwrap();
        let shadow = fs_err::read(rootfs.path().join("etc/shadow")).unwrap();
        let before = rootfs.tree(&["etc"]);
        let (code, report) = run(&[
            "apply",
            plan.to_str().unwrap(),
            "--root",
            rootfs.arg(),
            "--json",
        ]);
        assert_eq!(code, 0, "link to {target}: {report:#}");
        let meta = fs_err::symlink_metadata(&link).unwrap();
        assert!(
            meta.is_file(),
            "link to {target}: the link was replaced by the file"
        );
        assert!(
            rootfs
                .read(&format!("/{BLACKLIST}"))
                .contains("blacklist nouveau")
        );
        assert_eq!(
            fs_err::read(rootfs.path().join("etc/shadow")).unwrap(),
            shadow,
            "/etc/shadow untouched"
        );
        assert_eq!(
            fs_err::read_to_string(&sentinel).unwrap(),
            "outside the root\n",
            "nothing written outside"
        );
        let (code, report) = run(&["rollback", "--root", rootfs.arg(), "--json"]);
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(
            fs_err::read_link(&link).unwrap(),
            Path::new(&target),
            "the link is back"
        );
        assert_same_tree(
            &before,
            &rootfs.tree(&["etc"]),
            &format!("rollback, link to {target}"),
        );
    }
}

#[test]
fn a_directory_where_a_managed_file_goes_is_a_clear_error_and_nothing_changes() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let plan = stand_in_plan(&server, dir.path(), "570");
    let rootfs = rootfs(&server);
    fs_err::create_dir_all(rootfs.path().join(BLACKLIST).join("inside")).unwrap();
    let before = rootfs.tree(&["etc", "boot"]);
    let packages = rootfs.packages();
    let (code, report) = run(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(code, 1, "{report:#}");
    let msg = report["msg"].as_str().unwrap();
    assert!(
        msg.contains("provision-nouveau.conf"),
        "the message names the path: {msg}"
    );
    assert!(
        msg.contains("directory") || msg.contains("Directory"),
        "{msg}"
    );
    assert_same_tree(&before, &rootfs.tree(&["etc", "boot"]), "a refused apply");
    assert_eq!(packages, rootfs.packages());
}

#[test]
fn a_journal_others_can_write_is_not_trusted() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let plan = stand_in_plan(&server, dir.path(), "570");
    let rootfs = rootfs(&server);
    let state = rootfs.path().join("var/lib/provision");
    fs_err::create_dir_all(&state).unwrap();
    fs_err::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let before = rootfs.tree(&["etc", "boot"]);
    for verb in [vec!["apply", plan.to_str().unwrap()], vec!["rollback"]] {
        let mut args = verb.clone();
        args.extend(["--root", rootfs.arg(), "--json"]);
        let (code, report) = run(&args);
        assert_eq!(code, 1, "{verb:?}: {report:#}");
        let msg = report["msg"].as_str().unwrap();
        assert!(msg.contains("writable by others (mode 0777)"), "{msg}");
    }
    assert_same_tree(
        &before,
        &rootfs.tree(&["etc", "boot"]),
        "an untrusted journal",
    );
}

#[test]
fn garbage_package_databases_and_an_unreadable_proc_give_errors_or_answers_never_panics() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let plan = stand_in_plan(&server, dir.path(), "570");
    let garbage: &[(&str, &[u8])] = &[
        (
            "var/lib/dpkg/status",
            b"\xff\xfe\x00Package: \n\nStatus: install ok\nVersion:\n\n\n\x01\x02",
        ),
        (
            "var/lib/dpkg/status",
            b"Package: libcuda1\nStatus: install ok installed\n",
        ),
        (
            "var/lib/rpm/rpmdb.sqlite",
            b"SQLite format 3\x00 but not really",
        ),
    ];
    for (path, bytes) in garbage {
        let rootfs = rootfs(&server);
        fs_err::create_dir_all(rootfs.path().join(path).parent().unwrap()).unwrap();
        fs_err::write(rootfs.path().join(path), bytes).unwrap();
        for args in [
            vec!["detect", "--root", rootfs.arg(), "--json"],
            vec!["doctor", "--root", rootfs.arg(), "--json"],
            vec![
                "plan",
                plan.to_str().unwrap(),
                "--root",
                rootfs.arg(),
                "--json",
            ],
        ] {
            let (code, _) = run(&args);
            assert!(code == 0 || code == 1, "{path}: {args:?} exit {code}");
        }
    }
    // /proc that cannot be read: detect answers with the reasons.
    let root = tempfile::tempdir().unwrap();
    fs_err::create_dir_all(root.path().join("proc/1")).unwrap();
    fs_err::write(root.path().join("proc/modules"), "nvidia 1 2 - Live 0x0\n").unwrap();
    fs_err::set_permissions(
        root.path().join("proc/1"),
        std::fs::Permissions::from_mode(0o0),
    )
    .unwrap();
    fs_err::set_permissions(
        root.path().join("proc/modules"),
        std::fs::Permissions::from_mode(0o0),
    )
    .unwrap();
    let (code, facts) = run(&["detect", "--root", root.path().to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{facts:#}");
    fs_err::set_permissions(
        root.path().join("proc/1"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

#[test]
fn a_managed_file_edited_by_hand_is_drift_shown_put_back_and_kept() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let plan = stand_in_plan(&server, dir.path(), "570");
    let rootfs = rootfs(&server);
    apply_ok(&plan, rootfs.arg());
    let path = rootfs.path().join(BLACKLIST);
    let edited = "# edited by hand\nblacklist nouveau\n";
    fs_err::write(&path, edited).unwrap();
    let (code, report) = run(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(code, 0);
    let step = crate::support::step(&report, "nouveau:blacklist");
    assert_eq!(step["action"], "update", "drift shows as ~: {step:#}");
    let diff = step["diff"].as_str().unwrap();
    assert!(
        diff.contains("-# edited by hand") && diff.contains("+options nouveau modeset=0"),
        "{diff}"
    );
    let text = provision(&["plan", plan.to_str().unwrap(), "--root", rootfs.arg()]);
    assert!(text.stdout.contains("~ nouveau:blacklist"), "{text:?}");
    apply_ok(&plan, rootfs.arg());
    assert!(
        rootfs
            .read(&format!("/{BLACKLIST}"))
            .contains("options nouveau modeset=0")
    );
    // The hand-edited copy is in the journal's backups, by its hash.
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(edited.as_bytes()))
    };
    assert_eq!(
        rootfs.read(&format!("/var/lib/provision/backups/{hash}")),
        edited,
        "the hand-edited file is kept"
    );
}

#[test]
fn eight_applies_and_rollbacks_at_once_run_one_at_a_time() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let plans = [
        stand_in_plan(&server, dir.path(), "570"),
        stand_in_plan(&server, dir.path(), "580"),
    ];
    let rootfs = rootfs(&server);
    let binary = env!("CARGO_BIN_EXE_provision");
    let spawn = |args: Vec<String>| {
        std::process::Command::new(binary)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Waiting for the lock: all eight run, one after another.
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut args: Vec<String> = if i % 2 == 0 {
                vec!["apply".into(), plans[i / 2 % 2].display().to_string()]
            } else {
                vec!["rollback".into()]
            };
            args.extend(
                ["--root", rootfs.arg(), "--json", "--lock-timeout", "600"].map(String::from),
            );
            spawn(args)
        })
        .collect();
    let mut windows: Vec<[f64; 2]> = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(output.status.code(), Some(0), "{report:#}");
        let held = &report["held_lock"];
        windows.push([held[0].as_f64().unwrap(), held[1].as_f64().unwrap()]);
    }
    windows.sort_by(|a, b| a[0].total_cmp(&b[0]));
    for pair in windows.windows(2) {
        assert!(
            pair[0][1] <= pair[1][0],
            "two runs held the lock at once: {windows:?}"
        );
    }
    let history = provision(&["history", "--root", rootfs.arg(), "--json"]);
    assert_eq!(history.code, 0, "the journal parses after the crowd");

    // Not waiting: one runs, the others fail at once, naming who holds it.
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..8)
        .map(|_| {
            spawn(
                [
                    "apply",
                    plans[1].to_str().unwrap(),
                    "--root",
                    rootfs.arg(),
                    "--json",
                ]
                .map(String::from)
                .to_vec(),
            )
        })
        .collect();
    let mut refused = 0;
    for child in children {
        let output = child.wait_with_output().unwrap();
        if output.status.code() == Some(1) {
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let msg = report["msg"].as_str().unwrap();
            if msg.contains("another provision run holds") {
                assert!(msg.contains("by pid "), "the holder is named: {msg}");
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 1,
        "the runs that found the lock taken failed at once"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
}
