//! The pieces every compat rule answers with: a step of the reasoning and
//! the row of the knowledge base it rests on, and the error for a question
//! that cannot be answered as asked.

use serde::Serialize;

/// One step of the reasoning, with the knowledge-base row it rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub text: String,
    /// "toolkit 12.8.1", "gpu 0x2330", "forward_compat cuda-compat-13-0", ...
    pub row: String,
    pub sources: Vec<String>,
}

pub(crate) fn reason(
    text: impl Into<String>,
    row: impl Into<String>,
    sources: &[String],
) -> Reason {
    Reason {
        text: text.into(),
        row: row.into(),
        sources: sources.to_vec(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuestionError {
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn invalid(message: impl Into<String>) -> QuestionError {
    QuestionError::Invalid(message.into())
}
