//! Verify's Secure Boot check: the NVIDIA module is signed by the plan's
//! certificate. `modinfo -F signer` and `-F sig_key` read the module's
//! signature; `openssl x509` reads the certificate (DER or PEM). The key id
//! a signature carries is the certificate's serial number (sign-file's
//! default) or its subject key identifier (`sign-file -k`): either counts.

use crate::facts::Facts;
use crate::host::{Cmd, Host};
use crate::step::verification::{VerifyCheck, check};

/// Who a certificate names and the ids a signature by it may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The issuer's common name: what `modinfo -F signer` prints.
    pub signer: String,
    /// Serial number and subject key identifier, normalized.
    pub key_ids: Vec<String>,
}

/// "4E:2E:0A" or "4e2e0a" -> "4E2E0A", without leading zeros.
pub fn normalize_id(text: &str) -> String {
    let hex: String = text
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_uppercase();
    hex.trim_start_matches('0').to_string()
}

/// The common name in an openssl name line ("issuer=CN = GPU signing, O = x").
fn common_name(line: &str) -> Option<String> {
    let (_, names) = line.split_once('=')?;
    names.split(',').find_map(|part| {
        let (key, value) = part.split_once('=')?;
        (key.trim() == "CN").then(|| value.trim().to_string())
    })
}

/// Parses `openssl x509 -noout -issuer -serial -ext subjectKeyIdentifier`.
pub fn parse_openssl(text: &str) -> Option<CertIdentity> {
    let mut signer = None;
    let mut key_ids = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("issuer=") {
            signer = common_name(line);
        } else if let Some(serial) = line.strip_prefix("serial=") {
            key_ids.push(normalize_id(serial));
        } else if line.starts_with("X509v3 Subject Key Identifier")
            && let Some(id) = lines.next()
        {
            key_ids.push(normalize_id(id));
        }
    }
    Some(CertIdentity {
        signer: signer?,
        key_ids,
    })
}

fn cert_identity(host: &Host, cert: &str) -> Result<CertIdentity, String> {
    let mut last = String::new();
    for form in ["DER", "PEM"] {
        let cmd = Cmd::read("openssl").args([
            "x509",
            "-inform",
            form,
            "-in",
            cert,
            "-noout",
            "-issuer",
            "-serial",
            "-ext",
            "subjectKeyIdentifier",
        ]);
        match host.runner.run(&cmd) {
            Ok(output) if output.success() => {
                return parse_openssl(&output.stdout)
                    .ok_or_else(|| format!("{cert}: no issuer common name"));
            }
            Ok(output) => last = output.tail.lines().next().unwrap_or("").to_string(),
            Err(error) => last = error.to_string(),
        }
    }
    Err(format!(
        "cannot read the certificate {cert} with openssl: {last}"
    ))
}

fn modinfo(host: &Host, field: &str, module: &str) -> Option<String> {
    let cmd = Cmd::read("modinfo").args(["-F", field, module]);
    host.runner
        .run(&cmd)
        .ok()
        .filter(|o| o.success())
        .map(|o| o.stdout.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The module (loaded: by name; in an image: each kernel's file) signed by
/// the certificate.
pub fn signature(host: &Host, facts: &Facts, cert: &str, live: bool) -> VerifyCheck {
    let identity = match cert_identity(host, cert) {
        Ok(identity) => identity,
        Err(error) => return check("signature", Some(false), error),
    };
    let modules: Vec<String> = if live {
        vec!["nvidia".into()]
    } else {
        facts
            .os
            .kernels
            .iter()
            .filter_map(|k| k.nvidia_module.clone())
            .collect()
    };
    if modules.is_empty() {
        return check("signature", None, "no nvidia module file to read");
    }
    let mut passed = true;
    let mut evidence = vec![format!(
        "{cert}: signer {}, key id {}",
        identity.signer,
        identity.key_ids.join(" or ")
    )];
    for module in &modules {
        let signer = modinfo(host, "signer", module);
        let key = modinfo(host, "sig_key", module);
        let ok = signer.as_deref() == Some(identity.signer.as_str())
            && key
                .as_deref()
                .is_some_and(|k| identity.key_ids.contains(&normalize_id(k)));
        passed &= ok;
        evidence.push(format!(
            "{module}: signer {}, sig_key {}",
            signer.as_deref().unwrap_or("none (unsigned)"),
            key.as_deref().unwrap_or("none")
        ));
    }
    check("signature", Some(passed), evidence.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_output_gives_the_signer_and_both_key_ids() {
        let text = "issuer=CN = GPU module signing, O = Example\nserial=0A1B2C\nX509v3 Subject Key Identifier: \n    4E:2E:0A:FF\n";
        let identity = parse_openssl(text).unwrap();
        assert_eq!(identity.signer, "GPU module signing");
        assert_eq!(identity.key_ids, vec!["A1B2C", "4E2E0AFF"]);
        assert_eq!(normalize_id("0a:1b:2c"), "A1B2C");
        assert!(parse_openssl("serial=01\n").is_none(), "no issuer CN");
    }
}
