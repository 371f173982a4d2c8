//! The journal: the on-disk record of every change and how to undo it.
//!
//! Layout under `ROOT/var/lib/provision/` (it lives on disk, so it survives
//! a crash or a reboot):
//! - `lock`: held (flock) by the one apply or rollback that runs;
//! - `generations/<id>.json`: one per apply that changed something, with the
//!   undo of each change appended *before* the change is made;
//! - `backups/<sha256>`: the content of every file before provision replaced
//!   it, stored once per content.
//!
//! Every undo is idempotent (restore this content, return to this package
//! set), so an entry recorded just before a crash is safe to undo even if its
//! change never happened.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::host::{Cmd, Root};

mod lock;
pub mod strays;
pub use lock::Lock;

pub const STATE_DIR: &str = "/var/lib/provision";
pub const LOG_DIR: &str = "/var/log/provision";
const GENERATIONS: &str = "/var/lib/provision/generations";
const BACKUPS: &str = "/var/lib/provision/backups";
const PLANS: &str = "/var/lib/provision/plans";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another provision run holds {path}{holder}: wait for it to finish, or give --lock-timeout SECONDS"
    )]
    Locked {
        path: String,
        holder: String,
        /// The run that holds it is gone; these commands it started hold it.
        leftovers: Option<String>,
    },
    #[error(
        "{what} after {seconds} s of waiting: wait for it to finish (or end it), then run again"
    )]
    Leftovers { what: String, seconds: u64 },
    #[error(
        "{path} is {problem}: provision does not trust a journal others can change (make it root's, mode 0755 or stricter)"
    )]
    Untrusted { path: String, problem: String },
    #[error("journal file {path} is damaged: {reason}")]
    Damaged { path: String, reason: String },
    #[error("backup {hash} is missing or does not match its hash")]
    BadBackup { hash: String },
}

pub(crate) fn io(path: &str) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_string(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Changes are being made (or the run was interrupted).
    Applying,
    Applied,
    /// The driver swap waits for a reboot; the next apply of the same plan
    /// after it (or provision-resume.service) finishes the generation.
    AwaitingReboot,
    /// Failed and undone automatically.
    Failed,
    /// Failed and the automatic undo could not restore everything.
    FailedIncomplete,
    RolledBack,
    /// A rollback is undoing it (or was interrupted doing so: the next run
    /// finishes it).
    RollingBack,
    /// A rollback ran but could not restore everything.
    RollbackIncomplete,
}

/// How to undo one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Undo {
    /// Put the file back as it was: `before` null means it did not exist.
    File {
        path: String,
        before: Option<Saved>,
        /// Directories the change creates around a new file, removed with
        /// it when they are empty again (deepest first).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        created_dirs: Vec<String>,
    },
    /// Remove this directory tree the change created (through the root,
    /// with no tool of its own), then the directories around it the change
    /// created, when empty again.
    Tree {
        path: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        created_dirs: Vec<String>,
    },
    /// Return the package database to this set of versions and holds.
    Packages {
        manager: String,
        before: BTreeMap<String, PackageState>,
        /// Modules of the earlier release, built before the change: put
        /// where its maintainer script loads them while the set returns,
        /// so that nothing is built again.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        modules: Vec<SavedModule>,
    },
    /// Run a command (a cache refresh after files were restored).
    Command { cmd: Cmd },
    /// Run a command in its place among the other undos (an uninstaller).
    Run { cmd: Cmd },
    /// Install this verified runfile again (the release it replaced).
    Runfile {
        url: String,
        sha256: String,
        args: Vec<String>,
    },
    /// Start these services again, in order: the window stopped them.
    StartUnits { units: Vec<String> },
    /// Stop these services, in order: the change started them.
    StopUnits { units: Vec<String> },
    /// Reload systemd and restart these services if they run: their unit
    /// files were restored.
    RestartUnits { units: Vec<String> },
    /// Load these kernel modules again, in order: the window unloaded them.
    LoadModules { modules: Vec<String> },
    /// Unload these kernel modules, in order: the change loaded them.
    UnloadModules { modules: Vec<String> },
    /// The node was drained through its scheduler: `resume` puts it back
    /// when nothing else changed (a drain that timed out); after changes
    /// that were undone, `keep` leaves it drained with a reason naming the
    /// log; a rollback leaves it as it is.
    Undrain {
        node: String,
        resume: Cmd,
        keep: Cmd,
    },
}

/// A file's former state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Saved {
    Content { sha256: String, mode: u32 },
    Link { target: String },
}

/// A built module tarball in the backups, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedModule {
    pub path: String,
    pub saved: Saved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageState {
    pub version: String,
    pub held: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub step: String,
    pub undo: Undo,
    /// Set once the undo has run.
    #[serde(default)]
    pub undone: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generation {
    pub id: u64,
    pub plan: Option<String>,
    pub plan_sha256: Option<String>,
    pub started: String,
    pub finished: Option<String>,
    pub status: Status,
    pub reboot_required: bool,
    /// Log of every command's output for this generation.
    pub log: String,
    pub entries: Vec<Entry>,
    /// The boot the generation was applied in.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The plan's `[upgrade]` policy: a rollback that swaps the driver
    /// back drains the node the same way.
    #[serde(default)]
    pub upgrade: Option<crate::plan::UpgradeSpec>,
    /// Set while the generation waits for a reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<Awaiting>,
    /// How long its window kept the GPUs out of service (metrics).
    #[serde(default)]
    pub unavailable_seconds: Option<f64>,
    /// How long the kernel module's build took, before the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_seconds: Option<f64>,
    /// The initramfs tools' strays present when it began (see
    /// [`strays`]): those that appear after are removed when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strays_before: Option<Vec<String>>,
}

/// What a generation waiting for a reboot still has to do after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Awaiting {
    pub reason: String,
    /// The boot that must end first.
    pub boot_id: Option<String>,
    /// Services the window stopped, to start after the reboot.
    pub start: Vec<String>,
    /// Where the plan was kept for provision-resume.service.
    pub plan: Option<String>,
}

/// An open generation being written.
pub struct Journal<'a> {
    root: &'a Root,
    pub generation: Generation,
}

impl<'a> Journal<'a> {
    /// Starts the next generation (the caller holds the [`Lock`]).
    pub fn begin(
        root: &'a Root,
        plan: Option<(&Path, &str)>,
        lock: &mut Lock,
    ) -> Result<Journal<'a>, JournalError> {
        root.create_dir_all(GENERATIONS).map_err(io(GENERATIONS))?;
        let id = list(root)?.last().copied().unwrap_or(0) + 1;
        let generation = Generation {
            id,
            plan: plan.map(|(path, _)| path.to_string_lossy().into_owned()),
            plan_sha256: plan.map(|(_, sha)| sha.to_string()),
            started: now(),
            finished: None,
            status: Status::Applying,
            reboot_required: false,
            log: format!("{LOG_DIR}/{id:04}.log"),
            entries: Vec::new(),
            boot_id: root
                .read_trimmed("/proc/sys/kernel/random/boot_id")
                .ok()
                .flatten(),
            upgrade: None,
            awaiting: None,
            unavailable_seconds: None,
            build_seconds: None,
            strays_before: Some(strays::present(root)),
        };
        let journal = Journal { root, generation };
        journal.save()?;
        lock.note_generation(id);
        Ok(journal)
    }

    /// Opens an existing generation to undo it.
    pub fn open(root: &'a Root, id: u64) -> Result<Journal<'a>, JournalError> {
        Ok(Journal {
            root,
            generation: load(root, id)?,
        })
    }

    pub fn root(&self) -> &Root {
        self.root
    }

    fn save(&self) -> Result<(), JournalError> {
        let path = generation_path(self.generation.id);
        let text =
            serde_json::to_vec_pretty(&self.generation).map_err(|error| JournalError::Damaged {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        self.root
            .write_atomic(&path, &text, 0o600)
            .map_err(io(&path))
    }

    /// Records how to undo a change, durably, before the change is made.
    pub fn record(&mut self, step: &str, undo: Undo) -> Result<(), JournalError> {
        self.generation.entries.push(Entry {
            step: step.to_string(),
            undo,
            undone: false,
        });
        self.save()
    }

    /// Records the undo of replacing (or creating, or removing) file `path`:
    /// its present content goes to the backups first.
    pub fn record_file(&mut self, step: &str, path: &str) -> Result<(), JournalError> {
        let before = self.save_file(path)?;
        // One entry per file per generation: the first state is the one to restore.
        let already = self
            .generation
            .entries
            .iter()
            .any(|e| matches!(&e.undo, Undo::File { path: p, .. } if p == path));
        if already {
            return Ok(());
        }
        let mut created_dirs = Vec::new();
        if before.is_none() {
            let mut dir = std::path::Path::new(path).parent();
            while let Some(d) = dir {
                let text = d.to_string_lossy();
                if text == "/" || text.is_empty() || self.root.exists(d) {
                    break;
                }
                created_dirs.push(text.into_owned());
                dir = d.parent();
            }
        }
        self.record(
            step,
            Undo::File {
                path: path.to_string(),
                before,
                created_dirs,
            },
        )
    }

    /// Removes directories a change created, if nothing else is in them.
    pub fn remove_created_dirs(&self, dirs: &[String]) {
        for dir in dirs {
            let _ = std::fs::remove_dir(self.root.join(dir));
        }
    }

    /// Saves the current state of `path` into the backups.
    pub fn save_file(&self, path: &str) -> Result<Option<Saved>, JournalError> {
        let meta = match self.root.symlink_metadata(path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io(path)(error)),
        };
        if meta.file_type().is_symlink() {
            let target = self.root.read_link(path).map_err(io(path))?;
            return Ok(Some(Saved::Link {
                target: target.to_string_lossy().into_owned(),
            }));
        }
        let bytes = std::fs::read(self.root.join(path)).map_err(io(path))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let backup = format!("{BACKUPS}/{sha256}");
        if !self.root.exists(&backup) {
            self.root
                .write_atomic(&backup, &bytes, 0o600)
                .map_err(io(&backup))?;
        }
        Ok(Some(Saved::Content {
            sha256,
            mode: meta.permissions().mode() & 0o7777,
        }))
    }

    /// Puts file `path` back to `before`.
    pub fn restore_file(&self, path: &str, before: &Option<Saved>) -> Result<(), JournalError> {
        match before {
            None => self.root.remove_file(path).map_err(io(path)),
            Some(Saved::Link { target }) => {
                let real = self.root.join(path);
                let temp = real.with_extension("provision-link");
                let _ = std::fs::remove_file(&temp);
                std::os::unix::fs::symlink(target, &temp).map_err(io(path))?;
                std::fs::rename(&temp, &real).map_err(io(path))
            }
            Some(Saved::Content { sha256, mode }) => {
                let backup = format!("{BACKUPS}/{sha256}");
                let bytes = self
                    .root
                    .read_bytes(&backup)
                    .map_err(|_| JournalError::BadBackup {
                        hash: sha256.clone(),
                    })?;
                if hex::encode(Sha256::digest(&bytes)) != *sha256 {
                    return Err(JournalError::BadBackup {
                        hash: sha256.clone(),
                    });
                }
                self.root
                    .write_atomic(path, &bytes, *mode)
                    .map_err(io(path))
            }
        }
    }

    pub fn mark_undone(&mut self, index: usize) -> Result<(), JournalError> {
        if let Some(entry) = self.generation.entries.get_mut(index) {
            entry.undone = true;
        }
        self.save()
    }

    /// Records the state without ending the generation.
    pub fn set_status(&mut self, status: Status) -> Result<(), JournalError> {
        self.generation.status = status;
        self.save()
    }

    /// Ends the generation: what its commands left beside the journaled
    /// files goes first.
    pub fn finish(&mut self, status: Status) -> Result<(), JournalError> {
        if let Some(before) = &self.generation.strays_before {
            strays::remove_new(self.root, before);
        }
        self.generation.status = status;
        self.generation.finished = Some(now());
        self.save()
    }

    pub fn set_reboot_required(&mut self, required: bool) -> Result<(), JournalError> {
        self.generation.reboot_required = required;
        self.save()
    }

    pub fn set_upgrade(&mut self, upgrade: &crate::plan::UpgradeSpec) -> Result<(), JournalError> {
        self.generation.upgrade = Some(upgrade.clone());
        self.save()
    }

    /// Marks the generation as waiting for a reboot (or done waiting).
    pub fn set_awaiting(&mut self, awaiting: Option<Awaiting>) -> Result<(), JournalError> {
        self.generation.awaiting = awaiting;
        self.save()
    }
}

fn generation_path(id: u64) -> String {
    format!("{GENERATIONS}/{id:04}.json")
}

/// Generation ids on disk, ascending.
pub fn list(root: &Root) -> Result<Vec<u64>, JournalError> {
    let names = match root.read_dir(GENERATIONS) {
        Ok(names) => names,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(GENERATIONS)(error)),
    };
    let mut ids: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".json"))
        .filter_map(|n| n.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

pub fn load(root: &Root, id: u64) -> Result<Generation, JournalError> {
    let path = generation_path(id);
    let text = root.read_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|error| JournalError::Damaged {
        path,
        reason: error.to_string(),
    })
}

/// The newest generation that still has changes to undo: applied, or
/// interrupted mid-apply (a crash), or a rollback that stopped half-way.
pub fn latest_undoable(root: &Root) -> Result<Option<Generation>, JournalError> {
    for id in list(root)?.into_iter().rev() {
        let generation = load(root, id)?;
        match generation.status {
            Status::Applied
            | Status::AwaitingReboot
            | Status::Applying
            | Status::RollbackIncomplete
            | Status::RollingBack
            | Status::FailedIncomplete => {
                return Ok(Some(generation));
            }
            Status::RolledBack | Status::Failed => continue,
        }
    }
    Ok(None)
}

/// The newest generation, when it waits for a reboot.
pub fn awaiting_reboot(root: &Root) -> Result<Option<Generation>, JournalError> {
    match list(root)?.last() {
        Some(&id) => {
            let generation = load(root, id)?;
            Ok((generation.status == Status::AwaitingReboot).then_some(generation))
        }
        None => Ok(None),
    }
}

/// The newest generation, when a run was interrupted while applying or
/// rolling it back (its process is gone: the caller holds the lock).
pub fn interrupted(root: &Root) -> Result<Option<Generation>, JournalError> {
    match list(root)?.last() {
        Some(&id) => {
            let generation = load(root, id)?;
            Ok(
                matches!(generation.status, Status::Applying | Status::RollingBack)
                    .then_some(generation),
            )
        }
        None => Ok(None),
    }
}

/// Directories where provision puts files: its own, and those of every
/// file a generation recorded.
fn managed_dirs(root: &Root) -> Vec<String> {
    let mut dirs: Vec<String> = [GENERATIONS, BACKUPS, PLANS, STATE_DIR, "/etc"]
        .iter()
        .map(|d| d.to_string())
        .collect();
    for generation in all(root).unwrap_or_default() {
        for entry in generation.entries {
            if let Undo::File { path, .. } = entry.undo
                && let Some(parent) = Path::new(&path).parent()
            {
                let parent = parent.to_string_lossy().into_owned();
                if !dirs.contains(&parent) {
                    dirs.push(parent);
                }
            }
        }
    }
    dirs
}

/// Removes what atomic writes of a killed run left (`.provision-*` beside
/// their targets). The caller holds the lock: no write of another run is
/// under way. Returns how many it removed.
pub fn sweep(root: &Root) -> usize {
    let mut removed = 0;
    for dir in managed_dirs(root) {
        for name in root.read_dir(&dir).unwrap_or_default() {
            if name.starts_with(".provision-") {
                let path = format!("{dir}/{name}");
                if root.remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
        }
    }
    if root.read_bytes("/etc/resolv.conf").ok().as_deref() == Some(crate::host::RESOLV_PLACEHOLDER)
        && root.remove_file("/etc/resolv.conf").is_ok()
    {
        removed += 1;
    }
    removed
}

/// Every generation, oldest first.
pub fn all(root: &Root) -> Result<Vec<Generation>, JournalError> {
    list(root)?.into_iter().map(|id| load(root, id)).collect()
}

/// Path of the per-generation log (host path).
pub fn log_path(root: &Root, id: u64) -> PathBuf {
    root.join(format!("{LOG_DIR}/{id:04}.log"))
}

/// Seconds since the epoch of a time [`now`] wrote ("2026-11-22T01:41:26Z").
pub fn unix_seconds(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let number = |s: &str| s.parse::<i64>().ok();
    let mut d = date.splitn(3, '-').map(number);
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':').map(number);
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), the inverse of `now`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// UTC time as RFC 3339 ("2026-11-22T01:41:26Z").
pub fn now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_times_read_back_to_the_second() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2026-12-03T14:01:23Z"), Some(1_796_306_483));
        assert_eq!(unix_seconds("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        let written = now();
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (unix_seconds(&written).unwrap() - seconds).abs() <= 1,
            "{written}"
        );
        assert_eq!(unix_seconds("2026-13-01T00:00:00Z"), None);
        assert_eq!(unix_seconds("yesterday"), None);
    }

    #[test]
    fn file_undo_restores_content_links_and_absence() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        root.write_atomic("/etc/a.conf", b"old\n", 0o640).unwrap();
        std::os::unix::fs::symlink("/etc/a.conf", dir.path().join("etc/link")).unwrap();
        let mut lock = Lock::acquire(&root, "test").unwrap();
        let mut journal = Journal::begin(&root, None, &mut lock).unwrap();
        journal.record_file("t", "/etc/a.conf").unwrap();
        journal.record_file("t", "/etc/link").unwrap();
        journal.record_file("t", "/etc/new.conf").unwrap();
        root.write_atomic("/etc/a.conf", b"new\n", 0o644).unwrap();
        root.write_atomic("/etc/link", b"replaced", 0o644).unwrap();
        root.write_atomic("/etc/new.conf", b"x", 0o644).unwrap();

        let reopened = Journal::open(&root, journal.generation.id).unwrap();
        for entry in &reopened.generation.entries {
            let Undo::File { path, before, .. } = &entry.undo else {
                panic!()
            };
            reopened.restore_file(path, before).unwrap();
        }
        assert_eq!(
            fs_err::read_to_string(dir.path().join("etc/a.conf")).unwrap(),
            "old\n"
        );
        let mode = fs_err::metadata(dir.path().join("etc/a.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            fs_err::read_link(dir.path().join("etc/link")).unwrap(),
            PathBuf::from("/etc/a.conf")
        );
        assert!(!dir.path().join("etc/new.conf").exists());
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let _first = Lock::acquire(&root, "apply").unwrap();
        let error = Lock::acquire(&root, "apply").err().unwrap().to_string();
        assert!(error.contains("another provision run"), "{error}");
        assert!(
            error.contains(&format!("pid {}", std::process::id())),
            "{error}"
        );
    }

    #[test]
    fn generations_count_up_and_the_latest_undoable_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let mut lock = Lock::acquire(&root, "test").unwrap();
        let mut first = Journal::begin(&root, None, &mut lock).unwrap();
        first.finish(Status::Applied).unwrap();
        let mut second = Journal::begin(&root, None, &mut lock).unwrap();
        second.finish(Status::RolledBack).unwrap();
        assert_eq!(second.generation.id, 2);
        assert_eq!(latest_undoable(&root).unwrap().unwrap().id, 1);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let text = now();
        assert_eq!(text.len(), 20);
        assert!(text.starts_with("20") && text.ends_with('Z'), "{text}");
    }
}
