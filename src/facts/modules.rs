//! Loaded kernel modules (`/proc/modules`) and the NVIDIA kernel driver's
//! own report (`/proc/driver/nvidia/version`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedModule {
    pub name: String,
    /// Reference count: how many users (modules or open handles) hold it.
    pub refcount: Option<u32>,
    /// Modules that depend on this one.
    pub used_by: Vec<String>,
    pub state: String,
}

/// Parses `/proc/modules` ("name size refcount deps state address [taint]").
/// Lines that do not have the shape are skipped.
pub fn parse_proc_modules(text: &str) -> Vec<LoadedModule> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            let _size = fields.next()?;
            let refcount = fields.next()?.parse().ok();
            let deps = fields.next()?;
            let state = fields.next().unwrap_or("").to_string();
            let used_by = deps
                .split(',')
                .filter(|d| !d.is_empty() && *d != "-")
                .map(str::to_string)
                .collect();
            Some(LoadedModule {
                name: name.to_string(),
                refcount,
                used_by,
                state,
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvrmVersion {
    pub version: String,
    /// "open" or "proprietary"
    pub flavor: String,
    pub arch: Option<String>,
}

/// Parses the first line of `/proc/driver/nvidia/version`:
/// proprietary `NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  <date>`,
/// open `NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build ...`
/// (format from open-gpu-kernel-modules utils.mk GENERATE_NVIDSTRING).
pub fn parse_nvrm_version(text: &str) -> Option<NvrmVersion> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    let rest = line.trim_start_matches("NVRM version:").trim();
    let open = rest.contains("Open Kernel Module");
    let version = rest
        .split_whitespace()
        .find(|word| crate::version::Dotted::parse(word).is_some() && word.contains('.'))?
        .to_string();
    let arch = if open {
        rest.split("Open Kernel Module for ")
            .nth(1)
            .and_then(|tail| tail.split_whitespace().next())
            .map(str::to_string)
    } else {
        rest.strip_prefix("NVIDIA UNIX ")
            .and_then(|tail| tail.split_whitespace().next())
            .filter(|arch| *arch != "Kernel")
            .map(str::to_string)
    };
    Some(NvrmVersion {
        version,
        flavor: if open { "open" } else { "proprietary" }.into(),
        arch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "../../tests/fixtures/hosts/ubuntu-24.04-h200-580-open";

    #[test]
    fn proc_modules_of_the_h200_host() {
        let text =
            include_str!("../../tests/fixtures/hosts/ubuntu-24.04-h200-580-open/proc/modules");
        let modules = parse_proc_modules(text);
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["nvidia_uvm", "nvidia"]);
        assert_eq!(modules[1].state, "Live");
        let _ = HOST;
    }

    #[test]
    fn proc_modules_users() {
        let modules = parse_proc_modules(
            "nvidia_drm 122880 0 - Live 0xffffffffc1a8e000 (POE)\n\
             nvidia 56606720 15 nvidia_uvm,nvidia_modeset, Live 0xffffffffc0400000 (POE)\n\
             broken\n",
        );
        assert_eq!(modules.len(), 2);
        assert_eq!(modules[1].refcount, Some(15));
        assert_eq!(modules[1].used_by, ["nvidia_uvm", "nvidia_modeset"]);
    }

    #[test]
    fn nvrm_open_from_the_h200_host() {
        let text = include_str!(
            "../../tests/fixtures/hosts/ubuntu-24.04-h200-580-open/proc/driver/nvidia/version"
        );
        let nvrm = parse_nvrm_version(text).unwrap();
        assert_eq!(nvrm.version, "580.159.04");
        assert_eq!(nvrm.flavor, "open");
        assert_eq!(nvrm.arch.as_deref(), Some("x86_64"));
    }

    #[test]
    fn nvrm_proprietary() {
        let nvrm = parse_nvrm_version(
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc version 12.2.0\n",
        )
        .unwrap();
        assert_eq!(nvrm.version, "535.104.05");
        assert_eq!(nvrm.flavor, "proprietary");
        assert_eq!(nvrm.arch.as_deref(), Some("x86_64"));
        assert!(parse_nvrm_version("\u{0}\u{ff}garbage").is_none());
    }
}
