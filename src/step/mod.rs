//! Steps: each owns one piece of host state. `check` only reads and says
//! what would change; `apply` records its undo in the journal, then makes
//! the change. Dry-run is "run every check and print the changes".

pub mod build;
pub mod bundle;
pub mod compute;
pub mod container;
pub mod dcgm;
pub mod dcgm_diag;
pub mod file;
pub mod initramfs;
pub mod ldconfig;
pub mod packages;
pub mod persistence;
pub mod repository;
pub mod runfile;
pub mod signature;
pub mod verification;
pub mod verify;
pub mod window;

use serde::{Deserialize, Serialize};

use crate::facts::Facts;
use crate::host::{Host, RunError};
use crate::journal::{Journal, JournalError};
use crate::progress::Progress;

/// What a step sees: the host's doors, the facts gathered once, and where
/// progress goes.
pub struct Context<'a> {
    pub host: &'a Host,
    pub facts: &'a Facts,
    pub progress: &'a dyn Progress,
    /// True under `apply`/`rollback`: checks may refresh provision's own
    /// caches (never host configuration).
    pub writable: bool,
}

pub trait Step {
    /// Stable identifier, "nouveau:blacklist".
    fn id(&self) -> String;
    /// Read-only: is the host already as the plan wants it?
    fn check(&self, ctx: &Context) -> Result<Check, StepError>;
    /// Makes the change, journaling its undo first.
    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError>;

    /// What `plan` shows before anything changed. Most steps show their
    /// check; the window's steps show what the window will do (services
    /// still run at plan time, yet they will be started again).
    fn preview(&self, ctx: &Context) -> Result<Check, StepError> {
        self.check(ctx)
    }

    /// Read-only: the driver release this step moves the host to, when it
    /// changes the driver (the set of driver packages, or a runfile). The
    /// engine builds the maintenance window around such a step.
    fn driver_change(&self, _ctx: &Context) -> Result<Option<DriverChange>, StepError> {
        Ok(None)
    }

    /// A step that fetches, before the window opens, everything this step
    /// will need (nothing is downloaded while the GPU is out of service).
    fn downloader(&self) -> Option<Box<dyn Step>> {
        None
    }

    /// A step that builds, before the window opens, the kernel module this
    /// step would otherwise build inside it (`step::build`).
    fn prebuilder(&self) -> Option<Box<dyn Step>> {
        None
    }

    /// Where no module is built ahead (no `prebuilder`): what builds it
    /// inside the window, for `plan` to say.
    fn builds_inside(&self) -> Option<String> {
        None
    }

    /// The window's steps change state for the length of the apply only
    /// (services stopped, then started again): they are not checked for
    /// convergence afterwards; verify checks what they leave.
    fn transient(&self) -> bool {
        false
    }
}

/// A change of the installed driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverChange {
    /// The installed release, if any.
    pub before: Option<String>,
    /// The release after ("580.105.08"), or the accepted range ("580.*")
    /// while the package lists do not say which.
    pub after: String,
}

#[derive(Debug, Clone)]
pub enum Check {
    Satisfied(String),
    Pending(Change),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
    None,
}

impl Action {
    /// Terraform's sigil for the action.
    pub fn sigil(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
            Action::None => ' ',
        }
    }
}

#[derive(Debug, Clone)]
pub struct Change {
    pub action: Action,
    pub summary: String,
    pub diff: Diff,
    /// Commands `apply` will run for this change (for review).
    pub commands: Vec<String>,
}

/// What changes: a unified diff for a file, before/after for packages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Diff {
    Text(String),
    Packages(Vec<PackageChange>),
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageChange {
    pub name: String,
    pub before: Option<String>,
    pub after: Option<String>,
    /// Held after the change.
    pub hold: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

pub fn io_error(path: &str) -> impl FnOnce(std::io::Error) -> StepError + '_ {
    move |source| StepError::Io {
        path: path.to_string(),
        source,
    }
}
