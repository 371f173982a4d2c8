//! Plan validation against the detected GPUs and the knowledge base: a plan
//! that cannot work is refused before anything changes.

use crate::facts::Facts;
use crate::plan::Plan;

/// Problems that stop the plan, each with what to do instead.
pub fn check_plan(_plan: &Plan, _facts: &Facts) -> Vec<String> {
    Vec::new()
}
