//! The GPUs' NVLink fabric as NVML reports it (`libnvidia-ml.so.1`, loaded
//! like libcuda): on NVSwitch systems a GPU joins the fabric once Fabric
//! Manager has trained it, and CUDA fails with error 802 until then while
//! nvidia-smi looks healthy (NVIDIA/gpu-operator#2781). Read-only.
//!
//! NVML's API reference: nvmlInit_v2, nvmlDeviceGetCount_v2,
//! nvmlDeviceGetHandleByIndex_v2, nvmlDeviceGetPciInfo_v3,
//! nvmlDeviceGetGpuFabricInfo (nvmlGpuFabricInfo_t, R535 and newer),
//! nvmlErrorString, nvmlShutdown.

use std::ffi::{CStr, c_char, c_uint, c_void};

use serde::Serialize;

use super::dl::Library;

type NvmlReturn = c_uint;
type Device = *mut c_void;

const NVML_SUCCESS: NvmlReturn = 0;
const NVML_ERROR_NOT_SUPPORTED: NvmlReturn = 3;

/// nvmlGpuFabricInfo_t: the cluster's UUID, the registration's status,
/// the clique, and the state (an unsigned char).
#[repr(C)]
#[derive(Default)]
struct FabricInfo {
    cluster_uuid: [u8; 16],
    status: NvmlReturn,
    clique_id: c_uint,
    state: u8,
}

/// nvmlPciInfo_t (v3): only the bus id is read.
#[repr(C)]
struct PciInfo {
    bus_id_legacy: [c_char; 16],
    domain: c_uint,
    bus: c_uint,
    device: c_uint,
    pci_device_id: c_uint,
    pci_sub_system_id: c_uint,
    bus_id: [c_char; 32],
}

/// Where one GPU is in joining the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FabricState {
    /// The GPU is not part of an NVLink fabric (no NVSwitch, or a driver
    /// without the query).
    NotSupported,
    NotStarted,
    InProgress,
    Completed,
    /// Completed, with the registration's NVML error.
    Failed,
}

impl FabricState {
    /// NVML_GPU_FABRIC_STATE_*: 0 not supported, 1 not started, 2 in
    /// progress, 3 completed; a completed state with an error status
    /// failed.
    fn from_nvml(state: u8, status: NvmlReturn) -> FabricState {
        match (state, status) {
            (3, NVML_SUCCESS) => FabricState::Completed,
            (3, _) => FabricState::Failed,
            (2, _) => FabricState::InProgress,
            (1, _) => FabricState::NotStarted,
            _ => FabricState::NotSupported,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuFabric {
    pub index: u32,
    /// "0000:18:00.0", lower case like /sys/bus/pci.
    pub pci_bus_id: String,
    pub state: FabricState,
    /// NVML's text for the registration's status when it failed.
    pub error: Option<String>,
}

struct Api {
    init: unsafe extern "C" fn() -> NvmlReturn,
    shutdown: unsafe extern "C" fn() -> NvmlReturn,
    count: unsafe extern "C" fn(*mut c_uint) -> NvmlReturn,
    handle: unsafe extern "C" fn(c_uint, *mut Device) -> NvmlReturn,
    pci: unsafe extern "C" fn(Device, *mut PciInfo) -> NvmlReturn,
    fabric: Option<unsafe extern "C" fn(Device, *mut FabricInfo) -> NvmlReturn>,
    error_string: unsafe extern "C" fn(NvmlReturn) -> *const c_char,
}

impl Api {
    fn load(library: &Library) -> Result<Api, String> {
        // SAFETY (each symbol): the types NVML's API reference gives.
        Ok(Api {
            init: library.symbol("nvmlInit_v2")?,
            shutdown: library.symbol("nvmlShutdown")?,
            count: library.symbol("nvmlDeviceGetCount_v2")?,
            handle: library.symbol("nvmlDeviceGetHandleByIndex_v2")?,
            pci: library.symbol("nvmlDeviceGetPciInfo_v3")?,
            fabric: library.symbol("nvmlDeviceGetGpuFabricInfo").ok(),
            error_string: library.symbol("nvmlErrorString")?,
        })
    }

    fn ok(&self, what: &str, result: NvmlReturn) -> Result<(), String> {
        if result == NVML_SUCCESS {
            return Ok(());
        }
        Err(format!("{what}: {}", self.describe(result)))
    }

    fn describe(&self, result: NvmlReturn) -> String {
        // SAFETY: nvmlErrorString returns a static string.
        let text = unsafe { (self.error_string)(result) };
        let words = if text.is_null() {
            "unknown error".into()
        } else {
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        format!("NVML error {result} ({words})")
    }

    fn gpu(&self, index: c_uint) -> Result<GpuFabric, String> {
        let mut device: Device = std::ptr::null_mut();
        // SAFETY: documented signatures; out-pointers are valid locals.
        self.ok("nvmlDeviceGetHandleByIndex_v2", unsafe {
            (self.handle)(index, &mut device)
        })?;
        let mut pci: PciInfo = unsafe { std::mem::zeroed() };
        self.ok("nvmlDeviceGetPciInfo_v3", unsafe {
            (self.pci)(device, &mut pci)
        })?;
        let pci_bus_id = unsafe { CStr::from_ptr(pci.bus_id.as_ptr()) }
            .to_string_lossy()
            .to_lowercase();
        let mut info = FabricInfo::default();
        let result = match self.fabric {
            Some(fabric) => unsafe { fabric(device, &mut info) },
            None => NVML_ERROR_NOT_SUPPORTED,
        };
        let state = match result {
            NVML_SUCCESS => FabricState::from_nvml(info.state, info.status),
            NVML_ERROR_NOT_SUPPORTED => FabricState::NotSupported,
            other => {
                return Err(format!(
                    "nvmlDeviceGetGpuFabricInfo: {}",
                    self.describe(other)
                ));
            }
        };
        let error = (state == FabricState::Failed).then(|| self.describe(info.status));
        Ok(GpuFabric {
            index,
            pci_bus_id: trim_domain(&pci_bus_id),
            state,
            error,
        })
    }
}

/// NVML prints an eight-digit domain ("00000000:18:00.0"); sysfs four.
fn trim_domain(bus_id: &str) -> String {
    match bus_id.split_once(':') {
        Some((domain, rest)) if domain.len() > 4 => {
            format!("{}:{rest}", &domain[domain.len() - 4..])
        }
        _ => bus_id.to_string(),
    }
}

/// Every GPU's fabric state, as the running driver's NVML reports it.
pub fn fabric() -> Result<Vec<GpuFabric>, String> {
    let library = Library::open("libnvidia-ml.so.1")?;
    let api = Api::load(&library)?;
    // SAFETY: documented signatures; out-pointers are valid locals.
    api.ok("nvmlInit_v2", unsafe { (api.init)() })?;
    let mut count: c_uint = 0;
    let gpus = api
        .ok("nvmlDeviceGetCount_v2", unsafe { (api.count)(&mut count) })
        .and_then(|()| (0..count).map(|index| api.gpu(index)).collect());
    unsafe { (api.shutdown)() };
    gpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structs_have_nvml_s_layout() {
        // nvml.h: 16 bytes of UUID, two 32-bit fields, one byte, padded.
        assert_eq!(std::mem::size_of::<FabricInfo>(), 28);
        assert_eq!(std::mem::offset_of!(FabricInfo, state), 24);
        // nvmlPciInfo_t v3: 16 + 5 * 4 + 32.
        assert_eq!(std::mem::size_of::<PciInfo>(), 68);
        assert_eq!(std::mem::offset_of!(PciInfo, bus_id), 36);
    }

    #[test]
    fn fabric_states_read_as_nvml_defines_them() {
        assert_eq!(FabricState::from_nvml(0, 0), FabricState::NotSupported);
        assert_eq!(FabricState::from_nvml(1, 0), FabricState::NotStarted);
        assert_eq!(FabricState::from_nvml(2, 0), FabricState::InProgress);
        assert_eq!(FabricState::from_nvml(3, 0), FabricState::Completed);
        // Completed with NVML_ERROR_UNKNOWN (999): the GPU failed to join.
        assert_eq!(FabricState::from_nvml(3, 999), FabricState::Failed);
        assert_eq!(FabricState::from_nvml(9, 0), FabricState::NotSupported);
    }

    #[test]
    fn nvml_s_eight_digit_domain_is_shortened_as_sysfs_writes_it() {
        assert_eq!(trim_domain("00000000:18:00.0"), "0000:18:00.0");
        assert_eq!(trim_domain("0000:18:00.0"), "0000:18:00.0");
    }
}
