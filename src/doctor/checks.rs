//! The findings, one function per area: each reads the facts (and, for a
//! few questions only a program answers, the runner) and pushes what is wrong.

use super::{Finding, Severity, evidence};
use crate::compat::host;
use crate::compat::knowledge::Knowledge;
use crate::compat::rules::{self, Target, Verdict};
use crate::facts::Facts;
use crate::host::{Cmd, Host};
use crate::version::Dotted;

/// A GPU server without a display: every GPU is a 3D controller (0x0302)
/// or a data-center part.
fn headless(facts: &Facts) -> bool {
    let mut gpus = facts.gpu_devices().peekable();
    gpus.peek().is_some()
        && gpus.all(|g| g.class.starts_with("0x0302") || g.datacenter == Some(true))
}

/// `nvidia-smi`'s persistence mode, when it can be asked.
fn persistence_mode(host: &Host) -> Result<String, String> {
    let cmd =
        Cmd::read("nvidia-smi").args(["--query-gpu=persistence_mode", "--format=csv,noheader"]);
    let output = host.runner.run(&cmd).map_err(|e| e.to_string())?;
    if !output.success() {
        return Err(format!("`{cmd}` failed: {}", output.tail));
    }
    Ok(output
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", "))
}

/// Whether a module file carries a signature: signed modules end with
/// "~Module signature appended~\n" (kernel scripts/sign-file). Compressed
/// modules are signed before compression: ask modinfo.
fn module_signed(host: &Host, path: &str) -> Result<bool, String> {
    const MAGIC: &[u8] = b"~Module signature appended~\n";
    if path.ends_with(".ko") {
        let bytes = host.root.read_bytes(path).map_err(|e| e.to_string())?;
        return Ok(bytes.ends_with(MAGIC));
    }
    let cmd = Cmd::read("modinfo").args(["-F", "signer", path]);
    let output = host.runner.run(&cmd).map_err(|e| e.to_string())?;
    Ok(output.success() && !output.stdout.trim().is_empty())
}

/// Where DKMS keeps the key it signs modules with (dkms >= 3, Ubuntu's shim-signed).
const MOK_KEYS: &[&str] = &["/var/lib/dkms/mok.pub", "/var/lib/shim-signed/mok/MOK.der"];

/// The driver comes from the machine underneath (a container, or a VM image
/// with the driver mounted read-only at /usr/local/nvidia, as Kubernetes
/// GPU nodes do): boot-time settings of this root do not apply to it.
/// Facts decide it once (`os.container`, a driver mounted from outside
/// among its signs), so doctor and plan validation agree.
pub fn driver_from_host(facts: &Facts) -> bool {
    facts.os.container.is_some()
}

pub(super) fn no_driver(_host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    let nvidia_gpus: Vec<_> = facts.gpu_devices().collect();
    // A GPU without a driver.
    if !nvidia_gpus.is_empty()
        && facts.kernel_driver.version.is_none()
        && facts.kernel_driver.modules.is_empty()
    {
        findings.push(Finding {
            id: "no-kernel-driver".into(),
            severity: Severity::Warning,
            title: "NVIDIA GPUs are present but no NVIDIA kernel driver is loaded".into(),
            evidence: nvidia_gpus
                .iter()
                .map(|g| {
                    evidence(
                        format!("/sys/bus/pci/devices/{}/driver", g.address),
                        g.driver.clone().unwrap_or_else(|| "none".into()),
                    )
                })
                .collect(),
            remedy: "provision apply with a plan: [driver] branch = \"580\" (then reboot if nouveau held the GPU)".into(),
        });
    }
}

pub(super) fn nouveau(_host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    let from_host = driver_from_host(facts);
    let nvidia_gpus: Vec<_> = facts.gpu_devices().collect();
    // nouveau.
    let nouveau = &facts.nouveau;
    if nouveau.loaded == Some(true) {
        findings.push(Finding {
            id: "nouveau-loaded".into(),
            severity: Severity::Error,
            title: "nouveau is loaded: the NVIDIA module cannot bind the GPUs while it is".into(),
            evidence: vec![evidence("/sys/module/nouveau", "present")],
            remedy: "[nouveau] disable = true in the plan, provision apply, then reboot".into(),
        });
    }
    if !nouveau.bound.is_empty() {
        findings.push(Finding {
            id: "nouveau-bound".into(),
            severity: Severity::Error,
            title: format!("nouveau drives {}", nouveau.bound.join(", ")),
            evidence: nouveau
                .bound
                .iter()
                .map(|a| evidence(format!("/sys/bus/pci/devices/{a}/driver"), "nouveau"))
                .collect(),
            remedy: "[nouveau] disable = true in the plan, provision apply, then reboot".into(),
        });
    }
    if !nvidia_gpus.is_empty() && !nouveau.blacklisted && !from_host {
        findings.push(Finding {
            id: "nouveau-not-blacklisted".into(),
            severity: Severity::Warning,
            title: "nothing keeps nouveau from binding the GPUs at the next boot".into(),
            evidence: vec![evidence("/etc/modprobe.d, /usr/lib/modprobe.d, /proc/cmdline", "no `blacklist nouveau`")],
            remedy: "[nouveau] disable = true in the plan (provision writes /etc/modprobe.d/provision-nouveau.conf and rebuilds the initramfs)".into(),
        });
    }
    for image in &nouveau.initramfs {
        if image.contains_nouveau == Some(true) && image.blacklist_files.is_empty() {
            findings.push(Finding {
                id: "nouveau-in-initramfs".into(),
                severity: Severity::Warning,
                title: format!("{} carries nouveau.ko and no blacklist: nouveau loads before the root filesystem", image.path),
                evidence: vec![evidence(image.path.clone(), "nouveau.ko without a modprobe.d blacklist")],
                remedy: "[nouveau] disable = true in the plan: provision apply rebuilds the image (update-initramfs -u -k all / dracut -f --regenerate-all)".into(),
            });
        }
    }
}

/// Holders that still map a driver library other than the installed one
/// (a replaced file, or another version): they run the old user space.
fn old_library_users(facts: &Facts) -> Vec<(String, String)> {
    let installed = facts.kernel_driver.userspace.as_deref().unwrap_or_default();
    facts
        .holders
        .processes
        .iter()
        .filter_map(|h| {
            let old = h.libraries.iter().find(|l| {
                l.ends_with(" (deleted)") || (!installed.is_empty() && !l.contains(installed))
            })?;
            Some((
                format!("/proc/{}/maps", h.pid),
                format!("{} ({}) maps {old}", h.pid, h.command),
            ))
        })
        .collect()
}

pub(super) fn mismatch(_host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    // The loaded module against the installed userspace.
    if let Some(mismatch) = &facts.kernel_driver.mismatch {
        let holders: Vec<String> = facts
            .holders
            .processes
            .iter()
            .map(|h| format!("{} ({})", h.pid, h.command))
            .collect();
        let mut evidence_lines = vec![
            evidence(
                "/proc/driver/nvidia/version",
                facts.kernel_driver.version.clone().unwrap_or_default(),
            ),
            evidence(
                facts
                    .user_driver
                    .nvml
                    .as_ref()
                    .map(|l| l.path.clone())
                    .unwrap_or_else(|| "libnvidia-ml.so.1".into()),
                facts.kernel_driver.userspace.clone().unwrap_or_default(),
            ),
        ];
        evidence_lines.extend(
            old_library_users(facts)
                .into_iter()
                .map(|(file, text)| evidence(file, text)),
        );
        findings.push(Finding {
            id: "driver-library-mismatch".into(),
            severity: Severity::Error,
            title: mismatch.clone(),
            evidence: evidence_lines,
            remedy: if holders.is_empty() {
                "reload the module: modprobe -r nvidia_uvm nvidia_drm nvidia_modeset nvidia && modprobe nvidia (or reboot)".into()
            } else {
                format!(
                    "stop the processes holding the GPU ({}), then modprobe -r nvidia_uvm nvidia_drm nvidia_modeset nvidia && modprobe nvidia; or reboot",
                    holders.join(", ")
                )
            },
        });
    }
}

pub(super) fn gpu_support(_host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    let nvidia_gpus: Vec<_> = facts.gpu_devices().collect();
    // The driver must support the GPUs it runs.
    if let Some(version) = &facts.kernel_driver.version {
        for gpu in &nvidia_gpus {
            let Some((row, _)) = Knowledge::get().gpu(gpu.device_id(), gpu.subsystem.as_deref())
            else {
                continue;
            };
            let flavor = facts.kernel_driver.flavor.as_deref();
            if let Ok(answer) =
                rules::evaluate(version, &Target::Cuda("12.0".into()), Some(row), flavor)
            {
                for reason in answer.reasons.iter().filter(|r| {
                    r.row.starts_with("gpu ")
                        && !r.text.contains("forward compatibility")
                        && !r.text.contains("data-center")
                }) {
                    let (id, remedy) = if reason.text.contains("kernel module") {
                        let wanted = if flavor == Some("open") {
                            "proprietary"
                        } else {
                            "open"
                        };
                        (
                            "module-flavor-wrong-for-gpu",
                            format!(
                                "[driver] flavor = \"{wanted}\" (or \"auto\", which picks by GPU), then provision apply: the {wanted} module binds this GPU"
                            ),
                        )
                    } else {
                        ("driver-does-not-support-gpu", "plan a driver branch and flavour the GPU supports ([driver] branch, flavor = \"auto\")".to_string())
                    };
                    findings.push(Finding {
                        id: id.into(),
                        severity: Severity::Error,
                        title: reason.text.clone(),
                        evidence: vec![
                            evidence("/proc/driver/nvidia/version", version.clone()),
                            evidence(
                                format!("/sys/bus/pci/devices/{}", gpu.address),
                                gpu.pci_id.clone(),
                            ),
                        ],
                        remedy,
                    });
                }
            }
        }
    }
}

pub(super) fn cuda(_host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    // Toolkits against the driver, and compat libraries.
    if facts.driver_version().is_some() {
        let report = host::report(facts);
        for check in &report.checks {
            let Some((severity, id, remedy)) = compat_finding(check) else {
                continue;
            };
            findings.push(Finding {
                id: id.into(),
                severity,
                title: match default_label(facts, &check.subject) {
                    Some(label) => format!("{label}: {}", check.summary),
                    None => format!("{}: {}", check.subject, check.summary),
                },
                evidence: vec![
                    evidence(
                        "/proc/driver/nvidia/version",
                        report.driver.clone().unwrap_or_default(),
                    ),
                    evidence(
                        check
                            .subject
                            .trim_start_matches("toolkit ")
                            .trim_start_matches("compat "),
                        check.answer.cuda_label.clone(),
                    ),
                ],
                remedy,
            });
        }
    }
    compat_shadows_driver(facts, findings);
}

/// The branch of the lowest driver that runs the answer natively.
fn native_branch(answer: &rules::Answer) -> u32 {
    answer
        .min_driver
        .as_deref()
        .and_then(Dotted::parse)
        .map(|d| d.major())
        .unwrap_or(0)
}

/// What one check of `compat` means as a finding: its severity, id and
/// remedy; None when there is nothing to fix.
fn compat_finding(check: &host::Check) -> Option<(Severity, &'static str, String)> {
    let answer = &check.answer;
    let package = answer.package.clone().unwrap_or_default();
    if check.stale {
        // Useless off the loader path; error 803 on it.
        let severity = if check.on_loader_path == Some(true) {
            Severity::Error
        } else {
            Severity::Warning
        };
        return Some((
            severity,
            "compat-older-than-driver",
            format!(
                "remove it: apt-get purge {package} (dnf remove {package}); with provision, [compat] package = \"auto\" manages it"
            ),
        ));
    }
    let is_compat = check.on_loader_path.is_some();
    match (answer.verdict, is_compat) {
        (Verdict::NeedsCompatPackage, true) => Some((
            Severity::Warning,
            "compat-not-on-loader-path",
            format!(
                "[compat] package = \"{package}\" (provision puts its compat/ directory on the loader path)"
            ),
        )),
        (Verdict::Incompatible, false) => Some((
            Severity::Error,
            "toolkit-newer-than-driver",
            format!(
                "[driver] branch = \"{}\" (or newer), or an older toolkit; a compat package cannot help here",
                native_branch(answer)
            ),
        )),
        (Verdict::NeedsCompatPackage, false) => {
            let served = answer.reasons.iter().any(|r| {
                r.text
                    .contains("is installed, newer than the driver and on the loader path")
            });
            (!served).then(|| {
                (
                    Severity::Error,
                    "toolkit-newer-than-driver",
                    format!(
                        "[compat] package = \"auto\" (installs {package}), or [driver] branch = \"{}\"",
                        native_branch(answer)
                    ),
                )
            })
        }
        (Verdict::Ambiguous, _) => Some((
            Severity::Warning,
            "compatibility-ambiguous",
            format!(
                "the sources disagree ({}): test the workload, or plan a driver that runs it natively",
                answer.readings.join("; ")
            ),
        )),
        (Verdict::Compatible | Verdict::Incompatible, _) => None,
    }
}

/// A compat libcuda first on the loader path that is not newer than the
/// driver (the loader's own view, beside the compat packages' checks).
fn compat_shadows_driver(facts: &Facts, findings: &mut Vec<Finding>) {
    if let Some(compat) = &facts.user_driver.compat_first
        && let (Some(version), Some(driver)) = (
            compat.version.as_deref().and_then(Dotted::parse),
            facts.user_driver.version.as_deref().and_then(Dotted::parse),
        )
        && version <= driver
        && !findings
            .iter()
            .any(|f| f.id == "compat-older-than-driver" && f.severity == Severity::Error)
    {
        findings.push(Finding {
            id: "compat-shadows-driver".into(),
            severity: Severity::Error,
            title: format!("{} comes first on the loader path but is not newer than the driver: CUDA fails with error 803", compat.path),
            evidence: vec![evidence(compat.path.clone(), compat.version.clone().unwrap_or_default()), evidence("libcuda.so.1", driver.to_string())],
            remedy: "take its directory off the loader path (/etc/ld.so.conf.d) and run ldconfig, or remove the compat package".into(),
        });
    }
}

/// "/usr/local/cuda (toolkit /usr/local/cuda-13.0)" when the subject is the
/// default toolkit: what builds and programs get without asking.
fn default_label(facts: &Facts, subject: &str) -> Option<String> {
    let path = subject.strip_prefix("toolkit ")?;
    (facts.toolkits.default.as_deref() == Some(path))
        .then(|| format!("/usr/local/cuda ({subject}), the default toolkit"))
}

pub(super) fn environment(_host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    // PATH and the loader path against /usr/local/cuda.
    if let Some(default) = &facts.toolkits.default {
        let env = &facts.environment;
        // Two toolkits on the loader path are loader-two-toolkits' to tell.
        let loader: &[crate::facts::environment::Entry] =
            if super::libraries::two_toolkits_on_loader(facts) {
                &[]
            } else {
                &env.loader
            };
        for entry in env
            .path
            .iter()
            .chain(&env.cuda_home)
            .chain(&env.library_path)
            .chain(loader)
        {
            if let Some(toolkit) = &entry.toolkit
                && toolkit != default
                && !facts
                    .toolkits
                    .installed
                    .iter()
                    .any(|t| &t.path == toolkit && t.compat_only)
            {
                findings.push(Finding {
                    id: "environment-other-toolkit".into(),
                    severity: Severity::Warning,
                    title: format!("{} points at {toolkit}, but /usr/local/cuda is {default}", entry.file),
                    evidence: vec![evidence(entry.file.clone(), entry.value.clone()), evidence("/usr/local/cuda", default.clone())],
                    remedy: format!(
                        "make one toolkit the default: [toolkit] version = \"{}\", default = true (provision owns PATH and the loader path), and remove {}",
                        default.trim_start_matches("/usr/local/cuda-"),
                        entry.file
                    ),
                });
            }
        }
    }
}

pub(super) fn persistence(host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    let from_host = driver_from_host(facts);
    // Persistence on a headless server.
    if headless(facts)
        && !from_host
        && facts.kernel_driver.version.is_some()
        && !facts
            .holders
            .services
            .iter()
            .any(|s| s.name == "nvidia-persistenced")
    {
        match persistence_mode(host) {
            Ok(mode) if mode.split(", ").all(|m| m == "Enabled") => {}
            Ok(mode) => findings.push(Finding {
                id: "persistence-off".into(),
                severity: Severity::Warning,
                title: "persistence is off on a headless GPU server: every CUDA start re-initializes the GPUs (seconds), and their state is lost between jobs".into(),
                evidence: vec![evidence("nvidia-smi --query-gpu=persistence_mode", mode), evidence("/proc/*/comm", "no nvidia-persistenced")],
                remedy: "systemctl enable --now nvidia-persistenced".into(),
            }),
            Err(reason) => findings.push(Finding {
                id: "persistence-unknown".into(),
                severity: Severity::Info,
                title: "nvidia-persistenced is not running, and persistence mode could not be asked".into(),
                evidence: vec![evidence("/proc/*/comm", "no nvidia-persistenced"), evidence("nvidia-smi", reason)],
                remedy: "check with nvidia-smi -q | grep Persistence; enable with systemctl enable --now nvidia-persistenced".into(),
            }),
        }
    }
}

pub(super) fn secure_boot(host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    // Secure Boot against unsigned DKMS modules.
    if facts.os.secure_boot == Some(true) {
        for kernel in &facts.os.kernels {
            let Some(module) = &kernel.nvidia_module else {
                continue;
            };
            let key = MOK_KEYS.iter().find(|k| host.root.exists(k));
            match module_signed(host, module) {
                Ok(false) => findings.push(Finding {
                    id: "secure-boot-unsigned-module".into(),
                    severity: Severity::Error,
                    title: format!("Secure Boot is on and {module} is not signed: the kernel refuses to load it"),
                    evidence: vec![
                        evidence(facts.os.secure_boot_source.clone().unwrap_or_default(), "enabled"),
                        evidence(module.clone(), "no signature"),
                        evidence(MOK_KEYS.join(" or "), key.map(|k| k.to_string()).unwrap_or_else(|| "no DKMS signing key".into())),
                    ],
                    remedy: match key {
                        Some(key) => format!("enroll the DKMS key (mokutil --import {key}, then reboot and confirm), and rebuild: dkms autoinstall -k {}", kernel.release),
                        None => format!("create and enroll a signing key (dkms generate_mok; mokutil --import /var/lib/dkms/mok.pub; reboot), then dkms autoinstall -k {}", kernel.release),
                    },
                }),
                Ok(true) if key.is_none() => findings.push(Finding {
                    id: "secure-boot-key-unknown".into(),
                    severity: Severity::Warning,
                    title: format!("{module} is signed, but no DKMS signing key was found to check it is enrolled"),
                    evidence: vec![evidence(module.clone(), "signed")],
                    remedy: "mokutil --list-enrolled | grep -i -A2 dkms".into(),
                }),
                _ => {}
            }
        }
    }
}

/// The dnf-automatic timer that installs updates, if one is enabled:
/// dnf-automatic-install.timer always applies; dnf-automatic.timer when
/// automatic.conf says apply_updates = yes.
fn dnf_automatic_applying(host: &Host) -> Option<(String, String)> {
    const WANTS: &str = "/etc/systemd/system/timers.target.wants";
    let conf = "/etc/dnf/automatic.conf";
    let applies = host.root.read_string(conf).is_ok_and(|text| {
        text.lines().any(|l| {
            let l = l.replace(' ', "");
            matches!(
                l.as_str(),
                "apply_updates=yes" | "apply_updates=true" | "apply_updates=1"
            )
        })
    });
    for (timer, needs_conf) in [
        ("dnf-automatic-install.timer", false),
        ("dnf-automatic.timer", true),
        ("dnf5-automatic.timer", true),
    ] {
        let link = format!("{WANTS}/{timer}");
        if host.root.exists(&link) && (!needs_conf || applies) {
            let why = if needs_conf {
                format!("enabled; {conf}: apply_updates = yes")
            } else {
                "enabled".into()
            };
            return Some((link, why));
        }
    }
    None
}

/// Whether dnf keeps the driver where it is: a versionlock entry or an
/// exclude for an NVIDIA driver package.
fn dnf_driver_locked(host: &Host) -> bool {
    let driver_line = |l: &str| {
        let l = l.trim();
        !l.starts_with('#') && (l.contains("nvidia") || l.contains("cuda-drivers"))
    };
    let locked = host
        .root
        .read_string("/etc/dnf/plugins/versionlock.list")
        .is_ok_and(|t| t.lines().any(driver_line));
    let excluded = host.root.read_string("/etc/dnf/dnf.conf").is_ok_and(|t| {
        t.lines()
            .any(|l| l.trim_start().starts_with("exclude") && driver_line(l))
    });
    locked || excluded
}

/// dnf-automatic installing updates while nothing locks the driver.
fn dnf_automatic(host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    if facts.kernel_driver.version.is_none() && facts.packages.gpu.is_empty() {
        return;
    }
    let Some((timer, why)) = dnf_automatic_applying(host) else {
        return;
    };
    if dnf_driver_locked(host) {
        return;
    }
    findings.push(Finding {
        id: "dnf-automatic-unlocked".into(),
        severity: Severity::Warning,
        title: "dnf-automatic installs updates and nothing locks the driver: its next run can replace the driver under the running module (then NVML reports a version mismatch)".into(),
        evidence: vec![
            evidence(timer, why),
            evidence("/etc/dnf/plugins/versionlock.list", "no NVIDIA driver package locked"),
            evidence("/proc/driver/nvidia/version", facts.kernel_driver.version.clone().unwrap_or_default()),
        ],
        remedy: "let provision lock the driver (provision apply writes versionlock entries), or: dnf versionlock add 'nvidia-driver*' 'kmod-nvidia*' 'cuda-drivers*'".into(),
    });
}

pub(super) fn upgrades(host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    dnf_automatic(host, facts, findings);
    // Automatic upgrades against unheld driver packages.
    if facts.packages.unattended_upgrades == Some(true) {
        let disabled = host
            .root
            .read_string("/etc/apt/apt.conf.d/20auto-upgrades")
            .map(|t| t.contains("Unattended-Upgrade \"0\""))
            .unwrap_or(false);
        let unheld: Vec<String> = facts
            .packages
            .gpu
            .iter()
            .filter(|p| {
                !p.held
                    && (p.name.contains("nvidia")
                        || p.name.starts_with("libcuda")
                        || p.name.starts_with("cuda-drivers"))
            })
            .map(|p| p.name.clone())
            .collect();
        if !disabled && !unheld.is_empty() {
            findings.push(Finding {
                id: "unattended-upgrades-unheld".into(),
                severity: Severity::Warning,
                title: "automatic upgrades can replace the driver under the running module (then NVML reports a version mismatch)".into(),
                evidence: vec![
                    evidence("/var/lib/dpkg/status", format!("unattended-upgrades installed; not held: {}", unheld.join(", "))),
                ],
                remedy: format!("let provision hold and pin the driver (provision apply), or: apt-mark hold {}", unheld.join(" ")),
            });
        }
    }
}

pub(super) fn headers(host: &Host, facts: &Facts, findings: &mut Vec<Finding>) {
    // DKMS needs headers for every installed kernel.
    let dkms = !crate::facts::driver::dkms_driver_modules(&host.root).is_empty()
        || facts.packages.gpu.iter().any(|p| p.name.contains("dkms"))
        || facts.os.kernels.iter().any(|k| {
            k.nvidia_module
                .as_deref()
                .is_some_and(|m| m.contains("/dkms/") || m.contains("/extra/"))
        });
    if dkms {
        for kernel in facts.os.kernels.iter().filter(|k| !k.headers) {
            findings.push(Finding {
                id: "headers-missing".into(),
                severity: Severity::Error,
                title: format!("kernel {} has no headers: DKMS cannot build the NVIDIA module for it, and booting it leaves the GPUs without a driver", kernel.release),
                evidence: vec![evidence(format!("/lib/modules/{}/build", kernel.release), "absent")],
                remedy: match facts.os.family {
                    Some(crate::facts::os::Family::Rhel) => format!("dnf install kernel-devel-{}", kernel.release),
                    _ => format!("apt-get install linux-headers-{}", kernel.release),
                },
            });
        }
    }
}
