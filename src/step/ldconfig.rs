//! Keeps `/etc/ld.so.cache` in step with the loader configuration provision
//! writes: runs `ldconfig` when a configured directory holds libraries the
//! cache does not list yet (or when the configuration changes in this run).

use super::{Action, Change, Check, Context, Diff, Step, StepError};
use crate::facts::loader::parse_ld_so_cache;
use crate::host::{Cmd, run_checked};
use crate::journal::{Journal, Undo};

pub const ID: &str = "environment:ldconfig";

pub struct Ldconfig {
    /// Directories provision puts on the loader path.
    pub dirs: Vec<String>,
    /// provision's loader configuration files and the content each will
    /// have (`None`: the file goes away).
    pub conf: Vec<(String, Option<String>)>,
}

impl Ldconfig {
    /// `ldconfig` in the root, or `ldconfig -r ROOT` from outside for a
    /// root that carries none (an image built with dnf --installroot).
    fn command(host: &crate::host::Host) -> Cmd {
        if host.has_tool("ldconfig") {
            Cmd::change("ldconfig")
        } else {
            Cmd::change("ldconfig")
                .outside()
                .args(["-r".to_string(), host.root.path().display().to_string()])
        }
    }

    /// Libraries in `dirs` whose soname links the cache lacks.
    fn missing(&self, ctx: &Context) -> Vec<String> {
        let root = &ctx.host.root;
        let cached: Vec<String> = root
            .read_bytes("/etc/ld.so.cache")
            .ok()
            .and_then(|bytes| parse_ld_so_cache(&bytes).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|entry| entry.path)
            .collect();
        let mut missing = Vec::new();
        for dir in &self.dirs {
            for name in root.read_dir(dir).unwrap_or_default() {
                // ldconfig caches the soname links (libcudart.so.12), not the
                // files they point at or the unversioned dev links.
                let is_soname = name
                    .split_once(".so.")
                    .is_some_and(|(_, rest)| !rest.is_empty() && !rest.contains('.'));
                if is_soname && !cached.iter().any(|p| p == &format!("{dir}/{name}")) {
                    missing.push(format!("{dir}/{name}"));
                }
            }
        }
        missing
    }
}

impl Step for Ldconfig {
    fn id(&self) -> String {
        ID.to_string()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let root = &ctx.host.root;
        // A file still changes in this run, or changed after the cache was
        // built: the cache must be rebuilt.
        let config_changes = self.conf.iter().any(|(path, want)| {
            root.read_string(path).ok() != *want
                || match (root.stamp(path), root.stamp("/etc/ld.so.cache")) {
                    (Ok(conf), Ok(cache)) => conf.mtime_ns > cache.mtime_ns,
                    (Ok(_), Err(_)) => true,
                    _ => false,
                }
        });
        let missing = self.missing(ctx);
        if !config_changes && missing.is_empty() {
            return Ok(Check::Satisfied("the loader cache is current".into()));
        }
        let diff = if missing.is_empty() {
            "~ /etc/ld.so.cache: the loader configuration changes\n".to_string()
        } else {
            missing.iter().map(|m| format!("+ {m}\n")).collect()
        };
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: "refresh the loader cache".into(),
            diff: Diff::Text(diff),
            commands: vec![Self::command(ctx.host).display()],
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        // Undo: the configuration files are restored first (later entries
        // are undone first), then the cache is rebuilt from them.
        if ctx.host.root.exists("/etc/ld.so.cache") {
            journal.record(
                ID,
                Undo::Command {
                    cmd: Self::command(ctx.host),
                },
            )?;
        } else {
            // A root without a loader cache (an image being built) gets
            // none back.
            journal.record_file(ID, "/etc/ld.so.cache")?;
        }
        run_checked(ctx.host.runner.as_ref(), &Self::command(ctx.host))?;
        Ok(())
    }
}
