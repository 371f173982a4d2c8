//! `[toolkit]`: a toolkit-only plan's steps, the toolkit runfile, and the
//! other toolkits a default one would meet on the loader path.

use super::*;

/// A plan without `[driver]`: the toolkit (and compat) and its
/// environment, nothing that touches the driver, nouveau or the initramfs.
pub(super) fn toolkit_only_steps(
    plan: &Plan,
    facts: &Facts,
    compat: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Box<dyn Step>>, PlanRefused> {
    let mut steps: Vec<Box<dyn Step>> = Vec::new();
    if plan.signing.is_some() {
        warnings.push(
            "[secure_boot] signs the modules a driver plan builds; a toolkit-only plan builds none"
                .into(),
        );
    }
    let found = if plan.source() == Source::Runfile {
        toolkit_runfile(plan, &mut steps)
    } else {
        package_steps(plan, facts, None, compat, warnings, &mut steps)?
    };
    other_toolkits_on_loader(plan, facts, &found, warnings);
    environment_steps(plan, found, &mut steps);
    Ok(steps)
}

/// A default toolkit put on the loader path beside others some other
/// file already lists (a toolkit package's own /etc/ld.so.conf.d/cuda-X-Y.conf):
/// programs then get whichever libraries ldconfig lists first. Said, with
/// the files to remove; provision does not remove files it does not own.
pub(super) fn other_toolkits_on_loader(
    plan: &Plan,
    facts: &Facts,
    (home, _, on_path): &(Option<String>, Option<String>, bool),
    warnings: &mut Vec<String>,
) {
    let default = plan.toolkit.as_ref().is_some_and(|t| t.default);
    let (Some(home), true, false) = (home, default, *on_path) else {
        return;
    };
    if plan.environment.loader != Loader::LdSoConf {
        return;
    }
    let others: Vec<(String, String)> = facts
        .loader_toolkits()
        .into_iter()
        .filter(|(toolkit, file)| toolkit != home && file != LOADER_CONF)
        .collect();
    if others.is_empty() {
        return;
    }
    let listed: Vec<String> = others
        .iter()
        .map(|(toolkit, file)| format!("{toolkit} ({file})"))
        .collect();
    let files: Vec<&str> = others.iter().map(|(_, file)| file.as_str()).collect();
    warnings.push(format!(
        "the loader path already holds the libraries of {}: with {home} added, programs get whichever libcudart/libcublas ldconfig lists first; \
         remove {} and run ldconfig (they belong to the toolkit packages, so provision leaves them), or set [environment] loader = \"profile\"",
        listed.join(", "),
        files.join(" and ")
    ));
}

/// The toolkit from its runfile (`--toolkit` only), when the plan names
/// one; returns its home for the environment steps.
#[allow(clippy::type_complexity)]
pub(super) fn toolkit_runfile(
    plan: &Plan,
    steps: &mut Vec<Box<dyn Step>>,
) -> (Option<String>, Option<String>, bool) {
    use step::runfile::{Component, Runfile, toolkit_args};
    let mut home = None;
    if let Some(toolkit) = &plan.toolkit
        && let (Some(url), Some(sha256)) = (&toolkit.runfile, &toolkit.sha256)
    {
        let short = toolkit.version.short();
        let path = format!("/usr/local/cuda-{short}");
        let release = match toolkit.version.update {
            Some(update) => format!("{short}.{update}"),
            None => short.clone(),
        };
        steps.push(Box::new(Runfile {
            url: url.0.clone(),
            sha256: sha256.0.clone(),
            args: toolkit_args(&path),
            component: Component::Toolkit {
                path: path.clone(),
                release,
            },
        }));
        home = Some(path);
    }
    (home, None, false)
}
