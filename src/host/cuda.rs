//! The GPU itself, as CUDA sees it: the running driver's `libcuda.so.1`
//! loaded at run time (no link-time dependency, no toolkit), and on every
//! GPU, in parallel: a context, an allocation, a copy in and out with a
//! checksum, a small kernel given as PTX (JIT-compiled by the driver)
//! whose result is checked. What NVIDIA's GPU Operator validator proves
//! with its vectorAdd workload, without a container.
//!
//! The CUDA driver API as the CUDA Driver API reference documents it
//! (cuInit, cuDeviceGet*, cuDevicePrimaryCtxRetain, cuMemAlloc_v2,
//! cuMemcpyHtoD_v2/DtoH_v2, cuModuleLoadData, cuLaunchKernel).

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::time::Instant;

use serde::Serialize;

use super::dl::Library;

/// What one GPU did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuRun {
    pub ordinal: u32,
    pub name: String,
    /// "0000:00:06.0", lower case like /sys/bus/pci.
    pub pci_bus_id: String,
    pub passed: bool,
    /// The step that failed and CUDA's error, when it did.
    pub error: Option<String>,
    pub seconds: f64,
    /// Host to device, GB/s (pinned memory).
    pub h2d_gbps: Option<f64>,
    /// Device to host, GB/s.
    pub d2h_gbps: Option<f64>,
}

/// The whole compute check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComputeRun {
    pub library: String,
    pub devices: u32,
    pub gpus: Vec<GpuRun>,
    pub seconds: f64,
}

type CuResult = c_int;

/// The driver API entry points the check uses.
struct Api {
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get: unsafe extern "C" fn(*mut c_int, c_int) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult,
    device_get_pci_bus_id: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut *mut c_void, c_int) -> CuResult,
    primary_ctx_release: unsafe extern "C" fn(c_int) -> CuResult,
    ctx_set_current: unsafe extern "C" fn(*mut c_void) -> CuResult,
    ctx_synchronize: unsafe extern "C" fn() -> CuResult,
    mem_alloc: unsafe extern "C" fn(*mut u64, usize) -> CuResult,
    mem_free: unsafe extern "C" fn(u64) -> CuResult,
    mem_alloc_host: unsafe extern "C" fn(*mut *mut c_void, usize) -> CuResult,
    mem_free_host: unsafe extern "C" fn(*mut c_void) -> CuResult,
    memcpy_htod: unsafe extern "C" fn(u64, *const c_void, usize) -> CuResult,
    memcpy_dtoh: unsafe extern "C" fn(*mut c_void, u64, usize) -> CuResult,
    module_load_data: unsafe extern "C" fn(*mut *mut c_void, *const c_void) -> CuResult,
    module_unload: unsafe extern "C" fn(*mut c_void) -> CuResult,
    module_get_function:
        unsafe extern "C" fn(*mut *mut c_void, *mut c_void, *const c_char) -> CuResult,
    launch_kernel: unsafe extern "C" fn(
        *mut c_void,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        *mut c_void,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
    error_string: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
}

// SAFETY: the driver API is thread-safe (each thread makes its own
// context current); the table holds plain function pointers.
unsafe impl Send for Api {}
unsafe impl Sync for Api {}

/// The PTX kernel: `data[i] = data[i] * 3 + 7` for i < n. JIT-compiled by
/// the driver for whatever GPU runs it (PTX ISA 7.0, sm_50 and newer).
pub const PTX: &str = "\
.version 7.0
.target sm_50
.address_size 64

.visible .entry provision_check(
    .param .u64 data,
    .param .u32 n
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<5>;

    ld.param.u64 %rd1, [data];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r5, 4;
    add.s64 %rd4, %rd2, %rd3;
    ld.global.u32 %r6, [%rd4];
    mul.lo.s32 %r7, %r6, 3;
    add.s32 %r7, %r7, 7;
    st.global.u32 [%rd4], %r7;
DONE:
    ret;
}
";

/// What the kernel makes of `value`.
pub fn expected(value: u32) -> u32 {
    value.wrapping_mul(3).wrapping_add(7)
}

/// The test pattern: different in every word, so a copy that drops or
/// shifts data is seen.
pub fn pattern(index: usize) -> u32 {
    (index as u32).wrapping_mul(2_654_435_761).rotate_left(7) ^ 0x5bd1_e995
}

impl Api {
    fn load(library: &Library) -> Result<Api, String> {
        // SAFETY (each symbol): the function types the CUDA Driver API
        // reference documents for these names.
        Ok(Api {
            init: library.symbol("cuInit")?,
            device_get_count: library.symbol("cuDeviceGetCount")?,
            device_get: library.symbol("cuDeviceGet")?,
            device_get_name: library.symbol("cuDeviceGetName")?,
            device_get_pci_bus_id: library.symbol("cuDeviceGetPCIBusId")?,
            primary_ctx_retain: library.symbol("cuDevicePrimaryCtxRetain")?,
            primary_ctx_release: library.symbol("cuDevicePrimaryCtxRelease_v2")?,
            ctx_set_current: library.symbol("cuCtxSetCurrent")?,
            ctx_synchronize: library.symbol("cuCtxSynchronize")?,
            mem_alloc: library.symbol("cuMemAlloc_v2")?,
            mem_free: library.symbol("cuMemFree_v2")?,
            mem_alloc_host: library.symbol("cuMemAllocHost_v2")?,
            mem_free_host: library.symbol("cuMemFreeHost")?,
            memcpy_htod: library.symbol("cuMemcpyHtoD_v2")?,
            memcpy_dtoh: library.symbol("cuMemcpyDtoH_v2")?,
            module_load_data: library.symbol("cuModuleLoadData")?,
            module_unload: library.symbol("cuModuleUnload")?,
            module_get_function: library.symbol("cuModuleGetFunction")?,
            launch_kernel: library.symbol("cuLaunchKernel")?,
            error_string: library.symbol("cuGetErrorString")?,
        })
    }

    /// `what: CUDA_ERROR_X (its text)` unless `result` is success.
    fn ok(&self, what: &str, result: CuResult) -> Result<(), String> {
        if result == 0 {
            return Ok(());
        }
        let mut text: *const c_char = std::ptr::null();
        // SAFETY: cuGetErrorString writes a pointer to a static string.
        let described = unsafe { (self.error_string)(result, &mut text) } == 0 && !text.is_null();
        let words = if described {
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        } else {
            "unknown error".into()
        };
        Err(format!("{what}: CUDA error {result} ({words})"))
    }
}

/// Runs the check on every GPU the driver sees, each in its own thread;
/// `bytes` per GPU (256 MiB in verify).
pub fn run(bytes: usize) -> Result<ComputeRun, String> {
    let started = Instant::now();
    let library = Library::open("libcuda.so.1")?;
    let api = Api::load(&library)?;
    // SAFETY: the documented signatures; out-pointers are valid locals.
    api.ok("cuInit", unsafe { (api.init)(0) })?;
    let mut count: c_int = 0;
    api.ok("cuDeviceGetCount", unsafe {
        (api.device_get_count)(&mut count)
    })?;
    let gpus = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|ordinal| {
                let api = &api;
                scope.spawn(move || one_gpu(api, ordinal, bytes))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a GPU's check thread"))
            .collect()
    });
    Ok(ComputeRun {
        library: "libcuda.so.1".into(),
        devices: count as u32,
        gpus,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One GPU's run; a failure is its result, not a panic.
fn one_gpu(api: &Api, ordinal: c_int, bytes: usize) -> GpuRun {
    let started = Instant::now();
    let mut run = GpuRun {
        ordinal: ordinal as u32,
        name: String::new(),
        pci_bus_id: String::new(),
        passed: false,
        error: None,
        seconds: 0.0,
        h2d_gbps: None,
        d2h_gbps: None,
    };
    let result = Device::open(api, ordinal).and_then(|device| {
        run.name = device.name.clone();
        run.pci_bus_id = device.pci_bus_id.clone();
        let result = device.exercise(bytes, &mut run);
        device.close();
        result
    });
    run.passed = result.is_ok();
    run.error = result.err();
    run.seconds = started.elapsed().as_secs_f64();
    run
}

/// A GPU with its primary context current on this thread.
struct Device<'a> {
    api: &'a Api,
    handle: c_int,
    name: String,
    pci_bus_id: String,
}

impl<'a> Device<'a> {
    fn open(api: &'a Api, ordinal: c_int) -> Result<Device<'a>, String> {
        let mut handle: c_int = 0;
        let mut name = [0 as c_char; 128];
        let mut bus = [0 as c_char; 32];
        let mut context: *mut c_void = std::ptr::null_mut();
        // SAFETY: out-pointers to locals of the documented sizes.
        unsafe {
            api.ok("cuDeviceGet", (api.device_get)(&mut handle, ordinal))?;
            api.ok(
                "cuDeviceGetName",
                (api.device_get_name)(name.as_mut_ptr(), 128, handle),
            )?;
            api.ok(
                "cuDeviceGetPCIBusId",
                (api.device_get_pci_bus_id)(bus.as_mut_ptr(), 32, handle),
            )?;
            api.ok(
                "cuDevicePrimaryCtxRetain",
                (api.primary_ctx_retain)(&mut context, handle),
            )?;
            api.ok("cuCtxSetCurrent", (api.ctx_set_current)(context))?;
        }
        let text = |buffer: &[c_char]| {
            unsafe { CStr::from_ptr(buffer.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(Device {
            api,
            handle,
            name: text(&name),
            pci_bus_id: text(&bus).to_lowercase(),
        })
    }

    /// Allocate, copy in, run the kernel, copy out, check every word. The
    /// pattern is written by helper threads while this one allocates on
    /// the GPU and the driver JIT-compiles the kernel.
    fn exercise(&self, bytes: usize, run: &mut GpuRun) -> Result<(), String> {
        let api = self.api;
        let words = bytes / 4;
        let mut host: *mut c_void = std::ptr::null_mut();
        // SAFETY: pinned host memory of `bytes`, freed below; the slice
        // covers exactly that allocation.
        unsafe {
            api.ok("cuMemAllocHost", (api.mem_alloc_host)(&mut host, bytes))?;
        }
        let data = unsafe { std::slice::from_raw_parts_mut(host as *mut u32, words) };
        let mut device: u64 = 0;
        let mut module: *mut c_void = std::ptr::null_mut();
        let prepared = std::thread::scope(|scope| {
            scope.spawn(|| fill(data));
            // SAFETY: an out-pointer to a local.
            unsafe { api.ok("cuMemAlloc", (api.mem_alloc)(&mut device, bytes)) }
                .and_then(|()| self.load(&mut module))
        });
        let result = prepared.and_then(|function| {
            let copy_in = Instant::now();
            // SAFETY: both buffers hold `bytes`.
            unsafe { api.ok("cuMemcpyHtoD", (api.memcpy_htod)(device, host, bytes))? };
            run.h2d_gbps = Some(gbps(bytes, copy_in));
            self.launch(function, device, words as u32)?;
            // Not cleared first: a copy that did not happen leaves the
            // pattern, which never equals the kernel's result (3x + 7 = x
            // has no solution modulo 2^32).
            let copy_out = Instant::now();
            unsafe { api.ok("cuMemcpyDtoH", (api.memcpy_dtoh)(host, device, bytes))? };
            run.d2h_gbps = Some(gbps(bytes, copy_out));
            match first_wrong(data) {
                Some(index) => Err(format!(
                    "the kernel's result is wrong at word {index}: {:#x}, expected {:#x}",
                    data[index],
                    expected(pattern(index))
                )),
                None => Ok(()),
            }
        });
        // SAFETY: what was allocated and loaded above, released once.
        unsafe {
            if !module.is_null() {
                (api.module_unload)(module);
            }
            if device != 0 {
                (api.mem_free)(device);
            }
            (api.mem_free_host)(host);
        }
        result
    }

    /// JIT-compiles the PTX into `module`; the kernel's function.
    fn load(&self, module: &mut *mut c_void) -> Result<*mut c_void, String> {
        let api = self.api;
        let ptx = CString::new(PTX).expect("no NUL");
        let name = CString::new("provision_check").expect("no NUL");
        let mut function: *mut c_void = std::ptr::null_mut();
        // SAFETY: the PTX is a NUL-terminated image; out-pointers are valid.
        unsafe {
            api.ok(
                "cuModuleLoadData (JIT of the PTX kernel)",
                (api.module_load_data)(module, ptx.as_ptr() as *const c_void),
            )?;
            api.ok(
                "cuModuleGetFunction",
                (api.module_get_function)(&mut function, *module, name.as_ptr()),
            )?;
        }
        Ok(function)
    }

    /// Runs the kernel over `words` words and waits for it.
    fn launch(&self, function: *mut c_void, device: u64, words: u32) -> Result<(), String> {
        let api = self.api;
        let mut pointer = device;
        let mut count = words;
        let mut params = [
            &mut pointer as *mut u64 as *mut c_void,
            &mut count as *mut u32 as *mut c_void,
        ];
        let threads = 256u32;
        let blocks = words.div_ceil(threads);
        // SAFETY: the parameters point to locals that outlive the
        // synchronous launch.
        unsafe {
            api.ok(
                "cuLaunchKernel",
                (api.launch_kernel)(
                    function,
                    blocks,
                    1,
                    1,
                    threads,
                    1,
                    1,
                    0,
                    std::ptr::null_mut(),
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                ),
            )?;
            api.ok("cuCtxSynchronize", (api.ctx_synchronize)())
        }
    }

    fn close(self) {
        // SAFETY: releases the primary context this thread retained.
        unsafe {
            (self.api.primary_ctx_release)(self.handle);
        }
    }
}

/// Threads for writing and checking the pattern (256 MiB each way).
fn helpers(words: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.clamp(1, 8).min(words.max(1))
}

/// The pattern into `data`, in parallel.
pub fn fill(data: &mut [u32]) {
    let chunk = data.len().div_ceil(helpers(data.len())).max(1);
    std::thread::scope(|scope| {
        for (n, part) in data.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                for (i, word) in part.iter_mut().enumerate() {
                    *word = pattern(n * chunk + i);
                }
            });
        }
    });
}

/// The first word that is not the kernel's result of the pattern.
pub fn first_wrong(data: &[u32]) -> Option<usize> {
    let chunk = data.len().div_ceil(helpers(data.len())).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = data
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .find(|(i, w)| **w != expected(pattern(n * chunk + i)))
                        .map(|(i, _)| n * chunk + i)
                })
            })
            .collect();
        parts
            .into_iter()
            .filter_map(|p| p.join().ok().flatten())
            .min()
    })
}

fn gbps(bytes: usize, since: Instant) -> f64 {
    let seconds = since.elapsed().as_secs_f64().max(1e-9);
    ((bytes as f64 / seconds / 1e9) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_and_the_kernels_arithmetic_wrap_as_u32() {
        assert_ne!(pattern(0), pattern(1));
        assert_eq!(
            expected(0xffff_ffff),
            0xffff_ffffu32.wrapping_mul(3).wrapping_add(7)
        );
        assert!(PTX.contains(".entry provision_check"));
        assert!(PTX.contains("mul.lo.s32 %r7, %r6, 3;") && PTX.contains("add.s32 %r7, %r7, 7;"));
    }

    #[test]
    fn a_library_that_is_not_nvidias_driver_is_said_so() {
        // libc has no cuInit: what a stand-in or a stub libcuda looks like.
        let library = Library::open("libc.so.6").unwrap();
        let error = Api::load(&library).err().unwrap();
        assert!(error.contains("cuInit is not in libc.so.6"), "{error}");
        let missing = Library::open("libcuda-that-does-not-exist.so.1")
            .err()
            .unwrap();
        assert!(missing.contains("cannot load"), "{missing}");
    }

    #[test]
    fn the_parallel_check_finds_the_first_wrong_word_and_a_copy_that_did_not_happen() {
        let mut data = vec![0u32; 1_000_003];
        fill(&mut data);
        assert!(data.iter().enumerate().all(|(i, w)| *w == pattern(i)));
        // The pattern itself, as a copy back that never happened leaves it.
        assert_eq!(first_wrong(&data), Some(0));
        for (i, word) in data.iter_mut().enumerate() {
            *word = expected(pattern(i));
        }
        assert_eq!(first_wrong(&data), None);
        data[777_777] ^= 1;
        data[999_999] = 0;
        assert_eq!(first_wrong(&data), Some(777_777));
    }
}
