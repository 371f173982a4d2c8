//! Downloads against a loopback server that drops the connection half-way,
//! serves a wrong body, or is slow: resumed, rejected, or shown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::http::{Fault, Server};
use crate::support::provision;

/// A served directory with one file of `size` pseudo-random bytes.
fn payload(size: usize) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::with_capacity(size);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    fs_err::write(dir.path().join("NVIDIA-Linux-x86_64-580.95.05.run"), &bytes).unwrap();
    (dir, hex::encode(Sha256::digest(&bytes)))
}

fn fetch(url: &str, sha256: &str, cache: &std::path::Path) -> crate::support::Run {
    provision(&[
        "fetch",
        url,
        "--sha256",
        sha256,
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ])
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let (dir, sha) = payload(3 << 20);
    let server = Server::with_fault(dir.path(), Fault::DropAfter(1 << 20));
    let cache = tempfile::tempdir().unwrap();
    let run = fetch(
        &server.url("NVIDIA-Linux-x86_64-580.95.05.run"),
        &sha,
        cache.path(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let fetched = run.json();
    assert_eq!(fetched["resumed"], 1);
    assert_eq!(fetched["bytes"], 3 << 20);
    assert_eq!(fetched["cached"], false);
    // The second request asked for the rest, not the whole file.
    assert_eq!(
        *server.ranges.lock().unwrap(),
        vec![format!("{}-", 1 << 20)]
    );
    let stored = fs_err::read(cache.path().join(&sha)).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&stored)), sha);
    assert!(!cache.path().join(format!("{sha}.partial")).exists());

    // Reused from the cache (re-verified), without a request.
    let before = server.requests.load(Ordering::SeqCst);
    let again = fetch(
        &server.url("NVIDIA-Linux-x86_64-580.95.05.run"),
        &sha,
        cache.path(),
    )
    .json();
    assert_eq!(again["cached"], true);
    assert_eq!(server.requests.load(Ordering::SeqCst), before);

    // A cache entry changed behind provision's back is not used.
    fs_err::write(cache.path().join(&sha), b"tampered").unwrap();
    let fixed = fetch(
        &server.url("NVIDIA-Linux-x86_64-580.95.05.run"),
        &sha,
        cache.path(),
    )
    .json();
    assert_eq!(fixed["cached"], false);
    assert!(server.requests.load(Ordering::SeqCst) > before);
}

#[test]
fn a_wrong_body_is_rejected_naming_both_hashes() {
    let (dir, sha) = payload(1 << 20);
    let server = Server::with_fault(dir.path(), Fault::WrongBody);
    let cache = tempfile::tempdir().unwrap();
    let run = fetch(
        &server.url("NVIDIA-Linux-x86_64-580.95.05.run"),
        &sha,
        cache.path(),
    );
    assert_eq!(run.code, 1, "{run:?}");
    let msg = run.json()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&format!("expected sha256 {sha}, got ")),
        "{msg}"
    );
    assert!(msg.contains("the download was deleted"), "{msg}");
    let left: Vec<_> = fs_err::read_dir(cache.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing unverified stays in the cache");
}

#[test]
fn a_missing_file_and_a_bad_hash_are_clear_errors() {
    let (dir, sha) = payload(1024);
    let server = Server::serve(dir.path());
    let cache = tempfile::tempdir().unwrap();
    let run = fetch(&server.url("nope.run"), &sha, cache.path());
    assert_eq!(run.code, 1);
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap()
            .contains("the server answered 404"),
        "{run:?}"
    );
    let run = fetch(
        &server.url("NVIDIA-Linux-x86_64-580.95.05.run"),
        "abc",
        cache.path(),
    );
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap()
            .contains("is not a sha256"),
        "{run:?}"
    );
}

#[test]
fn a_slow_download_shows_progress_on_a_terminal_and_nowhere_else() {
    let (dir, sha) = payload(2 << 20);
    let server = Server::with_fault(dir.path(), Fault::Slow(Duration::from_millis(60)));
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("NVIDIA-Linux-x86_64-580.95.05.run");
    let command = format!(
        "{} fetch {url} --sha256 {sha} --cache {}",
        env!("CARGO_BIN_EXE_provision"),
        cache.path().display()
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("NVIDIA-Linux-x86_64-580.95.05.run: 1 of 2 MiB"),
        "progress shows: {text}"
    );
    // Without a terminal (and with --json), no progress at all.
    let cache = tempfile::tempdir().unwrap();
    let run = provision(&[
        "fetch",
        &url,
        "--sha256",
        &sha,
        "--cache",
        cache.path().to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0);
    assert!(!run.stderr.contains("MiB"), "{run:?}");
}

/// Peak resident memory of the largest child this test process waited
/// for (nextest runs each test in a process of its own), in KiB.
fn children_peak_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    }
}

#[test]
fn a_download_that_announces_100_gb_is_refused_before_a_byte_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_fault(dir.path(), Fault::Announces(100 << 30));
    let cache = dir.path().join("cache");
    let run = fetch(&server.url("huge.run"), &"a".repeat(64), &cache);
    assert_eq!(run.code, 1, "{run:?}");
    let msg = run.json()["msg"].as_str().unwrap().to_string();
    assert!(msg.contains("announces 107374182400 bytes"), "{msg}");
    let left: Vec<_> = fs_err::read_dir(&cache).unwrap().collect();
    assert!(left.is_empty(), "nothing stays in the cache: {left:?}");
}

#[test]
fn a_download_that_never_ends_stops_at_the_limit_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_fault(dir.path(), Fault::Endless);
    let cache = dir.path().join("cache");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_provision"))
        .args([
            "fetch",
            &server.url("endless.run"),
            "--sha256",
            &"b".repeat(64),
            "--json",
        ])
        .arg("--cache")
        .arg(&cache)
        .env("PROVISION_MAX_DOWNLOAD", (256u64 << 20).to_string())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let msg = report["msg"].as_str().unwrap();
    assert!(
        msg.contains("sent more than the 268435456 bytes a download may have"),
        "{msg}"
    );
    let left: Vec<_> = fs_err::read_dir(&cache).unwrap().collect();
    assert!(left.is_empty(), "the partial file was deleted: {left:?}");
    let peak = children_peak_rss_kib();
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB for a 256 MiB stream");
}

#[test]
fn an_unreachable_repository_names_its_cause_and_the_log_says_what_was_tried() {
    // A port nothing listens on: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/cuda/");
    let rootfs = crate::support::Rootfs::new();
    let dir = tempfile::tempdir().unwrap();
    let plan = crate::support::plan_file(
        dir.path(),
        "plan.toml",
        &format!(
            "[driver]\nbranch = \"580\"\nflavor = \"open\"\nsource = \"cuda-repo\"\n[repositories]\ncuda = \"{url}\"\ncuda_key = \"{url}key.pub\"\ncuda_fingerprint = \"{}\"\n",
            "0".repeat(40)
        ),
    );
    let before = rootfs.tree(&["etc", "var/lib/dpkg"]);
    let run = provision(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    let msg = report["msg"].as_str().unwrap();
    // The root cause, not only "error sending request".
    assert!(msg.contains("Connection refused"), "{msg}");
    assert!(!msg.contains("os error"), "{msg}");
    // The log the report points to holds the download and each attempt.
    let log = report["log"].as_str().expect("a log");
    let log = fs_err::read_to_string(rootfs.path().join(log.trim_start_matches('/')))
        .or_else(|_| fs_err::read_to_string(log))
        .unwrap();
    assert!(log.contains(&format!("# download {url}key.pub")), "{log}");
    assert!(
        log.contains("attempt 1:") && log.contains("Connection refused"),
        "{log}"
    );
    // Undone: the tree is as it was.
    assert_eq!(rootfs.tree(&["etc", "var/lib/dpkg"]), before);
}
