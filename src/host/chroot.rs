//! Entering a root for one command: a private mount namespace with
//! `/proc`, `/sys`, `/dev` and the host's `resolv.conf` mounted, then
//! `chroot`. The namespace dies with the command, and its mounts with it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Removes the empty `resolv.conf` made as a bind-mount target.
pub(crate) struct ResolvConfPlaceholder(pub(crate) PathBuf);

impl Drop for ResolvConfPlaceholder {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Paths for entering a root, as C strings made before the fork.
pub(crate) struct ChrootPlan {
    root: CString,
    proc_dir: Option<CString>,
    binds: Vec<(CString, CString)>,
    pub(crate) resolv: Option<(CString, CString)>,
    pub(crate) placeholder: bool,
}

impl ChrootPlan {
    pub(crate) fn new(root: &Path) -> std::io::Result<ChrootPlan> {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
        let proc_dir = root.join("proc");
        let mut binds = Vec::new();
        for dir in ["sys", "dev"] {
            let target = root.join(dir);
            if target.is_dir() && !target.is_symlink() {
                binds.push((c(Path::new("/").join(dir).as_path())?, c(&target)?));
            }
        }
        let resolv_target = root.join("etc/resolv.conf");
        let host_resolv = Path::new("/etc/resolv.conf");
        let mut placeholder = false;
        let mut resolv = None;
        if host_resolv.exists() && root.join("etc").is_dir() {
            match std::fs::symlink_metadata(&resolv_target) {
                Ok(meta) if meta.is_file() => {
                    resolv = Some((c(host_resolv)?, c(&resolv_target)?));
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    placeholder = true;
                    resolv = Some((c(host_resolv)?, c(&resolv_target)?));
                }
                _ => {}
            }
        }
        Ok(ChrootPlan {
            root: c(root)?,
            proc_dir: (proc_dir.is_dir() && !proc_dir.is_symlink())
                .then(|| c(&proc_dir))
                .transpose()?,
            binds,
            resolv,
            placeholder,
        })
    }

    /// Runs in the child between fork and exec.
    pub(crate) fn enter(&self) -> std::io::Result<()> {
        let check = |result: libc::c_int| {
            if result == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: plain system calls on C strings that outlive the calls.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            if let Some(proc_dir) = &self.proc_dir {
                check(libc::mount(
                    c"proc".as_ptr(),
                    proc_dir.as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ))?;
            }
            for (source, target) in self.binds.iter().chain(self.resolv.iter()) {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
            check(libc::chroot(self.root.as_ptr()))?;
            check(libc::chdir(c"/".as_ptr()))?;
        }
        Ok(())
    }
}
