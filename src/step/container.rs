//! The container runtime's NVIDIA runtime: the change `nvidia-ctk runtime
//! configure --runtime=...` makes, computed here so `plan` shows it as a
//! diff, written through the journal (rollback restores the file byte for
//! byte), and the runtime restarted only when its file changed.
//!
//! - docker: `/etc/docker/daemon.json` gains `runtimes.nvidia`; every other
//!   key stays, in its order.
//! - containerd: `/etc/containerd/config.toml` gains the `nvidia` runtime
//!   under the CRI plugin (`io.containerd.grpc.v1.cri` in a version 2
//!   file, `io.containerd.cri.v1.runtime` in version 3).
//! - cri-o: a drop-in, `/etc/crio/crio.conf.d/99-nvidia.toml`.

use super::file::ManagedFile;
use super::{Check, Context, Step, StepError};
use crate::host::Cmd;
use crate::journal::Journal;

pub const ID: &str = "container:runtime";
pub const DOCKER_CONFIG: &str = "/etc/docker/daemon.json";
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const CRIO_DROPIN: &str = "/etc/crio/crio.conf.d/99-nvidia.toml";
pub const RUNTIME_BINARY: &str = "/usr/bin/nvidia-container-runtime";

/// docker's daemon.json with the nvidia runtime (`current`: the file now).
pub fn docker_config(current: Option<&str>) -> Result<String, String> {
    let mut config: serde_json::Value = match current.map(str::trim) {
        None | Some("") => serde_json::json!({}),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            format!("{DOCKER_CONFIG} is not valid JSON ({e}): fix it before docker and provision can read it")
        })?,
    };
    let Some(object) = config.as_object_mut() else {
        return Err(format!("{DOCKER_CONFIG} is not a JSON object"));
    };
    let runtimes = object
        .entry("runtimes")
        .or_insert_with(|| serde_json::json!({}));
    let Some(runtimes) = runtimes.as_object_mut() else {
        return Err(format!("{DOCKER_CONFIG}: \"runtimes\" is not an object"));
    };
    runtimes.insert(
        "nvidia".into(),
        serde_json::json!({"args": [], "path": "nvidia-container-runtime"}),
    );
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&config, &mut serializer).map_err(|e| e.to_string())?;
    let mut text = String::from_utf8(out).map_err(|e| e.to_string())?;
    text.push('\n');
    Ok(text)
}

/// containerd's config.toml with the nvidia runtime under the CRI plugin.
pub fn containerd_config(current: Option<&str>) -> Result<String, String> {
    let mut config: toml::Table = match current {
        None => toml::Table::new(),
        Some(text) => text.parse().map_err(|e| {
            format!("{CONTAINERD_CONFIG} is not valid TOML ({e}): fix it before containerd and provision can read it")
        })?,
    };
    let version = config
        .get("version")
        .and_then(toml::Value::as_integer)
        .unwrap_or(2);
    config
        .entry("version")
        .or_insert(toml::Value::Integer(version));
    let plugin = if version >= 3 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    let mut table = &mut config;
    for key in ["plugins", plugin, "containerd", "runtimes"] {
        let entry = table
            .entry(key)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("{CONTAINERD_CONFIG}: {key} is not a table"))?;
    }
    let mut options = toml::Table::new();
    options.insert("BinaryName".into(), RUNTIME_BINARY.into());
    let mut nvidia = toml::Table::new();
    nvidia.insert("runtime_type".into(), "io.containerd.runc.v2".into());
    nvidia.insert("options".into(), toml::Value::Table(options));
    table.insert("nvidia".into(), toml::Value::Table(nvidia));
    toml::to_string(&config).map_err(|e| e.to_string())
}

/// cri-o's drop-in for the nvidia runtime.
pub fn crio_dropin() -> String {
    format!(
        "{}[crio]\n  [crio.runtime]\n    [crio.runtime.runtimes]\n      [crio.runtime.runtimes.nvidia]\n        runtime_path = \"{RUNTIME_BINARY}\"\n        runtime_type = \"oci\"\n",
        super::file::header("the NVIDIA container runtime for cri-o")
    )
}

/// The runtime's configuration file, and the unit restarted after it
/// changes.
pub struct RuntimeConfig {
    pub file: ManagedFile,
    pub unit: String,
}

impl Step for RuntimeConfig {
    fn id(&self) -> String {
        ID.into()
    }

    fn check(&self, ctx: &Context) -> Result<Check, StepError> {
        Ok(match self.file.check(ctx)? {
            Check::Pending(mut change) => {
                change
                    .commands
                    .push(format!("systemctl try-restart {}", self.unit));
                Check::Pending(change)
            }
            satisfied => satisfied,
        })
    }

    fn apply(&self, ctx: &Context, journal: &mut Journal) -> Result<(), StepError> {
        self.file.apply(ctx, journal)?;
        // try-restart: a runtime that is not running stays stopped.
        if ctx.facts.services.systemd && ctx.host.has_tool("systemctl") {
            let cmd = Cmd::change("systemctl").args(["try-restart", &self.unit]);
            crate::host::run_checked(ctx.host.runner.as_ref(), &cmd)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_keeps_every_other_key_in_its_order() {
        let before = "{\n  \"log-driver\": \"journald\",\n  \"data-root\": \"/srv/docker\",\n  \"runtimes\": {\"crun\": {\"path\": \"/usr/bin/crun\"}}\n}\n";
        let after = docker_config(Some(before)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&after).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["log-driver", "data-root", "runtimes"]);
        assert_eq!(value["runtimes"]["crun"]["path"], "/usr/bin/crun");
        assert_eq!(
            value["runtimes"]["nvidia"]["path"],
            "nvidia-container-runtime"
        );
        assert_eq!(docker_config(Some(&after)).unwrap(), after, "idempotent");
        assert!(
            docker_config(Some("{ not json"))
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(docker_config(None).unwrap().contains("\"nvidia\""));
    }

    #[test]
    fn containerd_gets_the_runtime_under_the_cri_plugin_of_its_version() {
        let two =
            containerd_config(Some("version = 2\n[grpc]\naddress = \"/run/c.sock\"\n")).unwrap();
        assert!(
            two.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]"),
            "{two}"
        );
        assert!(two.contains("address = \"/run/c.sock\""), "{two}");
        let three = containerd_config(Some("version = 3\n")).unwrap();
        assert!(three.contains("io.containerd.cri.v1.runtime"), "{three}");
        assert_eq!(containerd_config(Some(&two)).unwrap(), two, "idempotent");
    }
}
