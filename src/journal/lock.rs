//! The exclusive lock of `ROOT/var/lib/provision/lock` (flock). Held by the
//! one apply or rollback that runs, and by every command it starts: the
//! lock's descriptor is inherited, so a command that outlives a killed
//! provision (an `update-initramfs`, a `dpkg`) keeps the next run waiting
//! until it is done, instead of racing it.
//!
//! The file says what its holder does ("apply by pid 4242 since
//! 2026-12-01T23:40:00Z", then "generation 7" once a generation is begun) and is emptied when the
//! holder ends. A run that finds it not empty knows the one before was
//! killed, and what it had done: an apply killed before its generation
//! began changed nothing.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::{JournalError, STATE_DIR, io, now};
use crate::host::Root;

pub struct Lock {
    flock: nix::fcntl::Flock<std::fs::File>,
    marker: String,
    /// The last holder's note, when it ended without emptying the file:
    /// it was killed.
    pub interrupted: Option<String>,
}

impl Lock {
    /// Takes the lock for `verb` ("apply", "rollback"), or fails at once
    /// naming who holds it.
    pub fn acquire(root: &Root, verb: &str) -> Result<Lock, JournalError> {
        let path = format!("{STATE_DIR}/lock");
        root.create_dir_all(STATE_DIR).map_err(io(STATE_DIR))?;
        trusted(root)?;
        let real = root.join(&path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&real)
            .map_err(io(&path))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(flock) => {
                let mut lock = Lock {
                    flock,
                    marker: format!("{verb} by pid {} since {}", std::process::id(), now()),
                    interrupted: None,
                };
                let mut previous = String::new();
                let mut file: &std::fs::File = &lock.flock;
                let _ = file.read_to_string(&mut previous);
                lock.interrupted = Some(previous.trim().to_string()).filter(|p| !p.is_empty());
                inherited(&lock.flock);
                lock.write(&lock.marker.clone());
                Ok(lock)
            }
            Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let note = std::fs::read_to_string(&real).unwrap_or_default();
                Err(JournalError::Locked {
                    path,
                    holder: describe_holders(note.trim(), &real),
                })
            }
            Err((_, errno)) => Err(JournalError::Io {
                path,
                source: std::io::Error::from(errno),
            }),
        }
    }

    /// Like [`Lock::acquire`], retrying for up to `timeout` while another
    /// run holds the lock (zero: fail at once, naming it).
    pub fn acquire_waiting(
        root: &Root,
        verb: &str,
        timeout: std::time::Duration,
    ) -> Result<Lock, JournalError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match Lock::acquire(root, verb) {
                Err(JournalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// Notes in the lock the generation this run writes.
    pub fn note_generation(&mut self, id: u64) {
        self.marker = format!("{} generation {id}", self.marker);
        self.write(&self.marker.clone());
    }

    /// The generation a killed apply had begun, from its note.
    pub fn interrupted_generation(&self) -> Option<u64> {
        let note = self.interrupted.as_deref()?;
        note.split_once(" generation ")?.1.trim().parse().ok()
    }

    fn write(&self, text: &str) {
        let mut file: &std::fs::File = &self.flock;
        let _ = file.set_len(0);
        let _ = file.seek(std::io::SeekFrom::Start(0));
        let _ = writeln!(file, "{text}");
    }
}

impl Drop for Lock {
    /// The run ends as it should: the note goes (the lock itself goes with
    /// the last descriptor).
    fn drop(&mut self) {
        let file: &std::fs::File = &self.flock;
        let _ = file.set_len(0);
    }
}

/// The lock's descriptor passes to every command provision starts.
fn inherited(file: &std::fs::File) {
    // SAFETY: F_SETFD on a descriptor this process owns.
    unsafe {
        libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0);
    }
}

/// The journal directory must be root's and not writable by others: its
/// entries say what to run and what to restore.
fn trusted(root: &Root) -> Result<(), JournalError> {
    let meta = root.symlink_metadata(STATE_DIR).map_err(io(STATE_DIR))?;
    let path = root.join(STATE_DIR).display().to_string();
    if meta.file_type().is_symlink() {
        return Err(JournalError::Untrusted {
            path,
            problem: "a symbolic link".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    let ours = nix::unistd::geteuid().as_raw();
    if mode & 0o022 != 0 {
        return Err(JournalError::Untrusted {
            path,
            problem: format!("writable by others (mode {mode:04o})"),
        });
    }
    if meta.uid() != ours && meta.uid() != 0 {
        return Err(JournalError::Untrusted {
            path,
            problem: format!("owned by uid {}", meta.uid()),
        });
    }
    Ok(())
}

/// Who holds the lock: the run's note, and every process with the lock
/// file open (the commands it started, which may have outlived it).
fn describe_holders(note: &str, real: &std::path::Path) -> String {
    let mut holders: Vec<String> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            let holds = fds
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == real));
            if holds && pid != std::process::id().to_string() {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                holders.push(format!("pid {pid} {}", comm.trim()));
            }
        }
    }
    let mut text = String::new();
    if !note.is_empty() {
        text.push_str(&format!(" ({note})"));
    }
    if !holders.is_empty() {
        text.push_str(&format!(", held by {}", holders.join(", ")));
    }
    text
}
