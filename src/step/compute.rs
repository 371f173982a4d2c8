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

use super::verify::{VerifyCheck, check};

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
    let mut out = vec![compute(cuda::run(BYTES), gpus)];
    out.push(uvm(host));
    if facts.gpus.iter().any(|g| g.kind == Kind::Nvswitch) {
        out.push(fabric_manager(facts));
    }
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

/// Fabric Manager on an NVSwitch host: without it CUDA fails with error
/// 802 (system not yet initialized) while nvidia-smi looks healthy.
fn fabric_manager(facts: &Facts) -> VerifyCheck {
    let active = facts.services.is_active("nvidia-fabricmanager.service");
    check(
        "fabric-manager",
        Some(active),
        if active {
            "nvidia-fabricmanager.service is active (NVSwitches present)".to_string()
        } else {
            "NVSwitches are present and nvidia-fabricmanager.service is not active: CUDA fails with error 802".to_string()
        },
    )
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
}
