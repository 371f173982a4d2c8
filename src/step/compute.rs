//! Verify's proof that CUDA computes: on every GPU, through the running
//! driver's own libcuda (see host::cuda), the device count against the
//! GPUs on the PCI bus, `/dev/nvidia-uvm` (CUDA's unified memory device,
//! missing while a validator says ready: NVIDIA/gpu-operator#2685), and
//! Fabric Manager on NVSwitch hosts (nvidia-smi looks healthy while CUDA
//! fails with error 802 without it: NVIDIA/gpu-operator#2781).

use crate::facts::Facts;
use crate::facts::pci::Kind;
use crate::host::Host;
use crate::host::cuda::{self, ComputeRun};
use crate::host::nvml::{self, FabricState, GpuFabric};

use super::verification::{VerifyCheck, check};

/// Bytes each GPU allocates, copies in and out, and runs the kernel over.
pub const BYTES: usize = 256 << 20;

/// The settings that skip the check where no real GPU is.
const SKIP: &str = "hosts without a real GPU skip it with [verify] compute = false";

/// The compute check and what it proves beside it; each `None` (not run)
/// with the reason where it cannot run here.
pub fn checks(host: &Host, facts: &Facts, enabled: bool) -> Vec<VerifyCheck> {
    let gpus = facts.gpu_devices().count();
    if !enabled {
        return vec![check("compute", None, "[verify] compute = false: not run")];
    }
    if !host.root.is_host() || facts.kernel_driver.version.is_none() {
        return vec![check(
            "compute",
            None,
            "no NVIDIA driver runs here (an image, or another root): CUDA cannot run",
        )];
    }
    if gpus == 0 {
        return vec![check(
            "compute",
            None,
            format!("no NVIDIA GPU on the PCI bus: the compute check needs one; {SKIP}"),
        )];
    }
    // CUDA and NVML side by side: the fabric query costs little.
    let (run, fabric) = std::thread::scope(|scope| {
        let fabric = scope.spawn(nvml::fabric);
        (
            cuda::run(BYTES),
            fabric
                .join()
                .unwrap_or_else(|_| Err("NVML panicked".into())),
        )
    });
    let mut out = vec![compute(run, gpus), uvm(host)];
    let machine = Machine {
        nvswitch: facts.gpus.iter().any(|g| g.kind == Kind::Nvswitch),
        // In a container, Fabric Manager runs on the machine, not here.
        fabric_manager: facts
            .os
            .container
            .is_none()
            .then(|| facts.services.is_active("nvidia-fabricmanager.service")),
    };
    out.extend(fabric_check(&machine, fabric));
    out
}

fn compute(result: Result<ComputeRun, String>, gpus: usize) -> VerifyCheck {
    let run = match result {
        Ok(run) => run,
        Err(error) => {
            return check(
                "compute",
                Some(false),
                format!("CUDA could not start on a host with {gpus} NVIDIA GPU(s): {error}"),
            );
        }
    };
    let each: Vec<String> = run
        .gpus
        .iter()
        .map(|g| match &g.error {
            None => format!(
                "GPU {} {} {}: {} MiB copied in at {:.1} GB/s and out at {:.1} GB/s, PTX kernel checked, {:.2} s",
                g.ordinal,
                g.name,
                g.pci_bus_id,
                BYTES >> 20,
                g.h2d_gbps.unwrap_or(0.0),
                g.d2h_gbps.unwrap_or(0.0),
                g.seconds
            ),
            Some(error) => format!("GPU {} {} {}: {error}", g.ordinal, g.name, g.pci_bus_id),
        })
        .collect();
    let counted = run.devices as usize == gpus;
    let passed = counted && run.gpus.iter().all(|g| g.passed);
    let mut evidence = format!(
        "{} of {gpus} GPU(s) on the PCI bus seen by {} in {:.2} s",
        run.devices, run.library, run.seconds
    );
    if !counted {
        evidence.push_str(" (CUDA does not see every GPU: CUDA_VISIBLE_DEVICES, a GPU fallen off the bus, or a driver that does not drive it)");
    }
    check(
        "compute",
        Some(passed),
        format!("{evidence}; {}", each.join("; ")),
    )
}

/// CUDA's unified memory device, created by nvidia-modprobe when CUDA
/// starts: its absence after a compute run is a broken install.
fn uvm(host: &Host) -> VerifyCheck {
    let exists = host.root.exists("/dev/nvidia-uvm");
    check(
        "uvm",
        Some(exists),
        if exists {
            "/dev/nvidia-uvm exists".to_string()
        } else {
            "/dev/nvidia-uvm is missing after CUDA ran: nvidia-uvm is not loaded (modprobe nvidia-uvm, nvidia-modprobe -u -c=0)".to_string()
        },
    )
}

/// What the fabric check needs of the facts.
struct Machine {
    nvswitch: bool,
    /// Whether nvidia-fabricmanager.service is active; None where the
    /// unit is not this host's to see (a container).
    fabric_manager: Option<bool>,
}

/// The NVLink fabric on NVSwitch hosts: every GPU's fabric state from NVML
/// completed, and Fabric Manager active where its unit is this host's
/// (in a container it runs on the machine). Without it CUDA fails with
/// error 802 (system not yet initialized) while nvidia-smi looks healthy.
/// Not run where no GPU is part of a fabric.
fn fabric_check(machine: &Machine, fabric: Result<Vec<GpuFabric>, String>) -> Option<VerifyCheck> {
    let nvswitch = machine.nvswitch;
    let gpus = match fabric {
        Ok(gpus) => gpus,
        Err(error) if nvswitch => {
            return Some(check(
                "fabric",
                Some(false),
                format!(
                    "NVSwitches are present and the GPUs' fabric state cannot be read: {error}"
                ),
            ));
        }
        Err(_) => return None,
    };
    let joined = |g: &GpuFabric| g.state == FabricState::Completed;
    if !nvswitch && gpus.iter().all(|g| g.state == FabricState::NotSupported) {
        return None;
    }
    let mut evidence: Vec<String> = gpus
        .iter()
        .map(|g| {
            let state = crate::serde_name(&g.state);
            match &g.error {
                Some(error) => format!("GPU {} {}: fabric {state}: {error}", g.index, g.pci_bus_id),
                None => format!("GPU {} {}: fabric {state}", g.index, g.pci_bus_id),
            }
        })
        .collect();
    let mut passed = !gpus.is_empty() && gpus.iter().all(joined);
    if let Some(active) = machine.fabric_manager {
        passed &= active;
        evidence.push(if active {
            "nvidia-fabricmanager.service is active".to_string()
        } else {
            "nvidia-fabricmanager.service is not active: CUDA fails with error 802 until it trains the fabric".to_string()
        });
    }
    Some(check("fabric", Some(passed), evidence.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::cuda::GpuRun;

    fn gpu(ordinal: u32, error: Option<&str>) -> GpuRun {
        GpuRun {
            ordinal,
            name: "NVIDIA H200".into(),
            pci_bus_id: format!("0000:0{ordinal}:00.0"),
            passed: error.is_none(),
            error: error.map(str::to_string),
            seconds: 0.2,
            h2d_gbps: Some(20.0),
            d2h_gbps: Some(21.0),
        }
    }

    fn run(devices: u32, gpus: Vec<GpuRun>) -> ComputeRun {
        ComputeRun {
            library: "libcuda.so.1".into(),
            devices,
            gpus,
            seconds: 0.3,
        }
    }

    #[test]
    fn every_gpu_must_compute_and_be_counted() {
        let ok = compute(Ok(run(2, vec![gpu(0, None), gpu(1, None)])), 2);
        assert_eq!(ok.passed, Some(true), "{}", ok.evidence);
        assert!(ok.evidence.contains("2 of 2 GPU(s)"));
        let short = compute(Ok(run(1, vec![gpu(0, None)])), 2);
        assert_eq!(short.passed, Some(false));
        assert!(short.evidence.contains("does not see every GPU"));
        let wrong = compute(
            Ok(run(1, vec![gpu(0, Some("the kernel's result is wrong"))])),
            1,
        );
        assert_eq!(wrong.passed, Some(false));
        let none = compute(
            Err("cuInit: CUDA error 100 (no CUDA-capable device is detected)".into()),
            1,
        );
        assert_eq!(none.passed, Some(false));
        assert!(none.evidence.contains("error 100"));
    }

    fn fabric(state: FabricState) -> GpuFabric {
        GpuFabric {
            index: 0,
            pci_bus_id: "0000:18:00.0".into(),
            state,
            error: (state == FabricState::Failed).then(|| "NVML error 999 (Unknown Error)".into()),
        }
    }

    #[test]
    fn the_fabric_must_be_trained_and_fabric_manager_active_on_nvswitch_hosts() {
        let hgx = Machine {
            nvswitch: true,
            fabric_manager: Some(true),
        };
        let ok = fabric_check(&hgx, Ok(vec![fabric(FabricState::Completed)])).unwrap();
        assert_eq!(ok.passed, Some(true), "{}", ok.evidence);
        assert!(ok.evidence.contains("GPU 0 0000:18:00.0: fabric completed"));
        let training = fabric_check(&hgx, Ok(vec![fabric(FabricState::InProgress)])).unwrap();
        assert_eq!(training.passed, Some(false));
        let failed = fabric_check(&hgx, Ok(vec![fabric(FabricState::Failed)])).unwrap();
        assert!(
            failed.evidence.contains("NVML error 999"),
            "{}",
            failed.evidence
        );
        let fm_down = Machine {
            nvswitch: true,
            fabric_manager: Some(false),
        };
        let down = fabric_check(&fm_down, Ok(vec![fabric(FabricState::Completed)])).unwrap();
        assert_eq!(down.passed, Some(false));
        assert!(down.evidence.contains("error 802"));
        let unreadable = fabric_check(&hgx, Err("cannot load libnvidia-ml.so.1".into())).unwrap();
        assert_eq!(unreadable.passed, Some(false));
    }

    #[test]
    fn no_fabric_check_where_no_gpu_is_in_a_fabric() {
        let pcie = Machine {
            nvswitch: false,
            fabric_manager: Some(false),
        };
        assert!(fabric_check(&pcie, Ok(vec![fabric(FabricState::NotSupported)])).is_none());
        assert!(fabric_check(&pcie, Err("no NVML".into())).is_none());
        // A container on an HGX machine: NVML sees the fabric, the
        // machine's Fabric Manager is not this root's to check.
        let container = Machine {
            nvswitch: false,
            fabric_manager: None,
        };
        let seen = fabric_check(&container, Ok(vec![fabric(FabricState::Completed)])).unwrap();
        assert_eq!(seen.passed, Some(true));
        assert!(!seen.evidence.contains("nvidia-fabricmanager"));
    }
}
