//! A file provision owns: exact content (or absence) at one path.

use super::{Action, Change, Check, Context, Diff, Step, StepError, io_error};
use crate::journal::Journal;

/// Header of every file provision writes, so a person reading it knows.
pub fn header(what: &str) -> String {
    format!(
        "# Managed by provision: {what}.\n# Changes here are replaced by the next `provision apply`.\n"
    )
}

pub struct ManagedFile {
    pub id: String,
    pub path: String,
    /// `None`: the file must not exist.
    pub content: Option<String>,
    pub mode: u32,
    /// Another file already does this job (say, a vendor's nouveau
    /// blacklist): then provision does not write a second one, unless it
    /// owns one already.
    pub equivalent: Option<String>,
}

impl ManagedFile {
    fn current(&self, ctx: &Context) -> Result<Option<String>, StepError> {
        match ctx.host.root.read_string(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // A link that loops holds nothing: the file is made in its
            // place (the link is kept in the journal, as any other).
            Err(error)
                if error.raw_os_error() == Some(libc::ELOOP)
                    && ctx.host.root.is_link(&self.path) =>
            {
                Ok(None)
            }
            Err(error) => Err(io_error(&self.path)(error)),
        }
    }
}

/// A unified diff between two texts, labelled with the path.
pub fn unified(path: &str, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{path}"), &format!("b{path}"))
        .to_string()
}

impl Step for ManagedFile {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        let current = self.current(ctx)?;
        let mode_differs = || {
            use std::os::unix::fs::PermissionsExt;
            ctx.host
                .root
                .metadata(&self.path)
                .map(|m| m.permissions().mode() & 0o7777 != self.mode)
                .unwrap_or(false)
        };
        match (&current, &self.content) {
            (None, None) => Ok(Check::Satisfied(format!("{} is absent", self.path))),
            (None, Some(_)) if self.equivalent.is_some() => Ok(Check::Satisfied(format!(
                "{} already does this",
                self.equivalent.as_deref().unwrap_or_default()
            ))),
            (Some(now), Some(want)) if now == want && !mode_differs() => {
                Ok(Check::Satisfied(format!("{} is up to date", self.path)))
            }
            (before, after) => {
                let action = match (before, after) {
                    (None, _) => Action::Create,
                    (_, None) => Action::Delete,
                    _ => Action::Update,
                };
                let verb = match action {
                    Action::Create => "create",
                    Action::Delete => "remove",
                    _ => "update",
                };
                let before_text = before.as_deref().unwrap_or("");
                let after_text = after.as_deref().unwrap_or("");
                let mut diff = unified(&self.path, before_text, after_text);
                if diff.is_empty() {
                    diff = format!("mode of {} becomes {:o}\n", self.path, self.mode);
                }
                Ok(Check::Pending(Change {
                    action,
                    summary: format!("{verb} {}", self.path),
                    diff: Diff::Text(diff),
                    commands: Vec::new(),
                }))
            }
        }
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        journal.record_file(&self.id, &self.path)?;
        match &self.content {
            Some(content) => ctx
                .host
                .root
                .write_atomic(&self.path, content.as_bytes(), self.mode)
                .map_err(io_error(&self.path)),
            None => ctx
                .host
                .root
                .remove_file(&self.path)
                .map_err(io_error(&self.path)),
        }
    }
}
