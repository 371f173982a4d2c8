//! How library code tells a person what it is doing. Only `output.rs` turns
//! these calls into terminal output (spinners, elapsed time); tests and
//! `--json` runs use [`Silent`].

pub trait Progress: Send + Sync {
    /// A step begins its (possibly long) apply or undo.
    fn step_started(&self, _id: &str, _summary: &str) {}
    /// The step ended; `ok` false when it failed.
    fn step_finished(&self, _id: &str, _ok: bool) {}
    /// A command starts (its full display form).
    fn command_started(&self, _command: &str) {}
    /// One line of a running command's output.
    fn command_line(&self, _line: &str) {}
    /// Something a person should read even when all goes well.
    fn warn(&self, _message: &str) {}
    /// Bytes of a download: `done` so far of `total` when known.
    fn download(&self, _name: &str, _done: u64, _total: Option<u64>) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
