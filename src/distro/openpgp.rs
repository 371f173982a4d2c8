//! Just enough OpenPGP (RFC 4880) to trust a repository key: undo the ASCII
//! armor, and compute the v4 fingerprint of each primary key, which is the
//! SHA-1 of 0x99, the two-byte body length, and the public-key packet body
//! (RFC 4880 §12.2). Keys are compared by fingerprint against pinned values
//! before anything is written.

use base64::Engine;
use sha1::{Digest, Sha1};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an OpenPGP key: {0}")]
    Invalid(String),
}

/// The binary packets of an armored (or already binary) key.
pub fn dearmor(bytes: &[u8]) -> Result<Vec<u8>, KeyError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") => text,
        _ => return Ok(bytes.to_vec()),
    };
    let body = text
        .split("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END PGP PUBLIC KEY BLOCK-----").next())
        .ok_or_else(|| KeyError::Invalid("no END line in the armor".into()))?;
    // Armor headers end at the first empty line; the checksum line starts with '='.
    let mut lines = body.lines().map(str::trim).skip_while(|l| l.is_empty());
    let mut data = String::new();
    let mut in_headers = true;
    for line in lines.by_ref() {
        if in_headers {
            if line.contains(": ") {
                continue;
            }
            in_headers = false;
            if line.is_empty() {
                continue;
            }
        }
        if line.starts_with('=') {
            break;
        }
        data.push_str(line);
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|e| KeyError::Invalid(format!("bad base64 in the armor: {e}")))
}

/// The packet at `at`: its tag, its header's length and its body's
/// length (RFC 4880 4.2: new and old formats).
fn packet_header(packets: &[u8], at: usize) -> Result<(u8, usize, usize), KeyError> {
    let tag_byte = packets[at];
    let header = if tag_byte & 0x40 != 0 {
        // New format: tag in the low 6 bits, then a variable length.
        let tag = tag_byte & 0x3f;
        let first = *packets
            .get(at + 1)
            .ok_or_else(|| KeyError::Invalid("truncated packet".into()))?
            as usize;
        match first {
            0..=191 => (tag, 2, first),
            192..=223 => {
                let second = *packets
                    .get(at + 2)
                    .ok_or_else(|| KeyError::Invalid("truncated packet".into()))?
                    as usize;
                (tag, 3, ((first - 192) << 8) + second + 192)
            }
            255 => {
                let bytes = packets
                    .get(at + 2..at + 6)
                    .ok_or_else(|| KeyError::Invalid("truncated packet".into()))?;
                (
                    tag,
                    6,
                    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
                )
            }
            _ => {
                return Err(KeyError::Invalid(
                    "partial-length packets do not occur in keys".into(),
                ));
            }
        }
    } else {
        // Old format: tag in bits 5..2, length type in bits 1..0.
        let tag = (tag_byte >> 2) & 0x0f;
        let size = match tag_byte & 0x03 {
            0 => 1,
            1 => 2,
            2 => 4,
            _ => {
                return Err(KeyError::Invalid(
                    "indeterminate-length packets do not occur in keys".into(),
                ));
            }
        };
        let bytes = packets
            .get(at + 1..at + 1 + size)
            .ok_or_else(|| KeyError::Invalid("truncated packet".into()))?;
        let length = bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (tag, 1 + size, length)
    };
    Ok(header)
}

/// v4 fingerprints (upper-case hex) of the primary keys in `packets`.
pub fn fingerprints(packets: &[u8]) -> Result<Vec<String>, KeyError> {
    let mut found = Vec::new();
    let mut at = 0usize;
    while at < packets.len() {
        let tag_byte = packets[at];
        if tag_byte & 0x80 == 0 {
            return Err(KeyError::Invalid(format!(
                "byte {at} does not start a packet"
            )));
        }
        let (tag, header, length) = packet_header(packets, at)?;
        let body = packets
            .get(at + header..at + header + length)
            .ok_or_else(|| KeyError::Invalid("a packet runs past the end".into()))?;
        // Tag 6: public key (primary). Only version 4 keys have these fingerprints.
        if tag == 6 {
            if body.first() != Some(&4) {
                return Err(KeyError::Invalid(format!(
                    "a version {} key (only v4 is supported)",
                    body.first().unwrap_or(&0)
                )));
            }
            let mut hasher = Sha1::new();
            hasher.update([0x99, (length >> 8) as u8, length as u8]);
            hasher.update(body);
            found.push(hex::encode_upper(hasher.finalize()));
        }
        at += header + length;
    }
    if found.is_empty() {
        return Err(KeyError::Invalid("no public key packet".into()));
    }
    Ok(found)
}

/// Normalizes a fingerprint as people write it ("EB69 3B30 ...", lower case).
pub fn normalize(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys made with `gpg --quick-gen-key`; the .fpr files hold what
    // `gpg --with-colons --fingerprint` printed for them.
    #[test]
    fn fingerprints_agree_with_gpg() {
        for (key, fpr) in [
            (
                include_str!("testdata/ed25519.asc"),
                include_str!("testdata/ed25519.fpr"),
            ),
            (
                include_str!("testdata/rsa2048.asc"),
                include_str!("testdata/rsa2048.fpr"),
            ),
        ] {
            let packets = dearmor(key.as_bytes()).unwrap();
            assert_eq!(
                fingerprints(&packets).unwrap(),
                vec![fpr.trim().to_string()]
            );
            // The binary form reads the same.
            assert_eq!(
                fingerprints(&dearmor(&packets).unwrap()).unwrap(),
                vec![fpr.trim().to_string()]
            );
        }
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(fingerprints(b"\x00\x01\x02").is_err());
        assert!(fingerprints(&dearmor(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n-----END PGP PUBLIC KEY BLOCK-----\n").unwrap_or_default()).is_err());
        assert_eq!(normalize("eb69 3b30 35cd"), "EB693B3035CD");
    }
}
