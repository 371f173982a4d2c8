//! Secure Boot: a kernel with Secure Boot on loads only modules signed by
//! an enrolled key (MOK or db). A plan that builds the module on the host
//! (DKMS, a runfile) needs that key: DKMS is told to sign with it
//! (`mok_signing_key`, `mok_certificate` in a framework.conf.d drop-in
//! that the journal removes byte for byte on rollback), a runfile gets
//! `--module-signing-secret-key`/`--module-signing-public-key`, and verify
//! reads the built module's signer. Without a key the plan is refused
//! before anything changes, naming the ways out.

use std::os::unix::fs::PermissionsExt;

use super::PlanRefused;
use crate::facts::Facts;
use crate::host::Root;
use crate::plan::{Driver, Plan, Signing, Source};
use crate::step::Step;
use crate::step::file::{ManagedFile, header};

/// DKMS 3 reads `/etc/dkms/framework.conf.d/*.conf` after framework.conf.
pub const DKMS_SIGNING_CONF: &str = "/etc/dkms/framework.conf.d/provision-signing.conf";

pub const ID: &str = "secure-boot:dkms-signing";

/// How the plan's driver gets its kernel module on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModuleOrigin {
    /// Built here: DKMS or the runfile's installer.
    Built,
    /// Ubuntu's precompiled `linux-modules-nvidia-*`, signed by Canonical
    /// (DKMS only for a kernel they do not cover).
    PrecompiledSigned,
}

fn module_origin(driver: &Driver, facts: &Facts) -> ModuleOrigin {
    match (driver.source, facts.os.id.as_deref()) {
        (Source::Distro, Some("ubuntu")) => ModuleOrigin::PrecompiledSigned,
        _ => ModuleOrigin::Built,
    }
}

/// The signing step, or the refusal of a plan whose module could never
/// load. Comes before the packages: DKMS builds in their postinst.
pub fn signing_steps(
    plan: &Plan,
    driver: &Driver,
    facts: &Facts,
    warnings: &mut Vec<String>,
    steps: &mut Vec<Box<dyn Step>>,
) -> Result<(), PlanRefused> {
    let secure_boot = facts.os.secure_boot == Some(true);
    let origin = module_origin(driver, facts);
    let Some(signing) = &plan.signing else {
        if secure_boot && origin == ModuleOrigin::Built {
            return Err(PlanRefused::Refused(no_key_message(driver, facts)));
        }
        if secure_boot {
            warnings.push(
                "Secure Boot is on: Ubuntu's precompiled linux-modules-nvidia-* are signed by Canonical, but a kernel they do not cover falls back to DKMS, whose module needs [secure_boot] key and cert".into(),
            );
        }
        // A drop-in an earlier plan wrote goes with its key.
        if Root::new(&facts.root).is_ok_and(|root| root.exists(DKMS_SIGNING_CONF)) {
            steps.push(Box::new(dkms_conf(None)));
        }
        return Ok(());
    };
    check_key_pair(signing, facts)?;
    if secure_boot {
        check_enrolled(signing, facts, warnings)?;
    } else {
        warnings.push(format!(
            "Secure Boot is {} here: modules are signed with {} all the same, ready for when it is on",
            match facts.os.secure_boot {
                Some(false) => "off",
                _ => "of unknown state",
            },
            signing.cert
        ));
    }
    steps.push(Box::new(dkms_conf(Some(signing))));
    Ok(())
}

fn no_key_message(driver: &Driver, facts: &Facts) -> String {
    let how = match driver.source {
        Source::Runfile => "the runfile's installer builds nvidia.ko here",
        _ => "DKMS builds nvidia.ko here",
    };
    let ubuntu = if facts.os.id.as_deref() == Some("ubuntu") {
        "; or use source = \"distro\": Ubuntu's precompiled linux-modules-nvidia-* are signed by Canonical"
    } else {
        ""
    };
    format!(
        "Secure Boot is on ({}) and {how}: the kernel refuses a module no enrolled key signed, so the install would succeed and the GPU never appear. \
         Set [secure_boot] key and cert to a key pair enrolled in MOK (make one with `openssl req -new -x509 -newkey rsa:2048 -nodes -days 36500 -subj \"/CN=GPU module signing/\" -outform DER -keyout MOK.priv -out MOK.der`, \
         enroll it with `mokutil --import MOK.der` and confirm at the next boot) or in the firmware's db{ubuntu}",
        facts.os.secure_boot_source.as_deref().unwrap_or("detected")
    )
}

/// Both files exist in the root; the private key is not world-readable.
fn check_key_pair(signing: &Signing, facts: &Facts) -> Result<(), PlanRefused> {
    let root =
        Root::new(&facts.root).map_err(|e| PlanRefused::Refused(format!("{}: {e}", facts.root)))?;
    for (what, path) in [("key", &signing.key), ("cert", &signing.cert)] {
        if !root.exists(path) {
            return Err(PlanRefused::Refused(format!(
                "[secure_boot] {what} {path} does not exist on this host: the module could not be signed"
            )));
        }
    }
    if let Ok(meta) = root.metadata(&signing.key)
        && meta.permissions().mode() & 0o004 != 0
    {
        return Err(PlanRefused::Refused(format!(
            "[secure_boot] key {} is readable by every user (mode {:o}): anyone could sign a module the kernel trusts; chmod 600 it",
            signing.key,
            meta.permissions().mode() & 0o7777
        )));
    }
    Ok(())
}

/// The certificate is in an enrolled key list (MokListRT, db), else the
/// module it signs would be refused at load; a host whose lists cannot be
/// read gets a warning.
fn check_enrolled(
    signing: &Signing,
    facts: &Facts,
    warnings: &mut Vec<String>,
) -> Result<(), PlanRefused> {
    let root =
        Root::new(&facts.root).map_err(|e| PlanRefused::Refused(format!("{}: {e}", facts.root)))?;
    let cert = root
        .read_bytes(&signing.cert)
        .map_err(|e| PlanRefused::Refused(format!("[secure_boot] cert {}: {e}", signing.cert)))?;
    match crate::facts::enrolled::enrolled(&root, &cert) {
        Some(Ok(_)) => Ok(()),
        Some(Err(lists)) => Err(PlanRefused::Refused(format!(
            "[secure_boot] cert {} is not enrolled (not in {}): the kernel would refuse the module it signs; enroll it with `mokutil --import {}` and confirm at the next boot",
            signing.cert,
            lists.join(" or "),
            signing.cert
        ))),
        None => {
            warnings.push(format!(
                "cannot confirm that {} is enrolled: no MokListRT or db is readable here (`mokutil --test-key {}` tells)",
                signing.cert, signing.cert
            ));
            Ok(())
        }
    }
}

/// The DKMS drop-in: present with a key, absent (removed if provision
/// wrote one) without.
fn dkms_conf(signing: Option<&Signing>) -> ManagedFile {
    ManagedFile {
        id: ID.into(),
        path: DKMS_SIGNING_CONF.into(),
        content: signing.map(|s| {
            format!(
                "{}mok_signing_key=\"{}\"\nmok_certificate=\"{}\"\n",
                header("DKMS signs the modules it builds with the enrolled key"),
                s.key,
                s.cert
            )
        }),
        mode: 0o644,
        equivalent: None,
    }
}

/// The runfile installer's signing flags.
pub fn runfile_args(signing: Option<&Signing>) -> Vec<String> {
    match signing {
        Some(s) => vec![
            format!("--module-signing-secret-key={}", s.key),
            format!("--module-signing-public-key={}", s.cert),
        ],
        None => Vec::new(),
    }
}
