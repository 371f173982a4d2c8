//! The dynamic loader's view: `/etc/ld.so.cache` (what `ldconfig -p`
//! prints, in the order the loader searches it) and the `/etc/ld.so.conf`
//! directories that `ldconfig` builds it from.

use serde::{Deserialize, Serialize};

use crate::host::Root;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub name: String,
    pub path: String,
    /// "libc6,x86-64", "libc6", ...: the `ldconfig -p` annotation.
    pub kind: String,
}

const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";

/// Parses an `ld.so.cache` (glibc's new format, alone or after the old
/// one). Entries keep the file's order, which is the loader's search order.
pub fn parse_ld_so_cache(bytes: &[u8]) -> Result<Vec<CacheEntry>, String> {
    let u32_at = |at: usize| -> Option<u32> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut start = 0usize;
    if bytes.starts_with(OLD_MAGIC) {
        // Old header (12 bytes) + nlibs * 12-byte entries, then the new format aligned to 8.
        let count = u32_at(12).ok_or("truncated old-format header")? as usize;
        start = (16 + count * 12).div_ceil(8) * 8;
    }
    let header = bytes.get(start..).ok_or("truncated cache")?;
    if !header.starts_with(NEW_MAGIC) {
        return Err("not a glibc ld.so.cache (no \"glibc-ld.so.cache1.1\" header)".into());
    }
    let count = u32_at(start + 20).ok_or("truncated header")? as usize;
    // Header: magic+version (20), nlibs, len_strings, flags+pad (4), extension offset, 3 unused.
    let entries_at = start + 48;
    let string = |offset: u32| -> Option<String> {
        // String offsets count from the start of the new-format header.
        let from = start + offset as usize;
        let tail = bytes.get(from..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&tail[..end]).into_owned())
    };
    let mut entries = Vec::with_capacity(count.min(100_000));
    for index in 0..count {
        let at = entries_at + index * 24;
        let (Some(flags), Some(key), Some(value)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8))
        else {
            return Err(format!("cache truncated at entry {index} of {count}"));
        };
        let (Some(name), Some(path)) = (string(key), string(value)) else {
            return Err(format!("entry {index} points outside the cache"));
        };
        entries.push(CacheEntry {
            name,
            path,
            kind: kind_of(flags),
        });
    }
    Ok(entries)
}

/// `ldconfig -p`'s words for the flags (glibc elf/cache.c print_entry).
fn kind_of(flags: u32) -> String {
    let base = match flags & 0xff {
        0x01 => "ELF",
        0x03 => "libc6",
        _ => "unknown",
    };
    let arch = match flags & 0xff00 {
        0x0100 => ",IA-64",
        0x0300 => ",x86-64",
        0x0800 => ",x32",
        0x0a00 => ",AArch64",
        _ => "",
    };
    format!("{base}{arch}")
}

/// A directory the loader configuration names, with the file naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfDir {
    pub dir: String,
    pub file: String,
}

/// The directories of `/etc/ld.so.conf`, includes expanded in `ldconfig`'s
/// order (glob matches sorted). Include cycles are cut.
pub fn ld_so_conf(root: &Root) -> Vec<ConfDir> {
    let mut dirs = Vec::new();
    let mut seen = Vec::new();
    read_conf(root, "/etc/ld.so.conf", &mut dirs, &mut seen);
    dirs
}

fn read_conf(root: &Root, file: &str, dirs: &mut Vec<ConfDir>, seen: &mut Vec<String>) {
    if seen.iter().any(|f| f == file) || seen.len() > 256 {
        return;
    }
    seen.push(file.to_string());
    let Ok(text) = root.read_string(file) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(pattern) = line.strip_prefix("include") {
            for pattern in pattern.split_whitespace() {
                let pattern = if pattern.starts_with('/') {
                    pattern.to_string()
                } else {
                    // Relative includes are relative to the including file's directory.
                    let base = std::path::Path::new(file)
                        .parent()
                        .unwrap_or(std::path::Path::new("/"));
                    base.join(pattern).to_string_lossy().into_owned()
                };
                for included in glob(root, &pattern) {
                    read_conf(root, &included, dirs, seen);
                }
            }
        } else if !line.starts_with("hwcap") {
            for dir in line.split([' ', '\t', ':', ',']).filter(|d| !d.is_empty()) {
                // "dir=TYPE" is an old syntax; the type is ignored.
                let dir = dir.split('=').next().unwrap_or(dir);
                dirs.push(ConfDir {
                    dir: dir.trim_end_matches('/').to_string(),
                    file: file.to_string(),
                });
            }
        }
    }
}

/// Expands a `*` in the last component of `pattern`, sorted like glob(3).
fn glob(root: &Root, pattern: &str) -> Vec<String> {
    let path = std::path::Path::new(pattern);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    if !name.contains('*') {
        return vec![pattern.to_string()];
    }
    let (prefix, suffix) = name.split_once('*').unwrap_or((&name, ""));
    let mut matches: Vec<String> = root
        .read_dir(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|entry| {
            entry.len() >= prefix.len() + suffix.len()
                && entry.starts_with(prefix)
                && entry.ends_with(suffix)
                && !entry.starts_with('.')
        })
        .map(|entry| dir.join(entry).to_string_lossy().into_owned())
        .collect();
    matches.sort();
    matches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_of_the_h200_host_matches_ldconfig_p() {
        let bytes =
            include_bytes!("../../tests/fixtures/hosts/ubuntu-24.04-h200-580-open/etc/ld.so.cache");
        let entries = parse_ld_so_cache(bytes).unwrap();
        let cuda: Vec<(&str, &str)> = entries
            .iter()
            .filter(|e| e.name == "libcuda.so.1")
            .map(|e| (e.path.as_str(), e.kind.as_str()))
            .collect();
        // GROUND-TRUTH.txt, `ldconfig -p`: the first line is what the loader uses.
        assert_eq!(
            cuda,
            [
                ("/usr/local/nvidia/lib64/libcuda.so.1", "libc6,x86-64"),
                ("/lib/libcuda.so.1", "libc6,x86-64")
            ]
        );
        let cudart = entries
            .iter()
            .find(|e| e.name == "libcudart.so.13")
            .unwrap();
        assert_eq!(
            cudart.path,
            "/usr/local/cuda/targets/x86_64-linux/lib/libcudart.so.13"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_ld_so_cache(b"").is_err());
        assert!(parse_ld_so_cache(b"glibc-ld.so.cache1.1\xff\xff\xff\x7f").is_err());
        let mut truncated =
            include_bytes!("../../tests/fixtures/hosts/ubuntu-24.04-h200-580-open/etc/ld.so.cache")
                .to_vec();
        truncated.truncate(200);
        assert!(parse_ld_so_cache(&truncated).is_err());
    }
}
