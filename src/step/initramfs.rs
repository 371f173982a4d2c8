//! Regenerates the initramfs of every installed kernel, only when an image
//! lacks the nouveau blacklist (or the blacklist itself changes in this
//! run): `update-initramfs -u -k all` on Debian/Ubuntu, `dracut -f
//! --regenerate-all` on the RHEL family. The images are backed up first, so
//! a rollback puts them back byte for byte.

use super::{Action, Change, Check, Context, Diff, Step, StepError};
use crate::facts::nouveau::{InitramfsCache, in_image};
use crate::facts::os::Family;
use crate::host::{Cmd, run_checked};
use crate::journal::Journal;

pub const ID: &str = "nouveau:initramfs";

pub struct Initramfs {
    /// modprobe.d files that will blacklist nouveau once the plan is applied.
    pub blacklist_files: Vec<String>,
    /// provision's own blacklist file and the content it will have: while
    /// the file differs, it changes in this run and every image is stale.
    pub blacklist: Option<(String, String)>,
    pub family: Option<Family>,
}

impl Initramfs {
    pub fn command(&self) -> Cmd {
        match self.family {
            Some(Family::Rhel) => Cmd::change("dracut").args(["-f", "--regenerate-all"]),
            _ => Cmd::change("update-initramfs").args(["-u", "-k", "all"]),
        }
    }

    /// Images (with their kernels) that need rebuilding, and why.
    fn stale(&self, ctx: &Context) -> Result<Vec<(String, String)>, StepError> {
        let root = &ctx.host.root;
        let changes = self.blacklist.as_ref().is_some_and(|(path, want)| {
            root.read_string(path).ok().as_deref() != Some(want.as_str())
        });
        // An image built before a blacklist file was last written carries
        // an older copy of it (or none).
        let written = self
            .blacklist_files
            .iter()
            .filter_map(|path| root.stamp(path).ok())
            .map(|stamp| stamp.mtime_ns)
            .max();
        let mut cache = InitramfsCache::load(root);
        let mut listed = false;
        let mut stale = Vec::new();
        for kernel in &ctx.facts.os.kernels {
            let Some(image) = &kernel.initramfs else {
                continue;
            };
            if changes {
                stale.push((image.clone(), "the nouveau blacklist changes".to_string()));
                continue;
            }
            if let (Some(written), Ok(built)) = (written, root.stamp(image))
                && built.mtime_ns < written
            {
                stale.push((
                    image.clone(),
                    "it was built before the nouveau blacklist was written".to_string(),
                ));
                continue;
            }
            let listing = cache
                .listing(ctx.host, self.family, image)
                .map_err(StepError::Failed)?;
            if cache.images.get(image) != Some(&listing) {
                listed = true;
                cache.images.insert(image.clone(), listing.clone());
            }
            if !self.blacklist_files.iter().any(|f| in_image(&listing, f)) {
                let why = if listing.nouveau_module {
                    "it carries nouveau.ko without a blacklist"
                } else {
                    "it lacks the nouveau blacklist"
                };
                stale.push((image.clone(), why.to_string()));
            }
        }
        if listed && ctx.writable {
            // Remember the listings: the next check costs a stat per image.
            let _ = cache.store(&ctx.host.root);
        }
        Ok(stale)
    }
}

impl Step for Initramfs {
    fn id(&self) -> String {
        ID.to_string()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let images = ctx
            .facts
            .os
            .kernels
            .iter()
            .filter(|k| k.initramfs.is_some())
            .count();
        if images == 0 {
            return Ok(Check::Satisfied("no initramfs images to update".into()));
        }
        let stale = self.stale(ctx)?;
        if stale.is_empty() {
            return Ok(Check::Satisfied(format!(
                "{images} initramfs image(s) carry the nouveau blacklist"
            )));
        }
        let diff = stale
            .iter()
            .map(|(image, why)| format!("~ {image}: {why}\n"))
            .collect::<String>();
        Ok(Check::Pending(Change {
            action: Action::Update,
            summary: format!("regenerate {} initramfs image(s)", stale.len()),
            diff: Diff::Text(diff),
            commands: vec![self.command().display()],
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        for kernel in &ctx.facts.os.kernels {
            if let Some(image) = &kernel.initramfs {
                journal.record_file(ID, image)?;
            }
        }
        run_checked(ctx.host.runner.as_ref(), &self.command())?;
        refresh_cache(ctx)
    }
}

/// Lists every image again and stores the listings, so that later checks
/// (every `apply`) cost a stat per image instead of a decompression.
pub fn refresh_cache(ctx: &Context) -> Result<(), StepError> {
    let family = ctx.facts.os.family;
    let mut cache = InitramfsCache::default();
    for kernel in &ctx.facts.os.kernels {
        let Some(image) = &kernel.initramfs else {
            continue;
        };
        let empty = InitramfsCache::default();
        if let Ok(listing) = empty.listing(ctx.host, family, image) {
            cache.images.insert(image.clone(), listing);
        }
    }
    cache
        .store(&ctx.host.root)
        .map_err(super::io_error(crate::facts::nouveau::INITRAMFS_CACHE))
}
