//! Processes holding `/dev/nvidia*` (they block a driver swap) and the GPU
//! services that run. One pass over `/proc`: a directory listing and a few
//! small reads per process, linear in the number of processes and fds.

use serde::{Deserialize, Serialize};

use super::Unknown;
use crate::host::Root;

/// Daemons that hold the GPU by design: (program name, service). The
/// kernel keeps 15 characters of a name (`comm`): "nvidia-persiste".
const GPU_SERVICES: &[(&str, &str)] = &[
    ("nvidia-persistenced", "nvidia-persistenced"),
    ("nv-fabricmanager", "nvidia-fabricmanager"),
    ("nv-hostengine", "nvidia-dcgm"),
    ("dcgm-exporter", "dcgm-exporter"),
    ("nvidia-imex", "nvidia-imex"),
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Holders {
    pub processes: Vec<Holder>,
    /// GPU services running now (by process name).
    pub services: Vec<Service>,
    /// Processes examined.
    pub scanned: usize,
    /// Processes whose fds could not be read (permission), by pid.
    pub unreadable: Vec<u32>,
    /// Processes that exited during the scan.
    pub vanished: usize,
    pub unknown: Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    pub cmdline: String,
    /// Device files held, each once ("/dev/nvidia0", "/dev/nvidiactl").
    pub devices: Vec<String>,
    /// Open files on those devices (each holds a module reference).
    #[serde(default)]
    pub fds: usize,
    /// systemd unit from the cgroup path ("nvidia-persistenced.service").
    pub unit: Option<String>,
    /// Container id from the cgroup path.
    pub container: Option<String>,
    /// The NVIDIA user-space libraries it maps (`/proc/PID/maps`), each
    /// once, with " (deleted)" where the file was replaced since.
    #[serde(default)]
    pub libraries: Vec<String>,
    /// The Slurm job it belongs to (`SLURM_JOB_ID` in its environment,
    /// which slurmstepd gives every process of a job).
    #[serde(default)]
    pub job: Option<String>,
}

/// `SLURM_JOB_ID` from a process's environment (NUL-separated).
pub fn slurm_job(environ: &[u8]) -> Option<String> {
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(b"SLURM_JOB_ID="))
        .map(|id| String::from_utf8_lossy(id).to_string())
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub pid: u32,
}

/// Unit and container from `/proc/<pid>/cgroup` (v2 "0::/path" or v1 lines).
pub fn parse_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let path = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .or_else(|| text.lines().find_map(|l| l.splitn(3, ':').nth(2)))
        .unwrap_or("");
    let mut unit = None;
    let mut container = None;
    for part in path.split('/') {
        if part.ends_with(".service") || part.ends_with(".scope") {
            // docker-<id>.scope, cri-containerd-<id>.scope, libpod-<id>.scope
            let stem = part.trim_end_matches(".scope");
            if let Some(id) = stem.rsplit('-').next().filter(|id| is_container_id(id)) {
                container = Some(id[..12].to_string());
            } else {
                unit = Some(part.to_string());
            }
        } else if is_container_id(part) {
            container = Some(part[..12].to_string());
        }
    }
    (unit, container)
}

/// The GPU service a process is, by its program name: `comm` (which the
/// kernel cuts at 15 characters) or the first word of its command line.
fn gpu_service(command: &str, cmdline: &str) -> Option<&'static str> {
    let program = cmdline
        .split_whitespace()
        .next()
        .and_then(|word| word.rsplit('/').next())
        .unwrap_or("");
    GPU_SERVICES
        .iter()
        .find(|(name, _)| {
            *name == program
                || *name == command
                || (command.len() == 15 && name.starts_with(command))
        })
        .map(|(_, service)| *service)
}

/// The pids of process `pid` and its parents up to pid 1, from
/// `/proc/<pid>/stat` (`pid (comm) state ppid ...`).
pub fn ancestry(root: &Root, pid: u32) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut current = pid;
    while current > 0 && !chain.contains(&current) && chain.len() < 4096 {
        chain.push(current);
        let Ok(stat) = root.read_string(format!("/proc/{current}/stat")) else {
            break;
        };
        current = parse_ppid(&stat).unwrap_or(0);
    }
    chain
}

/// The parent pid in `/proc/<pid>/stat`; the command (in parentheses) may
/// itself hold spaces and parentheses, so the fields after the last `)`.
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn is_container_id(text: &str) -> bool {
    text.len() >= 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The libraries of the driver a process maps, from `/proc/PID/maps`:
/// libcuda and libnvidia-* (a replaced file shows " (deleted)").
pub fn mapped_libraries(maps: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let Some(path) = line.splitn(6, char::is_whitespace).nth(5).map(str::trim) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        let driver_library = name.starts_with("libcuda.so") || name.starts_with("libnvidia-");
        if path.starts_with('/') && driver_library && !found.iter().any(|f| f == path) {
            found.push(path.to_string());
        }
    }
    found
}

/// The `/dev/nvidia*` files among a process's open descriptors: each
/// device once, sorted, and how many descriptors point at them.
fn nvidia_fds(root: &Root, dir: &str, fds: &[String]) -> (Vec<String>, usize) {
    let mut devices: Vec<String> = Vec::new();
    let mut open = 0;
    for fd in fds {
        let Ok(target) = root.read_link(format!("{dir}/fd/{fd}")) else {
            continue;
        };
        let target = target.to_string_lossy();
        if target.starts_with("/dev/nvidia") {
            open += 1;
            if !devices.iter().any(|d| d == &*target) {
                devices.push(target.into_owned());
            }
        }
    }
    devices.sort();
    (devices, open)
}

/// A process holding the GPU: its name and command line, unit or
/// container, the driver libraries it maps, its Slurm job.
fn describe(root: &Root, pid: u32, dir: &str, devices: Vec<String>, open: usize) -> Holder {
    let command = root
        .read_trimmed(format!("{dir}/comm"))
        .ok()
        .flatten()
        .unwrap_or_default();
    let cmdline = root
        .read_bytes(format!("{dir}/cmdline"))
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let (unit, container) = root
        .read_string(format!("{dir}/cgroup"))
        .map(|text| parse_cgroup(&text))
        .unwrap_or((None, None));
    let libraries = root
        .read_string(format!("{dir}/maps"))
        .map(|text| mapped_libraries(&text))
        .unwrap_or_default();
    let job = root
        .read_bytes(format!("{dir}/environ"))
        .ok()
        .and_then(|environ| slurm_job(&environ));
    Holder {
        pid,
        command,
        cmdline,
        devices,
        fds: open,
        unit,
        container,
        libraries,
        job,
    }
}

pub fn gather(root: &Root) -> Holders {
    let mut holders = Holders::default();
    let pids: Vec<u32> = match root.read_dir("/proc") {
        Ok(names) => names.iter().filter_map(|n| n.parse().ok()).collect(),
        Err(error) => {
            holders
                .unknown
                .note("processes", format!("cannot list /proc: {error}"));
            return holders;
        }
    };
    for pid in pids {
        holders.scanned += 1;
        let dir = format!("/proc/{pid}");
        let fds = match root.read_dir(format!("{dir}/fd")) {
            Ok(fds) => fds,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if !root.exists(&dir) {
                    holders.vanished += 1;
                }
                continue;
            }
            Err(_) => {
                holders.unreadable.push(pid);
                continue;
            }
        };
        let (devices, open) = nvidia_fds(root, &dir, &fds);
        if devices.is_empty() {
            continue;
        }
        // Only holders are named, so a host with thousands of processes
        // reads a few names.
        let holder = describe(root, pid, &dir, devices, open);
        if let Some(service) = gpu_service(&holder.command, &holder.cmdline) {
            holders.services.push(Service {
                name: service.to_string(),
                pid,
            });
        }
        holders.processes.push(holder);
    }
    if !holders.unreadable.is_empty() {
        holders.unknown.note(
            "processes",
            format!(
                "{} processes could not be examined (permission denied): run as root to see every holder",
                holders.unreadable.len()
            ),
        );
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_driver_libraries_each_once_with_deleted_marks() {
        let maps = "\
5583f6a00000-5583f6a02000 r--p 00000000 fd:01 1311       /usr/bin/python3.10
7f1c40000000-7f1c40a00000 r-xp 00000000 fd:01 2210       /usr/lib/x86_64-linux-gnu/libcuda.so.570.124.06 (deleted)
7f1c40a00000-7f1c40b00000 r--p 00a00000 fd:01 2210       /usr/lib/x86_64-linux-gnu/libcuda.so.570.124.06 (deleted)
7f1c41000000-7f1c41100000 r-xp 00000000 fd:01 2213       /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.570.124.06 (deleted)
7f1c42000000-7f1c42100000 r-xp 00000000 fd:01 4000       /usr/local/cuda-12.8/lib64/libcudart.so.12.8.90
7f1c43000000-7f1c43001000 rw-p 00000000 00:00 0
7ffd5c000000-7ffd5c021000 rw-p 00000000 00:00 0          [stack]
";
        assert_eq!(
            mapped_libraries(maps),
            [
                "/usr/lib/x86_64-linux-gnu/libcuda.so.570.124.06 (deleted)",
                "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.570.124.06 (deleted)"
            ]
        );
    }

    #[test]
    fn gpu_services_by_cut_name_or_program() {
        // The kernel keeps 15 characters of a process name.
        assert_eq!(
            gpu_service("nvidia-persiste", "/usr/bin/nvidia-persistenced --user x"),
            Some("nvidia-persistenced")
        );
        assert_eq!(
            gpu_service("nvidia-persiste", ""),
            Some("nvidia-persistenced")
        );
        assert_eq!(
            gpu_service("nv-hostengine", "/usr/bin/nv-hostengine -n"),
            Some("nvidia-dcgm")
        );
        assert_eq!(gpu_service("python", "python train.py"), None);
    }

    #[test]
    fn parent_pid_after_the_last_parenthesis() {
        assert_eq!(
            parse_ppid("1310 (nvidia-persiste) S 1 1310 1310 0"),
            Some(1)
        );
        assert_eq!(parse_ppid("42 (a) b) (c) R 7 42"), Some(7));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn cgroup_units_and_containers() {
        assert_eq!(
            parse_cgroup("0::/system.slice/nvidia-persistenced.service\n"),
            (Some("nvidia-persistenced.service".into()), None)
        );
        let id = "4f1c0e9a8b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";
        assert_eq!(
            parse_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")),
            (None, Some("4f1c0e9a8b7d".into()))
        );
        assert_eq!(
            parse_cgroup(&format!("0::/kubepods/burstable/pod1234/{id}\n")),
            (None, Some("4f1c0e9a8b7d".into()))
        );
        // The H200 host's holder: a container under init.scope.
        let text =
            include_str!("../../tests/fixtures/hosts/ubuntu-24.04-h200-580-open/proc/402/cgroup");
        assert_eq!(
            parse_cgroup(text),
            (Some("init.scope".into()), Some("daf430de9984".into()))
        );
    }
}
