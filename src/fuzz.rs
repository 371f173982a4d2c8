//! The parsers of untrusted input, by fuzz target: what `fuzz/` drives
//! under libFuzzer (`scripts/fuzz`), and what the corpus test replays on
//! every `cargo test`. Each takes any bytes and must return, never panic.

use std::path::Path;

/// A fuzz target: its name (the file under `fuzz/fuzz_targets/`) and the
/// parsers it feeds.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

fn plan(data: &[u8]) {
    let _ = crate::plan::Plan::parse(Path::new("fuzz.toml"), data);
}

fn proc_modules(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = crate::facts::modules::parse_proc_modules(text);
        let _ = crate::facts::modules::parse_nvrm_version(text);
    }
}

fn proc_pid(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = crate::facts::holders::parse_cgroup(text);
        let _ = crate::facts::holders::parse_ppid(text);
        let _ = crate::compat::knowledge::parse_hex16(text);
    }
}

fn os_release(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = crate::facts::os::parse_os_release(text);
        let _ = crate::facts::os::parse_mokutil(text);
    }
}

fn etc_config(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = crate::facts::nouveau::parse_modprobe_conf("/etc/modprobe.d/fuzz.conf", text);
        let _ = crate::facts::environment::assignments(text, "PATH");
        let _ = crate::facts::environment::assignments(text, "LD_LIBRARY_PATH");
    }
}

fn ld_so_cache(data: &[u8]) {
    let _ = crate::facts::loader::parse_ld_so_cache(data);
}

fn dpkg_status(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = crate::facts::packages::parse_dpkg_status(text);
        let _ = crate::facts::packages::parse_apt_policy(text);
    }
}

fn rpm_query(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = crate::facts::packages::parse_rpm_query(text, &["nvidia-driver".to_string()]);
        let _ = crate::facts::packages::parse_dnf_installed(text);
    }
}

fn apt_output(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = crate::distro::apt::parse_madison(text);
        let _ = crate::distro::apt::parse_simulation(text);
    }
}

fn dnf_output(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = crate::distro::dnf::parse_available(text);
        let _ = crate::distro::dnf::parse_module_state(text);
        let _ = crate::distro::dnf::parse_transaction(text);
    }
}

fn openpgp(data: &[u8]) {
    if let Ok(packets) = crate::distro::openpgp::dearmor(data) {
        let _ = crate::distro::openpgp::fingerprints(&packets);
    }
    let _ = crate::distro::openpgp::fingerprints(data);
}

fn versions(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = crate::facts::toolkit::parse_version_json(text);
        let _ = crate::facts::toolkit::parse_nvcc_version(text);
        let _ = crate::version::Dotted::parse(text);
        let _ = crate::compat::question::parse_driver(text);
        let _ = crate::compat::question::torch_target(text);
    }
}

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    Target {
        name: "plan",
        run: plan,
    },
    Target {
        name: "proc_modules",
        run: proc_modules,
    },
    Target {
        name: "proc_pid",
        run: proc_pid,
    },
    Target {
        name: "os_release",
        run: os_release,
    },
    Target {
        name: "etc_config",
        run: etc_config,
    },
    Target {
        name: "ld_so_cache",
        run: ld_so_cache,
    },
    Target {
        name: "dpkg_status",
        run: dpkg_status,
    },
    Target {
        name: "rpm_query",
        run: rpm_query,
    },
    Target {
        name: "apt_output",
        run: apt_output,
    },
    Target {
        name: "dnf_output",
        run: dnf_output,
    },
    Target {
        name: "openpgp",
        run: openpgp,
    },
    Target {
        name: "versions",
        run: versions,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> fn(&[u8]) {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.run)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}
