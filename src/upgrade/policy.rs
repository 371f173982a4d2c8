//! `[upgrade]` applied to the facts: which holders are stopped, terminated
//! or block, which services stop and start, which modules unload in which
//! order, and whether the new module can be loaded now or waits for a
//! reboot. Pure: facts in, a [`Window`] out.

use super::{HolderAction, ModuleVersions, Swap, Window, WindowHolder};
use crate::facts::Facts;
use crate::facts::driver::NvidiaModule;
use crate::facts::holders::Holder;
use crate::host::Root;
use crate::plan::schema::NVIDIA_DAEMONS;
use crate::plan::{Drain, HolderPolicy, Reload, UpgradeSpec};

/// provision's own pid and its parents: never terminated, never stopped.
pub fn ancestry_of_self(root: &Root) -> Vec<u32> {
    if !root.is_host() {
        return Vec::new();
    }
    crate::facts::holders::ancestry(root, std::process::id())
}

/// Services that keep running through a swap, yet read the driver once at
/// their start: Slurm's slurmd loads NVML for GPU autodetection.
const RESTART_AFTER_SWAP: [&str; 1] = ["slurmd.service"];

/// The window for `swap` on this host under `spec`. `own` is provision's
/// process and its parents.
pub fn window(facts: &Facts, spec: &UpgradeSpec, swap: &Swap, own: &[u32]) -> Window {
    let loaded = swap.before.is_some();
    let reboot_reason = reboot_reason(facts, spec, loaded);
    let live = reboot_reason.is_none();
    // A swap that waits for a reboot unloads nothing before it: the work
    // on the GPU runs on, nothing is stopped.
    let holders: Vec<WindowHolder> = match (loaded, live) {
        (false, _) => Vec::new(),
        (true, true) => facts
            .holders
            .processes
            .iter()
            .map(|holder| judge(holder, spec, own))
            .collect(),
        (true, false) => facts.holders.processes.iter().map(runs_on).collect(),
    };
    let stop = if loaded && live {
        services_to_stop(facts, spec, &holders)
    } else {
        Vec::new()
    };
    let unload = if loaded && live {
        unload_order(&facts.kernel_driver.modules)
    } else {
        Vec::new()
    };
    let load = match (live, loaded) {
        (false, _) => Vec::new(),
        (true, true) => unload.iter().rev().cloned().collect(),
        (true, false) => vec!["nvidia".to_string()],
    };
    let start: Vec<String> = if live {
        stop.iter().rev().cloned().collect()
    } else {
        Vec::new()
    };
    let restart = if loaded && live {
        RESTART_AFTER_SWAP
            .iter()
            .map(|u| u.to_string())
            .filter(|u| facts.services.is_active(u) && !start.contains(u))
            .collect()
    } else {
        Vec::new()
    };
    Window {
        module: ModuleVersions {
            before: swap.before.clone(),
            after: swap.after.clone(),
        },
        live,
        reboot_reason,
        holders,
        stop,
        unload,
        load,
        start,
        restart,
        cdi: Vec::new(),
        build_inside: None,
        phases: Vec::new(),
        unavailable_seconds: None,
        last: None,
    }
}

/// A holder that runs on until the reboot the swap waits for.
fn runs_on(holder: &Holder) -> WindowHolder {
    WindowHolder {
        pid: holder.pid,
        comm: holder.command.clone(),
        unit: holder.unit.clone(),
        container: holder.container.clone(),
        devices: holder.devices.clone(),
        action: HolderAction::RunsUntilReboot,
        reason: Some("runs on until the reboot: nothing is unloaded before it".into()),
    }
}

/// Why the drain takes care of a holder: a Slurm job (the drain waits
/// for it to end), or, with the plan's own drain_command, any work that
/// is not NVIDIA's daemons (that command's to end).
fn drained(holder: &Holder, spec: &UpgradeSpec, daemon: bool) -> Option<String> {
    if spec.drain_command.is_some() && !daemon {
        return Some(
            "the node is drained first ([upgrade] drain_command): its work ends before the window"
                .into(),
        );
    }
    match (&holder.job, spec.drain) {
        (Some(job), Drain::Slurm) => Some(format!(
            "Slurm job {job}: the node is drained first and the window opens once it ended"
        )),
        _ => None,
    }
}

/// One of NVIDIA's own daemons ("nvidia-persistenced.service").
fn nvidia_daemon(unit: &str) -> bool {
    NVIDIA_DAEMONS
        .iter()
        .any(|daemon| unit == format!("{daemon}.service"))
}

/// What the policy does to one holder.
fn judge(holder: &Holder, spec: &UpgradeSpec, own: &[u32]) -> WindowHolder {
    let listed = holder
        .unit
        .as_ref()
        .is_some_and(|unit| spec.services.iter().any(|s| &s.unit() == unit));
    let daemon = holder.unit.as_deref().is_some_and(nvidia_daemon);
    let service = holder
        .unit
        .as_ref()
        .filter(|unit| unit.ends_with(".service"))
        .is_some();
    let (action, reason) = if holder.pid == 1 {
        (
            HolderAction::Block,
            Some(
                "it is PID 1, which provision never stops: stop its use of the GPU by hand".into(),
            ),
        )
    } else if own.contains(&holder.pid) {
        (
            HolderAction::Block,
            Some("it is provision itself or one of its parents (the shell running it): close its GPU devices, or run provision from elsewhere".into()),
        )
    } else if let Some(why) = drained(holder, spec, daemon) {
        (HolderAction::Drained, Some(why))
    } else {
        match spec.holders {
            HolderPolicy::Refuse if daemon => (HolderAction::StopUnit, None),
            HolderPolicy::Refuse => (
                HolderAction::Block,
                Some(if listed {
                    "[upgrade] holders = \"refuse\": set holders = \"stop-services\" to stop and restart it".into()
                } else {
                    "[upgrade] holders = \"refuse\": set holders = \"terminate\" to end it (services are stopped and restarted)".into()
                }),
            ),
            HolderPolicy::StopServices if listed => (HolderAction::StopUnit, None),
            HolderPolicy::StopServices => (
                HolderAction::Block,
                Some(match &holder.unit {
                    Some(unit) if service => format!(
                        "{unit} is not in [upgrade] services: add it, or set holders = \"terminate\""
                    ),
                    _ => "it is no listed service: set holders = \"terminate\" to end it".into(),
                }),
            ),
            HolderPolicy::Terminate if service => (HolderAction::StopUnit, None),
            HolderPolicy::Terminate => (HolderAction::Terminate, None),
        }
    };
    WindowHolder {
        pid: holder.pid,
        comm: holder.command.clone(),
        unit: holder.unit.clone(),
        container: holder.container.clone(),
        devices: holder.devices.clone(),
        action,
        reason,
    }
}

/// The listed services that run (in the plan's order), then the other
/// services whose processes are stopped as holders.
fn services_to_stop(facts: &Facts, spec: &UpgradeSpec, holders: &[WindowHolder]) -> Vec<String> {
    let holder_units: Vec<&str> = holders
        .iter()
        .filter(|h| h.action == HolderAction::StopUnit)
        .filter_map(|h| h.unit.as_deref())
        .collect();
    let running = |unit: &str| facts.services.is_active(unit) || holder_units.contains(&unit);
    // The default stops NVIDIA's daemons only; the others their list.
    let mut stop: Vec<String> = spec
        .services
        .iter()
        .map(|s| s.unit())
        .filter(|unit| spec.holders != HolderPolicy::Refuse || nvidia_daemon(unit))
        .filter(|unit| running(unit))
        .collect();
    for unit in holder_units {
        if !stop.iter().any(|u| u == unit) {
            stop.push(unit.to_string());
        }
    }
    stop
}

/// Why the new module cannot be loaded now; `None` when it can.
fn reboot_reason(facts: &Facts, spec: &UpgradeSpec, loaded: bool) -> Option<String> {
    if spec.reload == Reload::Never {
        return Some("[upgrade] reload = \"never\": the new module loads at the next boot".into());
    }
    if !facts.nouveau.bound.is_empty() {
        return Some(format!(
            "nouveau drives {}: the NVIDIA module can bind only after a reboot with nouveau blacklisted",
            facts.nouveau.bound.join(", ")
        ));
    }
    if facts.nouveau.loaded == Some(true) {
        return Some(
            "nouveau is loaded: it leaves the kernel only at a reboot with it blacklisted".into(),
        );
    }
    if !loaded {
        return None;
    }
    if !facts.os.booted() {
        return Some(format!(
            "this root does not carry the running kernel's modules (/lib/modules/{}): the new module cannot be loaded into that kernel from here",
            facts.os.running_kernel.as_deref().unwrap_or("?")
        ));
    }
    let modules = &facts.kernel_driver.modules;
    let known_holders = !facts.holders.processes.is_empty();
    let references = |count: u32| match count {
        1 => "1 reference".to_string(),
        n => format!("{n} references"),
    };
    for module in modules {
        let dependents = module.used_by.len().max(module.holders.len()) as u32;
        let refs = module.refcount.unwrap_or(0);
        if refs <= dependents {
            continue;
        }
        if module.name == "nvidia_drm" {
            return Some(format!(
                "nvidia_drm is in use ({}) by a display: the X server, a Wayland compositor or the console keep it until a reboot",
                references(refs - dependents)
            ));
        }
        if !known_holders {
            return Some(format!(
                "{} has {} that no process explains (a kernel user, or processes this run cannot see): the swap waits for a reboot",
                module.name,
                references(refs - dependents)
            ));
        }
    }
    if !facts.holders.unreadable.is_empty() {
        return Some(format!(
            "the open files of {} processes could not be read (run as root), so their holds are unknown: the swap waits for a reboot",
            facts.holders.unreadable.len()
        ));
    }
    None
}

/// NVIDIA modules (and modules that depend on them) in unload order: a
/// module goes only after every module that depends on it.
pub fn unload_order(modules: &[NvidiaModule]) -> Vec<String> {
    let dependents = |module: &NvidiaModule| -> Vec<String> {
        let mut all = module.used_by.clone();
        for holder in &module.holders {
            if !all.contains(holder) {
                all.push(holder.clone());
            }
        }
        all
    };
    let mut names: Vec<String> = Vec::new();
    let mut pending: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
    // Modules outside the nvidia* family that depend on it (gdrdrv,
    // nvidia_fs is in it) go too.
    for module in modules {
        for dependent in dependents(module) {
            if !pending.contains(&dependent) {
                pending.push(dependent);
            }
        }
    }
    while !pending.is_empty() {
        let ready: Vec<String> = pending
            .iter()
            .filter(|name| {
                modules
                    .iter()
                    .find(|m| &m.name == *name)
                    .is_none_or(|m| dependents(m).iter().all(|d| names.contains(d)))
            })
            .cloned()
            .collect();
        // A dependency loop cannot exist in the kernel; should the facts
        // show one, the rest goes in the order read.
        let next = if ready.is_empty() {
            pending.clone()
        } else {
            ready
        };
        for name in next {
            pending.retain(|p| p != &name);
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, refcount: u32, used_by: &[&str]) -> NvidiaModule {
        NvidiaModule {
            name: name.into(),
            version: Some("570.124.06".into()),
            refcount: Some(refcount),
            used_by: used_by.iter().map(|s| s.to_string()).collect(),
            holders: Vec::new(),
        }
    }

    #[test]
    fn dependents_unload_first() {
        let modules = [
            module("nvidia_uvm", 4, &[]),
            module("nvidia_drm", 0, &[]),
            module("nvidia_modeset", 1, &["nvidia_drm"]),
            module("nvidia", 52, &["nvidia_uvm", "nvidia_modeset", "gdrdrv"]),
        ];
        let order = unload_order(&modules);
        let at = |name: &str| order.iter().position(|n| n == name).unwrap();
        assert!(at("nvidia_drm") < at("nvidia_modeset"));
        assert!(at("nvidia_modeset") < at("nvidia"));
        assert!(at("nvidia_uvm") < at("nvidia"));
        assert!(at("gdrdrv") < at("nvidia"), "{order:?}");
        assert_eq!(order.last().map(String::as_str), Some("nvidia"));
        assert_eq!(order.len(), 5);
    }
}
