//! nouveau, the in-kernel driver that must stay away from NVIDIA GPUs:
//! loaded or bound now, blacklisted by modprobe.d or the kernel command line,
//! and present in each initramfs image.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Unknown;
use super::os::Family;
use crate::host::{Cmd, FileStamp, Host, Root};

/// modprobe.d(5) directories, highest precedence first: a file in an earlier
/// directory hides a file of the same name in a later one.
pub const MODPROBE_DIRS: &[&str] = &[
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
];

/// Where provision caches initramfs listings (keyed by file identity).
pub const INITRAMFS_CACHE: &str = "/var/cache/provision/initramfs.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Nouveau {
    /// The module is loaded now (`/sys/module/nouveau`).
    pub loaded: Option<bool>,
    /// PCI addresses bound to nouveau now.
    pub bound: Vec<String>,
    /// A `blacklist nouveau` (or `install nouveau /bin/false`) is in effect.
    pub blacklisted: bool,
    /// `options nouveau modeset=0` is in effect.
    pub modeset_disabled: bool,
    /// Effective modprobe.d files that mention nouveau.
    pub files: Vec<ModprobeFile>,
    /// Kernel command-line words that keep nouveau away.
    pub cmdline: Vec<String>,
    pub initramfs: Vec<InitramfsImage>,
    pub unknown: Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModprobeFile {
    pub path: String,
    pub blacklist: bool,
    pub modeset_off: bool,
    pub install_disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitramfsImage {
    pub path: String,
    pub kernel: String,
    /// The image carries nouveau.ko.
    pub contains_nouveau: Option<bool>,
    /// modprobe.d files in the image that blacklist nouveau on the host.
    pub blacklist_files: Vec<String>,
    pub reason: Option<String>,
}

/// What one modprobe.d file says about nouveau.
pub fn parse_modprobe_conf(path: &str, text: &str) -> Option<ModprobeFile> {
    let mut file = ModprobeFile {
        path: path.to_string(),
        blacklist: false,
        modeset_off: false,
        install_disabled: false,
    };
    let mut logical = String::new();
    for raw in text.lines() {
        // A trailing backslash continues the line (modprobe.d(5)).
        if let Some(part) = raw.strip_suffix('\\') {
            logical.push_str(part);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        let line = line.split('#').next().unwrap_or("").trim().to_string();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["blacklist", "nouveau", ..] => file.blacklist = true,
            ["options", "nouveau", options @ ..] if options.contains(&"modeset=0") => {
                file.modeset_off = true;
            }
            ["install", "nouveau", command @ ..] => {
                if matches!(
                    command.first(),
                    Some(&("/bin/false" | "/bin/true" | "/usr/bin/false" | "/usr/bin/true"))
                ) {
                    file.install_disabled = true;
                }
            }
            _ => {}
        }
    }
    (file.blacklist || file.modeset_off || file.install_disabled).then_some(file)
}

/// Words of `/proc/cmdline` that keep nouveau from loading.
pub fn cmdline_words(cmdline: &str) -> Vec<String> {
    cmdline
        .split_whitespace()
        .filter(|word| {
            let Some((key, value)) = word.split_once('=') else {
                return false;
            };
            match key {
                "modprobe.blacklist" | "module_blacklist" | "rd.driver.blacklist" => {
                    value.split(',').any(|m| m == "nouveau")
                }
                "nouveau.modeset" => value == "0",
                _ => false,
            }
        })
        .map(str::to_string)
        .collect()
}

/// The effective modprobe.d files by name (earlier directories win).
pub fn effective_modprobe_files(root: &Root) -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for dir in MODPROBE_DIRS {
        // /lib is often a link to /usr/lib: the same file must not count twice.
        let Ok(names) = root.read_dir(dir) else {
            continue;
        };
        for name in names {
            if name.ends_with(".conf") && !files.contains_key(&name) {
                files.insert(name.clone(), format!("{dir}/{name}"));
            }
        }
    }
    files
}

pub fn gather(
    host: &Host,
    family: Option<Family>,
    bound: Vec<String>,
    kernels: &[(String, Option<String>)],
) -> Nouveau {
    let root = &host.root;
    let mut nouveau = Nouveau {
        bound,
        ..Nouveau::default()
    };
    if root.is_dir("/sys/module") {
        nouveau.loaded = Some(root.exists("/sys/module/nouveau"));
    } else {
        match root.read_string("/proc/modules") {
            Ok(text) => nouveau.loaded = Some(text.lines().any(|l| l.starts_with("nouveau "))),
            Err(_) => nouveau.unknown.note(
                "loaded",
                "neither sys/module nor proc/modules exists in this root (not a running host)",
            ),
        }
    }
    for path in effective_modprobe_files(root).values() {
        if let Ok(text) = root.read_string(path)
            && let Some(file) = parse_modprobe_conf(path, &text)
        {
            nouveau.blacklisted |= file.blacklist || file.install_disabled;
            nouveau.modeset_disabled |= file.modeset_off;
            nouveau.files.push(file);
        }
    }
    match root.read_string("/proc/cmdline") {
        Ok(text) => {
            nouveau.cmdline = cmdline_words(&text);
            if nouveau
                .cmdline
                .iter()
                .any(|w| !w.starts_with("nouveau.modeset") && !w.starts_with("rd."))
            {
                nouveau.blacklisted = true;
            }
        }
        Err(error) => nouveau
            .unknown
            .note("cmdline", format!("cannot read proc/cmdline: {error}")),
    }
    let blacklist_files: Vec<String> = nouveau
        .files
        .iter()
        .filter(|f| f.blacklist || f.install_disabled)
        .map(|f| f.path.clone())
        .collect();
    let cache = InitramfsCache::load(root);
    for (release, image) in kernels {
        let Some(image) = image else { continue };
        nouveau.initramfs.push(inspect_image(
            host,
            family,
            &cache,
            release,
            image,
            &blacklist_files,
        ));
    }
    nouveau
}

/// The distribution's initramfs lister (initramfs-tools or dracut).
pub fn lister(family: Option<Family>, image: &str) -> Cmd {
    match family {
        Some(Family::Rhel) => Cmd::read("lsinitrd").args([image]),
        _ => Cmd::read("lsinitramfs").args([image]),
    }
}

/// A listing reduced to what matters: nouveau.ko and modprobe.d files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub stamp: FileStamp,
    pub nouveau_module: bool,
    pub modprobe_files: Vec<String>,
}

pub fn summarize_listing(stamp: FileStamp, text: &str) -> Listing {
    let mut listing = Listing {
        stamp,
        nouveau_module: false,
        modprobe_files: Vec::new(),
    };
    for line in text.lines() {
        // lsinitrd prints `ls -l` style lines; the path is the last word.
        let path = line
            .split_whitespace()
            .last()
            .unwrap_or("")
            .trim_start_matches("./");
        let name = path.rsplit('/').next().unwrap_or("");
        if name.starts_with("nouveau.ko") {
            listing.nouveau_module = true;
        }
        if path.contains("modprobe.d/") && name.ends_with(".conf") {
            listing.modprobe_files.push(format!("/{path}"));
        }
    }
    listing
}

/// Listings of initramfs images keyed by path, valid while the image's
/// size, mtime and inode are unchanged. Written by `apply` only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InitramfsCache {
    pub images: BTreeMap<String, Listing>,
}

impl InitramfsCache {
    pub fn load(root: &Root) -> InitramfsCache {
        root.read_string(INITRAMFS_CACHE)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    pub fn store(&self, root: &Root) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        root.write_atomic(INITRAMFS_CACHE, &text, 0o644)
    }

    /// The cached listing if the image is unchanged, else a fresh one.
    pub fn listing(
        &self,
        host: &Host,
        family: Option<Family>,
        image: &str,
    ) -> Result<Listing, String> {
        let stamp = host
            .root
            .stamp(image)
            .map_err(|error| format!("cannot stat {image}: {error}"))?;
        if let Some(cached) = self.images.get(image)
            && cached.stamp == stamp
        {
            return Ok(cached.clone());
        }
        let cmd = lister(family, image);
        let output = host
            .runner
            .run(&cmd)
            .map_err(|error| format!("cannot list {image}: {error}"))?;
        if !output.success() {
            return Err(format!("`{cmd}` failed: {}", output.tail));
        }
        Ok(summarize_listing(stamp, &output.stdout))
    }
}

fn inspect_image(
    host: &Host,
    family: Option<Family>,
    cache: &InitramfsCache,
    release: &str,
    image: &str,
    blacklist_files: &[String],
) -> InitramfsImage {
    match cache.listing(host, family, image) {
        Ok(listing) => InitramfsImage {
            path: image.to_string(),
            kernel: release.to_string(),
            contains_nouveau: Some(listing.nouveau_module),
            blacklist_files: blacklist_files
                .iter()
                .filter(|f| in_image(&listing, f))
                .cloned()
                .collect(),
            reason: None,
        },
        Err(reason) => InitramfsImage {
            path: image.to_string(),
            kernel: release.to_string(),
            contains_nouveau: None,
            blacklist_files: Vec::new(),
            reason: Some(reason),
        },
    }
}

/// Whether host file `path` (a modprobe.d file) is in the image: initramfs
/// generators copy /etc/modprobe.d and /lib/modprobe.d by name.
pub fn in_image(listing: &Listing, path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    listing
        .modprobe_files
        .iter()
        .any(|f| f == path || (f.rsplit('/').next() == Some(name) && f.contains("modprobe.d/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modprobe_conf_directives() {
        let file = parse_modprobe_conf(
            "/etc/modprobe.d/x.conf",
            "# keep nouveau away\nblacklist nouveau\noptions nouveau \\\n  modeset=0\nalias nvidia off\n",
        )
        .unwrap();
        assert!(file.blacklist && file.modeset_off && !file.install_disabled);
        assert!(parse_modprobe_conf("/x", "blacklist nvidiafb\n# blacklist nouveau\n").is_none());
        let file = parse_modprobe_conf("/x", "install nouveau /bin/false\n").unwrap();
        assert!(file.install_disabled);
    }

    #[test]
    fn cmdline_blacklists() {
        let words = cmdline_words(
            "BOOT_IMAGE=/vmlinuz ro modprobe.blacklist=floppy,nouveau rd.driver.blacklist=nouveau nouveau.modeset=0 quiet",
        );
        assert_eq!(
            words,
            [
                "modprobe.blacklist=floppy,nouveau",
                "rd.driver.blacklist=nouveau",
                "nouveau.modeset=0"
            ]
        );
        assert!(cmdline_words("console=ttyS0 quiet reboot=k").is_empty());
    }

    #[test]
    fn listings_from_both_listers() {
        let stamp = FileStamp {
            size: 1,
            mtime_ns: 1,
            inode: 1,
        };
        let debian = summarize_listing(
            stamp,
            "etc/modprobe.d\netc/modprobe.d/provision-nouveau.conf\nusr/lib/modules/6.1.0-56-amd64/kernel/drivers/gpu/drm/nouveau/nouveau.ko\n",
        );
        assert!(debian.nouveau_module);
        assert!(in_image(&debian, "/etc/modprobe.d/provision-nouveau.conf"));
        let dracut = summarize_listing(
            stamp,
            "-rw-r--r--   1 root     root           45 Jan  1 00:00 etc/modprobe.d/blacklist-nouveau.conf\n",
        );
        assert!(!dracut.nouveau_module);
        assert!(in_image(&dracut, "/etc/modprobe.d/blacklist-nouveau.conf"));
        assert!(!in_image(&dracut, "/etc/modprobe.d/other.conf"));
    }
}
