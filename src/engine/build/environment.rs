//! `[environment]`: PATH and CUDA_HOME for login shells, the loader path
//! for every process, and ldconfig.

use super::*;

/// PATH and the loader path for the default toolkit, and the compat
/// library first on the loader path: files, then ldconfig.
pub(super) fn environment_steps(
    plan: &Plan,
    (toolkit_home, compat_dir, toolkit_on_path): (Option<String>, Option<String>, bool),
    steps: &mut Vec<Box<dyn Step>>,
) {
    let default_toolkit = plan.toolkit.as_ref().filter(|t| t.default);
    let home = default_toolkit.and(toolkit_home);
    let needs_env = home.is_some() && !toolkit_on_path;
    let lib_dir = home
        .as_ref()
        .map(|h| format!("{h}/targets/x86_64-linux/lib"));
    let profile = match (&home, needs_env) {
        (Some(home), true)
            if plan.environment.path || plan.environment.loader == Loader::Profile =>
        {
            Some(profile_script(plan, home, lib_dir.as_deref()))
        }
        _ => None,
    };
    steps.push(Box::new(ManagedFile {
        id: "environment:profile".into(),
        path: PROFILE_SCRIPT.into(),
        content: profile,
        mode: 0o644,
        equivalent: None,
    }));
    let mut loader_dirs: Vec<String> = match (&lib_dir, needs_env, plan.environment.loader) {
        (Some(lib), true, Loader::LdSoConf) => vec![lib.clone()],
        _ => Vec::new(),
    };
    // The compat libcuda goes in a file that sorts before the distribution's
    // own library directories, so the loader finds it before the driver's
    // libcuda. provision installs it only while the planned driver is older
    // than what it carries, and removes both when the plan no longer needs
    // them: it never shadows a newer driver.
    let compat_conf = compat_dir.as_ref().map(|dir| {
        format!(
            "{}{dir}\n",
            header("forward-compatibility libcuda, newer than the driver, found first")
        )
    });
    steps.push(Box::new(ManagedFile {
        id: "compat:loader".into(),
        path: COMPAT_CONF.into(),
        content: compat_conf.clone(),
        mode: 0o644,
        equivalent: None,
    }));
    if let Some(dir) = &compat_dir {
        loader_dirs.push(dir.clone());
    }
    let loader_conf = (!loader_dirs.is_empty()).then(|| {
        let mut text = header("CUDA toolkit libraries for every process");
        for dir in &loader_dirs {
            text.push_str(dir);
            text.push('\n');
        }
        text
    });
    steps.push(Box::new(ManagedFile {
        id: "environment:loader".into(),
        path: LOADER_CONF.into(),
        content: loader_conf.clone(),
        mode: 0o644,
        equivalent: None,
    }));
    steps.push(Box::new(Ldconfig {
        dirs: loader_dirs,
        conf: vec![
            (LOADER_CONF.into(), loader_conf),
            (COMPAT_CONF.into(), compat_conf),
        ],
    }));
}

/// /etc/profile.d: CUDA_HOME and PATH, and LD_LIBRARY_PATH when the plan
/// asks for the loader path of login shells.
pub(super) fn profile_script(plan: &Plan, home: &str, lib_dir: Option<&str>) -> String {
    let mut text = header("CUDA toolkit environment for login shells");
    if plan.environment.path {
        text.push_str(&format!(
            "export CUDA_HOME={home}\ncase \":${{PATH}}:\" in\n  *\":{home}/bin:\"*) ;;\n  *) export PATH=\"{home}/bin${{PATH:+:${{PATH}}}}\" ;;\nesac\n"
        ));
    }
    if plan.environment.loader == Loader::Profile
        && let Some(lib) = lib_dir
    {
        text.push_str(&format!(
            "case \":${{LD_LIBRARY_PATH}}:\" in\n  *\":{lib}:\"*) ;;\n  *) export LD_LIBRARY_PATH=\"{lib}${{LD_LIBRARY_PATH:+:${{LD_LIBRARY_PATH}}}}\" ;;\nesac\n"
        ));
    }
    text
}
