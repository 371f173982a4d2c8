//! Is the plan's signing certificate enrolled? The firmware's and shim's
//! key lists, as the kernel shows them: `MokListRT` (shim's Machine Owner
//! Keys, in `/sys/firmware/efi/mok-variables/` on newer kernels, else an
//! EFI variable) and `db`. Each is a series of EFI_SIGNATURE_LISTs; an
//! X.509 entry holds a certificate in DER, compared byte for byte.

use crate::host::Root;

const MOK_TABLE: &str = "/sys/firmware/efi/mok-variables/MokListRT";
const MOK_VAR: &str = "/sys/firmware/efi/efivars/MokListRT-605dab50-e046-4300-abb6-3dd810dd8b23";
const DB_VAR: &str = "/sys/firmware/efi/efivars/db-d719b2cb-3d3a-4596-a3bc-dad00e67656f";
/// EFI_CERT_X509_GUID (a5c059a1-94e4-4aa7-87b5-ab155c2bf072), as stored.
const X509_GUID: [u8; 16] = [
    0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72,
];

/// Whether `cert` (DER or PEM) is in an enrolled list: None when no list
/// could be read (the state is unknown), else the list that has it.
pub fn enrolled(root: &Root, cert: &[u8]) -> Option<Result<&'static str, Vec<&'static str>>> {
    let der = der_of(cert)?;
    let mut read = Vec::new();
    for (name, path, attributes) in [
        ("MokListRT", MOK_TABLE, false),
        ("MokListRT", MOK_VAR, true),
        ("db", DB_VAR, true),
    ] {
        let Ok(bytes) = root.read_bytes(path) else {
            continue;
        };
        // efivarfs puts the variable's 4-byte attributes first.
        let lists = if attributes {
            bytes.get(4..).unwrap_or_default()
        } else {
            &bytes[..]
        };
        if x509_entries(lists).contains(&der.as_slice()) {
            return Some(Ok(name));
        }
        if !read.contains(&name) {
            read.push(name);
        }
    }
    if read.is_empty() {
        None
    } else {
        Some(Err(read))
    }
}

/// DER bytes of a certificate file, DER or PEM.
fn der_of(cert: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(cert).ok();
    match text.filter(|t| t.contains("-----BEGIN CERTIFICATE-----")) {
        Some(text) => {
            use base64::Engine;
            let body: String = text
                .lines()
                .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            base64::engine::general_purpose::STANDARD.decode(body).ok()
        }
        None => Some(cert.to_vec()),
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(word) as usize)
}

/// The X.509 certificates in a series of EFI_SIGNATURE_LISTs: each list
/// is a type GUID, its size, its header size, each signature's size, the
/// header, then signatures (an owner GUID and the data).
pub fn x509_entries(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut found = Vec::new();
    while bytes.len() >= 28 {
        let (Some(size), Some(header), Some(each)) =
            (u32_at(bytes, 16), u32_at(bytes, 20), u32_at(bytes, 24))
        else {
            break;
        };
        if size < 28 + header || size > bytes.len() || each <= 16 {
            break;
        }
        if bytes[..16] == X509_GUID {
            let mut at = 28 + header;
            while at + each <= size {
                found.push(&bytes[at + 16..at + each]);
                at += each;
            }
        }
        bytes = &bytes[size..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One EFI_SIGNATURE_LIST holding `der` (for tests and fixtures).
    fn signature_list(der: &[u8]) -> Vec<u8> {
        let each = 16 + der.len();
        let size = 28 + each;
        let mut list = X509_GUID.to_vec();
        list.extend((size as u32).to_le_bytes());
        list.extend(0u32.to_le_bytes());
        list.extend((each as u32).to_le_bytes());
        list.extend([0x11; 16]);
        list.extend(der);
        list
    }

    #[test]
    fn a_certificate_is_found_among_signature_lists() {
        let mut lists = signature_list(b"first certificate");
        lists.extend(signature_list(b"the plan's certificate"));
        let entries = x509_entries(&lists);
        assert_eq!(
            entries,
            [&b"first certificate"[..], &b"the plan's certificate"[..]]
        );
        assert!(
            x509_entries(&lists[..30]).is_empty(),
            "a truncated list yields nothing"
        );
        assert_eq!(der_of(b"\x30\x82raw").unwrap(), b"\x30\x82raw");
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(der_of(pem).unwrap(), vec![0x30, 0x82, 0x01]);
    }
}
