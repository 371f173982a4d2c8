//! After every apply that touched the driver: does the host run what it
//! installed? On the running system: the loaded module's version
//! (`/proc/driver/nvidia/version`, `/sys/module/nvidia/version`) equals the
//! installed user space, every NVIDIA PCI function is bound to `nvidia`,
//! `nvidia-smi -L` lists the GPUs, persistence is as planned. In an image:
//! the user-space libraries and the module built for its kernel agree. A
//! failed check fails the step, and the generation is undone.

use std::sync::{Arc, Mutex};

use crate::facts::Facts;
use crate::host::{Cmd, Host};
use crate::journal::Journal;
use crate::plan::DriverTarget;
use crate::step::persistence::UNIT as PERSISTENCED;
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError};

pub use super::verification::{Verification, VerifyCheck, check};

pub const ID: &str = "driver:verify";

pub struct Verify {
    pub target: DriverTarget,
    pub persistence: bool,
    /// `[secure_boot] cert`: the certificate the module must be signed by.
    pub signing: Option<String>,
    /// `[verify] compute`: run CUDA work on every GPU.
    pub compute: bool,
    /// `[dcgm] diag`: the `dcgmi diag` level to run on the running
    /// system (0: none).
    pub dcgm_diag: u8,
    /// Where the result goes for the report.
    pub result: Arc<Mutex<Option<Verification>>>,
}

/// Runs every check on `facts` (gathered after the change).
pub fn verify(host: &Host, facts: &Facts, verify: &Verify) -> Verification {
    let live = host.root.is_host() && facts.os.booted();
    let wanted = format!("the plan wants {}", verify.target);
    let mut checks = vec![userspace(facts, &verify.target, &wanted)];
    if live {
        checks.push(module(host, facts));
        checks.push(pci(facts));
        checks.push(smi(host, facts));
        checks.push(persistenced(host, facts, verify.persistence));
    } else {
        checks.push(module_file(host, facts));
    }
    // Wherever a driver runs, a container's too: CUDA must compute.
    checks.extend(super::compute::checks(host, facts, verify.compute));
    if let Some(cert) = &verify.signing {
        checks.push(super::signature::signature(host, facts, cert, live));
    }
    if live && verify.dcgm_diag > 0 {
        checks.push(super::dcgm_diag::diag(host, verify.dcgm_diag));
    }
    Verification::of(checks)
}

/// `provision verify`: the host as it is, no plan. The user space must be
/// the loaded module's release; on the running system the module, the
/// PCI bindings and nvidia-smi; wherever a driver runs (a container's
/// too), CUDA computing on every GPU. nvidia-smi and the compute check
/// run side by side.
pub fn standalone(host: &Host, facts: &Facts, compute: bool) -> Verification {
    let live = host.root.is_host() && facts.os.booted();
    let Some(release) = facts.driver_version().map(str::to_string) else {
        return Verification::of(vec![check(
            "driver",
            Some(false),
            "no NVIDIA driver is loaded or installed here",
        )]);
    };
    let wanted = match facts.kernel_driver.version {
        Some(_) => format!("the loaded module is {release}"),
        None => format!("no module loaded; libcuda is {release}"),
    };
    let target = DriverTarget::Version(crate::plan::DriverVersion(release));
    let mut checks = vec![userspace(facts, &target, &wanted)];
    let (smi, computed) = std::thread::scope(|scope| {
        let computed = scope.spawn(|| super::compute::checks(host, facts, compute));
        let smi = (host.root.is_host() && facts.kernel_driver.version.is_some())
            .then(|| smi(host, facts));
        (smi, computed.join().unwrap_or_default())
    });
    if live {
        checks.push(module(host, facts));
        checks.push(pci(facts));
    } else if facts.os.container.is_none() {
        checks.push(module_file(host, facts));
    }
    checks.extend(smi);
    checks.extend(computed);
    Verification::of(checks)
}

fn userspace(facts: &Facts, target: &DriverTarget, wanted: &str) -> VerifyCheck {
    let libcuda = facts.user_driver.version.as_deref();
    let nvml = facts
        .user_driver
        .nvml
        .as_ref()
        .and_then(|l| l.version.as_deref());
    let evidence = format!(
        "libcuda {} ({}), libnvidia-ml {}",
        libcuda.unwrap_or("missing"),
        facts
            .user_driver
            .libcuda
            .as_deref()
            .unwrap_or("not on the loader path"),
        nvml.unwrap_or("missing")
    );
    let passed = match (libcuda, nvml) {
        (Some(cuda), Some(ml)) => cuda == ml && target.accepts(cuda),
        (Some(cuda), None) => target.accepts(cuda),
        _ => false,
    };
    check("userspace", Some(passed), format!("{evidence}; {wanted}"))
}

fn module(host: &Host, facts: &Facts) -> VerifyCheck {
    let proc_version = facts.kernel_driver.version.as_deref();
    let sys_version = host
        .root
        .read_trimmed("/sys/module/nvidia/version")
        .ok()
        .flatten();
    let userspace = facts.kernel_driver.userspace.as_deref();
    let evidence = format!(
        "/proc/driver/nvidia/version {}, /sys/module/nvidia/version {}, user space {}",
        proc_version.unwrap_or("absent"),
        sys_version.as_deref().unwrap_or("absent"),
        userspace.unwrap_or("unknown")
    );
    let passed = proc_version.is_some()
        && proc_version == userspace
        && sys_version
            .as_deref()
            .is_none_or(|v| Some(v) == proc_version);
    check("module", Some(passed), evidence)
}

fn pci(facts: &Facts) -> VerifyCheck {
    if facts.gpus.is_empty() {
        return check("pci", Some(true), "no NVIDIA PCI function on this host");
    }
    let unbound: Vec<String> = facts
        .gpus
        .iter()
        .filter(|g| g.driver.as_deref() != Some("nvidia"))
        .map(|g| {
            format!(
                "{} bound to {}",
                g.address,
                g.driver.as_deref().unwrap_or("nothing")
            )
        })
        .collect();
    if unbound.is_empty() {
        check(
            "pci",
            Some(true),
            format!("{} NVIDIA function(s) bound to nvidia", facts.gpus.len()),
        )
    } else {
        check("pci", Some(false), unbound.join("; "))
    }
}

fn smi(host: &Host, facts: &Facts) -> VerifyCheck {
    if !host.has_tool("nvidia-smi") {
        return check("nvidia-smi", None, "nvidia-smi is not installed");
    }
    match host.runner.run(&Cmd::read("nvidia-smi").arg("-L")) {
        Ok(output) => {
            let listed = output
                .stdout
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count();
            let gpus = facts.gpu_devices().count();
            let first = output.tail.lines().next().unwrap_or("").to_string();
            let passed = output.success() && listed >= gpus.max(1);
            check(
                "nvidia-smi",
                Some(passed),
                format!(
                    "`nvidia-smi -L`: exit {}, {listed} GPU(s) listed: {first}",
                    output.code.unwrap_or(-1)
                ),
            )
        }
        Err(error) => check("nvidia-smi", Some(false), error.to_string()),
    }
}

fn persistenced(host: &Host, facts: &Facts, wanted: bool) -> VerifyCheck {
    if !wanted {
        return check("persistence", None, "[driver] persistence = false");
    }
    if !facts.services.systemd || !host.has_tool("systemctl") {
        return check("persistence", None, "no systemd on this host");
    }
    // A daemon just (re)started may not have opened the devices yet.
    let mut holders = facts.holders.processes.clone();
    let started = std::time::Instant::now();
    while facts.services.is_active(PERSISTENCED)
        && !holders
            .iter()
            .any(|p| p.unit.as_deref() == Some(PERSISTENCED))
        && started.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
        holders = crate::facts::holders::gather(&host.root).processes;
    }
    let process = holders
        .iter()
        .find(|p| p.unit.as_deref() == Some(PERSISTENCED));
    match process {
        Some(p) if !p.cmdline.contains("--no-persistence-mode") => check(
            "persistence",
            Some(true),
            format!("{PERSISTENCED} runs as pid {}: {}", p.pid, p.cmdline),
        ),
        Some(p) => check(
            "persistence",
            Some(false),
            format!(
                "pid {} runs with --no-persistence-mode: {}",
                p.pid, p.cmdline
            ),
        ),
        None if facts.services.is_active(PERSISTENCED) => check(
            "persistence",
            Some(false),
            format!("{PERSISTENCED} runs but holds no GPU device"),
        ),
        None => check(
            "persistence",
            Some(false),
            format!("{PERSISTENCED} is not running"),
        ),
    }
}

/// An image: the module DKMS (or a package) built for its kernels.
fn module_file(host: &Host, facts: &Facts) -> VerifyCheck {
    let built: Vec<(&str, &str)> = facts
        .os
        .kernels
        .iter()
        .filter_map(|k| k.nvidia_module.as_deref().map(|m| (k.release.as_str(), m)))
        .collect();
    if built.is_empty() {
        return check(
            "module",
            None,
            "no nvidia module file for the image's kernels (built at its first boot, or not a booted host)",
        );
    }
    let userspace = facts.user_driver.version.as_deref();
    let mut evidence = Vec::new();
    let mut passed = true;
    for (kernel, path) in built {
        let cmd = Cmd::read("modinfo").args(["-F", "version", path]);
        let version = host
            .runner
            .run(&cmd)
            .ok()
            .filter(|o| o.success())
            .map(|o| o.stdout.trim().to_string());
        passed &= version.is_some() && version.as_deref() == userspace;
        let missing = if host.root.exists(path) {
            "has no version modinfo can read"
        } else {
            "is missing"
        };
        evidence.push(format!(
            "{kernel}: {path} {}",
            version.as_deref().unwrap_or(missing)
        ));
    }
    check("module", Some(passed), evidence.join("; "))
}

impl Step for Verify {
    fn id(&self) -> String {
        ID.into()
    }

    fn check(&self, _ctx: &Context) -> Result<Check, StepError> {
        Ok(Check::Pending(Change {
            action: Action::None,
            summary: "verify: module and user space agree, GPUs bound, nvidia-smi -L, persistence"
                .into(),
            diff: Diff::None,
            commands: vec!["nvidia-smi -L".into()],
        }))
    }

    fn apply(&self, ctx: &Context, _journal: &mut Journal) -> Result<(), StepError> {
        let result = verify(ctx.host, ctx.facts, self);
        let failed: Vec<String> = result
            .checks
            .iter()
            .filter(|c| c.passed == Some(false))
            .map(|c| format!("{}: {}", c.name, c.evidence))
            .collect();
        if let Ok(mut slot) = self.result.lock() {
            *slot = Some(result);
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(StepError::Failed(format!(
                "verify failed: {}",
                failed.join("; ")
            )))
        }
    }

    fn transient(&self) -> bool {
        true
    }
}
