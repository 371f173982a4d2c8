//! What verify found: one entry per check, with its evidence. Shared by
//! verify and the checks it runs (compute, signature).

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub passed: bool,
    pub checks: Vec<VerifyCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyCheck {
    pub name: String,
    /// `None`: not applicable here (say why in the evidence).
    pub passed: Option<bool>,
    pub evidence: String,
}

pub fn check(name: &str, passed: Option<bool>, evidence: impl Into<String>) -> VerifyCheck {
    VerifyCheck {
        name: name.into(),
        passed,
        evidence: evidence.into(),
    }
}
