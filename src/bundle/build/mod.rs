//! `provision bundle`: the plan's packages for one release, resolved by
//! the real apt against that release's repositories (the distribution's
//! archive, NVIDIA's repositories or the plan's mirrors) in a throwaway
//! apt state of its own: nothing of this machine's apt, dpkg or any host is
//! read or written. The host it serves is modelled as a minimal install of
//! the release (its `Priority: required` packages), so the bundle carries
//! everything else the plan pulls in: DKMS, the compiler, kernel headers.

mod rpm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::apt::{Apt, io};
use super::hosts::HostDoc;
use super::{BundleError, BundledPackage, MANIFEST, Manifest, ManifestFile, REPO_DIR, hex};
use crate::distro::{self, PackageSpec, VersionSpec};
use crate::facts::Facts;
use crate::facts::os::{Family, Kernel};
use crate::host::{Cmd, Runner};
use crate::plan::{CompatPackage, Flavor, Plan, Source};
use crate::progress::Progress;

/// What to bundle.
pub struct Request<'a> {
    pub plan: &'a Plan,
    pub sources: Sources,
    pub output: PathBuf,
}

/// The release to bundle for and where its packages come from.
#[derive(Clone)]
pub struct Sources {
    /// "debian-12", as `detect` names a release; "rhel-9" for the RHEL
    /// family; empty: the hosts'.
    pub release: String,
    /// The hosts' `detect --json --packages` documents.
    pub hosts: Vec<PathBuf>,
    /// "x86_64" or "sbsa".
    pub arch: String,
    /// Kernels to carry headers for (default: the release's current one).
    pub kernels: Vec<String>,
    /// The distribution's repositories: its archive (Debian family, at most
    /// one; default: the release's official one), or dnf base URLs (RHEL
    /// family: BaseOS, AppStream, EPEL mirrors; default: none).
    pub mirrors: Vec<String>,
    /// Keys (ASCII-armored files) that sign the RHEL-family mirrors' rpms.
    pub mirror_keys: Vec<PathBuf>,
}

/// What `bundle` made.
#[derive(Debug, serde::Serialize)]
pub struct Built {
    pub output: PathBuf,
    pub manifest_sha256: String,
    pub bytes: u64,
    pub packages: usize,
    pub manifest: Manifest,
}

/// A release provision can bundle for.
pub(super) struct Release {
    pub(super) id: &'static str,
    pub(super) version: &'static str,
    codename: &'static str,
    pub(super) family: Family,
    archive: &'static str,
    security: &'static str,
    components: &'static str,
    keyring: &'static str,
    kernel_meta: &'static str,
}

const fn debian(version: &'static str, codename: &'static str) -> Release {
    Release {
        id: "debian",
        version,
        codename,
        family: Family::Debian,
        archive: "http://deb.debian.org/debian",
        security: "http://deb.debian.org/debian-security",
        components: "main contrib non-free non-free-firmware",
        keyring: "/usr/share/keyrings/debian-archive-keyring.gpg",
        kernel_meta: "linux-image-amd64",
    }
}

const fn ubuntu(version: &'static str, codename: &'static str) -> Release {
    Release {
        id: "ubuntu",
        version,
        codename,
        family: Family::Debian,
        archive: "http://archive.ubuntu.com/ubuntu",
        security: "http://security.ubuntu.com/ubuntu",
        components: "main restricted universe multiverse",
        keyring: "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
        kernel_meta: "linux-image-generic",
    }
}

/// An RHEL-family major release: one bundle serves RHEL, Rocky, Alma,
/// Oracle Linux and CentOS Stream of it. Its distribution repositories
/// need a subscription (RHEL) or are the site's own: they come from
/// `--mirror`, NVIDIA's repository from the plan.
const fn rhel(version: &'static str) -> Release {
    Release {
        id: "rhel",
        version,
        codename: "",
        family: Family::Rhel,
        archive: "",
        security: "",
        components: "",
        keyring: "",
        // dnf asks for the newest kernel itself (bundle::rpm).
        kernel_meta: "",
    }
}

const RELEASES: &[Release] = &[
    debian("12", "bookworm"),
    debian("13", "trixie"),
    ubuntu("22.04", "jammy"),
    ubuntu("24.04", "noble"),
    rhel("8"),
    rhel("9"),
];

impl Release {
    /// "debian-12", "rhel-9".
    pub(super) fn name(&self) -> String {
        format!("{}-{}", self.id, self.version)
    }
}

fn release_of(name: &str) -> Result<&'static Release, BundleError> {
    RELEASES.iter().find(|r| r.name() == name).ok_or_else(|| {
        let known: Vec<String> = RELEASES.iter().map(Release::name).collect();
        BundleError::Build(format!(
            "--for {name}: provision bundles for {} (one rhel-N bundle serves RHEL, Rocky, Alma, Oracle Linux and CentOS N)",
            known.join(", ")
        ))
    })
}

/// Makes the bundle `request` asks for, with apt or dnf as its release
/// uses.
pub fn build(
    request: &Request,
    runner: &dyn Runner,
    progress: &dyn Progress,
) -> Result<Built, BundleError> {
    let (release, debian_arch, hosts) = prepare(request)?;
    if release.family == Family::Rhel {
        // An RHEL-family bundle carries the plan's whole closure (see
        // `rpm`): the hosts give it their kernels.
        let mut sources = request.sources.clone();
        for host in &hosts {
            sources.kernels.extend(host.kernels.iter().cloned());
        }
        sources.kernels.sort();
        sources.kernels.dedup();
        let request = Request {
            plan: request.plan,
            sources,
            output: request.output.clone(),
        };
        let names = hosts.iter().map(|h| h.name.clone()).collect();
        return rpm::build(&request, release, names, runner, progress);
    }
    build_apt(request, release, debian_arch, &hosts, runner, progress)
}

/// The release `request` names, its Debian architecture, and the plan
/// checked for what a bundle can carry: what both kinds of bundle need
/// before they start.
fn prepare(
    request: &Request,
) -> Result<(&'static Release, &'static str, Vec<HostDoc>), BundleError> {
    let hosts = super::hosts::read(&request.sources.hosts, &request.sources.release)?;
    let name = match hosts.first() {
        Some(host) if request.sources.release.is_empty() => host.release.as_str(),
        _ => request.sources.release.as_str(),
    };
    let release = release_of(name)?;
    if let Some(host) = hosts
        .iter()
        .find(|h| h.arch.as_deref().is_some_and(|a| a != request.sources.arch))
    {
        return Err(BundleError::Build(format!(
            "--host {}: {} is {}, and the bundle is for --arch {}",
            host.path.display(),
            host.name,
            host.arch.as_deref().unwrap_or(""),
            request.sources.arch
        )));
    }
    let arch = request.sources.arch.as_str();
    let Some(debian_arch) = super::apt::debian_arch(arch) else {
        return Err(BundleError::Build(format!(
            "--arch {arch}: expected x86_64 or sbsa"
        )));
    };
    precheck(request.plan)?;
    Ok((release, debian_arch, hosts))
}

/// A Debian or Ubuntu bundle: apt in a throwaway state of its own,
/// resolving the plan for each host (`--host`), or for a minimal install
/// of the release.
fn build_apt(
    request: &Request,
    release: &Release,
    debian_arch: &'static str,
    hosts: &[HostDoc],
    runner: &dyn Runner,
    progress: &dyn Progress,
) -> Result<Built, BundleError> {
    if request.sources.mirrors.len() > 1 || !request.sources.mirror_keys.is_empty() {
        return Err(BundleError::Build(format!(
            "{}: one --mirror (the distribution's archive, checked with its keyring) and no --mirror-key",
            release.name()
        )));
    }
    let apt = Apt::new(runner, debian_arch, None)?;
    let sources = write_sources(&apt, release, request)?;
    progress.step_started(
        "bundle:update",
        "apt-get update against the release's repositories",
    );
    apt.run(apt.cmd("apt-get").args(["update", "-q"]))?;
    let targets = targets(&apt, release, request, hosts)?;
    progress.step_started(
        "bundle:download",
        &format!(
            "apt-get install --download-only for {}",
            if hosts.is_empty() {
                "a minimal install".to_string()
            } else {
                format!("{} host(s)", hosts.len())
            }
        ),
    );
    let mut uris: Vec<(String, String)> = Vec::new();
    let mut kernels: Vec<String> = Vec::new();
    for (status, facts) in &targets {
        if let Some(status) = status {
            fs_err::write(apt.path().join("status"), status).map_err(io)?;
        }
        let desired = wanted(request.plan, facts)?;
        let specs = desired.install;
        let offered = distro::apt::parse_madison(
            &apt.run(apt.cmd("apt-cache").arg("madison").args(names_of(&specs)))?,
        );
        let exact = resolve(&specs, &offered)?;
        write_pin(&apt, &desired.pin, driver_release(&specs, &offered))?;
        for uri in download(&apt, &exact)? {
            if !uris.contains(&uri) {
                uris.push(uri);
            }
        }
        kernels.extend(facts.os.kernels.iter().map(|k| k.release.clone()));
    }
    kernels.sort();
    kernels.dedup();
    let mut manifest = write_repo(&apt, release, request, &sources, &uris)?;
    manifest.kernels = kernels;
    manifest.hosts = hosts.iter().map(|h| h.name.clone()).collect();
    write_tar(&apt.path().join("out"), manifest, &request.output)
}

/// What apt resolves the plan against, each a dpkg status (None: the
/// minimal one already written) and the facts the package sets read: one
/// per host, or a minimal install of the release.
fn targets(
    apt: &Apt,
    release: &Release,
    request: &Request,
    hosts: &[HostDoc],
) -> Result<Vec<(Option<String>, Facts)>, BundleError> {
    if hosts.is_empty() {
        minimal_status(apt)?;
        return Ok(vec![(None, target_facts(apt, release, request)?)]);
    }
    Ok(hosts
        .iter()
        .map(|host| {
            let mut kernels = host.kernels.clone();
            kernels.extend(request.sources.kernels.iter().cloned());
            kernels.sort();
            kernels.dedup();
            (
                Some(host.dpkg_status(apt.debian_arch)),
                bare_facts(release, &kernels),
            )
        })
        .collect())
}

/// sources.list for the release (and NVIDIA's repositories the plan uses),
/// each signed-by a keyring checked before it is trusted.
fn write_sources(
    apt: &Apt,
    release: &Release,
    request: &Request,
) -> Result<Vec<String>, BundleError> {
    let plan = request.plan;
    if !Path::new(release.keyring).is_file() {
        return Err(BundleError::Build(format!(
            "{} is missing on this machine: install the distribution's archive keyring (debian-archive-keyring or ubuntu-keyring) to verify its repositories",
            release.keyring
        )));
    }
    let archive = request
        .sources
        .mirrors
        .first()
        .cloned()
        .unwrap_or_else(|| release.archive.to_string());
    let code = release.codename;
    let comps = release.components;
    let key = release.keyring;
    let mut lines = vec![
        format!("deb [signed-by={key}] {archive} {code} {comps}"),
        format!("deb [signed-by={key}] {archive} {code}-updates {comps}"),
    ];
    if request.sources.mirrors.is_empty() {
        let security = release.security;
        lines.push(format!(
            "deb [signed-by={key}] {security} {code}-security {comps}"
        ));
    }
    let mut sources = vec![archive.clone()];
    if request.sources.mirrors.is_empty() {
        sources.push(release.security.to_string());
    }
    for (name, url, key_url, fingerprint) in nvidia_repositories(plan, release, request)? {
        let keyring = apt.path().join(format!("keys/{name}.gpg"));
        fetch_key(&key_url, &fingerprint, &keyring)?;
        lines.push(format!("deb [signed-by={}] {url} /", keyring.display()));
        sources.push(url);
    }
    let text = lines.join("\n") + "\n";
    fs_err::write(apt.path().join("etc/apt/sources.list"), text).map_err(io)?;
    Ok(sources)
}

/// NVIDIA's repositories the plan draws from: (name, url, key, fingerprint).
pub(super) fn nvidia_repositories(
    plan: &Plan,
    release: &Release,
    request: &Request,
) -> Result<Vec<(String, String, String, String)>, BundleError> {
    let facts = bare_facts(release, &[]);
    let arch = if request.sources.arch == "x86_64" {
        "x86_64"
    } else {
        "sbsa"
    };
    let refused = |e: crate::engine::PlanRefused| BundleError::Build(e.to_string());
    let repos = [
        (
            "cuda",
            crate::engine::cuda_repository(plan, &facts, arch).map_err(refused)?,
        ),
        (
            "container",
            crate::engine::container_repository(plan, &facts, arch).map_err(refused)?,
        ),
    ];
    let repos = repos
        .into_iter()
        .filter_map(|(name, repo)| {
            repo.map(|r| (name.to_string(), r.url, r.key_url, r.fingerprint))
        })
        .collect();
    Ok(repos)
}

/// Downloads a repository key and keeps it only with the pinned
/// fingerprint, as a binary keyring apt reads.
fn fetch_key(url: &str, fingerprint: &str, keyring: &Path) -> Result<(), BundleError> {
    let (_, packets) = checked_key(url, fingerprint)?;
    fs_err::write(keyring, packets).map_err(io)
}

/// A repository key with the pinned fingerprint: (as served, packets).
pub(super) fn checked_key(url: &str, fingerprint: &str) -> Result<(Vec<u8>, Vec<u8>), BundleError> {
    use crate::distro::openpgp::{dearmor, fingerprints};
    let bytes =
        crate::fetch::fetch_small(url, 1 << 20).map_err(|e| BundleError::Build(e.to_string()))?;
    let packets = dearmor(&bytes).map_err(|e| BundleError::Build(format!("{url}: {e}")))?;
    let found = fingerprints(&packets).map_err(|e| BundleError::Build(format!("{url}: {e}")))?;
    if !found.iter().any(|f| f == fingerprint) {
        return Err(BundleError::Build(format!(
            "the key at {url} has fingerprint {}, not the pinned {fingerprint}: refusing it",
            found.join(", ")
        )));
    }
    Ok((bytes, packets))
}

/// The dpkg status of a minimal install: the release's `Priority:
/// required` packages and what they depend on, as apt resolves them from
/// nothing (what `debootstrap --variant=minbase` installs).
fn minimal_status(apt: &Apt) -> Result<(), BundleError> {
    let stanzas = list_stanzas(apt)?;
    let required: std::collections::BTreeSet<String> = stanzas
        .iter()
        .filter(|(_, _, stanza)| {
            stanza
                .lines()
                .any(|l| l == "Priority: required" || l == "Essential: yes")
        })
        .map(|(name, _, _)| name.clone())
        .collect();
    let simulated = apt.run(
        apt.cmd("apt-get")
            .args(["-s", "-q", "install"])
            .args(required.iter().cloned()),
    )?;
    let tx = distro::apt::parse_simulation(&simulated);
    let mut status = String::new();
    for (name, _, version) in &tx.install {
        let Some((_, _, stanza)) = stanzas.iter().find(|(n, v, _)| n == name && v == version)
        else {
            continue;
        };
        status.push_str(&format!("Package: {name}\nStatus: install ok installed\n"));
        for line in stanza.lines().filter(|l| {
            !l.starts_with("Package:")
                && !l.starts_with(' ')
                && ![
                    "Filename:",
                    "Size:",
                    "MD5sum:",
                    "SHA256:",
                    "Description",
                    "Tag:",
                ]
                .iter()
                .any(|p| l.starts_with(p))
        }) {
            status.push_str(line);
            status.push('\n');
        }
        status.push_str("Description: part of a minimal install\n\n");
    }
    fs_err::write(apt.path().join("status"), status).map_err(io)
}

/// Every stanza of the release's lists: (package, version, text).
fn list_stanzas(apt: &Apt) -> Result<Vec<(String, String, String)>, BundleError> {
    let mut all = Vec::new();
    let lists = fs_err::read_dir(apt.path().join("state/lists")).map_err(io)?;
    for entry in lists {
        let path = entry.map_err(io)?.path();
        if !path.to_string_lossy().ends_with("_Packages") {
            continue;
        }
        let text = fs_err::read_to_string(&path).map_err(io)?;
        for stanza in text.split("\n\n") {
            let field = |key: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                    .map(|v| v.trim().to_string())
            };
            if let (Some(name), Some(version)) = (field("Package"), field("Version")) {
                all.push((name, version, stanza.to_string()));
            }
        }
    }
    Ok(all)
}

pub(super) fn bare_facts(release: &Release, kernels: &[String]) -> Facts {
    let mut facts = Facts::default();
    facts.os.id = Some(release.id.into());
    facts.os.version_id = Some(release.version.into());
    facts.os.family = Some(release.family);
    facts.os.kernels = kernels
        .iter()
        .map(|k| Kernel {
            release: k.clone(),
            running: false,
            headers: false,
            nvidia_module: None,
            initramfs: None,
        })
        .collect();
    facts
}

/// The target host as the package sets read it: the release, and the
/// kernels to build for (the plan's, or the release's current one).
fn target_facts(apt: &Apt, release: &Release, request: &Request) -> Result<Facts, BundleError> {
    let mut kernels = request.sources.kernels.clone();
    if kernels.is_empty() {
        let meta = release.kernel_meta.replace("amd64", apt.debian_arch);
        let text = apt.run(apt.cmd("apt-cache").args(["depends", &meta]))?;
        let prefix = "linux-image-";
        let current = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find_map(|d| d.strip_prefix(prefix).map(str::to_string))
            .ok_or_else(|| {
                BundleError::Build(format!(
                    "{meta} names no kernel in the release's lists: pass --kernel"
                ))
            })?;
        kernels.push(current);
    }
    Ok(bare_facts(release, &kernels))
}

/// What a bundle cannot be made for, found before anything is fetched.
fn precheck(plan: &Plan) -> Result<(), BundleError> {
    let Some(driver) = &plan.driver else {
        return Ok(());
    };
    let refuse = |message: &str| Err(BundleError::Build(message.into()));
    if driver.recommended {
        return refuse(
            "[driver] branch = \"recommended\" is chosen from a host's GPUs: name the branch in a plan to bundle",
        );
    }
    if driver.flavor == Flavor::Auto {
        return refuse(
            "a bundle is made for no GPU in particular: set [driver] flavor = \"open\" or \"proprietary\"",
        );
    }
    if driver.source == Source::Runfile {
        return refuse(
            "a runfile plan downloads its runfiles into provision's cache: copy the cache, a bundle carries packages",
        );
    }
    Ok(())
}

/// The packages the plan installs on such a host (and the module stream
/// it enables, on EL8/EL9).
pub(super) fn wanted(plan: &Plan, facts: &Facts) -> Result<distro::Desired, BundleError> {
    let flavor = plan.driver.as_ref().map(|d| d.flavor);
    let compat = match &plan.compat {
        CompatPackage::Named(name) => Some(name.as_str()),
        _ => None,
    };
    let mut desired = distro::desired(plan, facts, flavor, compat)
        .map_err(|e| BundleError::Build(e.to_string()))?;
    desired.install.extend(
        crate::engine::extra_packages(plan, facts)
            .map_err(|e| BundleError::Build(e.to_string()))?,
    );
    Ok(desired)
}

/// Every name the specs could be installed as (alternatives too).
pub(super) fn names_of(specs: &[PackageSpec]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for spec in specs {
        names.push(spec.name.clone());
        names.extend(spec.alternatives.iter().map(|(n, _)| n.clone()));
    }
    names
}

/// Exact versions out of what the repositories offer (newest first per
/// name): the newest each spec accepts, the driver set at one release
/// every package of it offers; an alternative where the first name is not
/// offered.
pub(super) fn resolve(
    specs: &[PackageSpec],
    offered: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<(String, String)>, BundleError> {
    let driver_release = driver_release(specs, offered);
    let mut exact = Vec::new();
    for spec in specs {
        let choices = std::iter::once((spec.name.clone(), spec.version.clone()))
            .chain(spec.alternatives.iter().cloned());
        let found = choices.into_iter().find_map(|(name, version)| {
            let versions = offered.get(&name)?;
            let pick = versions.iter().find(|v| {
                version.accepts(v)
                    && match (&version, &driver_release) {
                        (VersionSpec::Driver(_), Some(release)) => {
                            crate::version::upstream(v) == release
                        }
                        _ => true,
                    }
            })?;
            Some((name, pick.clone()))
        });
        match found {
            Some(found) => exact.push(found),
            None => {
                return Err(BundleError::Build(format!(
                    "{} ({}) is not offered by the repositories the bundle is resolved against",
                    spec.name,
                    spec.version.describe()
                )));
            }
        }
    }
    Ok(exact)
}

/// The newest upstream release every driver package offers.
fn driver_release(
    specs: &[PackageSpec],
    offered: &BTreeMap<String, Vec<String>>,
) -> Option<String> {
    let driver: Vec<&PackageSpec> = specs
        .iter()
        .filter(|s| matches!(s.version, VersionSpec::Driver(_)))
        .collect();
    let first = driver.first()?;
    offered.get(&first.name)?.iter().find_map(|v| {
        let upstream = crate::version::upstream(v);
        let everywhere = first.version.accepts(v)
            && driver.iter().all(|s| {
                offered
                    .get(&s.name)
                    .is_some_and(|vs| vs.iter().any(|o| crate::version::upstream(o) == upstream))
            });
        everywhere.then(|| upstream.to_string())
    })
}

/// The pin `apply` writes (`Pin: version <release>-*` on the driver's
/// packages), in the bundle's own apt: the dependencies the driver's
/// packages name at their release (Debian's `nvidia-alternative`,
/// `libnvidia-ml1`, ...) resolve to that release, not to the newest one the
/// repositories offer, as on the host.
fn write_pin(apt: &Apt, globs: &[String], release: Option<String>) -> Result<(), BundleError> {
    let path = apt
        .path()
        .join("etc/apt/preferences.d/provision-nvidia-driver.pref");
    match release {
        Some(release) if !globs.is_empty() => {
            fs_err::write(path, distro::apt::pin_file(globs, &release)).map_err(io)
        }
        _ => Ok(()),
    }
}

/// Downloads the transaction a minimal host would run: (uri, file name).
fn download(apt: &Apt, exact: &[(String, String)]) -> Result<Vec<(String, String)>, BundleError> {
    let wanted: Vec<String> = exact.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let printed = apt.run(
        apt.cmd("apt-get")
            .args(["install", "-y", "-q", "--download-only", "--print-uris"])
            .args(wanted.iter().cloned()),
    )?;
    let uris: Vec<(String, String)> = printed
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let uri = parts.next()?.trim_matches('\'');
            let file = parts.next()?;
            (uri.contains("://") && file.ends_with(".deb"))
                .then(|| (uri.to_string(), file.to_string()))
        })
        .collect();
    apt.run(
        apt.cmd("apt-get")
            .args(["install", "-y", "-q", "--download-only"])
            .args(wanted),
    )?;
    Ok(uris)
}

/// The flat repository (the .debs, Packages, Release) and its manifest.
fn write_repo(
    apt: &Apt,
    release: &Release,
    request: &Request,
    sources: &[String],
    uris: &[(String, String)],
) -> Result<Manifest, BundleError> {
    let repo = apt.path().join("out").join(REPO_DIR);
    fs_err::create_dir_all(&repo).map_err(io)?;
    let mut packages_index = String::new();
    let mut packages = Vec::new();
    for (uri, file) in uris {
        let from = apt.path().join("cache/archives").join(file);
        let to = repo.join(file);
        fs_err::rename(&from, &to).map_err(io)?;
        let control = apt.run(
            Cmd::read("dpkg-deb")
                .outside()
                .args(["-f", &to.display().to_string()]),
        )?;
        let bytes = fs_err::read(&to).map_err(io)?;
        packages_index.push_str(control.trim_end());
        packages_index.push_str(&format!(
            "\nFilename: ./{file}\nSize: {}\nSHA256: {}\n\n",
            bytes.len(),
            hex(Sha256::digest(&bytes))
        ));
        let field = |key: &str| {
            control
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                .unwrap_or("")
                .to_string()
        };
        let source = source_of(uri, sources);
        packages.push(BundledPackage {
            name: field("Package"),
            version: field("Version"),
            source,
        });
    }
    fs_err::write(repo.join("Packages"), &packages_index).map_err(io)?;
    let index_sha = hex(Sha256::digest(packages_index.as_bytes()));
    let release_file = format!(
        "Origin: provision-bundle\nLabel: provision-bundle\nSuite: {}\nCodename: {}\nArchitectures: {}\nSHA256:\n {index_sha} {} Packages\n",
        release.name(),
        release.codename,
        apt.debian_arch,
        packages_index.len()
    );
    fs_err::write(repo.join("Release"), release_file).map_err(io)?;
    let files = listed_files(&repo)?;
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Manifest {
        format: 1,
        release: release.name(),
        arch: request.sources.arch.clone(),
        plan_sha256: request.plan.sha256.clone(),
        created: crate::journal::now(),
        sources: sources.to_vec(),
        packages,
        files,
        kernels: Vec::new(),
        hosts: Vec::new(),
    })
}

/// The repository a URI was downloaded from: the longest source it starts
/// with ("debian-security" over "debian"), else its directory.
pub(super) fn source_of(uri: &str, sources: &[String]) -> String {
    sources
        .iter()
        .filter(|s| uri.starts_with(&format!("{}/", s.trim_end_matches('/'))))
        .max_by_key(|s| s.len())
        .cloned()
        .unwrap_or_else(|| {
            uri.rsplit_once('/')
                .map_or(uri.to_string(), |(dir, _)| dir.to_string())
        })
}

/// Every file of the repository (its subdirectories too: rpm metadata)
/// with its sha256, by path.
pub(super) fn listed_files(repo: &Path) -> Result<Vec<ManifestFile>, BundleError> {
    let mut paths = Vec::new();
    let mut pending = vec![repo.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs_err::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let bytes = fs_err::read(&path).map_err(io)?;
        let name = path.strip_prefix(repo).unwrap_or(&path).display();
        files.push(ManifestFile {
            path: format!("{REPO_DIR}/{name}"),
            sha256: hex(Sha256::digest(&bytes)),
            size: bytes.len() as u64,
        });
    }
    Ok(files)
}

/// The tar: the manifest first, then the repository (under `out`);
/// written beside the output and renamed into place.
pub(super) fn write_tar(
    out: &Path,
    manifest: Manifest,
    output: &Path,
) -> Result<Built, BundleError> {
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Build(e.to_string()))?;
    let manifest_sha256 = hex(Sha256::digest(&json));
    let partial = output.with_extension("tar.partial");
    let file = fs_err::File::create(&partial).map_err(io)?;
    let mut tar = tar::Builder::new(file);
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, json.as_slice())
        .map_err(io)?;
    for file in &manifest.files {
        let path = out.join(&file.path);
        let mut source = fs_err::File::open(&path).map_err(io)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(file.size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, &file.path, &mut source)
            .map_err(io)?;
    }
    tar.into_inner().map_err(io)?.sync_all().map_err(io)?;
    fs_err::rename(&partial, output).map_err(io)?;
    let bytes = fs_err::metadata(output).map_err(io)?.len();
    Ok(Built {
        output: output.to_path_buf(),
        manifest_sha256,
        bytes,
        packages: manifest.packages.len(),
        manifest,
    })
}
