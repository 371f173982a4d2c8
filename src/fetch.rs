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

use crate::progress::Progress;

/// Where downloads are cached unless told otherwise.
pub const DEFAULT_CACHE: &str = "/var/cache/provision/downloads";

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
    progress: Arc<dyn Progress>,
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
            message: e.to_string(),
            attempts: 0,
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

impl Fetcher {
    pub fn new(cache: impl Into<PathBuf>, progress: Arc<dyn Progress>) -> Fetcher {
        Fetcher {
            cache: cache.into(),
            attempts: 5,
            backoff: Duration::from_millis(250),
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
        let name = url.rsplit('/').next().unwrap_or(url).to_string();
        // Resume what an earlier run left: hash its bytes first.
        let (mut hasher, mut done) = match std::fs::File::open(&partial) {
            Ok(mut file) => {
                let mut hasher = Sha256::new();
                let mut buffer = vec![0u8; CHUNK];
                let mut total = 0u64;
                loop {
                    let read = file.read(&mut buffer).map_err(io(&partial))?;
                    if read == 0 {
                        break;
                    }
                    hasher.update(&buffer[..read]);
                    total += read as u64;
                }
                (hasher, total)
            }
            Err(_) => (Sha256::new(), 0),
        };
        // Large files: no overall limit, but a stalled read fails.
        let client = client(
            url,
            reqwest::Client::builder().read_timeout(Duration::from_secs(60)),
        )?;
        let mut attempt = 0;
        let mut resumed = 0;
        let mut last_error = String::new();
        let total = loop {
            attempt += 1;
            if attempt > self.attempts {
                return Err(FetchError::Transfer {
                    url: url.to_string(),
                    message: last_error,
                    attempts: self.attempts,
                });
            }
            if attempt > 1 {
                tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt - 2)).await;
            }
            let mut request = client.get(url);
            if done > 0 {
                request = request.header(reqwest::header::RANGE, format!("bytes={done}-"));
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    last_error = error.to_string();
                    continue;
                }
            };
            let status = response.status().as_u16();
            match status {
                206 => {}
                200 => {
                    // The server ignored the range: start over.
                    if done > 0 {
                        hasher = Sha256::new();
                        done = 0;
                    }
                }
                416 if done > 0 => break done, // the partial file is whole already
                500..=599 => {
                    last_error = format!("the server answered {status}");
                    continue;
                }
                _ => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(FetchError::Status {
                        url: url.to_string(),
                        status,
                    });
                }
            }
            let length = response.content_length().map(|l| l + done);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(done == 0)
                .append(done > 0)
                .open(&partial)
                .map_err(io(&partial))?;
            let mut writer = std::io::BufWriter::with_capacity(CHUNK, &mut file);
            let mut stream = response.bytes_stream();
            let mut broken = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        hasher.update(&bytes);
                        writer.write_all(&bytes).map_err(io(&partial))?;
                        done += bytes.len() as u64;
                        self.progress.download(&name, done, length);
                    }
                    Err(error) => {
                        broken = Some(error.to_string());
                        break;
                    }
                }
            }
            writer.flush().map_err(io(&partial))?;
            drop(writer);
            match (broken, length) {
                (None, Some(length)) if done < length => {
                    last_error = format!("the connection closed after {done} of {length} bytes");
                    resumed += 1;
                }
                (None, _) => {
                    file.sync_all().map_err(io(&partial))?;
                    break done;
                }
                (Some(error), _) => {
                    last_error = error;
                    resumed += 1;
                }
            }
        };
        let actual = hex::encode(hasher.finalize());
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
            resumed,
        })
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
        for attempt in 1..=4u32 {
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(attempt - 2)).await;
            }
            match client.get(url).send().await {
                Ok(response) if response.status().is_success() => match response.bytes().await {
                    Ok(bytes) if bytes.len() <= limit => return Ok(bytes.to_vec()),
                    Ok(_) => last = format!("larger than {limit} bytes"),
                    Err(error) => last = error.to_string(),
                },
                Ok(response) if response.status().is_server_error() => {
                    last = format!("the server answered {}", response.status().as_u16());
                }
                Ok(response) => {
                    return Err(FetchError::Status {
                        url: url.to_string(),
                        status: response.status().as_u16(),
                    });
                }
                Err(error) => last = error.to_string(),
            }
        }
        Err(FetchError::Transfer {
            url: url.to_string(),
            message: last,
            attempts: 4,
        })
    })
}
