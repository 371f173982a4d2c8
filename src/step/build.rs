//! `driver:build`: the kernel module of the driver the plan moves to, built
//! through DKMS before anything is stopped or replaced. The package's own
//! source is unpacked into a scratch tree (`distro::dkms::SCRATCH`), built
//! there for every installed kernel with headers, and packed where the
//! package's maintainer script loads it instead of building: inside the
//! window the package step only installs. A build that fails fails here,
//! with the end of DKMS's `make.log`, while the old driver still runs.
//!
//! The module of the release being replaced is packed too and kept in the
//! journal: a rollback hands it to the old package's script, so undoing an
//! upgrade builds nothing either.

use std::sync::Arc;

use crate::distro::dkms::{self, Handover, SCRATCH};
use crate::journal::{Journal, Saved, Undo};
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError, io_error};

pub const ID: &str = "driver:build";

/// The package that carries the module's source, fetched.
pub struct Fetched {
    pub package: String,
    pub version: String,
    /// Its archive, a path inside the root.
    pub archive: String,
    /// What a build needs (`dkms`, the kernel's headers) that is not
    /// installed yet: installed ahead of the build where that leaves the
    /// transaction's package set (`Prebuild::install_tools`).
    pub tools: Vec<String>,
}

/// What the build leaves for the package step.
#[derive(Debug, Clone, Default)]
pub struct Prebuilt {
    /// Tarballs the maintainer script loads; removed once it has.
    pub tarballs: Vec<String>,
    /// The replaced release's module, packed, for a rollback: where the
    /// old package's script looks for it, and the journal's copy.
    pub previous: Vec<(String, Saved)>,
}

/// A package step whose module can be built ahead of it.
pub trait Prebuild: Send + Sync {
    /// For `plan`: the package that carries the module source and the
    /// release it moves to (a range while the lists do not say); `None`
    /// when the module comes precompiled.
    fn planned(&self, ctx: &Context) -> Option<(String, String)>;
    /// Downloads the transaction (once) and finds the module's package in
    /// it; `None` when the set builds no module.
    fn fetch(&self, ctx: &Context) -> Result<Option<Fetched>, StepError>;
    /// Unpacks `archive` into `dir` (both in the root); returns the
    /// maintainer script that configures it.
    fn unpack(&self, ctx: &Context, archive: &str, dir: &str) -> Result<String, StepError>;
    /// Installs what the build needs and the host lacks (`tools`: dkms,
    /// the kernel's headers), at the versions the driver's transaction
    /// takes, journaled; `Ok(Err(why))`, nothing installed, when installing
    /// them apart would leave another package set than that transaction.
    fn install_tools(
        &self,
        ctx: &Context,
        journal: &mut Journal,
        tools: &[String],
    ) -> Result<Result<(), String>, StepError>;
    /// Gives the package step what was built.
    fn hand_over(&self, prebuilt: Prebuilt);
}

pub struct Build {
    pub source: Arc<dyn Prebuild>,
}

impl Step for Build {
    fn id(&self) -> String {
        ID.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let Some((package, release)) = self.source.planned(ctx) else {
            return Ok(Check::Satisfied(
                "the kernel module comes precompiled for the kernel: nothing to build".into(),
            ));
        };
        // dkms installed, or its tree there (a capture's package list may
        // be partial): else apply installs it and the headers first, where
        // that leaves the transaction's package set (see `apply`).
        let has_dkms = ctx.facts.all_packages.iter().any(|p| p.name == "dkms")
            || ctx.host.root.is_dir("/var/lib/dkms");
        let first = if has_dkms {
            ""
        } else {
            "install dkms and the kernel's headers (the versions the driver's transaction takes; else the package step builds), then "
        };
        let kernels = dkms::kernels_with_headers(&ctx.host.root);
        let kernels = if kernels.is_empty() {
            "the kernels whose headers the plan installs".to_string()
        } else {
            kernels.join(", ")
        };
        Ok(Check::Pending(Change {
            action: Action::None,
            summary: format!(
                "{first}build the kernel module of {package} {release} (DKMS) for {kernels} before anything is stopped; the package step then only installs it"
            ),
            diff: Diff::None,
            commands: vec![
                format!("dpkg-deb -x <{package} archive> {SCRATCH}/root"),
                format!("dkms add, dkms build -k <kernel> (--dkmstree {SCRATCH}/tree)"),
                "dkms mktarball --binaries-only (loaded by the package's maintainer script)".into(),
            ],
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        let Some(fetched) = self.source.fetch(ctx)? else {
            return Ok(()); // the transaction carries no module source
        };
        let root = &ctx.host.root;
        journal.record(
            ID,
            Undo::Tree {
                path: SCRATCH.into(),
                created_dirs: Vec::new(),
            },
        )?;
        root.remove_dir_all(SCRATCH).map_err(io_error(SCRATCH))?;
        let unpacked = format!("{SCRATCH}/root");
        root.create_dir_all(&unpacked)
            .map_err(io_error(&unpacked))?;
        let postinst = self.source.unpack(ctx, &fetched.archive, &unpacked)?;
        let Some(handover) = dkms::parse_postinst(&postinst) else {
            ctx.progress.warn(&format!(
                "{} {}: its maintainer script is not dh_dkms's (no common.postinst to hand a build to): nothing is built ahead, the package step does what its script does",
                fetched.package, fetched.version
            ));
            return root.remove_dir_all(SCRATCH).map_err(io_error(SCRATCH));
        };
        // A fresh host: dkms and the headers first, at the versions the
        // driver's transaction takes, so that a build that fails fails
        // before the driver is installed.
        if !fetched.tools.is_empty()
            && let Err(why) = self.source.install_tools(ctx, journal, &fetched.tools)?
        {
            ctx.progress.warn(&format!(
                "{why}: the package step builds the module, as the package's script does"
            ));
            return root.remove_dir_all(SCRATCH).map_err(io_error(SCRATCH));
        }
        let kernels = dkms::kernels_with_headers(&ctx.host.root);
        let built = build_all(ctx, &fetched, &handover, &kernels)?;
        let mut prebuilt = Prebuilt::default();
        if !built.is_empty() {
            let packed = format!("{SCRATCH}/{}-{}.tar.gz", handover.name, handover.version);
            let sources = format!("{unpacked}/usr/src");
            let tree = format!("{SCRATCH}/tree");
            let cmd = dkms::mktarball(
                &handover.name,
                &handover.version,
                &built,
                Some((&tree, &sources)),
                &packed,
            );
            crate::host::run_checked(ctx.host.runner.as_ref(), &cmd)?;
            let target = handover.tarball();
            journal.record_file(ID, &target)?;
            root.create_dir_all(&handover.tarball_root)
                .map_err(io_error(&handover.tarball_root))?;
            std::fs::rename(root.join(&packed), root.join(&target)).map_err(io_error(&target))?;
            prebuilt.tarballs.push(target);
        }
        prebuilt.previous = pack_previous(ctx, journal, &handover)?;
        root.remove_dir_all(SCRATCH).map_err(io_error(SCRATCH))?;
        self.source.hand_over(prebuilt);
        Ok(())
    }

    /// What it builds, the package step installs: that step's check is the
    /// one that shows convergence.
    fn transient(&self) -> bool {
        true
    }
}

/// Builds the module for each kernel in the scratch trees; the kernels it
/// was built for (DKMS skips those its `BUILD_EXCLUSIVE` rules out).
fn build_all(
    ctx: &Context,
    fetched: &Fetched,
    handover: &Handover,
    kernels: &[String],
) -> Result<Vec<String>, StepError> {
    let runner = ctx.host.runner.as_ref();
    let tree = format!("{SCRATCH}/tree");
    let sources = format!("{SCRATCH}/root/usr/src");
    ctx.host
        .root
        .create_dir_all(&tree)
        .map_err(io_error(&tree))?;
    crate::host::run_checked(runner, &dkms::add(handover, &tree, &sources))?;
    let mut built = Vec::new();
    for kernel in kernels {
        ctx.progress.command_line(&format!(
            "building {} {} for {kernel} (DKMS), before anything is stopped",
            handover.name, handover.version
        ));
        let output = runner.run(&dkms::build(handover, kernel, &tree, &sources))?;
        match output.code {
            Some(0) => built.push(kernel.clone()),
            Some(77) => ctx.progress.warn(&format!(
                "{} {}: DKMS skips kernel {kernel} (its BUILD_EXCLUSIVE rules)",
                handover.name, handover.version
            )),
            _ => return Err(build_failed(ctx, fetched, handover, kernel, &output.tail)),
        }
    }
    Ok(built)
}

fn build_failed(
    ctx: &Context,
    fetched: &Fetched,
    handover: &Handover,
    kernel: &str,
    tail: &str,
) -> StepError {
    let log = format!(
        "{SCRATCH}/tree/{}/{}/build/make.log",
        handover.name, handover.version
    );
    let excerpt = ctx
        .host
        .root
        .read_string(&log)
        .map(|text| dkms::make_log_excerpt(&text, 15))
        .unwrap_or_else(|_| tail.trim().to_string());
    StepError::Failed(format!(
        "the kernel module of {} {} did not build for kernel {kernel}; nothing was stopped or replaced, the installed driver runs on. DKMS's make.log ends:\n{excerpt}",
        fetched.package, fetched.version
    ))
}

/// Packs the module of every other release DKMS has built for this name
/// (the one being replaced) into the journal, for a rollback.
fn pack_previous(
    ctx: &Context,
    journal: &mut Journal,
    handover: &Handover,
) -> Result<Vec<(String, Saved)>, StepError> {
    let root = &ctx.host.root;
    let dir = format!("/var/lib/dkms/{}", handover.name);
    let mut previous = Vec::new();
    for version in root.read_dir(&dir).unwrap_or_default() {
        if version == handover.version || version.starts_with("kernel-") {
            continue;
        }
        let kernels: Vec<String> = root
            .read_dir(format!("{dir}/{version}"))
            .unwrap_or_default()
            .into_iter()
            .filter(|k| root.exists(format!("/lib/modules/{k}")))
            .collect();
        if kernels.is_empty() {
            continue;
        }
        let packed = format!("{SCRATCH}/{}-{version}.previous.tar.gz", handover.name);
        let cmd = dkms::mktarball(&handover.name, &version, &kernels, None, &packed);
        if !ctx.host.runner.run(&cmd)?.success() {
            continue; // not built (only added): a rollback builds it as before
        }
        if let Some(saved) = journal.save_file(&packed)? {
            let target = dkms::tarball_in(&handover.tarball_root, &handover.name, &version);
            previous.push((target, saved));
        }
    }
    Ok(previous)
}
