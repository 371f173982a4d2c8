//! A shared library of the running driver (libcuda, libnvidia-ml) opened
//! at run time with dlopen: provision links against neither, so it runs
//! on hosts without a driver and uses whichever driver is installed.

use std::ffi::{CStr, CString, c_void};

pub struct Library {
    handle: *mut c_void,
    name: &'static str,
}

// SAFETY: a dlopen handle may be used from any thread.
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

impl Library {
    pub fn open(name: &'static str) -> Result<Library, String> {
        let cname = CString::new(name).expect("no NUL");
        // SAFETY: dlopen with a valid C string; the handle is checked.
        let handle = unsafe { libc::dlopen(cname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!("cannot load {name}: {}", dl_error()));
        }
        Ok(Library { handle, name })
    }

    /// The entry point `symbol` as a function pointer of type `T`, which
    /// must be the type the library's documentation gives for it.
    pub fn symbol<T: Copy>(&self, symbol: &str) -> Result<T, String> {
        let cname = CString::new(symbol).expect("no NUL");
        // SAFETY: dlsym on an open handle; the pointer is checked.
        let pointer = unsafe { libc::dlsym(self.handle, cname.as_ptr()) };
        if pointer.is_null() {
            return Err(format!(
                "{symbol} is not in {} (not NVIDIA's driver, or older than it needs)",
                self.name
            ));
        }
        // SAFETY: the caller names T as the symbol's documented type.
        Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&pointer) })
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns a static string or null.
    let text = unsafe { libc::dlerror() };
    if text.is_null() {
        "unknown error".into()
    } else {
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_or_symbol_that_is_not_there_is_named() {
        let error = Library::open("libprovision-no-such.so.1").err().unwrap();
        assert!(
            error.starts_with("cannot load libprovision-no-such.so.1: "),
            "{error}"
        );
        let libc = Library::open("libc.so.6").unwrap();
        let error = libc
            .symbol::<unsafe extern "C" fn()>("nvmlInit_v2")
            .err()
            .unwrap();
        assert_eq!(
            error,
            "nvmlInit_v2 is not in libc.so.6 (not NVIDIA's driver, or older than it needs)"
        );
    }
}
