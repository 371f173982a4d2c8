//! The plan's TOML schema. Every table denies unknown keys, and every value
//! type checks its own syntax while it is read, so a bad value is reported
//! at its own line and column (`plan.toml:3:10: ...`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// Absent: a toolkit-only plan, run on the driver underneath.
    #[serde(default)]
    pub driver: Option<toml::Spanned<DriverSpec>>,
    #[serde(default)]
    pub toolkit: Option<toml::Spanned<ToolkitSpec>>,
    #[serde(default)]
    pub compat: Option<toml::Spanned<CompatSpec>>,
    #[serde(default)]
    pub nouveau: NouveauSpec,
    #[serde(default)]
    pub environment: EnvironmentSpec,
    #[serde(default)]
    pub repositories: RepositoriesSpec,
    #[serde(default)]
    pub upgrade: Option<toml::Spanned<UpgradeSpec>>,
    #[serde(default)]
    pub secure_boot: Option<toml::Spanned<SecureBootSpec>>,
    #[serde(default)]
    pub container: ContainerSpec,
    #[serde(default)]
    pub dcgm: Option<toml::Spanned<DcgmSpec>>,
    #[serde(default)]
    pub verify: VerifySpec,
    #[serde(default)]
    pub metrics: MetricsSpec,
}

/// `[metrics]`: where apply, rollback and the resume unit write the node's
/// metrics for node_exporter's textfile collector, beside
/// `/var/lib/node_exporter/textfile_collector` (always written when it
/// exists).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    /// The collector's `--collector.textfile.directory`, absolute.
    #[serde(default)]
    pub textfile: Option<HostPath>,
}

/// `[verify]`: what verify proves after the driver changed (and what
/// `provision verify` checks).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// CUDA work on every GPU through the running driver's libcuda:
    /// allocation, copies, a PTX kernel. false on hosts without a real
    /// GPU (a stand-in driver, a CI runner).
    #[serde(default = "yes")]
    pub compute: bool,
}

impl Default for VerifySpec {
    fn default() -> Self {
        VerifySpec { compute: true }
    }
}

/// `[container]`: NVIDIA's container toolkit and the runtime it serves.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    #[serde(default)]
    pub runtime: ContainerRuntime,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerRuntime {
    Docker,
    Containerd,
    CriO,
    #[default]
    None,
}

impl fmt::Display for ContainerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerRuntime::Docker => "docker",
            ContainerRuntime::Containerd => "containerd",
            ContainerRuntime::CriO => "cri-o",
            ContainerRuntime::None => "none",
        })
    }
}

/// `[dcgm]`: NVIDIA's Data Center GPU Manager, held with the driver.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DcgmSpec {
    #[serde(default)]
    pub enable: bool,
    /// `dcgmi diag -r N` as part of verify (1: seconds; 2, 3, 4: minutes
    /// to hours); 0, the default, runs none. Needs `enable`.
    #[serde(default)]
    pub diag: DiagLevel,
}

/// A DCGM diagnostic level, 0 (none) to 4, checked where it is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DiagLevel(pub u8);

impl<'de> Deserialize<'de> for DiagLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let level = i64::deserialize(deserializer)?;
        match u8::try_from(level) {
            Ok(level @ 0..=4) => Ok(DiagLevel(level)),
            _ => Err(serde::de::Error::custom(format!(
                "diag = {level}: dcgmi diag runs levels 1 to 4 (0: none)"
            ))),
        }
    }
}

/// `[secure_boot]`: the enrolled key (MOK or db) that signs the modules
/// DKMS or a runfile builds, so a Secure Boot kernel loads them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecureBootSpec {
    /// The private key, "/var/lib/shim-signed/mok/MOK.priv".
    pub key: Option<HostPath>,
    /// Its certificate (DER or PEM), "/var/lib/shim-signed/mok/MOK.der".
    pub cert: Option<HostPath>,
}

/// An absolute path on the host: no `..`, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct HostPath(pub String);

impl From<HostPath> for String {
    fn from(path: HostPath) -> String {
        path.0
    }
}

impl<'de> Deserialize<'de> for HostPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let valid = text.starts_with('/')
            && text.len() <= 4096
            && !text.split('/').any(|part| part == "..")
            && !text
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\');
        if !valid {
            return Err(serde::de::Error::custom(format!(
                "invalid path {text:?}: expected an absolute path on the host, such as \"/var/lib/node_exporter/textfile_collector\""
            )));
        }
        Ok(HostPath(text))
    }
}

/// `[upgrade]`: what an upgrade may do to a node that is running work.
/// The defaults stop and restart NVIDIA's own daemons and touch no other
/// work: any other holder blocks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeSpec {
    #[serde(default)]
    pub holders: HolderPolicy,
    /// GPU services stopped in this order (and started in reverse) around
    /// a driver swap.
    #[serde(default = "default_services")]
    pub services: Vec<UnitName>,
    /// Seconds each service or process gets to stop.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: StopTimeout,
    #[serde(default)]
    pub reload: Reload,
    /// Drain the node through its scheduler before the window, resume it
    /// after verify.
    #[serde(default)]
    pub drain: Drain,
    /// Seconds to wait for the node's jobs to finish (0: as long as they
    /// run).
    #[serde(default)]
    pub drain_timeout: u64,
    /// The node's name in Slurm (default: the host name).
    #[serde(default)]
    pub slurm_node: Option<SlurmNode>,
    /// Another scheduler: the command that drains the node and returns
    /// once no job runs (an argument list, never a shell string).
    #[serde(default)]
    pub drain_command: Option<Vec<String>>,
    /// ... and the one that puts it back in service.
    #[serde(default)]
    pub resume_command: Option<Vec<String>>,
}

impl Default for UpgradeSpec {
    fn default() -> Self {
        UpgradeSpec {
            holders: HolderPolicy::default(),
            services: default_services(),
            stop_timeout: default_stop_timeout(),
            reload: Reload::default(),
            drain: Drain::default(),
            drain_timeout: 0,
            slurm_node: None,
            drain_command: None,
            resume_command: None,
        }
    }
}

/// How the node stops taking new work before an upgrade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Drain {
    /// No scheduler is asked: the holders policy alone decides.
    #[default]
    None,
    /// `scontrol update state=drain`, wait for the node's jobs, resume
    /// after verify.
    Slurm,
}

/// A Slurm node name as `scontrol` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct SlurmNode(pub String);

impl From<SlurmNode> for String {
    fn from(node: SlurmNode) -> String {
        node.0
    }
}

impl<'de> Deserialize<'de> for SlurmNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let valid = !text.is_empty()
            && text.len() <= 255
            && !text.starts_with('-')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !valid {
            return Err(serde::de::Error::custom(format!(
                "invalid slurm_node {text:?}: expected a node name (letters, digits, '-', '.', '_')"
            )));
        }
        Ok(SlurmNode(text))
    }
}

/// NVIDIA's own daemons that hold the GPU by design: the persistence
/// daemon, Fabric Manager, DCGM's host engine (two unit names) and
/// exporter, IMEX. Stopped and started again around a swap under every
/// policy, the default too: they are the node's, not a user's work.
pub const NVIDIA_DAEMONS: &[&str] = &[
    "nvidia-persistenced",
    "nvidia-fabricmanager",
    "nvidia-dcgm",
    "dcgm",
    "dcgm-exporter",
    "nvidia-imex",
];

fn default_services() -> Vec<UnitName> {
    NVIDIA_DAEMONS
        .iter()
        .map(|name| UnitName(name.to_string()))
        .collect()
}

fn default_stop_timeout() -> StopTimeout {
    StopTimeout(30)
}

/// What happens to processes holding `/dev/nvidia*` when the driver must
/// be swapped under them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HolderPolicy {
    /// NVIDIA's daemons are stopped and started again; any other holder
    /// blocks the upgrade.
    #[default]
    Refuse,
    /// The listed services are stopped and started again; any other holder
    /// blocks.
    StopServices,
    /// Services are stopped and started again; any other holder gets
    /// SIGTERM, then SIGKILL after `stop_timeout`.
    Terminate,
}

impl fmt::Display for HolderPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HolderPolicy::Refuse => "refuse",
            HolderPolicy::StopServices => "stop-services",
            HolderPolicy::Terminate => "terminate",
        })
    }
}

/// How a new kernel module replaces the loaded one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reload {
    /// Swap the module live when nothing blocks it, else wait for a reboot.
    #[default]
    Auto,
    /// Always leave the swap to a reboot.
    Never,
}

/// A systemd service name ("nvidia-persistenced" or "nvidia-dcgm.service").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct UnitName(pub String);

impl From<UnitName> for String {
    fn from(unit: UnitName) -> String {
        unit.0
    }
}

impl UnitName {
    /// The full unit name, "nvidia-persistenced.service".
    pub fn unit(&self) -> String {
        if self.0.contains('.') {
            self.0.clone()
        } else {
            format!("{}.service", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for UnitName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let valid = !text.is_empty()
            && text.len() <= 255
            && !text.starts_with('-')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@:\\".contains(&b));
        let unit = UnitName(text.clone());
        if !valid || !unit.unit().ends_with(".service") {
            return Err(serde::de::Error::custom(format!(
                "invalid service {text:?}: expected a systemd service name such as \"nvidia-persistenced\""
            )));
        }
        Ok(unit)
    }
}

/// Seconds a service or process gets to stop: 1 to 3600.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u64")]
pub struct StopTimeout(pub u64);

impl From<StopTimeout> for u64 {
    fn from(timeout: StopTimeout) -> u64 {
        timeout.0
    }
}

impl<'de> Deserialize<'de> for StopTimeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let seconds = i64::deserialize(deserializer)?;
        if !(1..=3600).contains(&seconds) {
            return Err(serde::de::Error::custom(format!(
                "invalid stop_timeout {seconds}: expected seconds from 1 to 3600"
            )));
        }
        Ok(StopTimeout(seconds as u64))
    }
}

/// Where packages come from: NVIDIA's CUDA repository (or an internal
/// mirror of it) and the distribution prerequisites.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoriesSpec {
    /// The CUDA repository URL (default: NVIDIA's for this distribution).
    pub cuda: Option<Url>,
    /// The signing key's URL (default: the repository's own key file).
    pub cuda_key: Option<Url>,
    /// The key's fingerprint (default: NVIDIA's, pinned in provision). A
    /// mirror that signs with its own key names it here.
    pub cuda_fingerprint: Option<Fingerprint>,
    /// NVIDIA's libnvidia-container repository (default: NVIDIA's).
    pub container: Option<Url>,
    pub container_key: Option<Url>,
    pub container_fingerprint: Option<Fingerprint>,
    /// An offline bundle (`provision bundle`) to serve the host from,
    /// relative to the plan's directory or absolute.
    pub bundle: Option<String>,
    /// The bundle manifest's sha256, as `provision bundle` printed it.
    pub bundle_sha256: Option<Sha256Hex>,
    /// Install kernel headers for every installed kernel (and dkms, EPEL on
    /// the RHEL family) so DKMS can build.
    #[serde(default = "yes")]
    pub prerequisites: bool,
}

impl Default for RepositoriesSpec {
    fn default() -> Self {
        RepositoriesSpec {
            cuda: None,
            cuda_key: None,
            cuda_fingerprint: None,
            container: None,
            container_key: None,
            container_fingerprint: None,
            bundle: None,
            bundle_sha256: None,
            prerequisites: true,
        }
    }
}

/// An http(s) or file URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Url(pub String);

impl From<Url> for String {
    fn from(url: Url) -> String {
        url.0
    }
}

impl<'de> Deserialize<'de> for Url {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let ok = ["http://", "https://", "file:///"]
            .iter()
            .any(|s| text.starts_with(s))
            && !text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\');
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "invalid URL {text:?}: expected http://, https:// or file:///"
            )));
        }
        Ok(Url(text))
    }
}

/// A sha256: 64 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Sha256Hex(pub String);

impl From<Sha256Hex> for String {
    fn from(hash: Sha256Hex) -> String {
        hash.0
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let normalized = text.trim().to_ascii_lowercase();
        if normalized.len() != 64 || !normalized.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom(format!(
                "invalid sha256 {text:?}: expected 64 hexadecimal digits"
            )));
        }
        Ok(Sha256Hex(normalized))
    }
}

/// An OpenPGP v4 fingerprint: 40 hexadecimal digits (spaces allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Fingerprint(pub String);

impl From<Fingerprint> for String {
    fn from(fingerprint: Fingerprint) -> String {
        fingerprint.0
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let normalized: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if normalized.len() != 40 || !normalized.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom(format!(
                "invalid fingerprint {text:?}: expected 40 hexadecimal digits"
            )));
        }
        Ok(Fingerprint(normalized))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DriverSpec {
    /// A branch such as "580": the newest release of the branch on first
    /// install, and never moved to another branch afterwards; or
    /// "recommended": the branch `provision recommend` picks for the host.
    pub branch: Option<BranchChoice>,
    /// An exact release such as "580.95.05".
    pub version: Option<DriverVersion>,
    #[serde(default)]
    pub flavor: Flavor,
    #[serde(default)]
    pub source: Source,
    /// `source = "runfile"`: NVIDIA-Linux-<arch>-<version>.run's URL.
    pub runfile: Option<Url>,
    /// The runfile's sha256: nothing unverified is ever executed.
    pub sha256: Option<Sha256Hex>,
    /// nvidia-persistenced enabled and running in persistence mode.
    #[serde(default = "yes")]
    pub persistence: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolkitSpec {
    pub version: ToolkitVersion,
    /// With a runfile driver: cuda_<version>_<driver>_linux.run's URL,
    /// installed with --toolkit only (never its bundled driver).
    pub runfile: Option<Url>,
    pub sha256: Option<Sha256Hex>,
    /// Owns /usr/local/cuda and the environment (PATH, loader path).
    #[serde(default = "yes")]
    pub default: bool,
    /// Toolkit-only plans: where the toolkit comes from (a plan with a
    /// `[driver]` takes the driver's source).
    pub source: Option<Source>,
    /// Toolkit-only plans: the driver the toolkit will run on where none
    /// runs here (an image baked for nodes with that driver), "580" or
    /// "580.95.05". Checked as well as the driver that runs, if any.
    pub for_driver: Option<DriverRef>,
}

/// A driver branch ("580") or an exact release ("580.95.05").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum DriverRef {
    Branch(Branch),
    Version(DriverVersion),
}

impl From<DriverRef> for String {
    fn from(driver: DriverRef) -> String {
        match driver {
            DriverRef::Branch(branch) => branch.into(),
            DriverRef::Version(version) => version.0,
        }
    }
}

impl<'de> Deserialize<'de> for DriverRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if (3..=4).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(DriverRef::Branch(Branch(
                text.parse().map_err(serde::de::Error::custom)?,
            )));
        }
        if dotted_numbers(&text, 2..=3, 4) && text.split('.').next().is_some_and(|b| b.len() >= 3) {
            return Ok(DriverRef::Version(DriverVersion(text)));
        }
        Err(serde::de::Error::custom(format!(
            "invalid driver {text:?}: expected a branch such as \"580\" or a release such as \"580.95.05\""
        )))
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompatSpec {
    #[serde(default)]
    pub package: CompatPackage,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NouveauSpec {
    #[serde(default = "yes")]
    pub disable: bool,
}

impl Default for NouveauSpec {
    fn default() -> Self {
        NouveauSpec { disable: true }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// PATH and CUDA_HOME for login shells (/etc/profile.d).
    #[serde(default = "yes")]
    pub path: bool,
    #[serde(default)]
    pub loader: Loader,
}

impl Default for EnvironmentSpec {
    fn default() -> Self {
        EnvironmentSpec {
            path: true,
            loader: Loader::default(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Open,
    Proprietary,
    #[default]
    Auto,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::Open => "open",
            Flavor::Proprietary => "proprietary",
            Flavor::Auto => "auto",
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    #[default]
    Distro,
    CudaRepo,
    Runfile,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Distro => "distro",
            Source::CudaRepo => "cuda-repo",
            Source::Runfile => "runfile",
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Loader {
    /// /etc/ld.so.conf.d + ldconfig: serves services as well as shells.
    #[default]
    #[serde(rename = "ld.so.conf")]
    LdSoConf,
    /// LD_LIBRARY_PATH in /etc/profile.d: login shells only.
    #[serde(rename = "profile")]
    Profile,
    #[serde(rename = "none")]
    None,
}

/// A driver branch: the first component of a driver version ("580").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct Branch(pub u32);

impl From<Branch> for String {
    fn from(branch: Branch) -> String {
        branch.0.to_string()
    }
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Branch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let valid = (3..=4).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return Err(serde::de::Error::custom(format!(
                "invalid driver branch {text:?}: expected the branch number, such as \"580\""
            )));
        }
        Ok(Branch(text.parse().map_err(serde::de::Error::custom)?))
    }
}

/// `[driver] branch`: a branch number, or "recommended".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum BranchChoice {
    Number(Branch),
    Recommended,
}

impl From<BranchChoice> for String {
    fn from(choice: BranchChoice) -> String {
        match choice {
            BranchChoice::Number(branch) => branch.into(),
            BranchChoice::Recommended => "recommended".into(),
        }
    }
}

impl<'de> Deserialize<'de> for BranchChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "recommended" {
            return Ok(BranchChoice::Recommended);
        }
        let valid = (3..=4).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return Err(serde::de::Error::custom(format!(
                "invalid driver branch {text:?}: expected the branch number, such as \"580\", or \"recommended\""
            )));
        }
        Ok(BranchChoice::Number(Branch(
            text.parse().map_err(serde::de::Error::custom)?,
        )))
    }
}

/// An exact driver release, "580.95.05" or "570.26".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct DriverVersion(pub String);

impl From<DriverVersion> for String {
    fn from(version: DriverVersion) -> String {
        version.0
    }
}

impl DriverVersion {
    pub fn branch(&self) -> Branch {
        Branch(
            self.0
                .split('.')
                .next()
                .and_then(|b| b.parse().ok())
                .unwrap_or(0),
        )
    }
}

impl fmt::Display for DriverVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DriverVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if !dotted_numbers(&text, 2..=3, 4) || text.split('.').next().is_none_or(|b| b.len() < 3) {
            return Err(serde::de::Error::custom(format!(
                "invalid driver version {text:?}: expected a release such as \"580.95.05\""
            )));
        }
        // Releases from R418 on have three parts (418.87.00, 580.95.05);
        // two-part ones (390.157) are older.
        let version = DriverVersion(text);
        if version.branch().0 >= 418 && version.0.split('.').count() != 3 {
            return Err(serde::de::Error::custom(format!(
                "invalid driver version {:?}: releases of R418 and later have three parts, such as \"{}.95.05\"; for the branch's newest release write branch = \"{}\"",
                version.0,
                version.branch(),
                version.branch()
            )));
        }
        Ok(version)
    }
}

/// A CUDA toolkit release: "12.8" (its GA), "12.8.1" (Update 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct ToolkitVersion {
    pub major: u32,
    pub minor: u32,
    pub update: Option<u32>,
}

impl From<ToolkitVersion> for String {
    fn from(version: ToolkitVersion) -> String {
        version.to_string()
    }
}

impl ToolkitVersion {
    /// "12.8" as used in paths and package names ("cuda-toolkit-12-8").
    pub fn short(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    pub fn dashed(&self) -> String {
        format!("{}-{}", self.major, self.minor)
    }

    pub fn parse(text: &str) -> Option<ToolkitVersion> {
        if !dotted_numbers(text, 2..=3, 3) {
            return None;
        }
        let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
        Some(ToolkitVersion {
            major: parts.next()??,
            minor: parts.next()??,
            update: parts.next().flatten(),
        })
    }
}

impl fmt::Display for ToolkitVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.update {
            Some(update) => write!(f, "{}.{}.{update}", self.major, self.minor),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

impl<'de> Deserialize<'de> for ToolkitVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ToolkitVersion::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid toolkit version {text:?}: expected a CUDA release such as \"12.8\" or \"12.8.1\""
            ))
        })
    }
}

/// `[compat] package`: "auto", "none" or a `cuda-compat-X-Y` name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum CompatPackage {
    #[default]
    None,
    Auto,
    Named(String),
}

impl From<CompatPackage> for String {
    fn from(package: CompatPackage) -> String {
        match package {
            CompatPackage::None => "none".into(),
            CompatPackage::Auto => "auto".into(),
            CompatPackage::Named(name) => name,
        }
    }
}

impl<'de> Deserialize<'de> for CompatPackage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "auto" => Ok(CompatPackage::Auto),
            "none" => Ok(CompatPackage::None),
            name if compat_name_valid(name) => Ok(CompatPackage::Named(text)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid compat package {text:?}: expected \"auto\", \"none\" or a name such as \"cuda-compat-12-8\""
            ))),
        }
    }
}

fn compat_name_valid(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("cuda-compat-") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `count` dot-separated runs of 1..=`width` digits, nothing else.
fn dotted_numbers(text: &str, count: std::ops::RangeInclusive<usize>, width: usize) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    count.contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= width && p.bytes().all(|b| b.is_ascii_digit()))
}
