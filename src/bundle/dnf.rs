//! A throwaway dnf: an install root, its repositories, cache and logs, all
//! under one temporary directory, with none of this machine's
//! repositories or plugins. `bundle` resolves an RHEL-family release into
//! its empty root; `plan --bundle` copies a host's rpm database and module
//! state into it and asks whether the bundle serves that host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::BundleError;
use super::apt::io;
use crate::host::{Cmd, Runner, run_checked};

pub(super) struct Dnf<'a> {
    dir: tempfile::TempDir,
    pub(super) runner: &'a dyn Runner,
    /// The major release: "9".
    releasever: String,
    forcearch: Option<&'static str>,
}

impl<'a> Dnf<'a> {
    /// `releasever`: the major release; `arch`: "x86_64" or "sbsa".
    pub(super) fn new(
        runner: &'a dyn Runner,
        releasever: &str,
        arch: &str,
    ) -> Result<Dnf<'a>, BundleError> {
        let dir = tempfile::Builder::new()
            .prefix("provision-bundle-")
            .tempdir()
            .map_err(|e| BundleError::Build(format!("a temporary directory: {e}")))?;
        for sub in ["root", "repos.d", "keys", "log", "out"] {
            fs_err::create_dir_all(dir.path().join(sub)).map_err(io)?;
        }
        Ok(Dnf {
            dir,
            runner,
            releasever: releasever.to_string(),
            forcearch: (arch != "x86_64").then_some("aarch64"),
        })
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    /// dnf on the root, with only this directory's repositories and none of
    /// this machine's plugins.
    pub(super) fn cmd(&self) -> Cmd {
        let root = self.root().display().to_string();
        let base = self.path().display();
        let release = &self.releasever;
        let mut cmd = Cmd::read("dnf").outside().args([
            "-y".to_string(),
            "--installroot".into(),
            root.clone(),
            format!("--setopt=reposdir={base}/repos.d"),
            format!("--setopt=cachedir={root}/var/cache/dnf"),
            format!("--setopt=logdir={base}/log"),
            "--setopt=keepcache=True".into(),
            "--setopt=install_weak_deps=False".into(),
            "--releasever".into(),
            release.clone(),
            format!("--setopt=module_platform_id=platform:el{release}"),
            "--disableplugin=*".into(),
        ]);
        if let Some(arch) = self.forcearch {
            cmd = cmd.arg(format!("--forcearch={arch}"));
        }
        cmd
    }

    pub(super) fn run(&self, cmd: Cmd) -> Result<String, BundleError> {
        run_checked(self.runner, &cmd)
            .map(|o| o.stdout)
            .map_err(|e| BundleError::Build(e.to_string()))
    }

    /// Enables a module stream in the root (EL8/EL9).
    pub(super) fn enable(&self, stream: Option<&(String, String)>) -> Result<(), BundleError> {
        let Some((module, stream)) = stream else {
            return Ok(());
        };
        self.run(
            self.cmd()
                .args(["module", "enable", &format!("{module}:{stream}")]),
        )
        .map(|_| ())
    }

    /// Every version of each name the repositories offer (module
    /// filtering applies): "epoch:version-release", newest first.
    pub(super) fn available(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, BundleError> {
        let text = self.run(
            self.cmd()
                .args(["-q", "repoquery", "--available", "--showduplicates"])
                .args(["--qf", "%{name}\t%{epoch}:%{version}-%{release}\n"])
                .args(names.iter().cloned()),
        )?;
        Ok(crate::distro::dnf::parse_available(&text))
    }
}
