//! Offline bundles: everything a plan needs on a host of one release that
//! a minimal install of it lacks, as a local package repository in a tar
//! with a manifest (every file with its sha256, the plan's hash, the
//! release, when it was made). `build` makes one with the real package
//! manager against that release's repositories without touching any host;
//! `open` checks one (the manifest against the hash the operator was
//! given, every file against the manifest) before anything changes, and
//! keeps it unpacked in the cache for the next run.

mod apt;
pub mod build;
mod dnf;
pub mod fit;
pub mod hosts;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "manifest.json";
/// Where a bundle's repository lives inside the tar.
pub const REPO_DIR: &str = "repo";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The release it serves, as `detect` names it: "debian-12".
    pub release: String,
    pub arch: String,
    /// sha256 of the plan it was made for.
    pub plan_sha256: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The repositories it was resolved against.
    pub sources: Vec<String>,
    pub packages: Vec<BundledPackage>,
    /// Every file under `repo/`, with its sha256.
    pub files: Vec<ManifestFile>,
    /// The kernels it carries headers for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<String>,
    /// The hosts it was resolved for (`bundle --host`), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledPackage {
    pub name: String,
    pub version: String,
    /// The repository it was downloaded from.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error(
        "{path}: the manifest's sha256 is {actual}, not the {expected} given: this is not the bundle you were given"
    )]
    ManifestHash {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "{path}: {file} is tampered with or damaged: its sha256 is {actual}, the manifest says {expected}; nothing was changed"
    )]
    Tampered {
        path: PathBuf,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {message}; nothing was changed")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Build(String),
}

/// A checked bundle, unpacked in the cache (or only checked, for `plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opened {
    pub manifest: Manifest,
    pub manifest_sha256: String,
    /// The unpacked bundle (its `repo/` inside), None when only checked.
    pub dir: Option<PathBuf>,
    /// The bundle's tar.
    #[serde(skip)]
    pub path: PathBuf,
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where checked bundles are kept: beside the download cache.
pub fn cache_root() -> PathBuf {
    crate::fetch::cache_dir()
        .parent()
        .map(|p| p.join("bundles"))
        .unwrap_or_else(|| PathBuf::from("/var/cache/provision/bundles"))
}

/// Reads the manifest out of the tar: (bytes, sha256).
fn read_manifest(path: &Path) -> Result<(Vec<u8>, String), BundleError> {
    let unreadable = |message: String| BundleError::Unreadable {
        path: path.to_path_buf(),
        message,
    };
    let file = fs_err::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| unreadable(e.to_string()))? {
        let mut entry = entry.map_err(|e| unreadable(e.to_string()))?;
        let name = entry.path().map_err(|e| unreadable(e.to_string()))?;
        if name == Path::new(MANIFEST) {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| unreadable(e.to_string()))?;
            let sha = hex(Sha256::digest(&bytes));
            return Ok((bytes, sha));
        }
    }
    Err(unreadable(format!("no {MANIFEST}: not a provision bundle")))
}

/// Writes the files of the bundle's repository that `keep` names (by
/// their path under `repo/`) into `into`, in one pass over the tar (the
/// caller checked the bundle first): the index a package manager needs,
/// without the packages.
pub(crate) fn extract_repo_files(
    path: &Path,
    keep: impl Fn(&str) -> bool,
    into: &Path,
) -> Result<(), BundleError> {
    let unreadable = |message: String| BundleError::Unreadable {
        path: path.to_path_buf(),
        message,
    };
    let prefix = format!("{REPO_DIR}/");
    let file = fs_err::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| unreadable(e.to_string()))? {
        let mut entry = entry.map_err(|e| unreadable(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| unreadable(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let Some(name) = name.strip_prefix(&prefix).filter(|n| keep(n)) else {
            continue;
        };
        let to = into.join(name);
        if let Some(parent) = to.parent() {
            fs_err::create_dir_all(parent).map_err(|e| unreadable(e.to_string()))?;
        }
        let mut out = fs_err::File::create(&to).map_err(|e| unreadable(e.to_string()))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| unreadable(e.to_string()))?;
    }
    Ok(())
}

/// The manifest, checked against `expected` when given.
fn checked_manifest(
    path: &Path,
    expected: Option<&str>,
) -> Result<(Manifest, String), BundleError> {
    let (bytes, manifest_sha256) = read_manifest(path)?;
    if let Some(expected) = expected
        && !expected.eq_ignore_ascii_case(&manifest_sha256)
    {
        return Err(BundleError::ManifestHash {
            path: path.to_path_buf(),
            expected: expected.to_ascii_lowercase(),
            actual: manifest_sha256,
        });
    }
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| BundleError::Invalid {
        path: path.to_path_buf(),
        message: format!("{MANIFEST} is not a bundle manifest: {e}"),
    })?;
    Ok((manifest, manifest_sha256))
}

/// Checks the bundle at `path` (its manifest against `expected`, when
/// given, and every file against the manifest) and writes nothing.
pub fn check(path: &Path, expected: Option<&str>) -> Result<Opened, BundleError> {
    let (manifest, manifest_sha256) = checked_manifest(path, expected)?;
    unpack_into(path, &manifest, None)?;
    Ok(Opened {
        manifest,
        manifest_sha256,
        dir: None,
        path: path.to_path_buf(),
    })
}

/// Checks the bundle at `path` as [`check`] does and unpacks it into the
/// cache, or reuses the copy there after checking it again.
pub fn open(path: &Path, expected: Option<&str>) -> Result<Opened, BundleError> {
    let (manifest, manifest_sha256) = checked_manifest(path, expected)?;
    let dir = cache_root().join(&manifest_sha256);
    if dir.join(".verified").is_file() && check_dir(&dir, &manifest).is_ok() {
        return Ok(Opened {
            dir: Some(dir),
            manifest,
            manifest_sha256,
            path: path.to_path_buf(),
        });
    }
    let staging = unpack(path, &manifest, &manifest_sha256)?;
    let _ = fs_err::remove_dir_all(&dir);
    fs_err::rename(&staging, &dir).map_err(|e| BundleError::Unreadable {
        path: dir.clone(),
        message: e.to_string(),
    })?;
    fs_err::write(dir.join(".verified"), &manifest_sha256).map_err(|e| {
        BundleError::Unreadable {
            path: dir.clone(),
            message: e.to_string(),
        }
    })?;
    Ok(Opened {
        dir: Some(dir),
        manifest,
        manifest_sha256,
        path: path.to_path_buf(),
    })
}

/// The cached copy still matches the manifest.
fn check_dir(dir: &Path, manifest: &Manifest) -> Result<(), String> {
    for file in &manifest.files {
        let bytes = fs_err::read(dir.join(&file.path)).map_err(|e| e.to_string())?;
        if hex(Sha256::digest(&bytes)) != file.sha256 {
            return Err(file.path.clone());
        }
    }
    Ok(())
}

/// Unpacks `repo/` into a staging directory in the cache, hashing every
/// file on the way; anything the manifest does not list, or lists with
/// another hash, is refused.
fn unpack(path: &Path, manifest: &Manifest, sha: &str) -> Result<PathBuf, BundleError> {
    let root = cache_root();
    let unreadable = |message: String| BundleError::Unreadable {
        path: path.to_path_buf(),
        message,
    };
    fs_err::create_dir_all(&root).map_err(|e| unreadable(e.to_string()))?;
    let staging = root.join(format!(".{sha}.{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&staging);
    fs_err::create_dir_all(&staging).map_err(|e| unreadable(e.to_string()))?;
    let result = unpack_into(path, manifest, Some(&staging));
    if result.is_err() {
        let _ = fs_err::remove_dir_all(&staging);
    }
    result.map(|()| staging)
}

/// Reads every file of the tar, hashing it (and writing it under
/// `staging`, when given).
fn unpack_into(
    path: &Path,
    manifest: &Manifest,
    staging: Option<&Path>,
) -> Result<(), BundleError> {
    let unreadable = |message: String| BundleError::Unreadable {
        path: path.to_path_buf(),
        message,
    };
    let invalid = |message: String| BundleError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut seen = std::collections::BTreeSet::new();
    let file = fs_err::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| unreadable(e.to_string()))? {
        let mut entry = entry.map_err(|e| unreadable(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| unreadable(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if name == MANIFEST || entry.header().entry_type().is_dir() {
            continue;
        }
        let listed = manifest.files.iter().find(|f| f.path == name);
        let Some(listed) = listed.filter(|_| entry.header().entry_type().is_file()) else {
            return Err(invalid(format!(
                "{name} is not a regular file the manifest lists"
            )));
        };
        let safe = name
            .split('/')
            .all(|part| !part.is_empty() && part != ".." && part != ".");
        if !safe || !name.starts_with(&format!("{REPO_DIR}/")) {
            return Err(invalid(format!("{name}: a path outside {REPO_DIR}/")));
        }
        let mut out: Box<dyn std::io::Write> = match staging {
            Some(staging) => {
                let target = staging.join(&name);
                if let Some(parent) = target.parent() {
                    fs_err::create_dir_all(parent).map_err(|e| unreadable(e.to_string()))?;
                }
                Box::new(fs_err::File::create(&target).map_err(|e| unreadable(e.to_string()))?)
            }
            None => Box::new(std::io::sink()),
        };
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = entry
                .read(&mut buffer)
                .map_err(|e| unreadable(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            std::io::Write::write_all(&mut out, &buffer[..n])
                .map_err(|e| unreadable(e.to_string()))?;
        }
        let actual = hex(hasher.finalize());
        if actual != listed.sha256 {
            return Err(BundleError::Tampered {
                path: path.to_path_buf(),
                file: name,
                expected: listed.sha256.clone(),
                actual,
            });
        }
        seen.insert(name);
    }
    if let Some(missing) = manifest.files.iter().find(|f| !seen.contains(&f.path)) {
        return Err(invalid(format!(
            "{} is in the manifest but not in the bundle",
            missing.path
        )));
    }
    Ok(())
}
