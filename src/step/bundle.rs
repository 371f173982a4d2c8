//! `repository:bundle`: the host served from a checked offline bundle. Its
//! repository is copied into the root (`/var/lib/provision/bundles/<sha>`)
//! and named in an apt source or a dnf repository of its own, trusted
//! because every file was checked against the manifest (and the manifest
//! against the hash the operator was given) before anything changed; an
//! RHEL-family bundle's rpms were also checked against their repositories'
//! keys when it was made. Rollback removes both.

use crate::bundle::fit::{DnfProbe, Probe, refusal};
use crate::bundle::{Opened, REPO_DIR};
use crate::facts::os::Family;
use crate::journal::{Journal, Undo};
use crate::step::file::{header, unified};
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError, io_error};
use crate::version::{dpkg_compare, rpm_compare};

pub const ID: &str = "repository:bundle";
use crate::distro::apt::BUNDLE_LIST as LIST;
use crate::distro::dnf::{BUNDLE_FILE as REPO, BUNDLE_ID};

pub const BUNDLES: &str = "/var/lib/provision/bundles";

pub struct BundleRepository {
    pub opened: Opened,
    pub family: Family,
    /// The plan's packages: checked against the bundle before anything
    /// changes.
    pub packages: crate::step::packages::Packages,
    /// The plan's path, for the `provision bundle` line a refusal shows.
    pub plan_path: String,
}

impl BundleRepository {
    fn dir(&self) -> String {
        format!("{BUNDLES}/{}", self.opened.manifest_sha256)
    }

    /// The apt source or dnf repository file.
    fn file(&self) -> &'static str {
        match self.family {
            Family::Rhel => REPO,
            Family::Debian => LIST,
        }
    }

    fn source(&self) -> String {
        let header = header(&format!(
            "packages from the offline bundle for {}, every file checked against its manifest",
            self.opened.manifest.release
        ));
        match self.family {
            // copy:, not file: apt copies each archive into its cache as
            // from a mirror, where the module's source is unpacked and
            // built before the window (step::build), as online.
            Family::Debian => format!("{header}deb [trusted=yes] copy:{}/ ./\n", self.dir()),
            Family::Rhel => format!(
                "{header}[{BUNDLE_ID}]\nname=provision offline bundle for {}\nbaseurl=file://{}/\nenabled=1\ngpgcheck=0\n",
                self.opened.manifest.release,
                self.dir()
            ),
        }
    }

    /// The bundle serves this host: the package manager, with the host's
    /// packages (apt: its dpkg status; dnf: a copy of its rpm database and
    /// module state, the plan's stream enabled) and only the bundle, can
    /// install what the plan needs, kernel headers of each installed
    /// kernel included. Else the refusal naming what it lacks.
    fn serves(&self, ctx: &Context) -> Result<(), StepError> {
        let packages = &self.packages;
        let installed = &ctx.facts.all_packages;
        let failed = |e: crate::bundle::BundleError| StepError::Failed(e.to_string());
        let lacks = match self.family {
            Family::Rhel => {
                let probe = DnfProbe::new(&self.opened, ctx.host).map_err(failed)?;
                probe.enable(packages.stream()).map_err(failed)?;
                let available = probe.offered(&packages.names()).map_err(failed)?;
                match packages.transaction_with(installed, &available, rpm_compare) {
                    Ok((exact, _)) => probe.simulate(&exact).map_err(failed)?.err(),
                    Err(missing) => Some(missing),
                }
            }
            Family::Debian => {
                let probe = Probe::new(&self.opened, ctx.host).map_err(failed)?;
                let available = probe.offered(&packages.names()).map_err(failed)?;
                match packages.transaction_with(installed, &available, dpkg_compare) {
                    Ok((exact, remove)) => probe.simulate(&exact, &remove).map_err(failed)?.err(),
                    Err(missing) => Some(missing),
                }
            }
        };
        let Some(lacks) = lacks else {
            return Ok(());
        };
        Err(StepError::Failed(refusal(
            &self.opened,
            ctx.facts,
            &self.plan_path,
            &lacks,
        )))
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

    /// Before anything changes (plan, and apply's first look), the bundle
    /// must serve this host.
    fn preview(&self, ctx: &Context) -> Result<Check, StepError> {
        self.serves(ctx)?;
        self.check(ctx)
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let file = self.file();
        let current = ctx.host.root.read_string(file).ok();
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
            diff: Diff::Text(unified(file, current.as_deref().unwrap_or(""), &source)),
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
        if !root.exists(&dir) {
            let created_dirs = if root.exists(BUNDLES) {
                Vec::new()
            } else {
                vec![BUNDLES.to_string()]
            };
            journal.record(
                ID,
                Undo::Tree {
                    path: dir.clone(),
                    created_dirs,
                },
            )?;
        }
        let target = root.join(&dir);
        fs_err::create_dir_all(&target).map_err(io_error(&dir))?;
        for file in &self.opened.manifest.files {
            let name = file.path.trim_start_matches(&format!("{REPO_DIR}/"));
            let to = target.join(name);
            if let Some(parent) = to.parent() {
                fs_err::create_dir_all(parent).map_err(io_error(&dir))?;
            }
            fs_err::copy(unpacked.join(&file.path), to)
                .map_err(io_error(&format!("{dir}/{name}")))?;
        }
        let list = self.file();
        journal.record_file(ID, list)?;
        root.write_atomic(list, self.source().as_bytes(), 0o644)
            .map_err(io_error(list))
    }
}
