//! The maintenance window: what replacing the driver under a running node
//! does to it. A [`Window`] is plain data computed from the facts, the
//! plan's `[upgrade]` policy and the swap the plan makes ([`policy::window`]);
//! `plan` prints it, and the engine turns it into ordinary steps (drain:
//! download, stop, terminate, unload; restore: load, start; or a reboot).

pub mod policy;

use serde::{Deserialize, Serialize};

pub use policy::{ancestry_of_self, window};

/// The driver the host runs now and the one the plan leaves it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    /// The loaded `nvidia` module's version; `None` on a fresh install.
    pub before: Option<String>,
    /// The release after the plan ("580.105.08"), or what the plan accepts
    /// ("580.*") while the package lists do not yet say which.
    pub after: String,
}

/// What happens to one process holding `/dev/nvidia*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HolderAction {
    /// Its systemd service is stopped and started again afterwards.
    StopUnit,
    /// SIGTERM, then SIGKILL after `stop_timeout`.
    Terminate,
    /// The upgrade cannot go on while it runs.
    Block,
    /// Runs on: the swap waits for a reboot and nothing is unloaded
    /// before it.
    RunsUntilReboot,
    /// A job of the node's scheduler: the drain waits for it to end
    /// before anything stops.
    Drained,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowHolder {
    pub pid: u32,
    pub comm: String,
    pub unit: Option<String>,
    pub container: Option<String>,
    pub devices: Vec<String>,
    pub action: HolderAction,
    /// Why it blocks, and the setting that would let it through.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleVersions {
    pub before: Option<String>,
    pub after: String,
}

/// The maintenance window of one apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub module: ModuleVersions,
    /// The new module is loaded by provision (true) or by a reboot (false).
    pub live: bool,
    /// Why the swap waits for a reboot.
    pub reboot_reason: Option<String>,
    pub holders: Vec<WindowHolder>,
    /// Services stopped, in this order.
    pub stop: Vec<String>,
    /// Modules unloaded, in this order (dependents first).
    pub unload: Vec<String>,
    /// Modules loaded after the change, in this order.
    pub load: Vec<String>,
    /// Services started again, in this order.
    pub start: Vec<String>,
    /// Services that ran through the swap and read the driver at their
    /// start (slurmd loads NVML itself): restarted once the new module is in.
    #[serde(default)]
    pub restart: Vec<String>,
    /// CDI specifications regenerated once the new module is in, before
    /// the services start (`nvidia-ctk cdi generate`): they name the old
    /// driver's files.
    #[serde(default)]
    pub cdi: Vec<String>,
    /// What builds the new kernel module inside the window, where it is
    /// not built ahead (`kmod-nvidia-open-dkms`'s `%post`, `nvidia-installer
    /// --dkms`): the GPU stays out of service for the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_inside: Option<String>,
    /// `apply`: seconds spent in each phase.
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// `apply`: from the first holder stopped to services back and
    /// verified.
    #[serde(default)]
    pub unavailable_seconds: Option<f64>,
    /// `plan`: the last window this host went through, from its history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastWindow>,
}

/// A window an earlier apply went through, as its generation recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastWindow {
    pub generation: u64,
    /// When that apply ended (RFC 3339).
    pub finished: Option<String>,
    /// How long the GPUs were out of service.
    pub unavailable_seconds: f64,
    /// How long the newest build of the kernel module took (before its
    /// window), when one was built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub phase: String,
    /// When it began (Unix time, seconds).
    pub at: f64,
    pub seconds: f64,
}

impl Window {
    /// One line per blocking holder: the pid, what it is, and what would
    /// let it through.
    pub fn blockers(&self) -> Vec<String> {
        self.holders
            .iter()
            .filter(|h| h.action == HolderAction::Block)
            .map(|h| {
                let mut what = format!("pid {} ({})", h.pid, h.comm);
                if let Some(container) = &h.container {
                    what.push_str(&format!(" in container {container}"));
                } else if let Some(unit) = &h.unit {
                    what.push_str(&format!(" in {unit}"));
                }
                format!(
                    "{what} holds {}: {}",
                    h.devices.join(", "),
                    h.reason.as_deref().unwrap_or("it blocks the upgrade")
                )
            })
            .collect()
    }
}
