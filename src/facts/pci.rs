//! NVIDIA PCI functions from `/sys/bus/pci/devices`: GPUs (display class
//! 0x03xx) and NVSwitch bridges (0x0680), each joined with the knowledge
//! base's row for its device id.

use serde::{Deserialize, Serialize};

use super::Unknown;
use crate::compat::knowledge::{Knowledge, parse_hex16};
use crate::host::Root;

pub const NVIDIA_VENDOR: u16 = 0x10de;
const DEVICES: &str = "/sys/bus/pci/devices";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Gpu,
    Nvswitch,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gpu {
    /// PCI address, "0000:00:06.0".
    pub address: String,
    pub kind: Kind,
    /// "10de:2335"
    pub pci_id: String,
    /// "10de:18bf"
    pub subsystem: Option<String>,
    /// "0x030200"
    pub class: String,
    /// Kernel driver bound now ("nvidia", "nouveau", "vfio-pci"), null when none.
    pub driver: Option<String>,
    pub numa_node: Option<i32>,
    pub link: Option<String>,
    pub name: Option<String>,
    pub architecture: Option<String>,
    pub compute_capability: Option<String>,
    /// Data-center part: the class eligible for forward compatibility.
    pub datacenter: Option<bool>,
    /// "yes" | "no" | "conditional" | "unclear"
    pub forward_compat: Option<String>,
    /// Kernel-module flavours this GPU runs with.
    pub flavors: Vec<String>,
    pub min_driver_branch: Option<u32>,
    pub last_driver_branch: Option<u32>,
    pub unknown: Unknown,
}

impl Gpu {
    pub fn device_id(&self) -> u16 {
        self.pci_id
            .split(':')
            .nth(1)
            .and_then(parse_hex16)
            .unwrap_or(0)
    }
}

/// The PCI class code's top 16 bits: 0x0300 VGA, 0x0302 3D, 0x0680 bridge.
fn kind_of(class: u32) -> Option<Kind> {
    match class >> 8 {
        0x0300..=0x03ff => Some(Kind::Gpu),
        0x0680 => Some(Kind::Nvswitch),
        _ => None,
    }
}

fn read_hex(root: &Root, path: &str) -> Option<u32> {
    let text = root.read_trimmed(path).ok()??;
    u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

/// The driver bound to the function, its NUMA node and its PCIe link.
fn bus_state(root: &Root, dir: &str) -> (Option<String>, Option<i32>, Option<String>) {
    let driver = root
        .read_link(format!("{dir}/driver"))
        .ok()
        .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()));
    let numa_node = root
        .read_trimmed(format!("{dir}/numa_node"))
        .ok()
        .flatten()
        .and_then(|n| n.parse().ok());
    let link = match (
        root.read_trimmed(format!("{dir}/current_link_speed"))
            .ok()
            .flatten(),
        root.read_trimmed(format!("{dir}/current_link_width"))
            .ok()
            .flatten(),
    ) {
        (Some(speed), Some(width)) => Some(format!("{speed} x{width}")),
        _ => None,
    };
    (driver, numa_node, link)
}

/// What the knowledge base knows of the device (and its subsystem, which
/// tells apart GPUs that share an id).
fn identify(gpu: &mut Gpu, device: u16, subsystem: Option<&str>) {
    if gpu.kind == Kind::Nvswitch {
        gpu.name = Some("NVIDIA NVSwitch".into());
    } else if let Some((row, others)) = Knowledge::get().gpu(device, subsystem) {
        gpu.name = Some(if others.is_empty() {
            row.name.clone()
        } else {
            format!("{} (or {})", row.name, others.join(", or "))
        });
        gpu.architecture = Some(row.arch.clone());
        gpu.compute_capability = Some(row.compute_capability.clone());
        gpu.datacenter = Some(row.class == "datacenter");
        gpu.forward_compat = Some(row.forward_compat.clone());
        gpu.flavors = match row.open_module.as_str() {
            "required" => vec!["open".into()],
            "unsupported" => vec!["proprietary".into()],
            _ => vec!["open".into(), "proprietary".into()],
        };
        gpu.min_driver_branch = row.min_driver_branch;
        gpu.last_driver_branch = row.last_driver_branch;
    } else {
        for field in ["name", "architecture", "compute_capability", "datacenter"] {
            gpu.unknown.note(
                field,
                format!("device id 0x{device:04x} is not in the knowledge base (src/compat/knowledge.toml)"),
            );
        }
    }
}

pub fn gather(root: &Root, unknown: &mut Unknown) -> Vec<Gpu> {
    let addresses = match root.read_dir(DEVICES) {
        Ok(addresses) => addresses,
        Err(error) => {
            unknown.note("gpus", format!("cannot list {DEVICES}: {error}"));
            return Vec::new();
        }
    };
    let mut gpus = Vec::new();
    for address in addresses {
        let dir = format!("{DEVICES}/{address}");
        if read_hex(root, &format!("{dir}/vendor")) != Some(NVIDIA_VENDOR as u32) {
            continue;
        }
        let Some(class) = read_hex(root, &format!("{dir}/class")) else {
            continue;
        };
        let Some(kind) = kind_of(class) else {
            continue; // the GPU's audio or USB function
        };
        let device = read_hex(root, &format!("{dir}/device")).unwrap_or(0) as u16;
        let subsystem = match (
            read_hex(root, &format!("{dir}/subsystem_vendor")),
            read_hex(root, &format!("{dir}/subsystem_device")),
        ) {
            (Some(vendor), Some(device)) => Some(format!("{vendor:04x}:{device:04x}")),
            _ => None,
        };
        let (driver, numa_node, link) = bus_state(root, &dir);
        let mut gpu = Gpu {
            address: address.clone(),
            kind,
            pci_id: format!("{NVIDIA_VENDOR:04x}:{device:04x}"),
            subsystem: subsystem.clone(),
            class: format!("0x{class:06x}"),
            driver,
            numa_node,
            link,
            name: None,
            architecture: None,
            compute_capability: None,
            datacenter: None,
            forward_compat: None,
            flavors: Vec::new(),
            min_driver_branch: None,
            last_driver_branch: None,
            unknown: Unknown::default(),
        };
        identify(&mut gpu, device, subsystem.as_deref());
        gpus.push(gpu);
    }
    gpus
}
