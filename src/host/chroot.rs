//! Entering a root for one command: a private mount namespace with
//! `/proc`, `/sys`, `/dev` and the host's `resolv.conf` mounted, then
//! `chroot`. The namespace dies with the command, and its mounts with it.
//!
//! A command that only reads sees the root through a throwaway overlay
//! (the root as the lower layer, a tmpfs as the upper): whatever it writes
//! on the way (apt's temporary files, dnf's logs, rpm's sqlite index) goes
//! to the tmpfs and vanishes with the namespace. So `plan` leaves the root
//! exactly as it was, and works on a read-only one. A command run from
//! outside the root (`dnf --installroot`) gets the same overlay mounted over
//! the root's own path.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the `resolv.conf` made as a bind-mount target holds: a run killed
/// while its command ran leaves it behind, and the next run (holding the
/// lock, so no command of the killed run is still going) knows it by this
/// text and removes it.
pub const RESOLV_PLACEHOLDER: &[u8] =
    b"# provision: a mount point for the machine's resolv.conf while a command runs\n";

/// Removes the `resolv.conf` made as a bind-mount target.
pub(crate) struct ResolvConfPlaceholder(pub(crate) PathBuf);

impl ResolvConfPlaceholder {
    /// Makes `etc/resolv.conf` under `root` (which has none): written
    /// beside it and renamed into place without replacing, so a kill at
    /// any point leaves either a `.provision-*` temporary or the
    /// placeholder, both of which the next run sweeps.
    pub(crate) fn make(root: &Path) -> std::io::Result<ResolvConfPlaceholder> {
        let target = root.join("etc/resolv.conf");
        let temporary = root.join(format!("etc/.provision-resolv-{}", std::process::id()));
        std::fs::write(&temporary, RESOLV_PLACEHOLDER)?;
        let renamed = nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &temporary,
            nix::fcntl::AT_FDCWD,
            &target,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        );
        if let Err(error) = renamed {
            let _ = std::fs::remove_file(&temporary);
            return Err(error.into());
        }
        Ok(ResolvConfPlaceholder(target))
    }
}

impl Drop for ResolvConfPlaceholder {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn c(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

/// A throwaway overlay of the root: a tmpfs at `tmpfs` holds its upper and
/// work directories; it is mounted at `view`.
struct Overlay {
    tmpfs: CString,
    upper: CString,
    work: CString,
    /// Made inside the tmpfs when the view is not the root's own path.
    merged: Option<CString>,
    options: CString,
}

/// Paths for one command, as C strings made before the fork.
pub(crate) struct ChrootPlan {
    root: CString,
    /// Where the command's root appears when the overlay is mounted.
    overlaid: CString,
    overlay: Option<Overlay>,
    chroot: bool,
    /// `proc`, then the binds, relative to the view.
    proc_dir: Option<PathBuf>,
    binds: Vec<(CString, PathBuf)>,
    pub(crate) resolv: Option<(CString, PathBuf)>,
    pub(crate) placeholder: bool,
    /// The mount targets of every bind under the root and under the
    /// overlay, made before the fork.
    targets: Vec<(CString, CString)>,
}

impl ChrootPlan {
    /// The plan for a command chrooted into `root`.
    pub(crate) fn new(root: &Path) -> std::io::Result<ChrootPlan> {
        let mut binds = Vec::new();
        for dir in ["sys", "dev"] {
            let target = root.join(dir);
            if target.is_dir() && !target.is_symlink() {
                binds.push((c(&Path::new("/").join(dir))?, PathBuf::from(dir)));
            }
        }
        let resolv_target = root.join("etc/resolv.conf");
        let host_resolv = Path::new("/etc/resolv.conf");
        let mut placeholder = false;
        let mut resolv = None;
        if host_resolv.exists() && root.join("etc").is_dir() {
            match std::fs::symlink_metadata(&resolv_target) {
                Ok(meta) if meta.is_file() => {
                    resolv = Some((c(host_resolv)?, PathBuf::from("etc/resolv.conf")));
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    placeholder = true;
                    resolv = Some((c(host_resolv)?, PathBuf::from("etc/resolv.conf")));
                }
                _ => {}
            }
        }
        let proc_dir = root.join("proc");
        Ok(ChrootPlan {
            root: c(root)?,
            overlaid: c(root)?,
            overlay: None,
            chroot: true,
            proc_dir: (proc_dir.is_dir() && !proc_dir.is_symlink()).then(|| PathBuf::from("proc")),
            binds,
            resolv,
            placeholder,
            targets: Vec::new(),
        })
    }

    /// The plan for a command run on the machine that names the root by
    /// its own option: nothing is mounted but the overlay, if asked for.
    pub(crate) fn outside(root: &Path) -> std::io::Result<ChrootPlan> {
        Ok(ChrootPlan {
            root: c(root)?,
            overlaid: c(root)?,
            overlay: None,
            chroot: false,
            proc_dir: None,
            binds: Vec::new(),
            resolv: None,
            placeholder: false,
            targets: Vec::new(),
        })
    }

    /// The command sees the root through a throwaway overlay whose tmpfs
    /// is mounted on `tmp` (an empty directory of the machine). Roots whose
    /// path an overlay option cannot carry (`,` or `:`) go without.
    pub(crate) fn overlay(&mut self, root: &Path, tmp: &Path) -> std::io::Result<()> {
        let text = root.display().to_string();
        if text.contains([',', ':']) || tmp.display().to_string().contains([',', ':']) {
            return Ok(());
        }
        let merged = self.chroot.then(|| tmp.join("merged"));
        let view = merged.clone().unwrap_or_else(|| root.to_path_buf());
        self.overlay = Some(Overlay {
            tmpfs: c(tmp)?,
            upper: c(&tmp.join("upper"))?,
            work: c(&tmp.join("work"))?,
            merged: merged.as_deref().map(c).transpose()?,
            options: CString::new(format!(
                "lowerdir={text},upperdir={},workdir={}",
                tmp.join("upper").display(),
                tmp.join("work").display()
            ))
            .map_err(std::io::Error::other)?,
        });
        self.overlaid = c(&view)?;
        Ok(())
    }

    /// Binds the machine's directory `scratch` over the root's /tmp for
    /// this command only: files provision prepared for it (apt's
    /// preferences a plan will write, dnf's plugin configuration) that
    /// never land in the root.
    pub(crate) fn scratch(&mut self, scratch: &Path, root: &Path) -> std::io::Result<()> {
        let target = root.join("tmp");
        if target.is_dir() && !target.is_symlink() {
            self.binds.push((c(scratch)?, PathBuf::from("tmp")));
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is not a directory to bind a scratch directory on",
                    target.display()
                ),
            ))
        }
    }

    /// Makes the C strings of every mount target (under the root, and
    /// under the overlay's view): call once everything is added.
    pub(crate) fn prepare(&mut self) -> std::io::Result<()> {
        let root = PathBuf::from(std::ffi::OsStr::from_bytes(self.root.as_bytes()));
        let view = PathBuf::from(std::ffi::OsStr::from_bytes(self.overlaid.as_bytes()));
        let relative: Vec<&PathBuf> = self
            .proc_dir
            .iter()
            .chain(self.binds.iter().map(|(_, t)| t))
            .chain(self.resolv.iter().map(|(_, t)| t))
            .collect();
        self.targets = relative
            .into_iter()
            .map(|path| Ok((c(&root.join(path))?, c(&view.join(path))?)))
            .collect::<std::io::Result<_>>()?;
        Ok(())
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
            let overlaid = self
                .overlay
                .as_ref()
                .is_some_and(|o| o.mount(&self.overlaid));
            let pick = |(plain, over): &(CString, CString)| {
                if overlaid {
                    over.as_ptr()
                } else {
                    plain.as_ptr()
                }
            };
            if !self.chroot {
                return Ok(());
            }
            let mut targets = self.targets.iter();
            if self.proc_dir.is_some()
                && let Some(target) = targets.next()
            {
                check(libc::mount(
                    c"proc".as_ptr(),
                    pick(target),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ))?;
            }
            let sources = self
                .binds
                .iter()
                .map(|(s, _)| s)
                .chain(self.resolv.iter().map(|(s, _)| s));
            for (source, target) in sources.zip(targets) {
                check(libc::mount(
                    source.as_ptr(),
                    pick(target),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
            let root = if overlaid { &self.overlaid } else { &self.root };
            check(libc::chroot(root.as_ptr()))?;
            check(libc::chdir(c"/".as_ptr()))?;
        }
        Ok(())
    }
}

impl Overlay {
    /// Mounts the tmpfs and the overlay at `view`; false when the kernel
    /// refuses (the command then sees the root itself).
    ///
    /// # Safety
    /// Async-signal-safe system calls only (runs between fork and exec).
    unsafe fn mount(&self, view: &CString) -> bool {
        // SAFETY: plain system calls on C strings that outlive the calls.
        unsafe {
            if libc::mount(
                c"tmpfs".as_ptr(),
                self.tmpfs.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755".as_ptr().cast(),
            ) != 0
            {
                return false;
            }
            for dir in [Some(&self.upper), Some(&self.work), self.merged.as_ref()]
                .into_iter()
                .flatten()
            {
                if libc::mkdir(dir.as_ptr(), 0o755) != 0 {
                    return false;
                }
            }
            libc::mount(
                c"overlay".as_ptr(),
                view.as_ptr(),
                c"overlay".as_ptr(),
                0,
                self.options.as_ptr().cast(),
            ) == 0
        }
    }
}
