//! systemd services running now, read from the cgroup tree: systemd gives
//! every service a cgroup of its own and removes it when the service stops
//! (systemd.unit(5), "cgroup hierarchy"), so listing the tree needs no
//! D-Bus and no `systemctl`.

use serde::{Deserialize, Serialize};

use super::Unknown;
use crate::host::Root;

/// Where systemd keeps the service cgroups: unified (v2), then v1's
/// name=systemd hierarchy.
const CGROUP_ROOTS: &[&str] = &[
    "/sys/fs/cgroup/system.slice",
    "/sys/fs/cgroup/systemd/system.slice",
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Services {
    /// systemd manages this host (it is PID 1, or `/run/systemd/system`
    /// exists).
    pub systemd: bool,
    /// Service units with a cgroup now ("nvidia-persistenced.service").
    pub active: Vec<String>,
    pub unknown: Unknown,
}

impl Services {
    pub fn is_active(&self, unit: &str) -> bool {
        self.active.iter().any(|u| u == unit)
    }
}

pub fn gather(root: &Root, pid1_is_systemd: Option<bool>) -> Services {
    let mut services = Services {
        systemd: pid1_is_systemd == Some(true) || root.exists("/run/systemd/system"),
        ..Services::default()
    };
    let Some(base) = CGROUP_ROOTS.iter().find(|dir| root.is_dir(dir)) else {
        services.unknown.note(
            "active",
            "no systemd cgroup tree (sys/fs/cgroup/system.slice): not a running systemd host",
        );
        return services;
    };
    collect(root, base, 0, &mut services.active);
    services.active.sort();
    services.active.dedup();
    services
}

/// Services under `dir`, descending into slices (system-getty.slice/...).
fn collect(root: &Root, dir: &str, depth: usize, active: &mut Vec<String>) {
    let Ok(names) = root.read_dir(dir) else {
        return;
    };
    for name in names {
        if name.ends_with(".service") {
            active.push(name);
        } else if name.ends_with(".slice") && depth < 4 {
            collect(root, &format!("{dir}/{name}"), depth + 1, active);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_the_cgroups_under_system_slice() {
        let dir = tempfile::tempdir().unwrap();
        for path in [
            "sys/fs/cgroup/system.slice/nvidia-persistenced.service",
            "sys/fs/cgroup/system.slice/system-getty.slice/getty@tty1.service",
            "sys/fs/cgroup/system.slice/-.mount",
            "run/systemd/system",
        ] {
            fs_err::create_dir_all(dir.path().join(path)).unwrap();
        }
        let services = gather(&Root::new(dir.path()).unwrap(), None);
        assert!(services.systemd);
        assert_eq!(
            services.active,
            ["getty@tty1.service", "nvidia-persistenced.service"]
        );
        let empty = tempfile::tempdir().unwrap();
        let services = gather(&Root::new(empty.path()).unwrap(), Some(false));
        assert!(!services.systemd && services.active.is_empty());
        assert!(services.unknown.get("active").is_some());
    }
}
