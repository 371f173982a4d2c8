//! What a fleet's monitoring reads of a node: the driver's layers, the
//! GPUs, the last generation and its outage, whether a reboot is pending,
//! doctor's findings, verify's verdict, and how far the host has drifted
//! from the plan last applied. Prometheus' text exposition format, written
//! for node_exporter's textfile collector as sites already do for
//! `apt_upgrades_pending` (DIR/provision.prom, atomically).

use std::path::Path;

use crate::doctor::Severity;
use crate::facts::Facts;
use crate::host::Host;
use crate::journal::{self, Generation, Status};

/// Where node_exporter's textfile collector reads on Debian and Ubuntu
/// (prometheus-node-exporter's default `--collector.textfile.directory`).
pub const TEXTFILE_DIR: &str = "/var/lib/node_exporter/textfile_collector";

/// One metric family: its name, help, type and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

fn gauge(name: &'static str, help: &'static str, value: f64) -> Family {
    Family {
        name,
        help,
        samples: vec![(Vec::new(), value)],
    }
}

fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

/// Everything read once: the facts, the journal, doctor, verify (without
/// the compute check: metrics are read every scrape interval), the drift.
pub fn collect(host: &Host, facts: &Facts, drift: Option<usize>) -> Vec<Family> {
    let generations = journal::all(&host.root).unwrap_or_default();
    let latest = generations.last();
    let mut families = vec![driver_info(facts)];
    families.push(gauge(
        "provision_driver_mismatch",
        "1 while the loaded kernel module and the installed user space differ (Driver/library version mismatch)",
        flag(facts.kernel_driver.mismatch.is_some()),
    ));
    families.push(gauge(
        "provision_gpus",
        "NVIDIA GPUs on the PCI bus",
        facts.gpu_devices().count() as f64,
    ));
    families.extend(generation_families(latest));
    families.push(gauge(
        "provision_reboot_required",
        "1 while a generation waits for a reboot, or nouveau or an older module keeps the new driver out",
        flag(reboot_required(facts, latest)),
    ));
    families.push(findings(host, facts));
    let verified = crate::step::verify::standalone(host, facts, false);
    families.push(gauge(
        "provision_verify_passed",
        "1 when provision verify's checks (module, user space, GPUs bound, nvidia-smi) pass, without the compute check",
        flag(verified.passed),
    ));
    if let Some(drift) = drift {
        families.push(gauge(
            "provision_plan_drift",
            "steps the last applied plan would change on this host now (0: as applied)",
            drift as f64,
        ));
    }
    families
}

fn driver_info(facts: &Facts) -> Family {
    let driver = &facts.kernel_driver;
    let value = |v: Option<&str>| v.unwrap_or("none").to_string();
    let release = facts.driver_version();
    Family {
        name: "provision_driver_info",
        help: "the NVIDIA driver's layers: the loaded kernel module, the user space, the module flavour and the branch",
        samples: vec![(
            vec![
                ("kernel_module", value(driver.version.as_deref())),
                ("user_space", value(facts.user_driver.version.as_deref())),
                ("flavor", value(driver.flavor.as_deref())),
                ("branch", value(release.and_then(|r| r.split('.').next()))),
            ],
            1.0,
        )],
    }
}

fn generation_families(latest: Option<&Generation>) -> Vec<Family> {
    let Some(generation) = latest else {
        return Vec::new();
    };
    let state = crate::serde_name(&generation.status);
    let mut families = vec![Family {
        name: "provision_generation",
        help: "the newest generation's number, labelled with its state",
        samples: vec![(vec![("state", state)], generation.id as f64)],
    }];
    if let Some(finished) = generation
        .finished
        .as_deref()
        .and_then(journal::unix_seconds)
    {
        families.push(gauge(
            "provision_last_apply_timestamp_seconds",
            "when the newest generation ended (Unix time)",
            finished as f64,
        ));
    }
    if let Some(seconds) = generation.unavailable_seconds {
        families.push(gauge(
            "provision_last_unavailable_seconds",
            "how long the newest generation's window kept the GPUs out of service",
            seconds,
        ));
    }
    if let Some(seconds) = generation.build_seconds {
        families.push(gauge(
            "provision_last_build_seconds",
            "how long the newest generation's kernel module build took, before its window",
            seconds,
        ));
    }
    families
}

fn reboot_required(facts: &Facts, latest: Option<&Generation>) -> bool {
    latest.is_some_and(|g| g.status == Status::AwaitingReboot)
        || facts.kernel_driver.mismatch.is_some()
        || facts.nouveau.loaded == Some(true)
}

fn findings(host: &Host, facts: &Facts) -> Family {
    let report = crate::doctor::run(host, facts);
    let count = |severity: Severity| {
        report
            .findings
            .iter()
            .filter(|f| f.severity == severity)
            .count() as f64
    };
    Family {
        name: "provision_doctor_findings",
        help: "provision doctor's findings by severity",
        samples: [Severity::Error, Severity::Warning, Severity::Info]
            .into_iter()
            .map(|severity| {
                let label = crate::serde_name(&severity);
                (vec![("severity", label)], count(severity))
            })
            .collect(),
    }
}

/// How many steps the newest applied generation's plan would change now,
/// when that plan is still where it was and unchanged (its sha256).
pub fn drift(host: &Host) -> Option<usize> {
    let generations = journal::all(&host.root).ok()?;
    let applied = generations
        .iter()
        .rev()
        .find(|g| g.status == Status::Applied)?;
    let path = Path::new(applied.plan.as_deref()?);
    let plan = crate::plan::Plan::load(path).ok()?;
    if Some(&plan.sha256) != applied.plan_sha256.as_ref() {
        return None;
    }
    let report = crate::engine::plan(host, &plan, &crate::progress::Silent);
    if report.failed {
        return None;
    }
    Some(
        report
            .steps
            .iter()
            .filter(|s| s.action != crate::step::Action::None)
            .count(),
    )
}

/// Writes the textfile where node_exporter reads it: into
/// `/var/lib/node_exporter/textfile_collector` when it exists in the root,
/// and into the plan's `[metrics] textfile` (which must exist). After
/// apply (the resume unit's too) and rollback, so the fleet sees the
/// change without waiting for a cron job. None when there is nowhere to
/// write.
pub fn refresh(host: &Host, configured: Option<&Path>) -> Option<std::io::Result<()>> {
    let mut dirs: Vec<&Path> = Vec::new();
    if host.root.is_dir(TEXTFILE_DIR) {
        dirs.push(Path::new(TEXTFILE_DIR));
    }
    dirs.extend(configured.filter(|dir| *dir != Path::new(TEXTFILE_DIR)));
    if dirs.is_empty() {
        return None;
    }
    let facts = Facts::gather(host, crate::facts::Options::default());
    let text = exposition(&collect(host, &facts, drift(host)));
    Some(dirs.into_iter().try_for_each(|dir| {
        if !host.root.is_dir(dir) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("[metrics] textfile {}: no such directory", dir.display()),
            ));
        }
        write_textfile(host, dir, &text)
    }))
}

/// The `[metrics] textfile` of the newest generation's plan, where that
/// plan can still be read (rollback has no plan of its own).
pub fn configured_by_latest(host: &Host) -> Option<std::path::PathBuf> {
    let generations = journal::all(&host.root).ok()?;
    let path = Path::new(generations.last()?.plan.as_deref()?);
    crate::plan::Plan::load(path).ok()?.metrics
}

/// Label values escaped as the exposition format wants them.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus' text exposition format (version 0.0.4): HELP, TYPE, samples.
pub fn exposition(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        out.push_str(&format!("# HELP {} {}\n", family.name, family.help));
        out.push_str(&format!("# TYPE {} gauge\n", family.name));
        for (labels, value) in &family.samples {
            let labels = if labels.is_empty() {
                String::new()
            } else {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                format!("{{{}}}", pairs.join(","))
            };
            out.push_str(&format!("{}{labels} {value}\n", family.name));
        }
    }
    out
}

/// Writes `text` as DIR/provision.prom through the root, atomically (the
/// collector never reads half a file).
pub fn write_textfile(host: &Host, dir: &Path, text: &str) -> std::io::Result<()> {
    host.root
        .write_atomic(dir.join("provision.prom"), text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_help_type_and_escaped_labels() {
        let text = exposition(&[Family {
            name: "provision_driver_info",
            help: "layers",
            samples: vec![(vec![("flavor", "open \"x\"".into())], 1.0)],
        }]);
        assert_eq!(
            text,
            "# HELP provision_driver_info layers\n# TYPE provision_driver_info gauge\nprovision_driver_info{flavor=\"open \\\"x\\\"\"} 1\n"
        );
    }
}
