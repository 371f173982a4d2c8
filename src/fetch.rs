//! Downloads that are verified before anyone may use them.
//!
//! A download streams to `<cache>/<sha256>.partial`, hashing as it writes
//! (one pass over the bytes). A broken connection resumes with an HTTP
//! range from where it stopped, after a backoff; the hash state carries
//! over. Only when the whole file hashes to the expected value is it renamed
//! to `<cache>/<sha256>`; a mismatch deletes the partial file and names both
//! hashes. A cached file is re-hashed before reuse, so a cache shared across
//! hosts cannot hand out bytes that were changed after they were verified.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::chain;
use crate::progress::Progress;

/// Where downloads are cached unless told otherwise.
pub const DEFAULT_CACHE: &str = "/var/cache/provision/downloads";

/// The download cache: `PROVISION_CACHE`, else the machine's own. Runfile
/// installs download into it and bundles unpack beside it.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("PROVISION_CACHE")
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_CACHE.into())
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: expected sha256 {expected}, got {actual}; the download was deleted")]
    Mismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: {message} (after {attempts} attempt(s))")]
    Transfer {
        url: String,
        message: String,
        attempts: u32,
        /// Each attempt and what ended it, for the run's log.
        tried: Vec<String>,
    },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a sha256 (64 hexadecimal digits)")]
    BadHash(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub struct Fetcher {
    cache: PathBuf,
    attempts: u32,
    backoff: Duration,
    /// The most bytes one download may have (an installer is a few GB).
    max_bytes: u64,
    progress: Arc<dyn Progress>,
}

/// The default limit of one download: 16 GiB (NVIDIA's largest CUDA
/// installers are about 5 GB). `PROVISION_MAX_DOWNLOAD` (bytes) overrides.
pub const MAX_DOWNLOAD: u64 = 16 << 30;

fn max_download() -> u64 {
    std::env::var("PROVISION_MAX_DOWNLOAD")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(MAX_DOWNLOAD)
}

/// What a fetch did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fetched {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    /// Served from the cache (re-verified), no transfer.
    pub cached: bool,
    /// Connections that broke and were resumed.
    pub resumed: u32,
}

const CHUNK: usize = 1 << 20;

/// The HTTP client for `url`: `builder`'s timeouts plus a connect timeout.
fn client(url: &str, builder: reqwest::ClientBuilder) -> Result<reqwest::Client, FetchError> {
    builder
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| FetchError::Transfer {
            url: url.to_string(),
            message: chain(&e),
            attempts: 0,
            tried: Vec::new(),
        })
}

/// sha256 of a file, streaming.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

impl FetchError {
    /// What each attempt ran into, for the run's log.
    pub fn tried(&self) -> &[String] {
        match self {
            FetchError::Transfer { tried, .. } => tried,
            _ => &[],
        }
    }
}

/// `fetch` of `url`, with the download and each failed attempt written
/// to the run's log (`note`): the log a failure points to says what was
/// tried, not only the commands.
pub fn logged<T>(
    note: &dyn Fn(&str),
    url: &str,
    fetch: impl FnOnce() -> Result<T, FetchError>,
) -> Result<T, FetchError> {
    note(&format!("download {url}"));
    let result = fetch();
    if let Err(error) = &result {
        for line in error.tried() {
            note(&format!("  {line}"));
        }
        note(&format!("  failed: {}", chain(error)));
    }
    result
}

impl Fetcher {
    pub fn new(cache: impl Into<PathBuf>, progress: Arc<dyn Progress>) -> Fetcher {
        Fetcher {
            cache: cache.into(),
            attempts: 5,
            backoff: Duration::from_millis(250),
            max_bytes: max_download(),
            progress,
        }
    }

    /// Attempts per download and the first backoff (doubling each time).
    pub fn with_retries(mut self, attempts: u32, backoff: Duration) -> Fetcher {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// The verified file for `sha256`, from the cache or `url`.
    pub fn fetch(&self, url: &str, sha256: &str) -> Result<Fetched, FetchError> {
        let expected = sha256.trim().to_ascii_lowercase();
        if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FetchError::BadHash(sha256.to_string()));
        }
        std::fs::create_dir_all(&self.cache).map_err(io(&self.cache))?;
        let target = self.cache.join(&expected);
        if target.exists() {
            let (actual, bytes) = hash_file(&target).map_err(io(&target))?;
            if actual == expected {
                return Ok(Fetched {
                    path: target,
                    sha256: expected,
                    bytes,
                    cached: true,
                    resumed: 0,
                });
            }
            // A cache entry that no longer matches is never used.
            std::fs::remove_file(&target).map_err(io(&target))?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io(&self.cache))?;
        runtime.block_on(self.download(url, &expected, &target))
    }

    async fn download(
        &self,
        url: &str,
        expected: &str,
        target: &Path,
    ) -> Result<Fetched, FetchError> {
        let partial = self.cache.join(format!("{expected}.partial"));
        let mut state = Transfer::resume(&partial)?;
        // Large files: no overall time limit, but a stalled read fails.
        let client = client(
            url,
            reqwest::Client::builder().read_timeout(Duration::from_secs(60)),
        )?;
        let mut attempt = 0;
        let mut last_error = String::new();
        let mut tried = Vec::new();
        let total = loop {
            attempt += 1;
            if attempt > 1 {
                tried.push(format!("attempt {}: {last_error}", attempt - 1));
            }
            if attempt > self.attempts {
                return Err(FetchError::Transfer {
                    url: url.to_string(),
                    message: last_error,
                    attempts: self.attempts,
                    tried,
                });
            }
            if attempt > 1 {
                tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt - 2)).await;
            }
            match self.attempt(&client, url, &partial, &mut state).await {
                Ok(Some(total)) => break total,
                Ok(None) => last_error = state.broken.take().unwrap_or_default(),
                Err(error) => {
                    if !matches!(error, FetchError::Io { .. }) {
                        let _ = std::fs::remove_file(&partial);
                    }
                    return Err(error);
                }
            }
        };
        let actual = hex::encode(state.hasher.finalize());
        if actual != expected {
            let _ = std::fs::remove_file(&partial);
            return Err(FetchError::Mismatch {
                url: url.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
        std::fs::rename(&partial, target).map_err(io(target))?;
        if let Ok(dir) = std::fs::File::open(&self.cache) {
            let _ = dir.sync_all();
        }
        Ok(Fetched {
            path: target.to_path_buf(),
            sha256: expected.to_string(),
            bytes: total,
            cached: false,
            resumed: state.resumed,
        })
    }

    /// One request: `Some(total)` when the file is whole, `None` when the
    /// connection broke (retry, resuming), an error when retrying is no use.
    async fn attempt(
        &self,
        client: &reqwest::Client,
        url: &str,
        partial: &Path,
        state: &mut Transfer,
    ) -> Result<Option<u64>, FetchError> {
        let mut request = client.get(url);
        if state.done > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={}-", state.done));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                state.broken = Some(chain(&error));
                return Ok(None);
            }
        };
        let status = response.status().as_u16();
        match status {
            206 => {}
            // The server ignored the range: start over.
            200 if state.done > 0 => state.restart(),
            200 => {}
            416 if state.done > 0 => return Ok(Some(state.done)), // whole already
            500..=599 => {
                state.broken = Some(format!("the server answered {status}"));
                return Ok(None);
            }
            _ => {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status,
                });
            }
        }
        let length = response.content_length().map(|l| l + state.done);
        if let Some(length) = length {
            self.room_for(url, length)?;
        }
        self.receive(response, url, partial, state, length).await
    }

    /// The response's body appended to `partial`, hashed on the way:
    /// `Some(total)` when whole, `None` when the connection broke.
    async fn receive(
        &self,
        response: reqwest::Response,
        url: &str,
        partial: &Path,
        state: &mut Transfer,
        length: Option<u64>,
    ) -> Result<Option<u64>, FetchError> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(state.done == 0)
            .append(state.done > 0)
            .open(partial)
            .map_err(io(partial))?;
        let name = url.rsplit('/').next().unwrap_or(url).to_string();
        let mut writer = std::io::BufWriter::with_capacity(CHUNK, &mut file);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    if state.done + bytes.len() as u64 > self.max_bytes {
                        return Err(self.too_large(url, "sent"));
                    }
                    state.hasher.update(&bytes);
                    writer.write_all(&bytes).map_err(io(partial))?;
                    state.done += bytes.len() as u64;
                    self.progress.download(&name, state.done, length);
                }
                Err(error) => {
                    state.broken = Some(chain(&error));
                    break;
                }
            }
        }
        writer.flush().map_err(io(partial))?;
        drop(writer);
        match (&state.broken, length) {
            (None, Some(length)) if state.done < length => {
                state.broken = Some(format!(
                    "the connection closed after {} of {length} bytes",
                    state.done
                ));
                state.resumed += 1;
                Ok(None)
            }
            (None, _) => {
                file.sync_all().map_err(io(partial))?;
                Ok(Some(state.done))
            }
            (Some(_), _) => {
                state.resumed += 1;
                Ok(None)
            }
        }
    }

    /// A download that announces `length` bytes must fit the limit and the
    /// cache's free space.
    fn room_for(&self, url: &str, length: u64) -> Result<(), FetchError> {
        if length > self.max_bytes {
            return Err(self.too_large(url, &format!("announces {length} bytes:")));
        }
        if let Ok(stat) = nix::sys::statvfs::statvfs(&self.cache) {
            let free = stat.blocks_available().saturating_mul(stat.fragment_size());
            if length > free {
                return Err(FetchError::Transfer {
                    url: url.to_string(),
                    message: format!(
                        "announces {length} bytes, and {} has {free} bytes free",
                        self.cache.display()
                    ),
                    attempts: 1,
                    tried: Vec::new(),
                });
            }
        }
        Ok(())
    }

    fn too_large(&self, url: &str, what: &str) -> FetchError {
        FetchError::Transfer {
            url: url.to_string(),
            message: format!(
                "{what} more than the {} bytes a download may have (PROVISION_MAX_DOWNLOAD); the partial file was deleted",
                self.max_bytes
            ),
            attempts: 1,
            tried: Vec::new(),
        }
    }
}

/// A download under way: the hash of the bytes so far, how many, how often
/// the connection broke.
struct Transfer {
    hasher: Sha256,
    done: u64,
    resumed: u32,
    broken: Option<String>,
}

impl Transfer {
    /// What an earlier run left in `partial`: its bytes hashed first.
    fn resume(partial: &Path) -> Result<Transfer, FetchError> {
        let mut transfer = Transfer {
            hasher: Sha256::new(),
            done: 0,
            resumed: 0,
            broken: None,
        };
        if let Ok(mut file) = std::fs::File::open(partial) {
            let mut buffer = vec![0u8; CHUNK];
            loop {
                let read = file.read(&mut buffer).map_err(io(partial))?;
                if read == 0 {
                    break;
                }
                transfer.hasher.update(&buffer[..read]);
                transfer.done += read as u64;
            }
        }
        Ok(transfer)
    }

    fn restart(&mut self) {
        self.hasher = Sha256::new();
        self.done = 0;
    }
}

/// A small file (a signing key, a repository definition) into memory: no
/// cache, no pinned hash (callers verify what they get, a key by its
/// fingerprint). `file:///` URLs read the local file. At most `limit` bytes.
pub fn fetch_small(url: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
    if let Some(path) = url.strip_prefix("file://") {
        let bytes = std::fs::read(path).map_err(io(Path::new(path)))?;
        if bytes.len() > limit {
            return Err(FetchError::Transfer {
                url: url.to_string(),
                message: format!("larger than {limit} bytes"),
                attempts: 1,
                tried: Vec::new(),
            });
        }
        return Ok(bytes);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io(Path::new(url)))?;
    runtime.block_on(async {
        let client = client(
            url,
            reqwest::Client::builder().timeout(Duration::from_secs(120)),
        )?;
        let mut last = String::new();
        let mut tried = Vec::new();
        for attempt in 1..=4u32 {
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(attempt - 2)).await;
            }
            match client.get(url).send().await {
                Ok(response) if response.status().is_success() => {
                    match read_limited(response, limit).await {
                        Ok(bytes) => return Ok(bytes),
                        Err(message) => last = message,
                    }
                }
                Ok(response) if response.status().is_server_error() => {
                    last = format!("the server answered {}", response.status().as_u16());
                }
                Ok(response) => {
                    return Err(FetchError::Status {
                        url: url.to_string(),
                        status: response.status().as_u16(),
                    });
                }
                Err(error) => last = chain(&error),
            }
            tried.push(format!("attempt {attempt}: {last}"));
        }
        Err(FetchError::Transfer {
            url: url.to_string(),
            message: last,
            attempts: 4,
            tried,
        })
    })
}

/// A response body of at most `limit` bytes, read as it comes (a server
/// that announces or sends more is cut off, never buffered).
async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|l| l > limit as u64) {
        return Err(format!("larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let bytes = chunk.map_err(|e| chain(&e))?;
        if body.len() + bytes.len() > limit {
            return Err(format!("larger than {limit} bytes"));
        }
        body.extend_from_slice(&bytes);
    }
    Ok(body)
}
