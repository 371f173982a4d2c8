//! `repository:bundle`: the host served from a checked offline bundle. Its
//! repository is copied into the root (`/var/lib/provision/bundles/<sha>`)
//! and named in an apt source of its own, trusted because every file was
//! checked against the manifest (and the manifest against the hash the
//! operator was given) before anything changed. Rollback removes both.

use crate::bundle::{Opened, REPO_DIR};
use crate::host::Cmd;
use crate::journal::{Journal, Undo};
use crate::step::file::{header, unified};
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError, io_error};

pub const ID: &str = "repository:bundle";
pub const LIST: &str = "/etc/apt/sources.list.d/provision-bundle.list";
pub const BUNDLES: &str = "/var/lib/provision/bundles";

pub struct BundleRepository {
    pub opened: Opened,
}

impl BundleRepository {
    fn dir(&self) -> String {
        format!("{BUNDLES}/{}", self.opened.manifest_sha256)
    }

    fn source(&self) -> String {
        format!(
            "{}deb [trusted=yes] file:{}/ ./\n",
            header(&format!(
                "packages from the offline bundle for {}, every file checked against its manifest",
                self.opened.manifest.release
            )),
            self.dir()
        )
    }

    /// Every file of the bundle is in the root at its size.
    fn copied(&self, ctx: &Context) -> bool {
        self.opened.manifest.files.iter().all(|file| {
            let name = file.path.trim_start_matches(&format!("{REPO_DIR}/"));
            ctx.host
                .root
                .metadata(format!("{}/{name}", self.dir()))
                .is_ok_and(|m| m.len() == file.size)
        })
    }
}

impl Step for BundleRepository {
    fn id(&self) -> String {
        ID.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let current = ctx.host.root.read_string(LIST).ok();
        let source = self.source();
        if current.as_deref() == Some(source.as_str()) && self.copied(ctx) {
            return Ok(Check::Satisfied(format!(
                "bundle {} is served from {}",
                self.opened.manifest_sha256,
                self.dir()
            )));
        }
        let bytes: u64 = self.opened.manifest.files.iter().map(|f| f.size).sum();
        Ok(Check::Pending(Change {
            action: if current.is_none() {
                Action::Create
            } else {
                Action::Update
            },
            summary: format!(
                "serve the {} package(s) of the bundle for {} ({:.1} MB) from {}",
                self.opened.manifest.packages.len(),
                self.opened.manifest.release,
                bytes as f64 / 1e6,
                self.dir()
            ),
            diff: Diff::Text(unified(LIST, current.as_deref().unwrap_or(""), &source)),
            commands: vec![format!("copy the bundle's repository to {}", self.dir())],
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        let root = &ctx.host.root;
        let dir = self.dir();
        let Some(unpacked) = &self.opened.dir else {
            return Err(StepError::Failed(
                "the bundle was only checked, not unpacked".into(),
            ));
        };
        if !root.exists(BUNDLES) {
            journal.record(
                ID,
                Undo::Run {
                    cmd: Cmd::change("rmdir").args(["--ignore-fail-on-non-empty", BUNDLES]),
                },
            )?;
        }
        if !root.exists(&dir) {
            journal.record(
                ID,
                Undo::Run {
                    cmd: Cmd::change("rm").args(["-rf", "--", &dir]),
                },
            )?;
        }
        let target = root.join(&dir);
        fs_err::create_dir_all(&target).map_err(io_error(&dir))?;
        for file in &self.opened.manifest.files {
            let name = file.path.trim_start_matches(&format!("{REPO_DIR}/"));
            fs_err::copy(unpacked.join(&file.path), target.join(name))
                .map_err(io_error(&format!("{dir}/{name}")))?;
        }
        journal.record_file(ID, LIST)?;
        root.write_atomic(LIST, self.source().as_bytes(), 0o644)
            .map_err(io_error(LIST))
    }
}
