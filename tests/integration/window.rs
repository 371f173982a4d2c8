//! The maintenance window as `plan` shows it, on host snapshots: who holds
//! the GPU and what each `[upgrade]` policy does to them, the services
//! stopped and started, the modules unloaded in dependency order, and
//! whether the new module is swapped live or waits for a reboot. (The
//! window's apply runs in the VM: tests/integration/vm.rs.)

use std::path::{Path, PathBuf};

use crate::support::{fixture, fixture_copy, plan_file, provision, repo};

/// `plans/rhel-9-cuda-repo-580.toml` moved to branch 590, with `extra`.
fn rhel_590(dir: &Path, extra: &str) -> PathBuf {
    let text = fs_err::read_to_string(repo().join("plans/rhel-9-cuda-repo-580.toml")).unwrap();
    let text = text.replace("branch = \"580\"", "branch = \"590\"");
    assert!(text.contains("branch = \"590\""));
    plan_file(dir, "rhel-590.toml", &format!("{text}\n{extra}"))
}

fn plan_json(plan: &Path, root: &Path) -> (i32, serde_json::Value) {
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ]);
    let json = run.json();
    (run.code, json)
}

fn holder_actions(report: &serde_json::Value) -> Vec<(u64, String)> {
    report["window"]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["pid"].as_u64().unwrap(),
                h["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn step_ids(report: &serde_json::Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_default_policy_stops_nvidias_daemons_and_refuses_other_holders_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    let root = fixture("rocky-9-a100-holders");
    let (code, report) = plan_json(&rhel_590(dir.path(), ""), &root);
    assert_eq!(code, 1, "{report:#}");
    let msg = report["msg"].as_str().unwrap();
    // The user's work blocks, each process named with the way through.
    for pid in ["22871", "23001"] {
        assert!(
            msg.contains(&format!("pid {pid} ")),
            "{pid} not named: {msg}"
        );
    }
    assert!(msg.contains("container 4f1c0e9a8b7d"), "{msg}");
    assert!(msg.contains("holders = \"terminate\""), "{msg}");
    // NVIDIA's own daemons (persistenced, DCGM's host engine) do not:
    // they are stopped and started again by default.
    assert!(!msg.contains("pid 1310 "), "{msg}");
    assert!(!msg.contains("pid 1402 "), "{msg}");
    assert_eq!(
        holder_actions(&report),
        [
            (1310, "stop-unit".to_string()),
            (1402, "stop-unit".to_string()),
            (22871, "block".to_string()),
            (23001, "block".to_string()),
        ]
    );
    let window = &report["window"];
    assert_eq!(window["module"]["before"], "570.124.06");
    assert_eq!(window["module"]["after"], "590.*");
    assert_eq!(
        strings(&window["stop"]),
        ["nvidia-persistenced.service", "nvidia-dcgm.service"]
    );
    // Dependents first: nvidia_drm before nvidia_modeset, nvidia last.
    assert_eq!(
        strings(&window["unload"]),
        ["nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia"]
    );
    assert_eq!(
        strings(&window["load"]),
        ["nvidia", "nvidia_modeset", "nvidia_drm", "nvidia_uvm"]
    );
    assert_eq!(
        report["reboot_required"], false,
        "nothing but holders blocks a live swap"
    );
    // NVIDIA's kmod builds in its %post: the plan says the GPU waits for it.
    let inside = window["build_inside"].as_str().unwrap_or_default();
    assert!(
        inside.starts_with("kmod-nvidia-open-dkms's %post runs dkms build"),
        "{window:#}"
    );
}

#[test]
fn the_persistence_daemon_provision_enables_does_not_block_a_shipped_plan() {
    // The L40S host's only holder is nvidia-persistenced: the shipped
    // plan swaps live, stopping and starting it, with no [upgrade].
    let plan = repo().join("plans/ubuntu-24.04-cuda-repo-580.toml");
    let (code, report) = plan_json(&plan, &fixture("ubuntu-24.04-l40s-two-toolkits"));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(holder_actions(&report), [(1210, "stop-unit".to_string())]);
    assert_eq!(
        strings(&report["window"]["stop"]),
        ["nvidia-persistenced.service"]
    );
    assert_eq!(
        strings(&report["window"]["start"]),
        ["nvidia-persistenced.service"]
    );
    assert_eq!(report["window"]["live"], true);
    // Its DKMS module is built before the window: none inside it.
    assert!(step_ids(&report).contains(&"driver:build".to_string()));
    assert_eq!(report["window"].get("build_inside"), None, "{report:#}");
    // Ubuntu's package scripts restart the daemon they ship: while the
    // packages go in, a policy-rc.d keeps it stopped until the new module
    // is loaded, and goes once they are in.
    let ids = step_ids(&report);
    let at = |id: &str| {
        ids.iter()
            .position(|s| s == id)
            .unwrap_or_else(|| panic!("{id} not in {ids:?}"))
    };
    assert_eq!(at("window:hold-starts") + 1, at("packages"), "{ids:?}");
    assert_eq!(at("packages") + 1, at("window:release-starts"), "{ids:?}");
    assert!(at("window:release-starts") < at("window:load"));
    let hold = &report["steps"][at("window:hold-starts")];
    assert_eq!(
        hold["summary"],
        "the package scripts do not start nvidia-persistenced.service (started after the load)"
    );
}

#[test]
fn the_plan_shows_how_long_the_last_window_kept_the_gpu_out_of_service() {
    // The L40S host's history: an earlier upgrade whose window took 41.7 s
    // (what `apply` recorded in its generation), then one without a window.
    let (_dir, root) = crate::support::fixture_copy("ubuntu-24.04-l40s-two-toolkits");
    let plan = repo().join("plans/ubuntu-24.04-cuda-repo-580.toml");
    let (_, before) = plan_json(&plan, &root);
    assert!(
        before["window"].get("last").is_none(),
        "no history, nothing shown: {:#}",
        before["window"]
    );
    let generations = root.join("var/lib/provision/generations");
    fs_err::create_dir_all(&generations).unwrap();
    for (id, seconds, build) in [(3, "41.7", "null"), (4, "null", "188.4")] {
        fs_err::write(
            generations.join(format!("{id:04}.json")),
            format!(
                r#"{{"id": {id}, "plan": "/etc/provision/plan.toml", "plan_sha256": null,
                  "started": "2026-11-0{id}T02:00:00Z", "finished": "2026-11-0{id}T02:03:10Z",
                  "status": "applied", "reboot_required": false, "log": "/var/log/provision/000{id}.log",
                  "entries": [], "unavailable_seconds": {seconds}, "build_seconds": {build}}}"#
            ),
        )
        .unwrap();
    }
    let (code, report) = plan_json(&plan, &root);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["window"]["last"],
        serde_json::json!({
            "generation": 3,
            "finished": "2026-11-03T02:03:10Z",
            "unavailable_seconds": 41.7,
            "build_seconds": 188.4
        })
    );
    let human = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    for line in [
        "last time (generation 3, 2026-11-03T02:03:10Z) the GPU was out of service for 41.7 s",
        "the last module build took 188.4 s, before the window",
    ] {
        assert!(human.stdout.contains(line), "{line}: {}", human.stdout);
    }
}

#[test]
fn the_module_is_built_before_the_window_and_what_reads_the_driver_follows_it() {
    // The L40S host (575.57.08 from NVIDIA's repository, DKMS) moving to
    // 580, with Slurm's slurmd running and a CDI specification written by
    // NVIDIA's Container Toolkit.
    let (_dir, root) = crate::support::fixture_copy("ubuntu-24.04-l40s-two-toolkits");
    let plan = repo().join("plans/ubuntu-24.04-cuda-repo-580.toml");
    let (_, before) = plan_json(&plan, &root);
    assert!(strings(&before["window"]["restart"]).is_empty());
    assert!(strings(&before["window"]["cdi"]).is_empty());
    fs_err::create_dir_all(root.join("sys/fs/cgroup/system.slice/slurmd.service")).unwrap();
    fs_err::create_dir_all(root.join("etc/cdi")).unwrap();
    fs_err::write(
        root.join("etc/cdi/nvidia.yaml"),
        "cdiVersion: 0.5.0
",
    )
    .unwrap();

    let (code, report) = plan_json(&plan, &root);
    assert_eq!(code, 0, "{report:#}");
    let ids = step_ids(&report);
    let at = |id: &str| {
        ids.iter()
            .position(|i| i == id)
            .unwrap_or_else(|| panic!("no {id}: {ids:?}"))
    };
    // Fetched and built while the old driver still serves; the window
    // holds the install; then the CDI specification, the services, slurmd.
    assert!(at("window:download") < at("driver:build"));
    assert!(at("driver:build") < at("window:stop"));
    assert!(at("window:unload") < at("packages"));
    assert!(at("window:load") < at("window:cdi"));
    assert!(at("window:cdi") < at("window:start"));
    assert!(at("window:start") < at("window:restart"));
    assert_eq!(strings(&report["window"]["restart"]), ["slurmd.service"]);
    assert_eq!(strings(&report["window"]["cdi"]), ["/etc/cdi/nvidia.yaml"]);
    let step = |id: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    assert!(
        step("driver:build")["summary"]
            .as_str()
            .unwrap()
            .contains("before anything is stopped"),
        "{:#}",
        step("driver:build")
    );
    assert_eq!(
        strings(&step("window:cdi")["commands"]),
        ["nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"]
    );
    assert_eq!(
        strings(&step("window:restart")["commands"]),
        ["systemctl restart slurmd.service"]
    );

    // A swap that waits for a reboot restarts nothing: slurmd reads the
    // new driver when it starts at the boot.
    let dir = tempfile::tempdir().unwrap();
    let text = fs_err::read_to_string(&plan).unwrap();
    let never = plan_file(
        dir.path(),
        "never.toml",
        &format!(
            "{text}
[upgrade]
reload = \"never\"
"
        ),
    );
    let (_, deferred) = plan_json(&never, &root);
    assert_eq!(deferred["window"]["live"], false, "{deferred:#}");
    assert!(strings(&deferred["window"]["restart"]).is_empty());
    assert!(strings(&deferred["window"]["cdi"]).is_empty());
    assert!(step_ids(&deferred).contains(&"driver:build".to_string()));
}

#[test]
fn a_host_already_on_the_branch_keeps_its_driver_and_gets_no_window() {
    // 580.65.06 (open, held) from Ubuntu's archive names: both 580 plans,
    // distro and NVIDIA's repository, keep it; no swap, no window.
    for plan in [
        "ubuntu-24.04-distro-580.toml",
        "ubuntu-24.04-cuda-repo-580.toml",
    ] {
        let plan = repo().join("plans").join(plan);
        let (code, report) = plan_json(&plan, &fixture("ubuntu-24.04-h100-compat-unneeded"));
        assert_eq!(code, 0, "{plan:?}: {report:#}");
        assert_eq!(
            report["window"],
            serde_json::Value::Null,
            "{plan:?}: {report:#}"
        );
        let ids = step_ids(&report);
        assert!(!ids.iter().any(|id| id.starts_with("window:")), "{ids:?}");
        let warnings = report["warnings"].to_string();
        assert!(
            warnings.contains("already runs R580 (580.65.06, open) from nvidia-driver-580-open, libnvidia-compute-580, nvidia-dkms-580-open: kept"),
            "{warnings}"
        );
        // Nothing of the driver's moves; the kept set stays held.
        let packages = report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "packages")
            .unwrap();
        let diff = packages["diff"].to_string();
        assert!(
            !diff.contains("nvidia-headless") && !diff.contains("linux-modules-nvidia"),
            "{diff}"
        );
        let commands = packages["commands"].to_string();
        assert!(
            commands
                .contains("hold nvidia-driver-580-open libnvidia-compute-580 nvidia-dkms-580-open"),
            "{commands}"
        );
    }
    // An exact version still moves it.
    let dir = tempfile::tempdir().unwrap();
    let text = fs_err::read_to_string(repo().join("plans/ubuntu-24.04-cuda-repo-580.toml"))
        .unwrap()
        .replace("branch = \"580\"", "version = \"580.95.05\"");
    let plan = plan_file(dir.path(), "exact.toml", &text);
    let (_, report) = plan_json(&plan, &fixture("ubuntu-24.04-h100-compat-unneeded"));
    assert_eq!(
        report["window"]["module"]["after"], "580.95.05",
        "{report:#}"
    );
}

#[test]
fn stop_services_stops_the_listed_services_and_lets_nothing_else_through() {
    let dir = tempfile::tempdir().unwrap();
    let plan = rhel_590(dir.path(), "[upgrade]\nholders = \"stop-services\"\n");
    let (code, report) = plan_json(&plan, &fixture("rocky-9-a100-holders"));
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        holder_actions(&report),
        [
            (1310, "stop-unit".to_string()),
            (1402, "stop-unit".to_string()),
            (22871, "block".to_string()),
            (23001, "block".to_string()),
        ]
    );
    assert_eq!(
        strings(&report["window"]["stop"]),
        ["nvidia-persistenced.service", "nvidia-dcgm.service"],
        "in the plan's order"
    );
    let msg = report["msg"].as_str().unwrap();
    assert!(
        !msg.contains("pid 1310"),
        "a listed service does not block: {msg}"
    );
    assert!(
        msg.contains("secretd.service is not in [upgrade] services"),
        "{msg}"
    );
}

#[test]
fn terminate_stops_services_ends_the_rest_and_shows_the_window_as_steps() {
    let dir = tempfile::tempdir().unwrap();
    let plan = rhel_590(dir.path(), "[upgrade]\nholders = \"terminate\"\n");
    let (code, report) = plan_json(&plan, &fixture("rocky-9-a100-holders"));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        holder_actions(&report),
        [
            (1310, "stop-unit".to_string()),
            (1402, "stop-unit".to_string()),
            (22871, "terminate".to_string()),
            (23001, "stop-unit".to_string()),
        ]
    );
    let window = &report["window"];
    let container = &window["holders"][2]["container"];
    assert_eq!(container, "4f1c0e9a8b7d", "the container is named");
    assert_eq!(
        strings(&window["stop"]),
        [
            "nvidia-persistenced.service",
            "nvidia-dcgm.service",
            "secretd.service"
        ]
    );
    assert_eq!(
        strings(&window["start"]),
        [
            "secretd.service",
            "nvidia-dcgm.service",
            "nvidia-persistenced.service"
        ],
        "started in reverse"
    );
    assert_eq!(window["live"], true);
    assert_eq!(report["reboot_required"], false);
    // The window is ordinary steps around the one that swaps the driver.
    let ids = step_ids(&report);
    let at = |id: &str| {
        ids.iter()
            .position(|s| s == id)
            .unwrap_or_else(|| panic!("{id} not in {ids:?}"))
    };
    assert!(at("window:download") < at("window:stop"));
    assert!(at("window:stop") < at("window:terminate"));
    assert!(at("window:terminate") < at("window:unload"));
    assert!(at("window:unload") < at("packages"));
    assert!(at("packages") < at("window:load"));
    assert!(at("window:load") < at("window:start"));
    assert!(at("window:start") < at("driver:verify"));
    // RPM's scriptlets try-restart: a stopped service stays stopped, and
    // there is no policy-rc.d to hold it.
    assert!(!ids.iter().any(|id| id.ends_with("-starts")), "{ids:?}");
    let terminate = &report["steps"][at("window:terminate")];
    assert!(
        terminate["summary"]
            .as_str()
            .unwrap()
            .contains("pid 22871 (python in container 4f1c0e9a8b7d)"),
        "{terminate:#}"
    );
}

#[test]
fn reload_never_leaves_the_swap_to_a_reboot_that_plan_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let plan = rhel_590(
        dir.path(),
        "[upgrade]\nholders = \"terminate\"\nreload = \"never\"\n",
    );
    let (code, report) = plan_json(&plan, &fixture("rocky-9-a100-holders"));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["reboot_required"], true);
    let window = &report["window"];
    assert_eq!(window["live"], false);
    assert!(
        window["reboot_reason"]
            .as_str()
            .unwrap()
            .contains("reload = \"never\"")
    );
    assert!(strings(&window["unload"]).is_empty());
    let ids = step_ids(&report);
    assert!(
        !ids.iter()
            .any(|s| s == "window:unload" || s == "window:load")
    );
    assert_eq!(ids.last().map(String::as_str), Some("window:reboot"));
    let text = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        fixture("rocky-9-a100-holders").to_str().unwrap(),
    ]);
    assert!(
        text.stdout
            .contains("Maintenance window: nvidia 570.124.06 -> 590.*, at the next boot"),
        "{text:?}"
    );
    assert!(text.stdout.contains("A reboot is required"), "{text:?}");
}

#[test]
fn the_h200_snapshot_shows_its_container_holder_and_a_reboot() {
    // The real capture, as its machine sees it: without the driver mounted
    // in at /usr/local/nvidia it is no container (that is refused a driver
    // plan, see validation.rs). The 580.159.04 module is loaded, a
    // container's process holds the GPU, and the kernel's modules are not
    // in this root.
    let (_dir, root) = fixture_copy("ubuntu-24.04-h200-580-open");
    fs_err::remove_dir_all(root.join("usr/local/nvidia")).unwrap();
    let plan = repo().join("plans/ubuntu-24.04-cuda-repo-580.toml");
    let (code, report) = plan_json(&plan, &root);
    // The swap waits for a reboot: nothing is unloaded before it, so the
    // container's process runs on and blocks nothing; the plan says what
    // a new GPU process meets until the reboot.
    assert_eq!(code, 0, "{report:#}");
    let window = &report["window"];
    assert_eq!(window["module"]["before"], "580.159.04");
    assert_eq!(window["holders"][0]["pid"], 402);
    assert_eq!(window["holders"][0]["container"], "daf430de9984");
    assert_eq!(window["holders"][0]["action"], "runs-until-reboot");
    assert_eq!(strings(&window["stop"]), Vec::<String>::new());
    assert!(
        report["warnings"]
            .to_string()
            .contains("pid 402 (python3) hold the GPU and run on until the reboot"),
        "{report:#}"
    );
    assert!(
        report["warnings"]
            .to_string()
            .contains("Driver/library version mismatch")
    );
    assert_eq!(report["reboot_required"], true, "{report:#}");
    assert!(
        window["reboot_reason"]
            .as_str()
            .unwrap()
            .contains("does not carry the running kernel's modules")
    );
}

#[test]
fn a_blocked_swap_still_shows_the_whole_plan_and_no_mixed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let root = fixture("rocky-9-a100-holders");
    let plan = rhel_590(dir.path(), "");
    let (code, report) = plan_json(&plan, &root);
    assert_eq!(code, 1, "{report:#}");
    // The steps the plan would take, beside the blocked window.
    let ids: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for id in ["repository:cuda", "packages", "environment:loader"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    // The summary counts what the version lock list will name.
    let packages = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "packages")
        .unwrap();
    let summary = packages["summary"].as_str().unwrap();
    assert!(
        summary.contains("8 to install or change, 0 to remove, 4 to lock"),
        "{summary}"
    );
    // The human form: the steps, the error, and no "reboot is required"
    // after it (nothing was changed that a reboot would finish).
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("+ repository:cuda"), "{run:?}");
    assert!(run.stderr.contains("error: the driver swap"), "{run:?}");
    assert!(!run.stderr.contains("A reboot is required"), "{run:?}");
}

#[test]
fn a_driver_library_mismatch_is_repaired_by_the_window_or_a_reboot() {
    // Userspace 570.172.08 over a loaded 570.124.06 module (an unattended
    // upgrade): the plan makes them agree, and a reference no process
    // explains means a reboot.
    let plan = repo().join("plans/ubuntu-22.04-cuda-repo-570.toml");
    let (code, report) = plan_json(&plan, &fixture("ubuntu-22.04-l40s-mismatch"));
    assert_eq!(code, 0, "{report:#}");
    let window = &report["window"];
    assert_eq!(window["module"]["before"], "570.124.06");
    assert_eq!(window["module"]["after"], "570.172.08");
    assert_eq!(window["live"], false);
    assert!(
        window["reboot_reason"]
            .as_str()
            .unwrap()
            .contains("no process explains"),
        "{window:#}"
    );
    let reason = window["reboot_reason"].as_str().unwrap();
    assert!(!reason.contains("1 references"), "{reason}");
    assert_eq!(report["reboot_required"], true);
}

#[test]
fn a_fresh_install_next_to_a_bound_nouveau_waits_for_a_reboot() {
    // The host boots with Secure Boot on: DKMS signs with an enrolled key.
    let (_dir, root, plan) = crate::secure_boot::signed_copy(
        "debian-12-a6000-nouveau",
        "plans/debian-12-distro-535.toml",
    );
    let (code, report) = plan_json(&plan, &root);
    assert_eq!(code, 0, "{report:#}");
    let window = &report["window"];
    assert_eq!(window["module"]["before"], serde_json::Value::Null);
    assert!(
        window["reboot_reason"]
            .as_str()
            .unwrap()
            .contains("nouveau drives 0000:01:00.0")
    );
    assert_eq!(report["reboot_required"], true);
}

#[test]
fn an_image_gets_no_window_and_apply_refuses_a_window_under_root() {
    // A snapshot with a loaded module is a running system seen from
    // outside: plan shows its window, apply will not run it there.
    let (dir, copy) = fixture_copy("rocky-9-a100-holders");
    let plan = rhel_590(dir.path(), "[upgrade]\nholders = \"terminate\"\n");
    let run = provision(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        copy.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    let msg = run.json()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("run provision on the host itself (no --root)"),
        "{msg}"
    );
    assert!(
        !copy.join("var/lib/provision/generations").exists(),
        "refused before any generation"
    );
}

#[test]
fn a_capture_whose_init_is_systemd_is_not_called_a_root_without_systemd() {
    let plan = repo().join("plans/rhel-9-cuda-repo-580.toml");
    let run = provision(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        fixture("rocky-9-a100-holders").to_str().unwrap(),
    ]);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(!text.contains("no systemd in this root"), "{text}");
    assert!(
        text.contains("init is systemd, but systemctl is not in it"),
        "{text}"
    );
}

#[test]
fn a_drain_command_takes_the_user_work_and_the_plan_shows_drain_and_resume() {
    // Another scheduler: its drain command ends the work (it returns once
    // the node is drained), so the user's processes no longer block;
    // NVIDIA's daemons are stopped as always; the node is resumed after
    // verify.
    let dir = tempfile::tempdir().unwrap();
    let plan = rhel_590(
        dir.path(),
        "[upgrade]\ndrain_command = [\"/usr/local/bin/cordon\", \"--wait\"]\nresume_command = [\"/usr/local/bin/uncordon\"]\n",
    );
    let (code, report) = plan_json(&plan, &fixture("rocky-9-a100-holders"));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        holder_actions(&report),
        [
            (1310, "stop-unit".to_string()),
            (1402, "stop-unit".to_string()),
            (22871, "drained".to_string()),
            (23001, "drained".to_string()),
        ]
    );
    let ids = step_ids(&report);
    let at = |id: &str| {
        ids.iter()
            .position(|s| s == id)
            .unwrap_or_else(|| panic!("no {id}: {ids:?}"))
    };
    assert!(at("window:download") < at("window:drain"));
    assert!(at("window:drain") < at("window:stop"));
    assert!(at("driver:verify") < at("window:resume-node"));
    let drain = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "window:drain")
        .unwrap();
    assert_eq!(drain["commands"][0], "/usr/local/bin/cordon --wait");

    // Slurm on a root without it: said, before anything changes.
    let plan = rhel_590(
        dir.path(),
        "[upgrade]\ndrain = \"slurm\"\nholders = \"terminate\"\n",
    );
    let (code, report) = plan_json(&plan, &fixture("rocky-9-a100-holders"));
    assert_eq!(code, 1, "{report:#}");
    assert!(
        report["msg"]
            .as_str()
            .unwrap()
            .contains("set [upgrade] slurm_node"),
        "{report:#}"
    );
    let plan = rhel_590(
        dir.path(),
        "[upgrade]\ndrain = \"slurm\"\nslurm_node = \"gpu01\"\nholders = \"terminate\"\n",
    );
    let (code, report) = plan_json(&plan, &fixture("rocky-9-a100-holders"));
    assert_eq!(code, 1, "{report:#}");
    assert!(
        report["msg"]
            .as_str()
            .unwrap()
            .contains("scontrol is not installed here"),
        "{report:#}"
    );
}

/// The L40S snapshot as a host whose 575 driver came from NVIDIA's runfile
/// through provision: no driver packages, the installer's uninstaller and
/// provision's record of it.
fn runfile_host() -> (tempfile::TempDir, PathBuf) {
    let (dir, root) = fixture_copy("ubuntu-24.04-l40s-two-toolkits");
    let status_file = root.join("var/lib/dpkg/status");
    let kept: Vec<String> = fs_err::read_to_string(&status_file)
        .unwrap()
        .split("\n\n")
        .filter(|stanza| !stanza.contains("nvidia"))
        .map(str::to_string)
        .collect();
    fs_err::write(&status_file, kept.join("\n\n")).unwrap();
    fs_err::create_dir_all(root.join("usr/bin")).unwrap();
    fs_err::write(root.join("usr/bin/nvidia-uninstall"), "#!/bin/sh\n").unwrap();
    fs_err::create_dir_all(root.join("var/lib/provision")).unwrap();
    fs_err::write(
        root.join("var/lib/provision/runfile-driver.json"),
        serde_json::json!({
            "url": "https://example.invalid/NVIDIA-Linux-x86_64-575.57.08.run",
            "sha256": "1".repeat(64),
            "args": ["--silent", "--dkms", "--kernel-module-type=open"],
            "version": "575.57.08",
        })
        .to_string(),
    )
    .unwrap();
    (dir, root)
}

/// A runfile plan of `version` (its hash made up: plan fetches nothing).
fn runfile_plan(dir: &Path, version: &str, extra: &str) -> PathBuf {
    plan_file(
        dir,
        &format!("runfile-{version}-{}.toml", extra.len()),
        &format!(
            "[driver]\nversion = \"{version}\"\nflavor = \"open\"\nsource = \"runfile\"\nrunfile = \"https://example.invalid/NVIDIA-Linux-x86_64-{version}.run\"\nsha256 = \"{}\"\n{extra}",
            "2".repeat(64)
        ),
    )
}

#[test]
fn a_runfile_upgrade_of_a_running_host_goes_through_the_window() {
    let (dir, root) = runfile_host();
    let plan = runfile_plan(dir.path(), "580.95.05", "");
    let (code, report) = plan_json(&plan, &root);
    assert_eq!(code, 0, "{report:#}");
    let window = &report["window"];
    assert_eq!(window["module"]["before"], "575.57.08", "{window:#}");
    assert_eq!(window["module"]["after"], "580.95.05");
    assert_eq!(window["live"], true);
    // nvidia-installer refuses a loaded module: the daemon holding it is
    // stopped and the modules unloaded first, then loaded again.
    assert_eq!(holder_actions(&report), [(1210, "stop-unit".to_string())]);
    assert_eq!(strings(&window["unload"]), ["nvidia_uvm", "nvidia"]);
    assert_eq!(strings(&window["load"]), ["nvidia", "nvidia_uvm"]);
    let inside = window["build_inside"].as_str().unwrap_or_default();
    assert!(
        inside
            .starts_with("NVIDIA-Linux-x86_64-580.95.05.run builds the kernel module through DKMS"),
        "{window:#}"
    );
    // The runfile is fetched before anything stops; verify comes last.
    let ids = step_ids(&report);
    let at = |id: &str| {
        ids.iter()
            .position(|s| s == id)
            .unwrap_or_else(|| panic!("{id} not in {ids:?}"))
    };
    assert!(at("window:download") < at("window:stop"), "{ids:?}");
    assert!(at("window:unload") < at("runfile:driver"), "{ids:?}");
    assert!(at("runfile:driver") < at("window:load"), "{ids:?}");
    assert!(at("window:start") < at("driver:verify"), "{ids:?}");
    let download = &report["steps"][at("window:download")];
    assert!(
        download["commands"][0].as_str().unwrap().starts_with(
            "download https://example.invalid/NVIDIA-Linux-x86_64-580.95.05.run and check sha256"
        ),
        "{download:#}"
    );

    // nvidia-installer will not install over a loaded module: a runfile
    // swap cannot wait for a reboot, and plan says so before anything.
    let never = runfile_plan(dir.path(), "580.95.05", "[upgrade]\nreload = \"never\"\n");
    let (code, report) = plan_json(&never, &root);
    assert_eq!(code, 1, "{report:#}");
    let msg = report["msg"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "source = \"runfile\" cannot leave the swap to a reboot ([upgrade] reload = \"never\""
        ),
        "{msg}"
    );

    // The release it has: nothing to swap, no window.
    let same = runfile_plan(dir.path(), "575.57.08", "");
    let (code, report) = plan_json(&same, &root);
    assert_eq!(code, 0, "{report:#}");
    assert!(
        report.get("window").is_none_or(|w| w.is_null()),
        "{report:#}"
    );
}
