//! A small HTTP/1.1 file server on loopback for apt, dnf and downloads, with
//! Range support and faults to inject (a connection dropped half-way, a
//! wrong body, a slow body).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Close the connection after this many body bytes, on the first request only.
    DropAfter(u64),
    /// Serve different bytes than the file holds.
    WrongBody,
    /// Sleep this long between 64 KiB chunks.
    Slow(Duration),
    /// Announce this Content-Length, then send zeros for as long as the
    /// client reads.
    Announces(u64),
    /// No Content-Length: zeros for as long as the client reads.
    Endless,
}

pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicUsize>,
    pub ranges: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn serve(root: &Path) -> Server {
        Server::with_fault(root, Fault::None)
    }

    pub fn with_fault(root: &Path, fault: Fault) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let root = root.to_path_buf();
        {
            let (stop, requests, ranges) = (stop.clone(), requests.clone(), ranges.clone());
            listener.set_nonblocking(true).unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let n = requests.fetch_add(1, Ordering::SeqCst);
                            let root = root.clone();
                            let ranges = ranges.clone();
                            std::thread::spawn(move || {
                                let _ = handle(stream, &root, fault, n == 0, &ranges);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Server {
            port,
            stop,
            requests,
            ranges,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn handle(
    mut stream: TcpStream,
    root: &Path,
    fault: Fault,
    first: bool,
    ranges: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut range: Option<String> = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((key, value)) = line.split_once(':')
                && key.eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_string());
            }
        }
        let mut words = request.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let target = words.next().unwrap_or("/").to_string();
        let relative = target
            .split('?')
            .next()
            .unwrap_or("")
            .trim_start_matches('/');
        let path: PathBuf = root.join(percent_decode(relative));
        if let Fault::Announces(_) | Fault::Endless = fault {
            return endless(&mut stream, fault);
        }
        let Ok(mut body) = std::fs::read(&path) else {
            stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        if fault == Fault::WrongBody {
            for byte in body.iter_mut().step_by(97) {
                *byte ^= 0x5a;
            }
        }
        let total = body.len() as u64;
        let (status, start) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
            Some(spec) => {
                ranges.lock().unwrap().push(spec.to_string());
                let start: u64 = spec.split('-').next().unwrap_or("0").parse().unwrap_or(0);
                ("206 Partial Content", start.min(total))
            }
            None => ("200 OK", 0),
        };
        let slice = &body[start as usize..];
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\n",
            slice.len()
        );
        if start > 0 {
            head.push_str(&format!(
                "Content-Range: bytes {start}-{}/{total}\r\n",
                total.saturating_sub(1)
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        if method == "HEAD" {
            continue;
        }
        match fault {
            Fault::DropAfter(limit) if first => {
                let cut = (limit as usize).min(slice.len());
                stream.write_all(&slice[..cut])?;
                stream.flush()?;
                return stream.shutdown(std::net::Shutdown::Both);
            }
            Fault::Slow(pause) => {
                for chunk in slice.chunks(64 * 1024) {
                    stream.write_all(chunk)?;
                    std::thread::sleep(pause);
                }
            }
            _ => stream.write_all(slice)?,
        }
    }
}

/// A body that never ends (a misbehaving mirror): zeros, 64 KiB at a time,
/// until the client goes away.
fn endless(stream: &mut TcpStream, fault: Fault) -> std::io::Result<()> {
    let head = match fault {
        Fault::Announces(length) => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ),
        _ => {
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
                .to_string()
        }
    };
    stream.write_all(head.as_bytes())?;
    let chunk = vec![0u8; 64 * 1024];
    loop {
        stream.write_all(&chunk)?;
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(value) =
                u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
