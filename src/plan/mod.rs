//! The TOML plan: what the host should become. [`Plan::load`] reads and
//! checks it completely before anything looks at the host, so an invalid plan
//! never changes anything. Errors name `file:line:column`.

pub mod schema;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use schema::{
    Branch, CompatPackage, ContainerRuntime, Drain, DriverRef, DriverVersion, EnvironmentSpec,
    Flavor, HolderPolicy, Loader, NouveauSpec, Reload, RepositoriesSpec, SlurmNode, Source,
    StopTimeout, ToolkitSpec, ToolkitVersion, UnitName, UpgradeSpec,
};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{path}: cannot read the plan: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// A checked plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub path: PathBuf,
    /// sha256 of the plan file, recorded in the journal.
    pub sha256: String,
    /// The plan file as read (kept beside the journal while a generation
    /// waits for a reboot).
    #[serde(skip)]
    pub bytes: Vec<u8>,
    /// None: a toolkit-only plan, validated against the driver that runs
    /// underneath (the host's, a container's machine's, or `for_driver`).
    pub driver: Option<Driver>,
    pub toolkit: Option<ToolkitSpec>,
    pub compat: CompatPackage,
    pub nouveau: NouveauSpec,
    pub environment: EnvironmentSpec,
    pub repositories: RepositoriesSpec,
    pub upgrade: UpgradeSpec,
    /// `[secure_boot]`: the key pair that signs the modules built here.
    pub signing: Option<Signing>,
    /// `[container] runtime`.
    pub container: ContainerRuntime,
    /// `[dcgm] enable`.
    pub dcgm: bool,
    /// `[dcgm] diag`: the dcgmi diag level verify runs (0: none).
    pub dcgm_diag: u8,
    /// `[verify]`.
    pub verify: schema::VerifySpec,
    /// `[metrics] textfile`: a textfile collector directory to write.
    pub metrics: Option<PathBuf>,
    /// The offline bundle the host is served from, once checked.
    #[serde(skip)]
    pub bundle: Option<crate::bundle::Opened>,
    /// Where each table of the plan starts (line, column), for messages
    /// about it found later, against the host.
    #[serde(skip)]
    pub tables: std::collections::BTreeMap<&'static str, (usize, usize)>,
}

/// The enrolled key pair modules are signed with (paths on the host).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signing {
    pub key: String,
    pub cert: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Driver {
    pub target: DriverTarget,
    /// `branch = "recommended"`: the target is settled from the host's
    /// facts ([`Plan::settle_recommended`]) before anything is planned.
    pub recommended: bool,
    pub flavor: Flavor,
    pub source: Source,
    /// `source = "runfile"`: where the installer is and its sha256.
    pub runfile: Option<Download>,
    /// nvidia-persistenced in persistence mode.
    pub persistence: bool,
}

/// A file provision downloads and verifies before use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Download {
    pub url: String,
    pub sha256: String,
}

/// Which driver release the plan asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverTarget {
    Branch(Branch),
    Version(DriverVersion),
}

impl DriverTarget {
    pub fn branch(&self) -> Branch {
        match self {
            DriverTarget::Branch(branch) => *branch,
            DriverTarget::Version(version) => version.branch(),
        }
    }

    /// Whether an installed upstream driver version satisfies the target.
    pub fn accepts(&self, upstream: &str) -> bool {
        match self {
            DriverTarget::Branch(branch) => {
                upstream.split('.').next() == Some(branch.to_string().as_str())
            }
            DriverTarget::Version(version) => upstream == version.0,
        }
    }
}

impl std::fmt::Display for DriverTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverTarget::Branch(branch) => write!(f, "branch {branch}"),
            DriverTarget::Version(version) => write!(f, "{version}"),
        }
    }
}

/// Where each table that messages point at starts: (line, column).
fn table_positions(
    spec: &schema::PlanSpec,
    bytes: &[u8],
) -> std::collections::BTreeMap<&'static str, (usize, usize)> {
    let spans = [
        ("driver", spec.driver.as_ref().map(|d| d.span())),
        ("toolkit", spec.toolkit.as_ref().map(|t| t.span())),
        ("compat", spec.compat.as_ref().map(|c| c.span())),
        ("secure_boot", spec.secure_boot.as_ref().map(|c| c.span())),
        ("upgrade", spec.upgrade.as_ref().map(|c| c.span())),
        ("dcgm", spec.dcgm.as_ref().map(|c| c.span())),
    ];
    spans
        .into_iter()
        .filter_map(|(name, span)| Some((name, line_column(bytes, span?.start))))
        .collect()
}

impl Plan {
    /// Reads and checks the plan at `path`.
    pub fn load(path: &Path) -> Result<Plan, PlanError> {
        let bytes = std::fs::read(path).map_err(|source| PlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Plan::parse(path, &bytes)
    }

    /// Checks plan text; `path` is only used in messages.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Plan, PlanError> {
        let invalid = |offset: usize, message: String| {
            let (line, column) = line_column(bytes, offset);
            PlanError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let text = std::str::from_utf8(bytes).map_err(|error| {
            let offset = error.valid_up_to();
            invalid(
                offset,
                format!(
                    "not a TOML plan: invalid UTF-8 (byte 0x{:02x} at offset {offset})",
                    bytes[offset]
                ),
            )
        })?;
        if text.trim().is_empty() {
            return Err(invalid(
                0,
                "the plan is empty: expected a [driver] table (`branch` or `version`) or a [toolkit] table (`version`)"
                    .into(),
            ));
        }
        let spec: schema::PlanSpec = toml::from_str(text).map_err(|error| {
            let offset = error.span().map(|span| span.start).unwrap_or(0);
            invalid(offset, spec_message(text, offset, error.message()))
        })?;
        let tables = table_positions(&spec, bytes);
        let driver = match spec.driver {
            Some(driver) => Some(driver_of(driver, &invalid)?),
            None => None,
        };
        let toolkit_span = spec.toolkit.as_ref().map(|t| t.span());
        let toolkit = spec.toolkit.map(|t| t.into_inner());
        match (&toolkit, toolkit_span) {
            (Some(toolkit), Some(span)) => {
                if let Some(message) = toolkit_problem(toolkit, driver.as_ref()) {
                    return Err(invalid(span.start, message));
                }
            }
            _ if driver.is_none() => {
                return Err(invalid(
                    0,
                    "the plan installs nothing: add [driver] (`branch` or `version`) or [toolkit] (`version`)".into(),
                ));
            }
            _ => {}
        }
        let dcgm = spec.dcgm.map(|d| d.into_inner()).unwrap_or_default();
        let signing = signing_of(spec.secure_boot, &invalid)?;
        let upgrade = upgrade_of(spec.upgrade, &invalid)?;
        Ok(Plan {
            path: path.to_path_buf(),
            sha256: hex::encode(Sha256::digest(bytes)),
            bytes: bytes.to_vec(),
            driver,
            toolkit,
            compat: spec
                .compat
                .map(|c| c.into_inner().package)
                .unwrap_or_default(),
            nouveau: spec.nouveau,
            environment: spec.environment,
            repositories: spec.repositories,
            upgrade,
            signing,
            container: spec.container.runtime,
            dcgm: dcgm.enable,
            dcgm_diag: dcgm.diag.0,
            verify: spec.verify,
            metrics: spec.metrics.textfile.map(|p| PathBuf::from(p.0)),
            bundle: None,
            tables,
        })
    }
}

impl Plan {
    /// `plan.toml:3:1` for the plan's `[section]` table (the file alone
    /// when it has none): where a message about it points.
    pub fn at(&self, section: &str) -> String {
        match self.tables.get(section) {
            Some((line, column)) => format!("{}:{line}:{column}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// The bundle the plan names (`[repositories] bundle`), resolved
    /// against the plan's directory, and its manifest hash.
    pub fn bundle_ref(&self) -> Option<(PathBuf, Option<String>)> {
        let named = self.repositories.bundle.as_ref()?;
        let path = Path::new(named);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(path)
        };
        Some((
            path,
            self.repositories
                .bundle_sha256
                .as_ref()
                .map(|h| h.0.clone()),
        ))
    }

    /// Where the packages come from: the driver's source, or a
    /// toolkit-only plan's (NVIDIA's CUDA repository unless it says).
    pub fn source(&self) -> Source {
        match (&self.driver, &self.toolkit) {
            (Some(driver), _) => driver.source,
            (None, Some(toolkit)) => toolkit.source.unwrap_or(Source::CudaRepo),
            (None, None) => Source::CudaRepo,
        }
    }
}

/// `[secure_boot]` checked: both the key and its certificate.
fn signing_of(
    spec: Option<toml::Spanned<schema::SecureBootSpec>>,
    invalid: &dyn Fn(usize, String) -> PlanError,
) -> Result<Option<Signing>, PlanError> {
    let Some(spanned) = spec else {
        return Ok(None);
    };
    let start = spanned.span().start;
    match spanned.into_inner() {
        schema::SecureBootSpec {
            key: Some(key),
            cert: Some(cert),
        } => Ok(Some(Signing {
            key: key.0,
            cert: cert.0,
        })),
        _ => Err(invalid(
            start,
            "[secure_boot] needs both key (the private key) and cert (its certificate, enrolled with `mokutil --import`)".into(),
        )),
    }
}

/// `[upgrade]` checked: one way to drain, a drain command with its resume
/// command, neither empty.
fn upgrade_of(
    spec: Option<toml::Spanned<UpgradeSpec>>,
    invalid: &dyn Fn(usize, String) -> PlanError,
) -> Result<UpgradeSpec, PlanError> {
    let Some(spanned) = spec else {
        return Ok(UpgradeSpec::default());
    };
    let start = spanned.span().start;
    let upgrade = spanned.into_inner();
    let problem = match (&upgrade.drain_command, &upgrade.resume_command) {
        _ if upgrade.drain == Drain::Slurm && upgrade.drain_command.is_some() => Some(
            "[upgrade] drain = \"slurm\" asks Slurm itself: leave out drain_command and resume_command, or set drain = \"none\" to run your own",
        ),
        (Some(_), None) | (None, Some(_)) => Some(
            "[upgrade] drain_command and resume_command go together: the node drained by one is put back by the other",
        ),
        (Some(drain), Some(resume)) if drain.is_empty() || resume.is_empty() => Some(
            "[upgrade] drain_command and resume_command are argument lists: [\"/usr/local/bin/drain\", \"--node\", \"gpu01\"]",
        ),
        _ => None,
    };
    match problem {
        Some(message) => Err(invalid(start, message.into())),
        None => Ok(upgrade),
    }
}

/// `[driver]` checked: one target, the runfile only with its sha256.
fn driver_of(
    spanned: toml::Spanned<schema::DriverSpec>,
    invalid: &dyn Fn(usize, String) -> PlanError,
) -> Result<Driver, PlanError> {
    let start = spanned.span().start;
    let driver = spanned.into_inner();
    let recommended = driver.branch == Some(schema::BranchChoice::Recommended);
    let target = match (driver.branch, driver.version) {
        (Some(schema::BranchChoice::Number(branch)), None) => DriverTarget::Branch(branch),
        // Settled from the host's facts before planning.
        (Some(schema::BranchChoice::Recommended), None) => DriverTarget::Branch(Branch(0)),
        (None, Some(version)) => DriverTarget::Version(version),
        (Some(_), Some(_)) => {
            return Err(invalid(
                start,
                "[driver] takes `branch` or `version`, not both".into(),
            ));
        }
        (None, None) => {
            return Err(invalid(
                start,
                "[driver] needs `branch` (such as \"580\") or `version` (such as \"580.95.05\"); a plan without [driver] installs the toolkit only".into(),
            ));
        }
    };
    let runfile = match (driver.source, driver.runfile, driver.sha256) {
        (Source::Runfile, Some(url), Some(sha256)) => {
            if !matches!(target, DriverTarget::Version(_)) {
                return Err(invalid(
                    start,
                    "source = \"runfile\" installs one release: set [driver] version (such as \"580.95.05\") instead of branch".into(),
                ));
            }
            Some(Download {
                url: url.0,
                sha256: sha256.0,
            })
        }
        (Source::Runfile, _, _) => {
            return Err(invalid(
                start,
                "source = \"runfile\" needs [driver] runfile (its URL) and sha256 (nothing unverified is executed)".into(),
            ));
        }
        (_, None, None) => None,
        (source, _, _) => {
            return Err(invalid(
                start,
                format!(
                    "[driver] runfile and sha256 go with source = \"runfile\", not \"{source}\""
                ),
            ));
        }
    };
    Ok(Driver {
        target,
        recommended,
        flavor: driver.flavor,
        source: driver.source,
        runfile,
        persistence: driver.persistence,
    })
}

/// What is wrong with `[toolkit]` beside this `[driver]` (or none).
fn toolkit_problem(toolkit: &ToolkitSpec, driver: Option<&Driver>) -> Option<String> {
    let runfile = toolkit.runfile.is_some();
    let sha256 = toolkit.sha256.is_some();
    match driver {
        Some(driver) => {
            if toolkit.source.is_some_and(|s| s != driver.source) {
                return Some(format!(
                    "[toolkit] source goes with toolkit-only plans; this toolkit comes from the driver's source (\"{}\")",
                    driver.source
                ));
            }
            if toolkit.for_driver.is_some() {
                return Some("[toolkit] for_driver goes with toolkit-only plans: the toolkit runs on the plan's [driver]".into());
            }
            match (driver.runfile.is_some(), runfile, sha256) {
                (true, true, true) | (false, false, false) => None,
                (true, _, _) => Some("with a runfile driver, [toolkit] needs runfile (cuda_<version>_<driver>_linux.run) and sha256".into()),
                (false, _, _) => Some("[toolkit] runfile goes with [driver] source = \"runfile\"; other sources install the toolkit's packages".into()),
            }
        }
        None => match (toolkit.source.unwrap_or(Source::CudaRepo), runfile, sha256) {
            (Source::Runfile, true, true) => None,
            (Source::Runfile, _, _) => Some("[toolkit] source = \"runfile\" needs runfile (cuda_<version>_<driver>_linux.run) and sha256".into()),
            (_, false, false) => None,
            (source, _, _) => Some(format!(
                "[toolkit] runfile and sha256 go with source = \"runfile\", not \"{source}\""
            )),
        },
    }
}

/// 1-based line and column (in characters) of byte `offset`.
/// toml's message, said for people: a table given twice names itself.
fn spec_message(text: &str, offset: usize, message: &str) -> String {
    let message = message.trim_end();
    if message == "duplicate key" {
        let offset = offset.min(text.len());
        let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = text[start..].lines().next().unwrap_or("");
        let name = line.trim().trim_matches(|c| c == '[' || c == ']').trim();
        if line.trim_start().starts_with('[') {
            return format!("[{name}] is given twice: merge the two tables into one");
        }
        let key = name.split('=').next().unwrap_or(name).trim();
        return format!("`{key}` is given twice in its table: keep one");
    }
    message.to_string()
}

fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Plan::parse(Path::new("plan.toml"), text.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_full_plan_reads() {
        let plan = Plan::parse(
            Path::new("p.toml"),
            br#"
[driver]
branch = "580"
flavor = "open"
source = "cuda-repo"
[toolkit]
version = "12.8"
[compat]
package = "auto"
[environment]
loader = "profile"
"#,
        )
        .unwrap();
        let driver = plan.driver.as_ref().unwrap();
        assert_eq!(driver.target, DriverTarget::Branch(Branch(580)));
        assert_eq!(driver.source, Source::CudaRepo);
        assert_eq!(plan.toolkit.unwrap().version.short(), "12.8");
        assert_eq!(plan.compat, CompatPackage::Auto);
        assert!(
            plan.nouveau.disable,
            "nouveau is disabled unless the plan says otherwise"
        );
        assert_eq!(plan.environment.loader, Loader::Profile);
    }

    #[test]
    fn unknown_key_is_located_and_lists_the_valid_keys() {
        let message = error("[driver]\nbranch = \"580\"\nflavour = \"open\"\n");
        assert!(
            message.starts_with("plan.toml:3:1: unknown field `flavour`"),
            "{message}"
        );
        assert!(message.contains("`flavor`"), "{message}");
        assert!(message.contains("`source`"), "{message}");
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let message = error("[driver]\nbranch = \"abc\"\n");
        assert!(message.starts_with("plan.toml:2:10:"), "{message}");
        assert!(
            message.contains("invalid driver branch \"abc\""),
            "{message}"
        );
        let message = error("[driver]\nversion = \"../../x\"\n");
        assert!(message.starts_with("plan.toml:2:11:"), "{message}");
        let message = error("[driver]\nbranch = 580\n");
        assert!(message.starts_with("plan.toml:2:10:"), "{message}");
        let message = error("[driver]\nbranch = \"580\"\nflavor = \"closed\"\n");
        assert!(message.contains("`open`"), "{message}");
        let message = error("[driver]\nbranch = \"580\"\n[toolkit]\nversion = \"twelve\"\n");
        assert!(message.starts_with("plan.toml:4:11:"), "{message}");
        let message = error("[driver]\nbranch = \"580\"\n[compat]\npackage = \"libcuda\"\n");
        assert!(message.contains("cuda-compat-12-8"), "{message}");
    }

    #[test]
    fn driver_needs_exactly_one_target() {
        assert!(error("[driver]\nflavor = \"open\"\n").contains("needs `branch`"));
        assert!(
            error("[driver]\nbranch = \"580\"\nversion = \"580.95.05\"\n").contains("not both")
        );
    }

    #[test]
    fn empty_and_binary_plans_are_located_errors() {
        assert!(error("").starts_with("plan.toml:1:1: the plan is empty"));
        let message = Plan::parse(Path::new("p.toml"), b"[driver]\n\xff\xfe\x00garbage")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("p.toml:2:1: not a TOML plan: invalid UTF-8"),
            "{message}"
        );
    }
}
