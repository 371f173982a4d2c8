//! The command line's contract: exit codes a script can rely on, and
//! output that ends quietly when its reader goes away.

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use crate::support::{fixture, provision, repo};

#[test]
fn usage_errors_have_their_own_exit_code_not_pendings_2() {
    let plan = repo().join("plans/ubuntu-24.04-cuda-repo-580.toml");
    let plan = plan.to_str().unwrap();
    for args in [
        vec!["detct"],
        vec!["plan", plan, "--detailed-exitcod"],
        vec!["plan"],
        vec!["compat", "--gpu"],
        vec![],
    ] {
        let run = provision(&args);
        assert_eq!(run.code, 64, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
        assert!(run.stderr.contains("error:"), "{args:?}: {run:?}");
    }
    // Asking for help or the version is no error.
    for args in [vec!["--help"], vec!["plan", "--help"], vec!["--version"]] {
        let run = provision(&args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(!run.stdout.is_empty());
    }
    let help = provision(&["--help"]).stdout;
    assert!(help.contains("64 usage error"), "{help}");
}

/// provision with a stdout whose reader has already gone: every write
/// fails with EPIPE, deterministically.
fn closed_stdout(args: &[&str]) -> (i32, String) {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(read);
    let output = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let host = fixture("ubuntu-24.04-l40s-two-toolkits");
    let host = host.to_str().unwrap();
    let broken = fixture("ubuntu-24.04-l4-broken");
    let broken = broken.to_str().unwrap();
    let plan = repo().join("plans/toolkit-only-13.0.toml");
    let plan = plan.to_str().unwrap();
    for (args, code) in [
        (vec!["detect", "--root", host], 0),
        (vec!["detect", "--root", host, "--json"], 0),
        (vec!["doctor", "--root", broken], 1),
        (vec!["compat", "--root", host], 0),
        (vec!["recommend", "--root", host, "--json"], 0),
        (vec!["plan", plan, "--root", host], 0),
        (vec!["history", "--root", host], 0),
        (vec!["completions", "bash"], 0),
    ] {
        let (exit, stderr) = closed_stdout(&args);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        // The command's own answer stands (doctor's findings are errors).
        let expected = provision(&args).code;
        assert_eq!(exit, expected, "{args:?}: {stderr}");
        assert_eq!(exit, code, "{args:?}: {stderr}");
    }
}
