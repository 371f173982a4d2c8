//! `[nouveau]`: the blacklist file (or a vendor's equivalent one).

use super::*;

/// The nouveau blacklist file step; returns its content and the vendor
/// file that already does the job, if any.
pub(super) fn nouveau_blacklist(
    plan: &Plan,
    facts: &Facts,
    steps: &mut Vec<Box<dyn Step>>,
) -> (String, Option<String>) {
    let blacklist = format!(
        "{}blacklist nouveau\noptions nouveau modeset=0\n",
        header("keep nouveau from binding NVIDIA GPUs")
    );
    let equivalent = facts
        .nouveau
        .files
        .iter()
        .filter(|f| f.path != NOUVEAU_CONF)
        .find(|f| (f.blacklist || f.install_disabled) && f.modeset_off)
        .map(|f| f.path.clone());
    steps.push(Box::new(ManagedFile {
        id: "nouveau:blacklist".into(),
        path: NOUVEAU_CONF.into(),
        content: plan.nouveau.disable.then(|| blacklist.clone()),
        mode: 0o644,
        equivalent: equivalent.clone(),
    }));
    (blacklist, equivalent)
}
