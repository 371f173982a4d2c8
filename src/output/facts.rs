//! Human form of `provision detect`: one block per layer, the three version
//! numbers side by side, every unknown with its reason.

use std::fmt::Write as _;

use super::Style;
use crate::facts::{Facts, Unknown};

fn or_unknown(value: Option<&str>, unknown: &Unknown, field: &str) -> String {
    match value {
        Some(value) => value.to_string(),
        None => match unknown.get(field) {
            Some(reason) => format!("unknown ({reason})"),
            None => "none".to_string(),
        },
    }
}

fn yes_no(value: Option<bool>, unknown: &Unknown, field: &str) -> String {
    match value {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => or_unknown(None, unknown, field),
    }
}

pub fn facts_human(facts: &Facts, style: Style) -> String {
    let mut out = String::new();
    os_section(&mut out, facts, style);
    gpus_section(&mut out, facts, style);
    nouveau_section(&mut out, facts, style);
    versions_section(&mut out, facts, style);
    environment_section(&mut out, facts, style);
    holders_section(&mut out, facts, style);
    packages_section(&mut out, facts, style);
    out
}

fn title(out: &mut String, style: Style, text: &str) {
    let _ = writeln!(out, "{}", style.paint("1", text));
}

/// The OS: distribution, kernels, Secure Boot, init, container.
fn os_section(out: &mut String, facts: &Facts, style: Style) {
    let os = &facts.os;
    title(out, style, "OS");
    let _ = writeln!(
        out,
        "  {} ({}; family {})",
        os.pretty_name.as_deref().unwrap_or("unknown distribution"),
        or_unknown(os.id.as_deref(), &os.unknown, "id"),
        os.family
            .map(|f| format!("{f:?}").to_lowercase())
            .unwrap_or_else(|| "unknown".into())
    );
    let _ = writeln!(
        out,
        "  running kernel: {}",
        or_unknown(os.running_kernel.as_deref(), &os.unknown, "running_kernel")
    );
    for kernel in &os.kernels {
        let _ = writeln!(
            out,
            "  kernel {}{}: headers {}, nvidia module {}, initramfs {}",
            kernel.release,
            if kernel.running { " (running)" } else { "" },
            if kernel.headers { "yes" } else { "no" },
            kernel.nvidia_module.as_deref().unwrap_or("none"),
            kernel.initramfs.as_deref().unwrap_or("none"),
        );
    }
    let _ = writeln!(
        out,
        "  secure boot: {}",
        yes_no(os.secure_boot, &os.unknown, "secure_boot")
    );
    let _ = writeln!(
        out,
        "  init: {}",
        or_unknown(os.init.as_deref(), &os.unknown, "init")
    );
    if let Some(container) = &os.container {
        let _ = writeln!(
            out,
            "  container: {container} ({})",
            os.container_signs.join("; ")
        );
    }
    if let Some(hypervisor) = &os.virtualization {
        let _ = writeln!(out, "  virtual machine: {hypervisor}");
    }
    for mount in &os.read_only_driver_mounts {
        let _ = writeln!(out, "  driver mounted read-only at {mount}");
    }
}

/// Every NVIDIA PCI function.
fn gpus_section(out: &mut String, facts: &Facts, style: Style) {
    title(out, style, "GPUs");
    if facts.gpus.is_empty() {
        let _ = writeln!(
            out,
            "  none found{}",
            facts
                .unknown
                .get("gpus")
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    for gpu in &facts.gpus {
        let _ = writeln!(
            out,
            "  {} {} [{}] {}, compute {}, {}, driver {}, NUMA {}",
            gpu.address,
            gpu.name.as_deref().unwrap_or("unknown GPU"),
            gpu.pci_id,
            gpu.architecture
                .as_deref()
                .unwrap_or("unknown architecture"),
            gpu.compute_capability.as_deref().unwrap_or("?"),
            match gpu.datacenter {
                Some(true) => "data center",
                Some(false) => "not data center",
                None => "class unknown",
            },
            gpu.driver.as_deref().unwrap_or("none bound"),
            gpu.numa_node
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
        );
    }
}

/// nouveau: loaded, bound, blacklisted, in each initramfs.
fn nouveau_section(out: &mut String, facts: &Facts, style: Style) {
    let nouveau = &facts.nouveau;
    title(out, style, "nouveau");
    let _ = writeln!(
        out,
        "  loaded {}, bound to {}, blacklisted {}",
        yes_no(nouveau.loaded, &nouveau.unknown, "loaded"),
        if nouveau.bound.is_empty() {
            "no GPU".to_string()
        } else {
            nouveau.bound.join(", ")
        },
        if nouveau.blacklisted { "yes" } else { "no" },
    );
    for file in &nouveau.files {
        let _ = writeln!(
            out,
            "  {}: blacklist {}, modeset=0 {}",
            file.path,
            file.blacklist || file.install_disabled,
            file.modeset_off
        );
    }
    for word in &nouveau.cmdline {
        let _ = writeln!(out, "  kernel command line: {word}");
    }
    for image in &nouveau.initramfs {
        let state = match (image.contains_nouveau, &image.reason) {
            (_, Some(reason)) => format!("unknown ({reason})"),
            (Some(module), None) => format!(
                "nouveau.ko {}, blacklist {}",
                if module { "present" } else { "absent" },
                if image.blacklist_files.is_empty() {
                    "missing".to_string()
                } else {
                    image.blacklist_files.join(", ")
                }
            ),
            (None, None) => "unknown".into(),
        };
        let _ = writeln!(out, "  initramfs {}: {state}", image.path);
    }
}

/// The three layers: module, user-mode driver, toolkits.
fn versions_section(out: &mut String, facts: &Facts, style: Style) {
    let kernel = &facts.kernel_driver;
    let user = &facts.user_driver;
    title(out, style, "Versions (the three layers)");
    let _ = writeln!(
        out,
        "  kernel module (nvidia.ko):        {}{}",
        or_unknown(kernel.version.as_deref(), &kernel.unknown, "version"),
        kernel
            .flavor
            .as_deref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  user-mode driver (libcuda):       {} -> supports CUDA {} (nvidia-smi's \"CUDA Version\")",
        or_unknown(user.version.as_deref(), &user.unknown, "version"),
        or_unknown(user.cuda_version.as_deref(), &user.unknown, "cuda_version"),
    );
    if let Some(compat) = &user.compat_first {
        let _ = writeln!(
            out,
            "  {} applications load {} first ({}), so they get CUDA {}",
            style.paint("33", "note:"),
            compat.path,
            compat.version.as_deref().unwrap_or("unknown version"),
            user.effective_cuda_version.as_deref().unwrap_or("unknown"),
        );
    }
    toolkit_lines(out, facts);
    if let Some(mismatch) = &kernel.mismatch {
        let _ = writeln!(out, "  {} {mismatch}", style.paint("31", "MISMATCH:"));
    }
    if let Some(libcuda) = &user.libcuda {
        let _ = writeln!(out, "  libcuda.so.1 found at {libcuda}");
    }
}

/// Each toolkit and compat directory, with its libcuda against the driver.
fn toolkit_lines(out: &mut String, facts: &Facts) {
    let default = facts.toolkits.default.as_deref();
    for toolkit in facts.toolkits.installed.iter().filter(|t| t.compat_only) {
        if let Some(compat) = &toolkit.compat {
            let _ = writeln!(
                out,
                "  compat only {}: libcuda {} ({} than the driver{})",
                toolkit.path,
                compat.version.as_deref().unwrap_or("unknown"),
                compat.against_driver.as_deref().unwrap_or("unknown"),
                if compat.on_loader_path {
                    ", ON the loader path"
                } else {
                    ", not on the loader path"
                }
            );
        }
    }
    for toolkit in facts.toolkits.installed.iter().filter(|t| !t.compat_only) {
        let _ = writeln!(
            out,
            "  toolkit {}{}: release {}, nvcc {}, runtime {}",
            toolkit.path,
            if Some(toolkit.path.as_str()) == default {
                " (/usr/local/cuda)"
            } else {
                ""
            },
            or_unknown(toolkit.release.as_deref(), &toolkit.unknown, "release"),
            or_unknown(toolkit.nvcc.as_deref(), &toolkit.unknown, "nvcc"),
            toolkit.runtime.as_deref().unwrap_or("unknown"),
        );
        if let Some(compat) = &toolkit.compat {
            let _ = writeln!(
                out,
                "    compat libcuda {} ({} than the driver{})",
                compat.version.as_deref().unwrap_or("unknown"),
                compat.against_driver.as_deref().unwrap_or("unknown"),
                if compat.on_loader_path {
                    ", ON the loader path"
                } else {
                    ", not on the loader path"
                }
            );
        }
    }
    if facts.toolkits.installed.iter().all(|t| t.compat_only) {
        let _ = writeln!(out, "  toolkit: none under /usr/local");
    }
}

/// PATH, CUDA_HOME, the loader path and where each is set.
fn environment_section(out: &mut String, facts: &Facts, style: Style) {
    let env = &facts.environment;
    title(out, style, "Environment");
    for entry in env
        .path
        .iter()
        .chain(&env.cuda_home)
        .chain(&env.library_path)
        .chain(&env.loader)
    {
        let _ = writeln!(
            out,
            "  {} -> {}{}",
            entry.file,
            entry.value,
            entry
                .toolkit
                .as_deref()
                .map(|t| format!(" (toolkit {t})"))
                .unwrap_or_default()
        );
    }
}

/// Processes and services holding the GPU.
fn holders_section(out: &mut String, facts: &Facts, style: Style) {
    let holders = &facts.holders;
    title(out, style, "Processes holding the GPU");
    if holders.processes.is_empty() {
        let _ = writeln!(out, "  none ({} process(es) scanned)", holders.scanned);
    }
    for holder in &holders.processes {
        let _ = writeln!(
            out,
            "  pid {} {} holds {}{}{}",
            holder.pid,
            holder.command,
            holder.devices.join(", "),
            holder
                .unit
                .as_deref()
                .map(|u| format!(", unit {u}"))
                .unwrap_or_default(),
            holder
                .container
                .as_deref()
                .map(|c| format!(", container {c}"))
                .unwrap_or_default(),
        );
    }
    for service in &holders.services {
        let _ = writeln!(
            out,
            "  service {} running (pid {})",
            service.name, service.pid
        );
    }
}

/// The GPU packages, held or not, and where they came from.
fn packages_section(out: &mut String, facts: &Facts, style: Style) {
    let packages = &facts.packages;
    title(out, style, "Packages");
    if let Some(reason) = packages.unknown.get("gpu") {
        let _ = writeln!(out, "  unknown ({reason})");
    }
    for package in &packages.gpu {
        let origin = package
            .origin
            .as_deref()
            .map(|o| format!(" from {o}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {}{}{origin}",
            package.name,
            package.version,
            if package.held { " (held)" } else { "" }
        );
    }
    // `--origins` asked and could not be answered: said, not dropped.
    if let Some(reason) = packages
        .unknown
        .get("origin")
        .filter(|_| packages.gpu.iter().all(|p| p.origin.is_none()))
        .filter(|r| !r.starts_with("not asked"))
    {
        let _ = writeln!(out, "  origins: unknown ({reason})");
    }
}
