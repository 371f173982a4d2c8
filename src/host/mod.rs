//! The two doors to the host: [`Root`] for every path and [`Runner`] for
//! every process. Nothing else in provision touches the machine, but for
//! [`cuda`]: the running driver's libcuda, loaded to prove the GPUs
//! compute (read-only: no setting changes).

mod chroot;
pub mod cuda;
pub mod dl;
pub mod nvml;
pub mod root;
pub mod runner;

pub use chroot::RESOLV_PLACEHOLDER;
pub use root::{FileStamp, Root};
pub use runner::{Cmd, CommandRecord, Effect, Output, RunError, Runner, SystemRunner, run_checked};

/// The host provision works on: its filesystem and how to run commands in it.
pub struct Host {
    pub root: Root,
    pub runner: Box<dyn Runner>,
}

impl Host {
    /// Whether the root carries `program` itself (else it must be driven
    /// from outside, with the tool's own root option).
    pub fn has_tool(&self, program: &str) -> bool {
        self.root.is_host()
            || ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .any(|dir| self.root.exists(format!("{dir}/{program}")))
    }
}
