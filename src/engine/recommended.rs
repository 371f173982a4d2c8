//! `[driver] branch = "recommended"`: the branch is chosen from the host's
//! facts (its GPUs, the plan's toolkit, the branch it runs) before any step
//! is built, and the plan goes on as if it had named that branch.

use std::borrow::Cow;

use crate::compat::recommend::{self, Recommendation};
use crate::facts::Facts;
use crate::plan::{Branch, DriverTarget, Flavor, Plan};

/// The plan with its recommended branch settled (unchanged when it names
/// one), and the recommendation.
pub fn settle<'a>(
    plan: &'a Plan,
    facts: &Facts,
) -> Result<(Cow<'a, Plan>, Option<Recommendation>), String> {
    if !plan.driver.as_ref().is_some_and(|d| d.recommended) {
        return Ok((Cow::Borrowed(plan), None));
    }
    let toolkit = plan.toolkit.as_ref().map(|t| t.version.short());
    let mut needs = recommend::needs_of(facts, toolkit)
        .map_err(|e| format!("[driver] branch = \"recommended\": {e}"))?;
    // Chosen among what the plan's source carries.
    needs.carried = plan
        .driver
        .as_ref()
        .and_then(|d| crate::distro::carried_branches(facts, d.source));
    let choice = recommend::recommend(&needs)
        .map_err(|e| format!("[driver] branch = \"recommended\": {e}"))?;
    let mut settled = plan.clone();
    if let Some(driver) = settled.driver.as_mut() {
        driver.target = DriverTarget::Branch(Branch(choice.branch));
        if driver.flavor == Flavor::Auto {
            driver.flavor = if choice.flavor == "open" {
                Flavor::Open
            } else {
                Flavor::Proprietary
            };
        }
    }
    Ok((Cow::Owned(settled), Some(choice)))
}
