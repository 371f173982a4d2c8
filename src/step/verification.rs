//! What verify found: one entry per check, with its evidence. Shared by
//! verify and the checks it runs (compute, signature).

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub passed: bool,
    pub checks: Vec<VerifyCheck>,
}

impl Verification {
    /// Passed when no check that ran failed (not run is not failed).
    pub fn of(checks: Vec<VerifyCheck>) -> Verification {
        Verification {
            passed: checks.iter().all(|c| c.passed != Some(false)),
            checks,
        }
    }
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
