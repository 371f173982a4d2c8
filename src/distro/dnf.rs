//! dnf and rpm: the commands provision runs on the RHEL family, and the
//! parsers for what they print.
//!
//! On a host (or a root that carries dnf) the commands run there. An image
//! built from outside (`dnf --installroot`) gets the image's own
//! repositories, plugin configuration, cache and CUDA key, never the build
//! machine's: dnf reads those from the machine it runs on unless told.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::host::{Cmd, Host};

/// dnf's versionlock plugin's list: the locked package specs.
pub const VERSIONLOCK_LIST: &str = "/etc/dnf/plugins/versionlock.list";
/// How to reach the root's package manager.
#[derive(Debug, Clone)]
pub struct Dnf {
    /// The root's real path when dnf runs from outside it.
    pub installroot: Option<PathBuf>,
    /// `--releasever` for an installroot ("9").
    pub releasever: Option<String>,
    /// A directory of the machine for what dnf's commands need beside the
    /// root (plugin configuration): a chrooted dnf sees it as /tmp. Nothing
    /// of it is written into the root.
    scratch: Option<std::sync::Arc<tempfile::TempDir>>,
    /// dnf runs chrooted into the root (not on the machine itself).
    chrooted: bool,
    /// The root is served from an offline bundle: only its repository is
    /// used (an air-gapped host's other repositories cannot be reached).
    bundle_only: bool,
}

/// The provision-managed CUDA repository's id and key (see step::repository).
const REPO_ID: &str = "provision-cuda";
const REPO_FILE: &str = "/etc/yum.repos.d/provision-cuda.repo";
const REPO_KEY: &str = "/etc/pki/rpm-gpg/RPM-GPG-KEY-provision-cuda";

/// The offline bundle's repository, its id and file (see step::bundle).
pub const BUNDLE_ID: &str = "provision-bundle";
pub const BUNDLE_FILE: &str = "/etc/yum.repos.d/provision-bundle.repo";

/// The path the root's bundle repository serves from ("/var/lib/...").
fn bundle_baseurl(root: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("{root}{BUNDLE_FILE}")).ok()?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("baseurl=file://"))
        .map(str::to_string)
}

/// A plugin configuration directory for the commands of one transaction:
/// the versionlock plugin reading a given list. Removed when dropped.
pub struct Plugins {
    /// Where dnf finds it (a root path when dnf runs inside the root).
    conf_path: String,
    /// The real directory, removed on drop.
    real: PathBuf,
    /// Only versionlock loads (dnf run from outside: the build machine's
    /// other plugins have no business in the image).
    only_versionlock: bool,
}

impl Drop for Plugins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.real);
    }
}

impl Dnf {
    pub fn for_host(host: &Host, release: Option<&str>) -> Dnf {
        let scratch = tempfile::Builder::new()
            .prefix("provision-dnf-")
            .tempdir()
            .ok()
            .map(std::sync::Arc::new);
        let bundle_only = host.root.exists(BUNDLE_FILE);
        if host.has_tool("dnf") {
            return Dnf {
                installroot: None,
                releasever: None,
                scratch,
                chrooted: !host.root.is_host(),
                bundle_only,
            };
        }
        Dnf {
            installroot: Some(host.root.path().to_path_buf()),
            releasever: release.map(|r| r.split('.').next().unwrap_or(r).to_string()),
            scratch,
            chrooted: false,
            bundle_only,
        }
    }

    /// Where the command finds `name` of the scratch directory (without
    /// one, the root's /tmp).
    fn in_scratch(&self, name: &str) -> String {
        match &self.scratch {
            Some(scratch) if !self.chrooted => scratch.path().join(name).display().to_string(),
            _ => format!("/tmp/{name}"),
        }
    }

    /// The real directory behind [`Dnf::in_scratch`].
    fn scratch_real(&self, host: &Host, name: &str) -> PathBuf {
        match &self.scratch {
            Some(scratch) => scratch.path().join(name),
            None => host.root.join(format!("/tmp/{name}")),
        }
    }

    /// The plugin configuration every command of a transaction uses.
    /// `locklist`: the versionlock list to obey instead of the root's (the
    /// list a plan will write, before it is written). Outside the root the
    /// root's own list is used through its real path; inside it, with no
    /// other list, dnf reads its own configuration (`None`).
    pub fn plugins(&self, host: &Host, locklist: Option<&str>) -> std::io::Result<Option<Plugins>> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let unique = format!(
            "provision-dnf-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        match &self.installroot {
            Some(root) => {
                let real = std::env::temp_dir().join(unique);
                std::fs::create_dir_all(&real)?;
                let plugins = Plugins {
                    conf_path: real.display().to_string(),
                    real: real.clone(),
                    only_versionlock: true,
                };
                let own = root.join(VERSIONLOCK_LIST.trim_start_matches('/'));
                let list = match locklist {
                    Some(text) => {
                        std::fs::write(real.join("versionlock.list"), text)?;
                        real.join("versionlock.list")
                    }
                    None if own.exists() => own,
                    None => {
                        std::fs::write(real.join("versionlock.list"), "")?;
                        real.join("versionlock.list")
                    }
                };
                std::fs::write(real.join("versionlock.conf"), versionlock_conf_for(&list))?;
                Ok(Some(plugins))
            }
            None => {
                let Some(text) = locklist else {
                    return Ok(None);
                };
                let real = self.scratch_real(host, &unique);
                std::fs::create_dir_all(&real)?;
                let dir = self.in_scratch(&unique);
                let plugins = Plugins {
                    conf_path: dir.clone(),
                    real: real.clone(),
                    only_versionlock: false,
                };
                // The root's other plugins keep their configuration
                // (subscription-manager reaches RHEL's repositories).
                for name in host.root.read_dir("/etc/dnf/plugins").unwrap_or_default() {
                    if name.ends_with(".conf")
                        && name != "versionlock.conf"
                        && let Ok(bytes) = host.root.read_bytes(format!("/etc/dnf/plugins/{name}"))
                    {
                        std::fs::write(real.join(&name), bytes)?;
                    }
                }
                std::fs::write(real.join("versionlock.list"), text)?;
                let list = PathBuf::from(format!("{dir}/versionlock.list"));
                std::fs::write(real.join("versionlock.conf"), versionlock_conf_for(&list))?;
                Ok(Some(plugins))
            }
        }
    }

    fn dnf(&self, change: bool, plugins: Option<&Plugins>) -> Cmd {
        let mut cmd = if change {
            Cmd::change("dnf").arg("-y")
        } else {
            // Reads never refresh metadata; what they write anyway (logs,
            // the solv cache) goes to the overlay a reading command sees
            // the root through (host::chroot).
            Cmd::read("dnf").arg("-C")
        };
        if let (true, Some(scratch)) = (self.chrooted, &self.scratch) {
            cmd = cmd.scratch(scratch.path());
        }
        if self.bundle_only {
            cmd = cmd.args([
                "--disablerepo=*".to_string(),
                format!("--enablerepo={BUNDLE_ID}"),
            ]);
        }
        if let Some(root) = &self.installroot {
            let root = root.display().to_string();
            cmd = cmd
                .outside()
                .args(["--installroot".to_string(), root.clone()])
                .args([
                    format!("--setopt=reposdir={root}/etc/yum.repos.d"),
                    format!("--setopt=cachedir={root}/var/cache/dnf"),
                    format!("--setopt=logdir={root}/var/log"),
                ]);
            if let Some(release) = &self.releasever {
                cmd = cmd.args([
                    "--releasever".to_string(),
                    release.clone(),
                    format!("--setopt=module_platform_id=platform:el{release}"),
                ]);
            }
            if Path::new(&format!("{root}{REPO_FILE}")).exists() {
                // dnf reads a repository's key from the machine it runs on.
                cmd = cmd.arg(format!("--setopt={REPO_ID}.gpgkey=file://{root}{REPO_KEY}"));
            }
            if let Some(url) = bundle_baseurl(&root) {
                // ... and a file:// repository from the machine's paths too.
                cmd = cmd.arg(format!("--setopt={BUNDLE_ID}.baseurl=file://{root}{url}"));
            }
        }
        // NVIDIA's streams list every release of a branch's packages but
        // only the newest kmod (genmodules.py): modular filtering would hide
        // an older point release's kmod, to pin or to roll back to. provision
        // names exact versions and keeps the branch with its locks, so its
        // own runs see every release of its repositories; a plain `dnf`
        // still obeys the stream.
        cmd = cmd.args([
            format!("--setopt={REPO_ID}.module_hotfixes=true"),
            format!("--setopt={BUNDLE_ID}.module_hotfixes=true"),
        ]);
        if let Some(plugins) = plugins {
            cmd = cmd.arg(format!("--setopt=pluginconfpath={}", plugins.conf_path));
            if plugins.only_versionlock {
                cmd = cmd.args(["--disableplugin=*", "--enableplugin=versionlock"]);
            }
        }
        cmd
    }

    /// Refreshes the repositories' metadata.
    pub fn makecache(&self, plugins: Option<&Plugins>) -> Cmd {
        self.dnf(true, plugins).arg("makecache")
    }

    /// Every available version of each package (module filtering and
    /// locks apply), from the metadata already cached.
    pub fn available(&self, names: &[String], plugins: Option<&Plugins>) -> Cmd {
        self.dnf(false, plugins)
            .args([
                "-q",
                "repoquery",
                "--available",
                "--showduplicates",
                "--qf",
                "%{name}\\t%{epoch}:%{version}-%{release}\\n",
            ])
            .args(names.iter().cloned())
    }

    pub fn module_reset(&self, module: &str, plugins: Option<&Plugins>) -> Cmd {
        self.dnf(true, plugins).args(["module", "reset", module])
    }

    pub fn module_enable(&self, module: &str, stream: &str, plugins: Option<&Plugins>) -> Cmd {
        self.dnf(true, plugins).args([
            "module".to_string(),
            "enable".to_string(),
            format!("{module}:{stream}"),
        ])
    }

    /// Installs exact versions, upgrading or downgrading to them. A package
    /// that conflicts (the other kernel-module flavour) is erased in the same
    /// transaction; the simulation has vetted every removal before.
    pub fn install(&self, exact: &[(String, String)], plugins: Option<&Plugins>) -> Cmd {
        self.dnf(true, plugins)
            .args([
                "install",
                "--allowerasing",
                "--setopt=install_weak_deps=False",
            ])
            .args(exact.iter().map(|(name, evr)| spec(name, evr)))
    }

    /// Downloads every package of the [`Dnf::install`] transaction into
    /// dnf's cache, installing nothing.
    pub fn download(&self, exact: &[(String, String)], plugins: Option<&Plugins>) -> Cmd {
        self.dnf(true, plugins)
            .args([
                "install",
                "--downloadonly",
                "--allowerasing",
                "--setopt=install_weak_deps=False",
                "--setopt=keepcache=True",
            ])
            .args(exact.iter().map(|(name, evr)| spec(name, evr)))
    }

    /// Removes exactly these packages (and what needs them), nothing else.
    pub fn remove(&self, names: &[String], plugins: Option<&Plugins>) -> Cmd {
        self.dnf(true, plugins)
            .args(["remove", "--noautoremove"])
            .args(names.iter().cloned())
    }

    /// The same transaction as [`Dnf::install`], answered "no": dnf prints
    /// what it would do and changes nothing.
    pub fn simulate(&self, exact: &[(String, String)], plugins: Option<&Plugins>) -> Cmd {
        self.dnf(false, plugins)
            .args([
                "install",
                "--assumeno",
                "--allowerasing",
                "--setopt=install_weak_deps=False",
            ])
            .args(exact.iter().map(|(name, evr)| spec(name, evr)))
    }

    /// `rpm ARGS`, run from outside with `--root` when the root is an
    /// install root (its own rpm may be missing).
    pub fn rpm_read(&self, args: &[&str]) -> Cmd {
        let cmd = Cmd::read("rpm");
        match &self.installroot {
            Some(root) => cmd
                .outside()
                .args(["--root".to_string(), root.display().to_string()]),
            None => cmd,
        }
        .args(args.iter().copied())
    }

    /// `rpm -e` (for what dnf does not remove: imported keys).
    pub fn rpm_erase(&self, names: &[String]) -> Cmd {
        let mut cmd = Cmd::change("rpm");
        if let Some(root) = &self.installroot {
            cmd = cmd
                .outside()
                .args(["--root".to_string(), root.display().to_string()]);
        }
        cmd.arg("-e").args(names.iter().cloned())
    }

    /// `dnf list --installed` (which repository each package came from).
    pub fn list_installed(&self, names: &[String]) -> Cmd {
        self.dnf(false, None)
            .args(["-q", "list", "--installed"])
            .args(names.iter().cloned())
    }
}

/// Where dnf keeps a module's enabled stream.
pub fn module_state_file(module: &str) -> String {
    format!("/etc/dnf/modules.d/{module}.module")
}

fn versionlock_conf_for(list: &Path) -> String {
    format!("[main]\nenabled = 1\nlocklist = {}\n", list.display())
}

/// "name-epoch:version-release", dnf's exact package spec.
/// `name-evr` as dnf takes a package at an exact version.
pub fn spec(name: &str, evr: &str) -> String {
    if evr.is_empty() {
        name.to_string()
    } else {
        format!("{name}-{evr}")
    }
}

/// `repoquery --qf '%{name}\t%{epoch}:%{version}-%{release}'` lines; epoch
/// 0 is dropped, as rpm prints it.
pub fn parse_available(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, evr)) = line.split_once('\t') else {
            continue;
        };
        let evr = evr
            .trim()
            .strip_prefix("0:")
            .unwrap_or(evr.trim())
            .to_string();
        let list = versions.entry(name.trim().to_string()).or_default();
        if !list.contains(&evr) {
            list.push(evr);
        }
    }
    for list in versions.values_mut() {
        list.sort_by(|a, b| crate::version::rpm_compare(b, a));
    }
    versions
}

/// The module state file dnf writes for an enabled stream.
pub fn parse_module_state(text: &str) -> Option<(String, String)> {
    let mut stream = None;
    let mut state = None;
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=') {
            match key.trim() {
                "stream" => stream = Some(value.trim().to_string()),
                "state" => state = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    Some((stream?, state?))
}

/// The `/etc/dnf/plugins/versionlock.list` lines that lock these exact
/// versions ("name-epoch:version-release.*", the plugin's own format).
pub fn versionlock_list(locked: &[(String, String)]) -> String {
    let mut text = crate::step::file::header(
        "lock the NVIDIA driver and CUDA packages at the planned versions",
    );
    for (name, evr) in locked {
        let evr = if evr.contains(':') {
            evr.clone()
        } else {
            format!("0:{evr}")
        };
        text.push_str(&format!("{name}-{evr}.*\n"));
    }
    text
}

/// The versionlock plugin's configuration, pointing at the list.
pub const VERSIONLOCK_CONF: &str = "/etc/dnf/plugins/versionlock.conf";

pub fn versionlock_conf() -> String {
    format!(
        "{}[main]\nenabled = 1\nlocklist = {}\n",
        crate::step::file::header(
            "the versionlock plugin holds the driver (its list is managed too)"
        ),
        VERSIONLOCK_LIST
    )
}

/// What `dnf install --assumeno` says it would do: (name, version after)
/// per section.
pub fn parse_transaction(text: &str) -> super::apt::Transaction {
    let mut tx = super::apt::Transaction::default();
    let mut section = String::new();
    let mut pending: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') {
            section = line.trim_end_matches(':').trim().to_string();
            pending = None;
            continue;
        }
        let mut words: Vec<&str> = line.split_whitespace().collect();
        // A long name wraps: the rest of its row is on the next line.
        let joined;
        if let Some(name) = pending.take() {
            joined = std::iter::once(name.as_str())
                .chain(words.iter().copied())
                .collect::<Vec<_>>()
                .join(" ");
            words = joined.split_whitespace().collect();
        }
        if words.len() == 1 {
            pending = Some(words[0].to_string());
            continue;
        }
        if words.len() < 3 || words[0] == "replacing" {
            continue;
        }
        let (name, version) = (
            words[0].to_string(),
            words[2].strip_prefix("0:").unwrap_or(words[2]).to_string(),
        );
        if section.starts_with("Removing") || section.starts_with("Erasing") {
            tx.remove.push((name, version));
        } else if section.starts_with("Installing")
            || section.starts_with("Upgrading")
            || section.starts_with("Downgrading")
            || section.starts_with("Reinstalling")
        {
            tx.install.push((name, None, version));
        }
    }
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repoquery_versions_newest_first() {
        let versions = parse_available(
            "nvidia-driver-cuda\t3:580.95.05-1.el9\nnvidia-driver-cuda\t3:580.105.08-1.el9\ndkms\t0:3.0.13-1.el9\n",
        );
        assert_eq!(
            versions["nvidia-driver-cuda"],
            ["3:580.105.08-1.el9", "3:580.95.05-1.el9"]
        );
        assert_eq!(versions["dkms"], ["3.0.13-1.el9"]);
    }

    #[test]
    fn assumeno_transaction_of_dnf4() {
        let text = "\
Dependencies resolved.
================================================================================
 Package                  Arch     Version                 Repository      Size
================================================================================
Installing:
 kmod-nvidia-open-dkms    x86_64   3:580.105.08-1.el9      provision-cuda 6.2 k
 nvidia-driver-cuda       x86_64   3:580.105.08-1.el9      provision-cuda 6.1 k
Installing dependencies:
 nvidia-driver-cuda-libs-with-a-very-long-name
                          x86_64   3:580.105.08-1.el9      provision-cuda 7.9 k
Removing:
 gpu-burn-legacy          x86_64   1.0-1.el9               @System         0

Transaction Summary
================================================================================
Install  3 Packages
Remove   1 Package

Operation aborted.
";
        let tx = parse_transaction(text);
        let installed: Vec<&str> = tx.install.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            installed,
            [
                "kmod-nvidia-open-dkms",
                "nvidia-driver-cuda",
                "nvidia-driver-cuda-libs-with-a-very-long-name"
            ]
        );
        assert_eq!(tx.install[0].2, "3:580.105.08-1.el9");
        assert_eq!(
            tx.remove,
            vec![("gpu-burn-legacy".to_string(), "1.0-1.el9".to_string())]
        );
    }

    #[test]
    fn module_state_and_locks() {
        let state =
            "[nvidia-driver]\nname=nvidia-driver\nstream=580-open\nprofiles=\nstate=enabled\n";
        assert_eq!(
            parse_module_state(state),
            Some(("580-open".into(), "enabled".into()))
        );
        let list = versionlock_list(&[
            ("nvidia-driver-cuda".into(), "3:580.105.08-1.el9".into()),
            ("dkms".into(), "3.0.13-1.el9".into()),
        ]);
        assert!(list.contains("nvidia-driver-cuda-3:580.105.08-1.el9.*\n"));
        assert!(list.contains("dkms-0:3.0.13-1.el9.*\n"));
    }
}
