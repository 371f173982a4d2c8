//! The upgrade window on a booted system: `vm/run` boots the bookworm
//! image of `vm/build` under QEMU with the stand-in NVIDIA driver
//! (vm/stand-in) and runs the guest-side scripts of vm/tests, which check
//! everything themselves and exit non-zero on the first failure. Minutes
//! each under TCG: ignored by a plain `cargo test`, run by `scripts/test`.

use std::path::PathBuf;
use std::process::Command;

use crate::support::repo;

/// Runs `vm/run` with `scripts` (vm/tests/NAME.sh); panics with its output
/// unless every script passed.
fn vm_run(scripts: &[&str]) -> serde_json::Value {
    vm_run_with(scripts, None, &[])
}

/// `vm/run`, and `host_command` on the host once the guest is up.
fn vm_run_with(
    scripts: &[&str],
    host_command: Option<&str>,
    options: &[&str],
) -> serde_json::Value {
    let disk = repo().join("target/vm/disk.raw");
    assert!(
        disk.is_file(),
        "the VM image is missing: run vm/build (as root)"
    );
    let binary = repo().join("target/release/provision");
    assert!(
        binary.is_file(),
        "vm/run needs the release build: cargo build --release"
    );
    let out = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = scripts
        .iter()
        .map(|name| repo().join("vm/tests").join(format!("{name}.sh")))
        .collect();
    let mut command = Command::new(repo().join("vm/run"));
    command
        .arg("--out")
        .arg(out.path())
        .args(options)
        .args(&paths);
    if let Some(host_command) = host_command {
        command.args(["--host-command", host_command]);
    }
    let output = command.output().expect("run vm/run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vm/run {scripts:?} failed ({}):\n{stdout}\n--- vm/run\n{stderr}",
        output.status
    );
    for name in scripts {
        assert!(
            stdout.contains(&format!("{name}: all checks passed")),
            "{name} did not report its end:\n{stdout}"
        );
    }
    if host_command.is_some() {
        assert!(
            stdout.contains("all checks passed"),
            "the host command did not report its end:\n{stdout}"
        );
    }
    let timings = fs_err::read_to_string(out.path().join("timings.json")).unwrap();
    eprintln!("{stdout}\n{stderr}");
    serde_json::from_str(&timings).unwrap()
}

/// Five scripts in one boot: each leaves the guest serving, and a reboot
/// between them would only cost minutes of TCG. The DKMS build goes
/// before DCGM and Slurm, which take the 570 it rolls back to; provision
/// is killed inside the window last, on the way from Slurm's 580 to 570
/// and back (alone, on a fresh guest, the script installs 570 first).
#[test]
#[ignore = "boots a VM once and runs five scripts (about 11 minutes alone under TCG): scripts/test runs it"]
fn live_upgrade_under_each_holder_policy_a_dkms_build_dcgm_slurm_then_kills_inside_the_window() {
    let timings = vm_run_with(
        &["live-upgrade", "dkms", "dcgm", "slurm", "kill-in-window"],
        None,
        &["--one-boot"],
    );
    assert_eq!(
        timings["boots"].as_array().unwrap().len(),
        1,
        "one boot for the series, no other"
    );
}

#[test]
#[ignore = "boots a VM four times (about 8 minutes under TCG): scripts/test runs it"]
fn an_upgrade_that_waits_for_a_real_reboot_is_finished_by_the_resume_unit_and_by_apply() {
    let timings = vm_run(&["reboot-1", "reboot-2", "reboot-3", "reboot-4"]);
    assert_eq!(
        timings["boots"].as_array().unwrap().len(),
        4,
        "three real reboots: {timings}"
    );
}

#[test]
#[ignore = "boots a VM, runs the role over SSH, reboots it (about 5 minutes under TCG): scripts/test runs it"]
fn the_role_reboots_the_vm_for_a_driver_swap_and_finishes_the_generation() {
    for (path, how) in [
        (
            "target/ansible-venv/bin/ansible-playbook",
            "scripts/ansible-env",
        ),
        (
            "target/package/provision_0.1.0_amd64.deb",
            "scripts/package",
        ),
    ] {
        assert!(repo().join(path).exists(), "{path} is missing: run {how}");
    }
    let script = repo().join("vm/ansible/reboot.sh");
    let timings = vm_run_with(&[], Some(script.to_str().unwrap()), &[]);
    assert!(
        timings["boots"].as_array().unwrap().len() >= 2,
        "the guest booted again after the role's reboot: {timings}"
    );
}
