//! NVIDIA's runfile installers: the driver (`NVIDIA-Linux-<arch>-<version>.run`)
//! and the toolkit alone from CUDA's `cuda_<version>_<driver>_linux.run`.
//! A runfile is downloaded into the shared cache and checked against the
//! plan's sha256, copied into the root and checked again, and only then
//! run. Undo runs the installer's own uninstaller; a driver release that
//! provision installed from a runfile before is installed again.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::window::download::{Download, Prefetch};
use super::{Action, Change, Check, Context, Diff, DriverChange, Step, StepError, io_error};
use crate::fetch::{Fetched, Fetcher, cache_dir, hash_file};
use crate::host::{Cmd, Host, run_checked};
use crate::journal::{Journal, Undo};
use crate::progress::Silent;

/// What provision installed from a runfile (the driver can be installed
/// again when a later release is rolled back).
pub const DRIVER_STATE: &str = "/var/lib/provision/runfile-driver.json";
pub const DRIVER_UNINSTALLER: &str = "/usr/bin/nvidia-uninstall";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub url: String,
    pub sha256: String,
    pub args: Vec<String>,
    pub version: String,
}

/// Which installer, and what it installs.
pub enum Component {
    Driver {
        version: String,
    },
    /// The toolkit alone, into `path` (/usr/local/cuda-12.8); `release`
    /// is the plan's version prefix ("12.8", "12.8.1").
    Toolkit {
        path: String,
        release: String,
    },
}

pub struct Runfile {
    pub url: String,
    pub sha256: String,
    pub args: Vec<String>,
    pub component: Component,
}

/// Installer flags for the driver: DKMS builds the module of the plan's
/// flavour for the root's kernel, silently.
pub fn driver_args(flavor: &str, kernel: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--silent".to_string(),
        "--dkms".to_string(),
        format!("--kernel-module-type={flavor}"),
    ];
    if let Some(kernel) = kernel {
        args.push(format!("--kernel-name={kernel}"));
    }
    args
}

/// Installer flags for the toolkit alone (never the bundled driver).
pub fn toolkit_args(path: &str) -> Vec<String> {
    vec![
        "--silent".to_string(),
        "--toolkit".to_string(),
        format!("--toolkitpath={path}"),
    ]
}

/// Fetches a runfile into the shared cache and checks it (a cached copy
/// that still has its hash is not fetched again).
fn fetch(host: &Host, url: &str, sha256: &str) -> Result<Fetched, StepError> {
    let note = |line: &str| host.runner.note(line);
    crate::fetch::logged(&note, url, || {
        Fetcher::new(cache_dir(), Arc::new(Silent)).fetch(url, sha256)
    })
    .map_err(|e| StepError::Failed(crate::error::chain(&e)))
}

/// Fetches, verifies and runs a runfile in the root.
pub fn install(host: &Host, url: &str, sha256: &str, args: &[String]) -> Result<(), StepError> {
    let fetched = fetch(host, url, sha256)?;
    let inside = format!("/tmp/provision-{}.run", &fetched.sha256[..16]);
    let real = host.root.join(&inside);
    if let Some(parent) = real.parent() {
        std::fs::create_dir_all(parent).map_err(io_error("/tmp"))?;
    }
    std::fs::copy(&fetched.path, &real).map_err(io_error(&inside))?;
    // The copy is what runs: it is checked too.
    let (copied, _) = hash_file(&real).map_err(io_error(&inside))?;
    if copied != fetched.sha256 {
        let _ = std::fs::remove_file(&real);
        return Err(StepError::Failed(format!(
            "{inside} has sha256 {copied} after copying, not {}: not running it",
            fetched.sha256
        )));
    }
    let result = run_checked(
        host.runner.as_ref(),
        &Cmd::change("sh").arg(&inside).args(args.iter().cloned()),
    );
    let _ = std::fs::remove_file(&real);
    result.map(|_| ()).map_err(Into::into)
}

/// A command that runs `program --silent` when it exists (the undo of an
/// installer that may have stopped before writing its uninstaller).
fn uninstall(program: &str) -> Cmd {
    Cmd::change("sh").args([
        "-c".to_string(),
        format!("if [ -x {program} ]; then {program} --silent; fi"),
    ])
}

/// Packages that ship a driver: a runfile must not install over them.
fn packaged_driver(ctx: &Context) -> Vec<String> {
    ctx.facts
        .all_packages
        .iter()
        .map(|p| p.name.as_str())
        .filter(|name| {
            [
                "libcuda1",
                "nvidia-driver-cuda",
                "nvidia-kernel-dkms",
                "nvidia-open-kernel-dkms",
                "nvidia-kernel-open-dkms",
            ]
            .contains(name)
                || ["libnvidia-compute-", "nvidia-dkms-", "kmod-nvidia"]
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
        })
        .map(str::to_string)
        .collect()
}

/// The driver's runfile, fetched into the cache before the window opens:
/// inside it the installer runs from the cache.
struct Ahead {
    url: String,
    sha256: String,
}

/// The download as plan shows it.
fn download_line(url: &str, sha256: &str) -> String {
    format!("download {url} and check sha256 {sha256}")
}

impl Prefetch for Ahead {
    fn describe(&self, _ctx: &Context) -> Result<Vec<String>, StepError> {
        Ok(vec![download_line(&self.url, &self.sha256)])
    }

    fn prefetch(&self, ctx: &Context) -> Result<(), StepError> {
        fetch(ctx.host, &self.url, &self.sha256).map(|_| ())
    }
}

impl Runfile {
    fn file_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }

    fn commands(&self) -> Vec<String> {
        vec![
            download_line(&self.url, &self.sha256),
            Cmd::change("sh")
                .arg(format!("/tmp/provision-{}.run", &self.sha256[..16]))
                .args(self.args.iter().cloned())
                .display(),
        ]
    }

    fn previous_driver(&self, ctx: &Context) -> Option<Installed> {
        ctx.host
            .root
            .read_string(DRIVER_STATE)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
    }
}

impl Step for Runfile {
    fn id(&self) -> String {
        match self.component {
            Component::Driver { .. } => "runfile:driver".into(),
            Component::Toolkit { .. } => "runfile:toolkit".into(),
        }
    }

    /// The installer replaces the driver: on a running host it goes inside
    /// the window (holders stopped, the module unloaded; nvidia-installer
    /// refuses a loaded module). Where its check refuses, that refusal is
    /// what plan shows.
    fn driver_change(&self, ctx: &Context) -> Result<Option<DriverChange>, StepError> {
        let Component::Driver { version } = &self.component else {
            return Ok(None);
        };
        if !matches!(self.check(ctx), Ok(Check::Pending(_))) {
            return Ok(None);
        }
        let facts = ctx.facts;
        Ok(Some(DriverChange {
            before: (facts.user_driver.version.clone())
                .or_else(|| facts.kernel_driver.version.clone()),
            after: version.clone(),
        }))
    }

    fn downloader(&self) -> Option<Box<dyn Step>> {
        let Component::Driver { .. } = self.component else {
            return None;
        };
        Some(Box::new(Download {
            source: Arc::new(Ahead {
                url: self.url.clone(),
                sha256: self.sha256.clone(),
            }),
        }))
    }

    fn builds_inside(&self) -> Option<String> {
        let Component::Driver { .. } = self.component else {
            return None;
        };
        let how = if self.args.iter().any(|a| a == "--dkms") {
            " through DKMS (--dkms)"
        } else {
            ""
        };
        Some(format!(
            "{} builds the kernel module{how} while the GPU is out of service (a runfile's module is not built ahead)",
            self.file_name()
        ))
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let root = &ctx.host.root;
        match &self.component {
            Component::Driver { version } => {
                let installed = ctx.facts.user_driver.version.clone();
                let from_runfile = root.exists(DRIVER_UNINSTALLER);
                if installed.as_deref() == Some(version.as_str()) && from_runfile {
                    return Ok(Check::Satisfied(format!(
                        "driver {version} is installed from its runfile"
                    )));
                }
                let packaged = packaged_driver(ctx);
                if !packaged.is_empty() {
                    return Err(StepError::Failed(format!(
                        "a packaged driver is installed ({}): remove it before installing from a runfile, or keep a package source",
                        packaged.join(", ")
                    )));
                }
                if from_runfile
                    && let Some(now) = &installed
                    && self.previous_driver(ctx).map(|p| p.version).as_ref() != Some(now)
                {
                    return Err(StepError::Failed(format!(
                        "driver {now} was installed from a runfile outside provision, which could not put it back on rollback: run `{DRIVER_UNINSTALLER}` first"
                    )));
                }
                let mut diff = String::new();
                if let Some(now) = &installed {
                    diff.push_str(&format!("- driver {now}\n"));
                }
                diff.push_str(&format!("+ driver {version} ({})\n", self.file_name()));
                Ok(Check::Pending(Change {
                    action: if installed.is_some() {
                        Action::Update
                    } else {
                        Action::Create
                    },
                    summary: format!("install driver {version} from {}", self.file_name()),
                    diff: Diff::Text(diff),
                    commands: self.commands(),
                }))
            }
            Component::Toolkit { path, release } => {
                let present = ctx
                    .facts
                    .toolkits
                    .installed
                    .iter()
                    .find(|t| &t.path == path);
                let fits = present
                    .and_then(|t| t.release.as_deref())
                    .is_some_and(|r| r == release || r.starts_with(&format!("{release}.")));
                if fits && root.exists(format!("{path}/bin/cuda-uninstaller")) {
                    return Ok(Check::Satisfied(format!(
                        "CUDA {release} is installed in {path} from its runfile"
                    )));
                }
                if present.is_some() {
                    return Err(StepError::Failed(format!(
                        "{path} holds another CUDA release, not installed from this runfile: remove it first"
                    )));
                }
                Ok(Check::Pending(Change {
                    action: Action::Create,
                    summary: format!(
                        "install CUDA {release} into {path} from {} (toolkit only)",
                        self.file_name()
                    ),
                    diff: Diff::Text(format!("+ {path} ({})\n", self.file_name())),
                    commands: self.commands(),
                }))
            }
        }
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        let id = self.id();
        match &self.component {
            Component::Driver { version } => {
                if let Some(previous) = self.previous_driver(ctx)
                    && ctx.host.root.exists(DRIVER_UNINSTALLER)
                {
                    journal.record(
                        &id,
                        Undo::Runfile {
                            url: previous.url,
                            sha256: previous.sha256,
                            args: previous.args,
                        },
                    )?;
                }
                journal.record_file(&id, DRIVER_STATE)?;
                journal.record(
                    &id,
                    Undo::Run {
                        cmd: uninstall(DRIVER_UNINSTALLER),
                    },
                )?;
                install(ctx.host, &self.url, &self.sha256, &self.args)?;
                let state = Installed {
                    url: self.url.clone(),
                    sha256: self.sha256.clone(),
                    args: self.args.clone(),
                    version: version.clone(),
                };
                let text = serde_json::to_string_pretty(&state).unwrap_or_default();
                ctx.host
                    .root
                    .write_atomic(DRIVER_STATE, text.as_bytes(), 0o644)
                    .map_err(io_error(DRIVER_STATE))
            }
            Component::Toolkit { path, .. } => {
                journal.record(
                    &id,
                    Undo::Run {
                        cmd: uninstall(&format!("{path}/bin/cuda-uninstaller")),
                    },
                )?;
                install(ctx.host, &self.url, &self.sha256, &self.args)
            }
        }
    }
}
