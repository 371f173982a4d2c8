//! A throwaway apt: its own configuration, lists, cache and dpkg status
//! (an empty one, or a host's read in place), all under one temporary
//! directory. Nothing of this machine's apt or dpkg is read or written:
//! `bundle` resolves a release with it, and `plan --bundle` asks it whether
//! a bundle serves a host.

use std::path::{Path, PathBuf};

use super::BundleError;
use crate::host::{Cmd, Runner, run_checked};

pub(super) struct Apt<'a> {
    dir: tempfile::TempDir,
    runner: &'a dyn Runner,
    pub(super) debian_arch: &'static str,
}

/// Debian's name of a bundle's architecture ("x86_64", "sbsa").
pub(super) fn debian_arch(arch: &str) -> Option<&'static str> {
    match arch {
        "x86_64" => Some("amd64"),
        "sbsa" | "aarch64" => Some("arm64"),
        _ => None,
    }
}

pub(super) fn io(error: std::io::Error) -> BundleError {
    BundleError::Build(error.to_string())
}

impl<'a> Apt<'a> {
    /// `status`: the dpkg status to resolve against (a host's, read only);
    /// None for an empty one of its own.
    pub(super) fn new(
        runner: &'a dyn Runner,
        debian_arch: &'static str,
        status: Option<PathBuf>,
    ) -> Result<Apt<'a>, BundleError> {
        let dir = tempfile::Builder::new()
            .prefix("provision-bundle-")
            .tempdir()
            .map_err(|e| BundleError::Build(format!("a temporary directory: {e}")))?;
        let base = dir.path();
        for sub in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "keys",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
        ] {
            fs_err::create_dir_all(base.join(sub)).map_err(io)?;
        }
        let status = match status {
            Some(status) => status,
            None => {
                fs_err::write(base.join("status"), "").map_err(io)?;
                base.join("status")
            }
        };
        let d = base.display();
        let s = status.display();
        let conf = format!(
            "Dir::Etc \"{d}/etc/apt\";\nDir::Etc::Parts \"{d}/etc/apt/apt.conf.d\";\nDir::Etc::SourceList \"{d}/etc/apt/sources.list\";\nDir::Etc::SourceParts \"{d}/etc/apt/sources.list.d\";\nDir::Etc::PreferencesParts \"{d}/etc/apt/preferences.d\";\nDir::Etc::TrustedParts \"{d}/etc/apt/trusted.gpg.d\";\nDir::State \"{d}/state\";\nDir::State::status \"{s}\";\nDir::Cache \"{d}/cache\";\nDir::Log \"{d}/log\";\nDebug::NoLocking \"true\";\nAPT::Architecture \"{debian_arch}\";\nAPT::Architectures {{ \"{debian_arch}\"; }};\nAcquire::Languages \"none\";\nAcquire::Retries \"5\";\nAPT::Install-Recommends \"false\";\nAPT::Sandbox::User \"root\";\n"
        );
        fs_err::write(base.join("apt.conf"), conf).map_err(io)?;
        Ok(Apt {
            dir,
            runner,
            debian_arch,
        })
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn cmd(&self, program: &str) -> Cmd {
        Cmd::read(program)
            .outside()
            .env(
                "APT_CONFIG",
                self.path().join("apt.conf").display().to_string(),
            )
            .env("DEBIAN_FRONTEND", "noninteractive")
    }

    pub(super) fn run(&self, cmd: Cmd) -> Result<String, BundleError> {
        run_checked(self.runner, &cmd)
            .map(|o| o.stdout)
            .map_err(|e| BundleError::Build(e.to_string()))
    }

    /// Runs `cmd`; its output whether it succeeded or not.
    pub(super) fn try_run(&self, cmd: Cmd) -> Result<(bool, String), BundleError> {
        let output = self
            .runner
            .run(&cmd)
            .map_err(|e| BundleError::Build(e.to_string()))?;
        Ok((
            output.success(),
            format!("{}\n{}", output.stdout, output.stderr),
        ))
    }
}
