//! The operating system layer: distribution, family, running and installed
//! kernels (with headers and nvidia modules), Secure Boot, init system and
//! container/VM hints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Unknown;
use crate::host::{Cmd, Host, Root};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Debian,
    Rhel,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Os {
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
    pub codename: Option<String>,
    pub family: Option<Family>,
    /// The host's name (`/etc/hostname`; the kernel's on the running
    /// system): which host a `detect --json` document is of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `uname -r` of the running kernel (from `proc/sys/kernel/osrelease`).
    pub running_kernel: Option<String>,
    /// This boot's id (`proc/sys/kernel/random/boot_id`): a generation that
    /// waits for a reboot knows the reboot happened when it changes.
    #[serde(default)]
    pub boot_id: Option<String>,
    pub kernels: Vec<Kernel>,
    /// `true`/`false`, or null with the reason in `unknown`.
    pub secure_boot: Option<bool>,
    /// Where the Secure Boot state came from (efivars path, or mokutil).
    pub secure_boot_source: Option<String>,
    /// Name of PID 1 ("systemd", "sh", ...).
    pub init: Option<String>,
    pub systemd: Option<bool>,
    /// The container runtime this root runs in ("docker", "podman",
    /// "kubernetes", "lxc", ... or "container" when only the signs say
    /// so); null on a machine of its own.
    pub container: Option<String>,
    /// Every sign of a container seen, each with where it was read
    /// (systemd-detect-virt's: `/.dockerenv`, `/run/.containerenv`, pid 1's
    /// `container=`, `/run/systemd/container`, pid 1's cgroup; and a driver
    /// mounted in from outside). An overlay root is listed but alone does
    /// not make a container: diskless and live nodes boot from one.
    #[serde(default)]
    pub container_signs: Vec<String>,
    /// A hypervisor this host runs under ("kvm", "Amazon EC2", ...), from
    /// DMI or the CPU's hypervisor flag.
    pub virtualization: Option<String>,
    /// Mount points of NVIDIA driver files mounted read-only (a container
    /// or VM image whose driver comes from the host).
    pub read_only_driver_mounts: Vec<String>,
    pub unknown: Unknown,
}

impl Os {
    /// Whether this root is the running system: its kernel is the one
    /// running (a chroot of another release, an image or a snapshot
    /// without /proc is not, and no module is ever loaded into it).
    pub fn booted(&self) -> bool {
        self.kernels.iter().any(|k| k.running)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kernel {
    pub release: String,
    pub running: bool,
    /// Headers a DKMS build needs (`/lib/modules/<release>/build`).
    pub headers: bool,
    /// Path of the nvidia kernel module built for this kernel, if any.
    pub nvidia_module: Option<String>,
    /// Initramfs image for this kernel, if any.
    pub initramfs: Option<String>,
}

/// `os-release` key/value pairs (quotes and escapes removed). Lines that are
/// not assignments are skipped: a malformed file yields what it can.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            continue;
        }
        let value = value.trim();
        let unquoted = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            &value[1..value.len() - 1]
        } else {
            value
        };
        values.insert(
            key.to_string(),
            unquoted.replace("\\\"", "\"").replace("\\\\", "\\"),
        );
    }
    values
}

/// Family from `ID` and `ID_LIKE`.
pub fn family_of(id: &str, id_like: &str) -> Option<Family> {
    let words: Vec<&str> = std::iter::once(id)
        .chain(id_like.split_whitespace())
        .collect();
    if words.iter().any(|w| matches!(*w, "debian" | "ubuntu")) {
        Some(Family::Debian)
    } else if words.iter().any(|w| {
        matches!(
            *w,
            "rhel" | "fedora" | "centos" | "rocky" | "almalinux" | "ol" | "amzn"
        )
    }) {
        Some(Family::Rhel)
    } else {
        None
    }
}

/// Where nvidia modules land for a kernel: DKMS (`updates/dkms`), Debian's
/// `nvidia-current`, Ubuntu's precompiled `kernel/nvidia-<branch>*`, and the
/// runfile's `kernel/drivers/video`. Listing these few directories instead of
/// walking the whole module tree keeps detection in the millisecond range.
const MODULE_DIRS: &[&str] = &[
    "updates/dkms",
    "updates",
    "extra",
    "kernel/drivers/video",
    "kernel/drivers/char/drm",
];

/// VERSION_ID from the root's os-release.
pub fn version_id(root: &crate::host::Root) -> Option<String> {
    let text = root
        .read_string("/etc/os-release")
        .or_else(|_| root.read_string("/usr/lib/os-release"))
        .ok()?;
    parse_os_release(&text).get("VERSION_ID").cloned()
}

/// A release as `detect` and bundles name it: "debian-12", "ubuntu-24.04";
/// the RHEL family by its major, "rhel-9", one name for every EL 9.x.
pub fn release_name(id: &str, version_id: &str, family: Option<Family>) -> String {
    match family {
        Some(Family::Rhel) => format!(
            "rhel-{}",
            version_id.split('.').next().unwrap_or(version_id)
        ),
        _ => format!("{id}-{version_id}"),
    }
}

/// The kernel's host name on the running system, else `/etc/hostname`.
fn hostname(root: &crate::host::Root) -> Option<String> {
    let kernel = root
        .is_host()
        .then(|| {
            root.read_trimmed("/proc/sys/kernel/hostname")
                .ok()
                .flatten()
        })
        .flatten();
    kernel
        .or_else(|| {
            let text = root.read_string("/etc/hostname").ok()?;
            text.lines().next().map(|l| l.trim().to_string())
        })
        .filter(|name| !name.is_empty())
}

pub fn gather(host: &Host) -> Os {
    let root = &host.root;
    let mut os = Os::default();
    let release = root
        .read_string("/etc/os-release")
        .or_else(|_| root.read_string("/usr/lib/os-release"));
    match release {
        Ok(text) => {
            let values = parse_os_release(&text);
            os.id = values.get("ID").cloned();
            os.version_id = values.get("VERSION_ID").cloned();
            os.pretty_name = values.get("PRETTY_NAME").cloned();
            os.codename = values
                .get("VERSION_CODENAME")
                .or_else(|| values.get("UBUNTU_CODENAME"))
                .cloned();
            os.family = family_of(
                values.get("ID").map(String::as_str).unwrap_or(""),
                values.get("ID_LIKE").map(String::as_str).unwrap_or(""),
            );
            if os.id.is_none() {
                os.unknown.note("id", "os-release has no ID= line");
            }
            if os.family.is_none() {
                os.unknown.note(
                    "family",
                    "os-release names neither a Debian nor a RHEL family",
                );
            }
        }
        Err(error) => {
            os.unknown
                .note("id", format!("cannot read /etc/os-release: {error}"));
            // Without os-release the package database still tells the family.
            if root.exists("/var/lib/dpkg/status") {
                os.family = Some(Family::Debian);
            } else if root.exists("/var/lib/rpm") || root.exists("/usr/lib/sysimage/rpm") {
                os.family = Some(Family::Rhel);
            }
        }
    }

    os.hostname = hostname(root);
    match root.read_trimmed("/proc/sys/kernel/osrelease") {
        Ok(Some(release)) if !release.is_empty() => os.running_kernel = Some(release),
        Ok(_) => os.unknown.note(
            "running_kernel",
            "proc/sys/kernel/osrelease is absent: /proc is not mounted (an image, not a running host)",
        ),
        Err(error) => os.unknown.note("running_kernel", error.to_string()),
    }

    os.boot_id = root
        .read_trimmed("/proc/sys/kernel/random/boot_id")
        .ok()
        .flatten()
        .filter(|id| !id.is_empty());
    os.kernels = installed_kernels(root, os.running_kernel.as_deref());
    secure_boot(host, &mut os);
    init_and_container(root, &mut os);
    os.virtualization = virtualization(root);
    os
}

fn installed_kernels(root: &Root, running: Option<&str>) -> Vec<Kernel> {
    let mut releases: Vec<String> = root.read_dir("/lib/modules").unwrap_or_default();
    if let Ok(boot) = root.read_dir("/boot") {
        for name in boot {
            if let Some(release) = name.strip_prefix("vmlinuz-")
                && !releases.iter().any(|r| r == release)
            {
                releases.push(release.to_string());
            }
        }
    }
    releases.sort();
    releases
        .into_iter()
        .filter(|release| !release.is_empty())
        .map(|release| {
            let modules = format!("/lib/modules/{release}");
            let headers = root.is_dir(format!("{modules}/build"))
                || root.is_dir(format!("/usr/src/linux-headers-{release}"))
                || root.is_dir(format!("/usr/src/kernels/{release}"));
            let initramfs = [
                format!("/boot/initrd.img-{release}"),
                format!("/boot/initramfs-{release}.img"),
            ]
            .into_iter()
            .find(|path| root.exists(path));
            Kernel {
                running: Some(release.as_str()) == running,
                nvidia_module: nvidia_module_for(root, &modules),
                headers,
                initramfs,
                release,
            }
        })
        .collect()
}

fn is_nvidia_module(name: &str) -> bool {
    let stem = name.split(".ko").next().unwrap_or("");
    name.contains(".ko") && matches!(stem, "nvidia" | "nvidia-current" | "nvidia-open")
}

fn nvidia_module_for(root: &Root, modules: &str) -> Option<String> {
    let mut dirs: Vec<String> = MODULE_DIRS
        .iter()
        .map(|d| format!("{modules}/{d}"))
        .collect();
    // Ubuntu's precompiled modules: kernel/nvidia-580srv/, kernel/nvidia-580-open/...
    if let Ok(names) = root.read_dir(format!("{modules}/kernel")) {
        dirs.extend(
            names
                .into_iter()
                .filter(|n| n.starts_with("nvidia"))
                .map(|n| format!("{modules}/kernel/{n}")),
        );
    }
    for dir in dirs {
        if let Ok(names) = root.read_dir(&dir)
            && let Some(name) = names.iter().find(|n| is_nvidia_module(n))
        {
            return Some(format!("{dir}/{name}"));
        }
    }
    None
}

/// EFI global variable GUID (UEFI spec, "Globally Defined Variables").
const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// `mokutil --sb-state` ("SecureBoot enabled" / "SecureBoot disabled").
pub fn parse_mokutil(text: &str) -> Option<bool> {
    let line = text.lines().find(|l| l.starts_with("SecureBoot "))?;
    match line.trim_start_matches("SecureBoot ").trim() {
        "enabled" => Some(true),
        "disabled" => Some(false),
        _ => None,
    }
}

fn secure_boot(host: &Host, os: &mut Os) {
    let root = &host.root;
    match root.read_bytes(SECURE_BOOT_VAR) {
        // efivarfs: 4 bytes of attributes, then the 1-byte value.
        Ok(bytes) if bytes.len() >= 5 => {
            os.secure_boot = Some(bytes[4] == 1);
            os.secure_boot_source = Some(SECURE_BOOT_VAR.to_string());
            return;
        }
        Ok(_) => {
            os.unknown.note(
                "secure_boot",
                format!("{SECURE_BOOT_VAR} is too short to hold a value"),
            );
            return;
        }
        Err(_) if root.exists("/sys/firmware") && !root.exists("/sys/firmware/efi") => {
            os.secure_boot = Some(false);
            os.secure_boot_source = Some("legacy BIOS boot (no /sys/firmware/efi)".into());
            return;
        }
        Err(_) => {}
    }
    if !root.exists("/sys/firmware") {
        os.unknown.note(
            "secure_boot",
            "no /sys/firmware in this root (not a running host)",
        );
        return;
    }
    // UEFI without readable variables (efivarfs not mounted): ask mokutil.
    let cmd = Cmd::read("mokutil").arg("--sb-state");
    let answer = host
        .runner
        .run(&cmd)
        .map(|out| parse_mokutil(&format!("{}{}", out.stdout, out.stderr)));
    match answer {
        Ok(Some(state)) => {
            os.secure_boot = Some(state);
            os.secure_boot_source = Some("mokutil --sb-state".into());
        }
        Ok(None) => os.unknown.note(
            "secure_boot",
            "UEFI host, no readable SecureBoot variable, and `mokutil --sb-state` gave no answer",
        ),
        Err(error) => os.unknown.note(
            "secure_boot",
            format!("UEFI host without a readable SecureBoot variable (efivarfs not mounted?), and {error}"),
        ),
    }
}

/// DMI vendor/product names of common hypervisors and clouds.
const HYPERVISORS: &[&str] = &[
    "QEMU",
    "KVM",
    "VMware",
    "VirtualBox",
    "Xen",
    "Microsoft Corporation",
    "Amazon EC2",
    "Google",
    "OpenStack",
    "Firecracker",
];

fn virtualization(root: &Root) -> Option<String> {
    for file in [
        "/sys/class/dmi/id/sys_vendor",
        "/sys/class/dmi/id/product_name",
    ] {
        if let Ok(Some(name)) = root.read_trimmed(file)
            && HYPERVISORS.iter().any(|h| name.contains(h))
        {
            return Some(name);
        }
    }
    if let Ok(Some(kind)) = root.read_trimmed("/sys/hypervisor/type") {
        return Some(kind);
    }
    // x86 CPUs flag the hypervisor bit when virtualized.
    let cpuinfo = root.read_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    flags
        .split_whitespace()
        .any(|f| f == "hypervisor")
        .then(|| "a hypervisor (CPU flag)".to_string())
}

fn init_and_container(root: &Root, os: &mut Os) {
    match root.read_trimmed("/proc/1/comm") {
        Ok(Some(comm)) => {
            os.systemd = Some(comm == "systemd");
            os.init = Some(comm);
        }
        Ok(None) => {
            // No /proc/1: an image, or a snapshot that did not capture PID 1.
            if root.exists("/run/systemd/system") {
                os.systemd = Some(true);
            } else {
                os.unknown.note("init", "proc/1/comm is absent");
            }
        }
        Err(error) => os.unknown.note("init", error.to_string()),
    }
    container_signs(root, os);
    if let Ok(mountinfo) = root
        .read_string("/proc/self/mountinfo")
        .or_else(|_| root.read_string("/proc/1/mountinfo"))
    {
        os.read_only_driver_mounts = read_only_driver_mounts(&mountinfo);
    } else if root.is_dir("/usr/local/nvidia") && !root.is_host() {
        // Snapshots keep the layout but not the mount table.
        os.unknown.note(
            "read_only_driver_mounts",
            "no mount table in this root; /usr/local/nvidia exists (the layout of a driver mounted in from a host)",
        );
    }
}

/// A sign of a container: the runtime it names (None: only "a
/// container") and where it was read.
struct Sign {
    runtime: Option<String>,
    evidence: String,
}

/// The signs systemd-detect-virt reads (src/basic/virt.c,
/// detect_container()), each read through the root, in its order of
/// trust: the first that names a runtime names it.
fn container_signs(root: &Root, os: &mut Os) {
    let mut signs = Vec::new();
    if root.exists("/.dockerenv") {
        signs.push(sign(Some("docker"), "/.dockerenv exists"));
    }
    if root.exists("/run/.containerenv") {
        signs.push(sign(Some("podman"), "/run/.containerenv exists"));
    }
    if let Ok(environ) = root.read_bytes("/proc/1/environ")
        && let Some(kind) = environ_container(&environ)
    {
        signs.push(sign(
            Some(&kind),
            &format!("/proc/1/environ: container={kind}"),
        ));
    }
    if let Ok(Some(kind)) = root.read_trimmed("/run/systemd/container")
        && !kind.is_empty()
    {
        signs.push(sign(
            Some(&kind),
            &format!("/run/systemd/container: {kind}"),
        ));
    }
    if let Ok(cgroup) = root.read_string("/proc/1/cgroup")
        && let Some((kind, path)) = cgroup_container(&cgroup)
    {
        signs.push(sign(Some(kind), &format!("/proc/1/cgroup: {path}")));
    }
    os.container = signs
        .iter()
        .find_map(|s| s.runtime.clone())
        .or_else(|| (!signs.is_empty()).then(|| "container".to_string()));
    os.container_signs = signs.into_iter().map(|s| s.evidence).collect();
    if let Some(fs) = root_filesystem(root)
        && fs == "overlay"
    {
        os.container_signs
            .push("/proc/self/mountinfo: / is an overlay (not enough alone)".into());
    }
}

fn sign(runtime: Option<&str>, evidence: &str) -> Sign {
    Sign {
        runtime: runtime.map(str::to_string),
        evidence: evidence.to_string(),
    }
}

/// `container=` in pid 1's environment (NUL-separated), as container
/// managers set it (systemd's Container Interface).
pub fn environ_container(environ: &[u8]) -> Option<String> {
    environ
        .split(|b| *b == 0)
        .filter_map(|entry| entry.strip_prefix(b"container="))
        .map(|value| String::from_utf8_lossy(value).trim().to_string())
        .find(|value| !value.is_empty())
}

/// The runtime pid 1's cgroup path names (cgroup v1 and v2 both give
/// `hierarchy:controllers:path`), and that path.
pub fn cgroup_container(cgroup: &str) -> Option<(&'static str, String)> {
    const RUNTIMES: &[(&str, &str)] = &[
        ("kubepods", "kubernetes"),
        ("/docker/", "docker"),
        ("docker-", "docker"),
        ("libpod", "podman"),
        ("/lxc/", "lxc"),
        ("lxc.payload", "lxc"),
        ("/machine.slice/systemd-nspawn", "systemd-nspawn"),
    ];
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        RUNTIMES
            .iter()
            .find(|(needle, _)| path.contains(needle))
            .map(|(_, runtime)| (*runtime, path.to_string()))
    })
}

/// The filesystem type mounted at `/` (mountinfo's field after " - ").
fn root_filesystem(root: &Root) -> Option<String> {
    let mountinfo = root
        .read_string("/proc/self/mountinfo")
        .or_else(|_| root.read_string("/proc/1/mountinfo"))
        .ok()?;
    root_fs_of(&mountinfo)
}

pub fn root_fs_of(mountinfo: &str) -> Option<String> {
    mountinfo
        .lines()
        .filter(|line| line.split(' ').nth(4) == Some("/"))
        .filter_map(|line| line.split(" - ").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .next_back()
        .map(str::to_string)
}

impl Os {
    /// "a docker container", or "a container" when no runtime is named.
    pub fn container_phrase(&self) -> Option<String> {
        self.container.as_deref().map(|kind| match kind {
            "container" => "a container".to_string(),
            kind => format!("a {kind} container"),
        })
    }

    /// A driver mounted in from outside (the machine underneath provides
    /// it: nvidia-container-toolkit, Kubernetes' /usr/local/nvidia) is a
    /// container's sign too; the user-mode driver layer finds it.
    pub fn driver_mounted_from_outside(&mut self, libcuda: Option<&str>) {
        let evidence = if !self.read_only_driver_mounts.is_empty() {
            format!(
                "the driver is mounted read-only from outside at {}",
                self.read_only_driver_mounts.join(", ")
            )
        } else if let Some(path) = libcuda.filter(|p| p.starts_with("/usr/local/nvidia/")) {
            format!("libcuda at {path}: the driver mounted in from the machine underneath")
        } else {
            return;
        };
        self.container_signs.push(evidence);
        if self.container.is_none() {
            self.container = Some("container".into());
        }
    }
}

/// Mount points with "nvidia" in them that are mounted read-only.
pub fn read_only_driver_mounts(mountinfo: &str) -> Vec<String> {
    let mut points = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 6 {
            continue;
        }
        let (point, options) = (fields[4], fields[5]);
        if point.contains("nvidia") && options.split(',').any(|o| o == "ro") {
            points.push(point.replace("\\040", " "));
        }
    }
    points.sort();
    points.dedup();
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_of_ubuntu_noble() {
        let text = include_str!(
            "../../tests/fixtures/hosts/ubuntu-24.04-h200-580-open/usr/lib/os-release"
        );
        let values = parse_os_release(text);
        assert_eq!(values["ID"], "ubuntu");
        assert_eq!(values["VERSION_ID"], "24.04");
        assert_eq!(values["PRETTY_NAME"], "Ubuntu 24.04.3 LTS");
        assert_eq!(family_of("ubuntu", "debian"), Some(Family::Debian));
    }

    #[test]
    fn malformed_os_release_yields_what_it_can() {
        let values = parse_os_release(
            "garbage\n=\nID=rocky\nVERSION_ID=\"9.4\nID_LIKE=\"rhel centos fedora\"\n\u{0}\u{1}",
        );
        assert_eq!(values["ID"], "rocky");
        assert_eq!(values["VERSION_ID"], "\"9.4");
        assert_eq!(family_of("rocky", "rhel centos fedora"), Some(Family::Rhel));
        assert_eq!(family_of("arch", ""), None);
    }

    #[test]
    fn read_only_nvidia_mounts_are_found() {
        let mountinfo = "\
25 1 0:23 / / rw,relatime - overlay overlay rw
31 25 0:30 /lib64 /usr/local/nvidia/lib64 ro,nosuid,nodev,relatime - ext4 /dev/vdb ro
32 25 0:31 / /usr/local/cuda-12.8 rw,relatime - ext4 /dev/vdc rw";
        assert_eq!(
            read_only_driver_mounts(mountinfo),
            vec!["/usr/local/nvidia/lib64"]
        );
    }

    #[test]
    fn container_signs_from_pid_1() {
        assert_eq!(
            environ_container(b"PATH=/bin\0container=podman\0HOME=/"),
            Some("podman".into())
        );
        assert_eq!(environ_container(b"PATH=/bin\0HOME=/"), None);
        let v1 = "12:pids:/kubepods/besteffort/pod1/0123abcd\n0::/\n";
        assert_eq!(cgroup_container(v1).map(|c| c.0), Some("kubernetes"));
        let docker = "0::/system.slice/docker-0123456789ab.scope\n";
        assert_eq!(cgroup_container(docker).map(|c| c.0), Some("docker"));
        // A machine's own pid 1 (systemd at the root of every hierarchy).
        assert_eq!(cgroup_container("0::/init.scope\n1:name=systemd:/\n"), None);
        let mountinfo = "22 1 0:21 / / rw - overlay overlay rw,lowerdir=/a\n\
                         23 22 0:22 / /proc rw - proc proc rw\n";
        assert_eq!(root_fs_of(mountinfo).as_deref(), Some("overlay"));
    }

    #[test]
    fn mokutil_answers() {
        assert_eq!(parse_mokutil("SecureBoot enabled\n"), Some(true));
        assert_eq!(
            parse_mokutil("SecureBoot disabled\nPlatform is in Setup Mode\n"),
            Some(false)
        );
        assert_eq!(
            parse_mokutil("EFI variables are not supported on this system\n"),
            None
        );
    }

    #[test]
    fn module_names() {
        assert!(is_nvidia_module("nvidia.ko"));
        assert!(is_nvidia_module("nvidia-current.ko.xz"));
        assert!(is_nvidia_module("nvidia.ko.zst"));
        assert!(!is_nvidia_module("nvidia-uvm.ko"));
        assert!(!is_nvidia_module("nvidia"));
    }
}
