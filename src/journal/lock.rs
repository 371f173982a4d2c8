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
    /// What this run waited for before it got the lock: the commands a
    /// killed run left running, and for how long.
    pub waited_for: Option<String>,
}

/// How long a run waits, by default, for the commands a killed run left
/// holding the lock (an update-initramfs, a dpkg building a module).
pub const LEFTOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(1800);

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
                    waited_for: None,
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
                let holders = lock_holders(&real);
                Err(JournalError::Locked {
                    path,
                    holder: describe_holders(note.trim(), &holders),
                    leftovers: leftovers(note.trim(), &holders),
                })
            }
            Err((_, errno)) => Err(JournalError::Io {
                path,
                source: std::io::Error::from(errno),
            }),
        }
    }

    /// Like [`Lock::acquire`], retrying for up to `timeout` while another
    /// run holds the lock (zero: fail at once, naming it). When the run
    /// that holds it is gone and only commands it started still hold it,
    /// waits for them up to `LEFTOVER_WAIT` in any case, saying so once
    /// through `waiting`.
    pub fn acquire_waiting(
        root: &Root,
        verb: &str,
        timeout: std::time::Duration,
        waiting: &dyn Fn(&str),
    ) -> Result<Lock, JournalError> {
        let started = std::time::Instant::now();
        let mut said: Option<String> = None;
        loop {
            let elapsed = started.elapsed();
            match Lock::acquire(root, verb) {
                Err(JournalError::Locked { leftovers, .. })
                    if elapsed < timeout || (leftovers.is_some() && elapsed < LEFTOVER_WAIT) =>
                {
                    // Each try scans /proc for the lock's holders: leftovers,
                    // which take seconds to minutes, are looked at less often.
                    let pause = if leftovers.is_some() { 500 } else { 100 };
                    if let (Some(what), None) = (&leftovers, &said) {
                        waiting(&format!("{what}: waiting for it to finish"));
                        said = leftovers;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(pause));
                }
                Err(JournalError::Locked {
                    leftovers: Some(what),
                    ..
                }) => {
                    return Err(JournalError::Leftovers {
                        what,
                        seconds: elapsed.as_secs(),
                    });
                }
                Ok(mut lock) => {
                    lock.waited_for = said.map(|what| {
                        format!(
                            "{what}: waited {:.1} s for it",
                            started.elapsed().as_secs_f64()
                        )
                    });
                    return Ok(lock);
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

/// Every other process with the lock file open: (pid, command name).
fn lock_holders(real: &std::path::Path) -> Vec<(u32, String)> {
    let mut holders = Vec::new();
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
                holders.push((pid.parse().unwrap_or(0), comm.trim().to_string()));
            }
        }
    }
    holders
}

/// The pid the lock's note names ("apply by pid 4242 since ...").
fn owner(note: &str) -> Option<u32> {
    note.split_once(" by pid ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// When the run that took the lock is gone (not among its holders) and
/// only what it started holds it: what to say about them.
fn leftovers(note: &str, holders: &[(u32, String)]) -> Option<String> {
    let owner = owner(note)?;
    if holders.is_empty() || holders.iter().any(|(pid, _)| *pid == owner) {
        return None;
    }
    let running: Vec<String> = holders
        .iter()
        .map(|(pid, comm)| format!("{comm} (pid {pid})"))
        .collect();
    Some(format!(
        "provision pid {owner} is gone; {} that it started {} still running",
        running.join(", "),
        if running.len() == 1 { "is" } else { "are" }
    ))
}

/// Who holds the lock: the run's note, and every process with the lock
/// file open (the commands it started, which may have outlived it).
fn describe_holders(note: &str, holders: &[(u32, String)]) -> String {
    let holders: Vec<String> = holders
        .iter()
        .map(|(pid, comm)| format!("pid {pid} {comm}"))
        .collect();
    let mut text = String::new();
    if !note.is_empty() {
        text.push_str(&format!(" ({note})"));
    }
    if !holders.is_empty() {
        text.push_str(&format!(", held by {}", holders.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_runs_leftovers_are_told_apart_from_a_live_run() {
        let note = "apply by pid 15509 since 2026-12-06T07:00:00Z generation 3";
        assert_eq!(owner(note), Some(15509));
        let orphan = [(15515, "update-initramf".to_string())];
        assert_eq!(
            leftovers(note, &orphan).as_deref(),
            Some(
                "provision pid 15509 is gone; update-initramf (pid 15515) that it started is still running"
            )
        );
        // The run itself still holds it: another run, not leftovers.
        let live = [
            (15509, "provision".to_string()),
            (15515, "update-initramf".to_string()),
        ];
        assert_eq!(leftovers(note, &live), None);
        // Nobody holds it, or no note says whose it was.
        assert_eq!(leftovers(note, &[]), None);
        assert_eq!(leftovers("", &orphan), None);
    }

    #[test]
    fn a_dead_runs_command_still_holding_the_lock_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        // A run that took the lock and was killed (its pid gone) ...
        let lock = Lock::acquire(&root, "apply").unwrap();
        let real = root.join(format!("{STATE_DIR}/lock"));
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let gone = dead.id();
        dead.wait().unwrap();
        drop(lock);
        // The note stays, as after SIGKILL.
        std::fs::write(
            &real,
            format!("apply by pid {gone} since 2026-12-06T07:00:00Z generation 1\n"),
        )
        .unwrap();
        // ... and a command it started that holds the lock a little longer
        // (util-linux flock, holding it while `sleep 1` runs).
        let mut leftover = std::process::Command::new("flock")
            .arg("--nonblock")
            .arg(&real)
            .args(["sleep", "1"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let said = std::sync::Mutex::new(Vec::new());
        let waiting = |what: &str| said.lock().unwrap().push(what.to_string());
        let zero = std::time::Duration::ZERO;
        let next = Lock::acquire_waiting(&root, "apply", zero, &waiting);
        leftover.wait().unwrap();
        let next = next.unwrap();
        let said = said.into_inner().unwrap();
        assert_eq!(said.len(), 1, "said once: {said:?}");
        assert!(
            said[0].starts_with(&format!("provision pid {gone} is gone; flock (pid ")),
            "{said:?}"
        );
        assert!(next.waited_for.as_deref().unwrap().contains("waited"));
        assert_eq!(next.interrupted_generation(), Some(1));
    }
}
