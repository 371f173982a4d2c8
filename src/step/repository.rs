//! NVIDIA's CUDA repository (or a mirror of it): its signing key, checked
//! against a pinned fingerprint before anything is written, and the source
//! entry that names it (apt: a `signed-by` list; dnf: a `.repo` file).

use super::file::{header, unified};
use super::{Action, Change, Check, Context, Diff, Step, StepError, io_error};
use crate::distro::openpgp::{dearmor, fingerprints};
use crate::facts::os::Family;
use crate::journal::Journal;

pub const ID: &str = "repository:cuda";
pub const APT_KEYRING: &str = "/usr/share/keyrings/provision-cuda-archive-keyring.gpg";
pub const APT_LIST: &str = "/etc/apt/sources.list.d/provision-cuda.list";
pub const DNF_KEY: &str = "/etc/pki/rpm-gpg/RPM-GPG-KEY-provision-cuda";
pub const DNF_REPO: &str = "/etc/yum.repos.d/provision-cuda.repo";

/// Which of NVIDIA's repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// The CUDA repository: drivers, toolkits, compat, DCGM.
    Cuda,
    /// libnvidia-container: the container toolkit.
    Container,
}

impl RepoKind {
    fn id(self) -> &'static str {
        match self {
            RepoKind::Cuda => ID,
            RepoKind::Container => "repository:container",
        }
    }

    fn name(self) -> &'static str {
        match self {
            RepoKind::Cuda => "cuda",
            RepoKind::Container => "container",
        }
    }

    fn title(self) -> &'static str {
        match self {
            RepoKind::Cuda => "NVIDIA's CUDA repository",
            RepoKind::Container => "NVIDIA's libnvidia-container repository",
        }
    }
}

pub struct CudaRepository {
    pub kind: RepoKind,
    /// The repository URL, ending in '/'.
    pub url: String,
    pub key_url: String,
    /// Normalized (40 upper-case hex digits).
    pub fingerprint: String,
    pub family: Family,
}

impl CudaRepository {
    fn key_path(&self) -> String {
        let name = self.kind.name();
        match self.family {
            Family::Rhel => format!("/etc/pki/rpm-gpg/RPM-GPG-KEY-provision-{name}"),
            Family::Debian => format!("/usr/share/keyrings/provision-{name}-archive-keyring.gpg"),
        }
    }

    fn source_path(&self) -> String {
        let name = self.kind.name();
        match self.family {
            Family::Rhel => format!("/etc/yum.repos.d/provision-{name}.repo"),
            Family::Debian => format!("/etc/apt/sources.list.d/provision-{name}.list"),
        }
    }

    /// The source definition provision writes.
    pub fn source(&self) -> String {
        let what = format!(
            "{}, its key checked against a pinned fingerprint",
            self.kind.title()
        );
        let key = self.key_path();
        match (self.family, self.kind) {
            (Family::Debian, _) => {
                format!("{}deb [signed-by={key}] {} /\n", header(&what), self.url)
            }
            (Family::Rhel, RepoKind::Cuda) => format!(
                "{}[provision-cuda]\nname=NVIDIA CUDA (provision)\nbaseurl={}\nenabled=1\ngpgcheck=1\ngpgkey=file://{key}\n",
                header(&what),
                self.url
            ),
            // libnvidia-container signs its metadata, not each package.
            (Family::Rhel, RepoKind::Container) => format!(
                "{}[provision-container]\nname=NVIDIA libnvidia-container (provision)\nbaseurl={}\nenabled=1\ngpgcheck=0\nrepo_gpgcheck=1\ngpgkey=file://{key}\n",
                header(&what),
                self.url
            ),
        }
    }

    /// Another source file already naming this repository (NVIDIA's
    /// cuda-keyring, a hand-made entry): provision does not add a second.
    fn configured_elsewhere(&self, ctx: &Context) -> Option<String> {
        let root = &ctx.host.root;
        let (dir, single) = match self.family {
            Family::Debian => ("/etc/apt/sources.list.d", Some("/etc/apt/sources.list")),
            Family::Rhel => ("/etc/yum.repos.d", None),
        };
        let trimmed = self.url.trim_end_matches('/');
        let mut files: Vec<String> = root
            .read_dir(dir)
            .unwrap_or_default()
            .into_iter()
            .map(|name| format!("{dir}/{name}"))
            .filter(|path| *path != self.source_path())
            .collect();
        files.extend(single.map(str::to_string));
        files.into_iter().find(|path| {
            root.read_string(path).is_ok_and(|text| {
                text.lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .any(|l| l.contains(trimmed))
            })
        })
    }

    /// The fingerprints of the key provision wrote, if any.
    fn installed_fingerprints(&self, ctx: &Context) -> Vec<String> {
        ctx.host
            .root
            .read_bytes(self.key_path())
            .ok()
            .and_then(|bytes| dearmor(&bytes).ok())
            .and_then(|packets| fingerprints(&packets).ok())
            .unwrap_or_default()
    }
}

impl Step for CudaRepository {
    fn id(&self) -> String {
        self.kind.id().to_string()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        if let Some(path) = self.configured_elsewhere(ctx) {
            return Ok(Check::Satisfied(format!(
                "{} is already configured in {path}",
                self.url
            )));
        }
        let root = &ctx.host.root;
        let source = self.source();
        let current = root.read_string(self.source_path()).ok();
        let key_ok = self.installed_fingerprints(ctx).contains(&self.fingerprint);
        if current.as_deref() == Some(source.as_str()) && key_ok {
            return Ok(Check::Satisfied(format!(
                "{} is configured, key {}",
                self.url, self.fingerprint
            )));
        }
        let mut diff = unified(
            &self.source_path(),
            current.as_deref().unwrap_or(""),
            &source,
        );
        if !key_ok {
            diff.push_str(&format!(
                "+ {}: the key at {} once its fingerprint is {}\n",
                self.key_path(),
                self.key_url,
                self.fingerprint
            ));
        }
        Ok(Check::Pending(Change {
            action: if current.is_none() {
                Action::Create
            } else {
                Action::Update
            },
            summary: format!("configure {} {}", self.kind.title(), self.url),
            diff: Diff::Text(diff),
            commands: vec![format!(
                "download {} and verify fingerprint {}",
                self.key_url, self.fingerprint
            )],
        }))
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        let note = |line: &str| ctx.host.runner.note(line);
        let bytes = crate::fetch::logged(&note, &self.key_url, || {
            crate::fetch::fetch_small(&self.key_url, 1 << 20)
        })
        .map_err(|e| StepError::Failed(crate::error::chain(&e)))?;
        let packets =
            dearmor(&bytes).map_err(|e| StepError::Failed(format!("{}: {e}", self.key_url)))?;
        let found = fingerprints(&packets)
            .map_err(|e| StepError::Failed(format!("{}: {e}", self.key_url)))?;
        if !found.contains(&self.fingerprint) {
            return Err(StepError::Failed(format!(
                "the key at {} has fingerprint {}, not the pinned {}: refusing it (a mirror that signs with its own key sets [repositories] {}_fingerprint)",
                self.key_url,
                found.join(", "),
                self.fingerprint,
                self.kind.name()
            )));
        }
        let root = &ctx.host.root;
        // apt reads a binary keyring; rpm imports the armored key.
        let key_bytes = match self.family {
            Family::Debian => packets,
            Family::Rhel => bytes,
        };
        let (id, key_path, source_path) = (self.kind.id(), self.key_path(), self.source_path());
        journal.record_file(id, &key_path)?;
        root.write_atomic(&key_path, &key_bytes, 0o644)
            .map_err(io_error(&key_path))?;
        journal.record_file(id, &source_path)?;
        root.write_atomic(&source_path, self.source().as_bytes(), 0o644)
            .map_err(io_error(&source_path))
    }
}
