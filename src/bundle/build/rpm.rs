//! RHEL-family bundles: the plan's rpms resolved by the real dnf into an
//! empty install root of its own (its repositories, cache and rpm database
//! under one temporary directory: nothing of this machine's dnf or rpm is
//! read or written), the module stream the plan enables, every rpm's
//! signature checked by dnf against the keys its repository is trusted
//! with (NVIDIA's pinned by fingerprint, the mirrors' given), and a
//! repository made of them with createrepo_c (plus the stream's module
//! metadata, which `dnf module enable` needs offline).
//!
//! The root is empty, so the bundle carries the whole closure the plan
//! pulls in from the repositories it is resolved against: on a host, dnf
//! installs only what is missing there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{
    Built, Release, Request, bare_facts, checked_key, io, listed_files, names_of,
    nvidia_repositories, resolve, wanted, write_tar,
};
use crate::bundle::dnf::Dnf;
use crate::bundle::{BundleError, BundledPackage, Manifest, REPO_DIR};
use crate::host::{Cmd, Runner, run_checked};
use crate::progress::Progress;

/// A repository the bundle is resolved against: its id, where it is, the
/// key files its rpms must be signed with.
struct Repo {
    id: String,
    url: String,
    keys: Vec<PathBuf>,
}

/// Makes the RHEL-family bundle `request` asks for.
pub(super) fn build(
    request: &Request,
    release: &Release,
    hosts: Vec<String>,
    runner: &dyn Runner,
    progress: &dyn Progress,
) -> Result<Built, BundleError> {
    for tool in ["dnf", "rpm", "createrepo_c", "modifyrepo_c"] {
        if which(tool).is_none() {
            return Err(BundleError::Build(format!(
                "{tool} is missing on this machine: an RHEL-family bundle is resolved by the real dnf (apt-get install dnf rpm createrepo-c)"
            )));
        }
    }
    let dnf = Dnf::new(runner, release.version, &request.sources.arch)?;
    let repos = write_repos(&dnf, release, request)?;
    progress.step_started(
        "bundle:update",
        "dnf makecache against the bundle's repositories",
    );
    dnf.run(dnf.cmd().arg("makecache"))?;
    let kernels = kernels(&dnf, request)?;
    let facts = bare_facts(release, &kernels);
    let desired = wanted(request.plan, &facts)?;
    dnf.enable(desired.stream.as_ref())?;
    let offered = dnf.available(&names_of(&desired.install))?;
    let exact = resolve(&desired.install, &offered)?;
    progress.step_started(
        "bundle:download",
        "dnf install --downloadonly into an empty root",
    );
    let repo = dnf.path().join("out").join(REPO_DIR);
    fs_err::create_dir_all(&repo).map_err(io)?;
    download(&dnf, &repo, &exact)?;
    let rpms = downloaded(&dnf, &repo)?;
    let packages = sources_of(&dnf, &repos, &rpms)?;
    write_metadata(&dnf, &repo, desired.stream.as_ref(), &rpms)?;
    let manifest = Manifest {
        format: 1,
        release: release.name(),
        arch: request.sources.arch.clone(),
        plan_sha256: request.plan.sha256.clone(),
        created: crate::journal::now(),
        sources: repos.iter().map(|r| r.url.clone()).collect(),
        packages,
        files: listed_files(&repo)?,
        kernels,
        hosts,
    };
    write_tar(&dnf.path().join("out"), manifest, &request.output)
}

/// The transaction's rpms into `repo`; dnf checks each one's signature
/// against the keys its repository is trusted with, even when it only
/// downloads.
fn download(dnf: &Dnf, repo: &Path, exact: &[(String, String)]) -> Result<(), BundleError> {
    let cmd = dnf
        .cmd()
        .args(["install", "--downloadonly"])
        .arg(format!("--downloaddir={}", repo.display()))
        .args(exact.iter().map(|(name, evr)| format!("{name}-{evr}")));
    match run_checked(dnf.runner, &cmd) {
        Ok(_) => Ok(()),
        Err(error) => {
            let said = error.to_string();
            if !said.contains("GPG check FAILED") {
                return Err(BundleError::Build(said));
            }
            let failing: Vec<&str> = said
                .lines()
                .filter_map(|l| l.split_once("Failing package is: ").map(|(_, p)| p.trim()))
                .collect();
            Err(BundleError::Build(format!(
                "not signed by a key its repository is trusted with (the plan's pinned key, or a --mirror-key), refusing to bundle: {}",
                failing.join(", ")
            )))
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|path| path.is_file())
    })
}

/// The .repo files: NVIDIA's repositories the plan uses (keys checked
/// against their pinned fingerprints) and the `--mirror`s (their rpms
/// signed by a `--mirror-key`).
fn write_repos(dnf: &Dnf, release: &Release, request: &Request) -> Result<Vec<Repo>, BundleError> {
    if !request.sources.mirrors.is_empty() && request.sources.mirror_keys.is_empty() {
        return Err(BundleError::Build(
            "--mirror needs --mirror-key: the ASCII-armored key that signs the mirror's rpms (RPM-GPG-KEY-redhat-release, RPM-GPG-KEY-Rocky-9, RPM-GPG-KEY-EPEL-9, ...)".into(),
        ));
    }
    let mut repos = Vec::new();
    for (name, url, key_url, fingerprint) in nvidia_repositories(request.plan, release, request)? {
        let (armored, _) = checked_key(&key_url, &fingerprint)?;
        let key = dnf.path().join(format!("keys/{name}.asc"));
        fs_err::write(&key, armored).map_err(io)?;
        repos.push(Repo {
            id: format!("bundle-{name}"),
            url,
            keys: vec![key],
        });
    }
    let mut mirror_keys = Vec::new();
    for (n, key) in request.sources.mirror_keys.iter().enumerate() {
        let bytes = fs_err::read(key).map_err(io)?;
        check_mirror_key(&bytes)
            .map_err(|e| BundleError::Build(format!("--mirror-key {}: {e}", key.display())))?;
        let copy = dnf.path().join(format!("keys/mirror-{n}.asc"));
        fs_err::write(&copy, bytes).map_err(io)?;
        mirror_keys.push(copy);
    }
    for (n, url) in request.sources.mirrors.iter().enumerate() {
        repos.push(Repo {
            id: format!("bundle-mirror-{n}"),
            url: url.clone(),
            keys: mirror_keys.clone(),
        });
    }
    if repos.is_empty() {
        return Err(BundleError::Build(
            "nothing to resolve against: the plan uses none of NVIDIA's repositories and no --mirror was given".into(),
        ));
    }
    for repo in &repos {
        let keys: Vec<String> = repo
            .keys
            .iter()
            .map(|k| format!("file://{}", k.display()))
            .collect();
        let text = format!(
            "[{}]\nname={}\nbaseurl={}\nenabled=1\ngpgcheck=1\ngpgkey={}\n",
            repo.id,
            repo.id,
            repo.url,
            keys.join(" ")
        );
        fs_err::write(dnf.path().join(format!("repos.d/{}.repo", repo.id)), text).map_err(io)?;
    }
    Ok(repos)
}

/// The file is an ASCII-armored OpenPGP public key (what rpm imports).
fn check_mirror_key(bytes: &[u8]) -> Result<(), String> {
    use crate::distro::openpgp::{dearmor, fingerprints};
    if !String::from_utf8_lossy(bytes)
        .trim_start()
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    {
        return Err("not an ASCII-armored OpenPGP public key (rpm imports only those)".into());
    }
    let found = dearmor(bytes)
        .and_then(|packets| fingerprints(&packets))
        .map_err(|e| e.to_string())?;
    if found.is_empty() {
        return Err("no public key in it".into());
    }
    Ok(())
}

/// The kernels to carry headers for: `--kernel`, else the newest kernel
/// (or, in a repository without kernels, kernel headers) offered.
fn kernels(dnf: &Dnf, request: &Request) -> Result<Vec<String>, BundleError> {
    if !request.sources.kernels.is_empty() {
        return Ok(request.sources.kernels.clone());
    }
    let text = dnf.run(
        dnf.cmd()
            .args(["-q", "repoquery", "--available", "--latest-limit", "1"])
            .args(["--qf", "%{name}\t%{version}-%{release}.%{arch}\n"])
            .args(["kernel-core", "kernel", "kernel-devel"]),
    )?;
    let newest: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .collect();
    ["kernel-core", "kernel", "kernel-devel"]
        .iter()
        .find_map(|name| newest.get(name))
        .map(|release| vec![release.trim().to_string()])
        .ok_or_else(|| {
            BundleError::Build(
                "no kernel or kernel-devel is offered by the repositories: pass --kernel, or a --mirror of BaseOS/AppStream".into(),
            )
        })
}

/// A downloaded rpm: its name, epoch:version-release and arch.
struct Rpm {
    name: String,
    evr: String,
    arch: String,
}

impl Rpm {
    /// "name-epoch:version-release.arch", as module metadata lists it.
    fn nevra(&self) -> String {
        format!("{}-{}.{}", self.name, self.evr, self.arch)
    }
}

/// What dnf downloaded into `repo`, read by rpm in one call.
fn downloaded(dnf: &Dnf, repo: &Path) -> Result<Vec<Rpm>, BundleError> {
    let mut files = Vec::new();
    for entry in fs_err::read_dir(repo).map_err(io)? {
        let file = entry.map_err(io)?.path();
        if file.extension().is_some_and(|e| e == "rpm") {
            files.push(file.display().to_string());
        }
    }
    if files.is_empty() {
        return Err(BundleError::Build(
            "dnf downloaded nothing for the plan".into(),
        ));
    }
    let text = dnf.run(
        Cmd::read("rpm")
            .outside()
            .args(["-qp", "--nosignature", "--nodigest", "--qf"])
            .arg("%{name}\t%{epochnum}:%{version}-%{release}\t%{arch}\n")
            .args(files),
    )?;
    let mut rpms: Vec<Rpm> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            Some(Rpm {
                name: fields.next()?.to_string(),
                evr: fields.next()?.to_string(),
                arch: fields.next()?.trim().to_string(),
            })
        })
        .collect();
    rpms.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rpms)
}

/// The repository each rpm was downloaded from (by dnf's repoquery).
fn sources_of(dnf: &Dnf, repos: &[Repo], rpms: &[Rpm]) -> Result<Vec<BundledPackage>, BundleError> {
    let names: BTreeSet<&str> = rpms.iter().map(|r| r.name.as_str()).collect();
    let text = dnf.run(
        dnf.cmd()
            .args(["-q", "repoquery", "--available", "--showduplicates"])
            .args([
                "--qf",
                "%{name}-%{epoch}:%{version}-%{release}.%{arch}\t%{repoid}\n",
            ])
            .args(names.iter().copied()),
    )?;
    let repo_of: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .collect();
    Ok(rpms
        .iter()
        .map(|rpm| {
            let source = repo_of
                .get(rpm.nevra().as_str())
                .and_then(|id| repos.iter().find(|r| r.id == id.trim()))
                .map_or_else(String::new, |r| r.url.clone());
            BundledPackage {
                name: rpm.name.clone(),
                version: rpm.evr.strip_prefix("0:").unwrap_or(&rpm.evr).to_string(),
                source,
            }
        })
        .collect())
}

/// createrepo_c over the rpms, and the module metadata of the stream the
/// plan enables (the documents that list a bundled rpm).
fn write_metadata(
    dnf: &Dnf,
    repo: &Path,
    stream: Option<&(String, String)>,
    rpms: &[Rpm],
) -> Result<(), BundleError> {
    dnf.run(
        Cmd::read("createrepo_c")
            .outside()
            .args(["--quiet", "--simple-md-filenames"])
            .arg(repo.display().to_string()),
    )?;
    let Some((module, _)) = stream else {
        return Ok(());
    };
    let nevras: BTreeSet<String> = rpms.iter().map(Rpm::nevra).collect();
    let mut kept = String::new();
    for text in module_metadata(dnf)? {
        kept.push_str(&module_documents(&text, module, &nevras));
    }
    if kept.is_empty() {
        return Err(BundleError::Build(format!(
            "the repositories offer no module metadata of {module} for the bundled rpms: `dnf module enable` would fail offline"
        )));
    }
    let yaml = dnf.path().join("modules.yaml");
    fs_err::write(&yaml, kept).map_err(io)?;
    dnf.run(
        Cmd::read("modifyrepo_c")
            .outside()
            .args(["--mdtype=modules", "--simple-md-filenames"])
            .arg(yaml.display().to_string())
            .arg(repo.join("repodata").display().to_string()),
    )?;
    Ok(())
}

/// The module metadata dnf downloaded, decompressed.
fn module_metadata(dnf: &Dnf) -> Result<Vec<String>, BundleError> {
    let mut found = Vec::new();
    let mut pending = vec![dnf.root()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs_err::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                pending.push(path);
            } else if name.contains("modules.yaml") {
                found.push(path);
            }
        }
    }
    let mut texts = Vec::new();
    for path in found {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let tool = match extension {
            "gz" => "gzip",
            "xz" => "xz",
            "zst" => "zstd",
            "bz2" => "bzip2",
            _ => {
                texts.push(fs_err::read_to_string(&path).map_err(io)?);
                continue;
            }
        };
        texts.push(
            dnf.run(
                Cmd::read(tool)
                    .outside()
                    .args(["-dc", &path.display().to_string()]),
            )?,
        );
    }
    Ok(texts)
}

/// The YAML documents of `module` that list a bundled rpm, and its
/// defaults, each ending with "...".
fn module_documents(text: &str, module: &str, nevras: &BTreeSet<String>) -> String {
    let mut kept = String::new();
    for document in text.split("\n---").map(|d| d.trim_start_matches("---")) {
        let body = document.trim().trim_end_matches("...").trim_end();
        if body.is_empty() {
            continue;
        }
        let lines: Vec<&str> = body.lines().map(str::trim).collect();
        let names_module = lines
            .iter()
            .any(|l| *l == format!("name: {module}") || *l == format!("module: {module}"));
        let defaults = lines.contains(&"document: modulemd-defaults");
        let lists_bundled = lines
            .iter()
            .filter_map(|l| l.strip_prefix("- "))
            .any(|nevra| nevras.contains(nevra.trim()));
        if names_module && (defaults || lists_bundled) {
            kept.push_str(&format!("---\n{body}\n...\n"));
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULES: &str = "---\ndocument: modulemd\nversion: 2\ndata:\n  name: nvidia-driver\n  stream: \"580-open\"\n  artifacts:\n    rpms:\n    - nvidia-driver-cuda-3:580.105.08-1.el9.x86_64\n...\n---\ndocument: modulemd\nversion: 2\ndata:\n  name: nvidia-driver\n  stream: \"570-open\"\n  artifacts:\n    rpms:\n    - nvidia-driver-cuda-3:570.124.06-1.el9.x86_64\n...\n---\ndocument: modulemd-defaults\nversion: 1\ndata:\n  module: nvidia-driver\n  stream: \"latest-dkms\"\n...\n---\ndocument: modulemd\nversion: 2\ndata:\n  name: nodejs\n  stream: \"18\"\n  artifacts:\n    rpms:\n    - nvidia-driver-cuda-3:580.105.08-1.el9.x86_64\n...\n";

    #[test]
    fn only_the_streams_of_bundled_rpms_and_the_defaults_are_kept() {
        let nevras = BTreeSet::from(["nvidia-driver-cuda-3:580.105.08-1.el9.x86_64".to_string()]);
        let kept = module_documents(MODULES, "nvidia-driver", &nevras);
        assert!(kept.contains("stream: \"580-open\""), "{kept}");
        assert!(!kept.contains("570-open"), "{kept}");
        assert!(kept.contains("modulemd-defaults"), "{kept}");
        assert!(!kept.contains("nodejs"), "{kept}");
        assert_eq!(kept.matches("\n...\n").count(), 2, "{kept}");
        assert!(kept.starts_with("---\ndocument: modulemd\n"), "{kept}");
    }
}
