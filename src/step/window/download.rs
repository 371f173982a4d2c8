//! Everything the swap needs, fetched before the window opens: package
//! lists refreshed and archives downloaded (`apt-get install
//! --download-only`, `dnf install --downloadonly`), runfiles fetched into
//! the cache. Inside the window nothing is downloaded.

use std::sync::Arc;

use crate::journal::Journal;
use crate::step::{Action, Change, Check, Context, Diff, Step, StepError};

pub const ID: &str = "window:download";

/// A step whose downloads can happen ahead of its apply.
pub trait Prefetch: Send + Sync {
    /// What would be fetched (for `plan`).
    fn describe(&self, ctx: &Context) -> Result<Vec<String>, StepError>;
    /// Fetches it; the step's apply then uses what was fetched.
    fn prefetch(&self, ctx: &Context) -> Result<(), StepError>;
}

pub struct Download {
    pub source: Arc<dyn Prefetch>,
}

impl Step for Download {
    fn id(&self) -> String {
        ID.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let commands = self.source.describe(ctx)?;
        Ok(Check::Pending(Change {
            action: Action::None,
            summary: "download everything the swap needs before the window opens".into(),
            diff: Diff::None,
            commands,
        }))
    }

    fn apply(&self, ctx: &Context, _journal: &mut Journal) -> Result<(), StepError> {
        self.source.prefetch(ctx)
    }

    fn transient(&self) -> bool {
        true
    }
}
