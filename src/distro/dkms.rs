//! DKMS as a package's maintainer script drives it, and as provision drives
//! it to build a module before the package is installed.
//!
//! Debian's `dh_dkms` writes a postinst that calls
//! `/usr/lib/dkms/common.postinst NAME VERSION /usr/share/NAME-dkms`. That
//! script loads `/usr/share/NAME-dkms/NAME-VERSION.dkms.tar.gz` with `dkms
//! ldtarball` when the file is there, and then skips the build of every
//! kernel `dkms status` shows built: the package step installs the module
//! provision built beforehand, in a scratch DKMS tree, and packed with `dkms
//! mktarball --binaries-only`.

use crate::host::{Cmd, Root};

/// Where provision builds: a DKMS tree and source tree of its own, so the
/// host's `/var/lib/dkms` and `/usr/src` change only when the package does.
pub const SCRATCH: &str = "/var/lib/provision/build";

/// The kernels whose headers are installed: `/lib/modules/K/build`
/// (Debian, Ubuntu, kernel-core's link) or `/usr/src/kernels/K` (EL's
/// kernel-devel).
pub fn kernels_with_headers(root: &Root) -> Vec<String> {
    let mut kernels: Vec<String> = root
        .read_dir("/lib/modules")
        .unwrap_or_default()
        .into_iter()
        .filter(|k| {
            [
                format!("/lib/modules/{k}/build/Makefile"),
                format!("/usr/src/kernels/{k}/Makefile"),
            ]
            .iter()
            .any(|makefile| {
                root.join_resolved(std::path::Path::new(makefile))
                    .is_ok_and(|real| real.is_file())
            })
        })
        .collect();
    kernels.sort();
    kernels
}

/// The `BUILD_EXCLUSIVE_*` rules of a module's `dkms.conf`: DKMS skips a
/// kernel they exclude (`dkms build` exits 77), so no module for it is no
/// failure. Bash `=~` (extended regular expressions) for the kernel and the
/// architecture, `CONFIG_X`/`!CONFIG_X` against the kernel's `.config`.
#[derive(Debug, Default)]
pub struct Exclusive {
    kernel: Option<regex::Regex>,
    arch: Option<regex::Regex>,
    config: Vec<String>,
}

impl Exclusive {
    /// The rules of `module` `version` as DKMS registered it
    /// (`/var/lib/dkms/M/V/source/dkms.conf`, else `/usr/src/M-V/dkms.conf`).
    /// A value DKMS would expand, or that is no valid expression, is left
    /// out: the check stays strict rather than skip a kernel by mistake.
    pub fn of(root: &Root, module: &str, version: &str) -> Exclusive {
        let text = [
            format!("/var/lib/dkms/{module}/{version}/source/dkms.conf"),
            format!("/usr/src/{module}-{version}/dkms.conf"),
        ]
        .iter()
        .find_map(|path| root.read_string(path).ok())
        .unwrap_or_default();
        Exclusive::parse(&text)
    }

    fn parse(text: &str) -> Exclusive {
        let mut rules = Exclusive::default();
        for line in text.lines().map(str::trim) {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if expands(value) {
                continue;
            }
            let pattern = || regex::Regex::new(value).ok();
            match key.trim() {
                "BUILD_EXCLUSIVE_KERNEL" => rules.kernel = pattern(),
                "BUILD_EXCLUSIVE_ARCH" => rules.arch = pattern(),
                "BUILD_EXCLUSIVE_CONFIG" => {
                    rules.config = value.split_whitespace().map(str::to_string).collect()
                }
                _ => {}
            }
        }
        rules
    }

    /// Whether DKMS builds for `kernel` on this machine.
    pub fn allows(&self, root: &Root, kernel: &str) -> bool {
        if self.kernel.as_ref().is_some_and(|re| !re.is_match(kernel)) {
            return false;
        }
        if self
            .arch
            .as_ref()
            .is_some_and(|re| !re.is_match(std::env::consts::ARCH))
        {
            return false;
        }
        if self.config.is_empty() {
            return true;
        }
        let Ok(config) = root.read_string(format!("/lib/modules/{kernel}/build/.config")) else {
            return true; // DKMS could not tell either; it builds
        };
        self.config.iter().all(|option| {
            let (negated, name) = match option.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, option.as_str()),
            };
            let set = config
                .lines()
                .any(|l| l == format!("{name}=y") || l == format!("{name}=m"));
            set != negated
        })
    }
}

/// Whether the shell would expand `value` (`${x}`, `$x`); a `$` that ends
/// it or comes before `)` or `|` is a regular expression's anchor.
fn expands(value: &str) -> bool {
    value
        .split('$')
        .skip(1)
        .any(|after| after.starts_with(|c: char| c == '{' || c == '_' || c.is_ascii_alphanumeric()))
}

/// What a `dh_dkms` maintainer script hands to `common.postinst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The DKMS module name (`nvidia-current`).
    pub name: String,
    /// The module version (`535.309.01`).
    pub version: String,
    /// Where `common.postinst` looks for a tarball (`/usr/share/nvidia-current-dkms`).
    pub tarball_root: String,
}

impl Handover {
    /// The tarball `common.postinst` loads instead of building.
    pub fn tarball(&self) -> String {
        tarball_in(&self.tarball_root, &self.name, &self.version)
    }
}

/// `DIR/NAME-VERSION.dkms.tar.gz`, the name `common.postinst` looks for.
pub fn tarball_in(dir: &str, name: &str, version: &str) -> String {
    format!("{dir}/{name}-{version}.dkms.tar.gz")
}

/// Reads a `dh_dkms` postinst: the module, its version, and the tarball
/// directory it passes to `common.postinst`. `None` when the script builds
/// some other way (then the package step builds, inside the window).
pub fn parse_postinst(text: &str) -> Option<Handover> {
    if !text.contains("common.postinst") {
        return None;
    }
    let mut vars: Vec<(String, String)> = Vec::new();
    let expand = |value: &str, vars: &[(String, String)]| {
        let mut out = value.trim_matches('"').to_string();
        for (key, val) in vars {
            out = out
                .replace(&format!("${{{key}}}"), val)
                .replace(&format!("${key}"), val);
        }
        out
    };
    for line in text.lines().map(str::trim) {
        if let Some((key, value)) = line.split_once('=')
            && key.starts_with("DKMS_")
            && key.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            let value = expand(value, &vars);
            vars.push((key.to_string(), value));
        }
    }
    let get = |key: &str| vars.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
    let call = text.lines().map(str::trim).find(|l| {
        l.starts_with("$DKMS_POSTINST ") || l.starts_with("/usr/lib/dkms/common.postinst ")
    })?;
    let args: Vec<String> = call
        .split_whitespace()
        .skip(1)
        .map(|a| expand(a, &vars))
        .collect();
    let tarball_root = args.get(2).filter(|a| a.starts_with('/'))?.clone();
    let name = get("DKMS_NAME")
        .cloned()
        .or_else(|| args.first().cloned())?;
    let version = get("DKMS_VERSION")
        .cloned()
        .or_else(|| args.get(1).cloned())?;
    (!name.contains('$') && !version.contains('$') && !tarball_root.contains('$')).then_some(
        Handover {
            name,
            version,
            tarball_root,
        },
    )
}

fn trees(cmd: Cmd, tree: &str, sources: &str) -> Cmd {
    cmd.args(["--dkmstree", tree, "--sourcetree", sources])
}

/// `dkms add` of the source under `sources` into the scratch `tree`.
pub fn add(handover: &Handover, tree: &str, sources: &str) -> Cmd {
    trees(
        Cmd::change("dkms").args(["add", "-m", &handover.name, "-v", &handover.version]),
        tree,
        sources,
    )
}

/// `dkms build` for one kernel, in the scratch trees.
pub fn build(handover: &Handover, kernel: &str, tree: &str, sources: &str) -> Cmd {
    trees(
        Cmd::change("dkms").args([
            "build",
            "-m",
            &handover.name,
            "-v",
            &handover.version,
            "-k",
            kernel,
        ]),
        tree,
        sources,
    )
}

/// `dkms mktarball --binaries-only` of what is built for `kernels`: in the
/// scratch trees when given, else the host's own.
pub fn mktarball(
    name: &str,
    version: &str,
    kernels: &[String],
    scratch: Option<(&str, &str)>,
    archive: &str,
) -> Cmd {
    let cmd = Cmd::change("dkms").args([
        "mktarball",
        "-m",
        name,
        "-v",
        version,
        "-k",
        &kernels.join(","),
        "--binaries-only",
        "--archive",
        archive,
    ]);
    match scratch {
        Some((tree, sources)) => trees(cmd, tree, sources),
        None => cmd,
    }
}

/// The end of a failed build's `make.log`: the lines that name an error
/// (make's `***` among them), else its last lines.
pub fn make_log_excerpt(log: &str, lines: usize) -> String {
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("error") || l.contains("Error") || l.contains("***"))
        .collect();
    let chosen: Vec<&str> = if errors.is_empty() {
        log.lines().collect()
    } else {
        errors
    };
    let start = chosen.len().saturating_sub(lines);
    chosen[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bookworm-security's nvidia-kernel-dkms 535.309.01-0+deb12u1, as
    /// `dpkg-deb -e` shows it.
    const DEBIAN_POSTINST: &str = r#"#!/bin/sh
set -e
# Automatically added by dh_dkms/3.0.10-8+deb12u1
DKMS_NAME=nvidia-current
DKMS_PACKAGE_NAME=$DKMS_NAME-dkms
DKMS_VERSION=535.309.01

postinst_found=0

case "$1" in
	configure)
		for DKMS_POSTINST in /usr/lib/dkms/common.postinst /usr/share/$DKMS_PACKAGE_NAME/postinst; do
			if [ -f $DKMS_POSTINST ]; then
				$DKMS_POSTINST $DKMS_NAME $DKMS_VERSION /usr/share/$DKMS_PACKAGE_NAME "" $2
				postinst_found=1
				break
			fi
		done
	;;
esac
"#;

    #[test]
    fn a_dh_dkms_postinst_names_the_tarball_it_would_load() {
        let handover = parse_postinst(DEBIAN_POSTINST).unwrap();
        assert_eq!(handover.name, "nvidia-current");
        assert_eq!(handover.version, "535.309.01");
        assert_eq!(
            handover.tarball(),
            "/usr/share/nvidia-current-dkms/nvidia-current-535.309.01.dkms.tar.gz"
        );
    }

    #[test]
    fn a_script_that_builds_by_itself_hands_nothing_over() {
        let own = "#!/bin/sh\nset -e\ndkms add -m nvidia -v 580.65.06\ndkms build -m nvidia -v 580.65.06\n";
        assert_eq!(parse_postinst(own), None);
        assert_eq!(parse_postinst(""), None);
    }

    #[test]
    fn build_exclusive_rules_skip_the_kernels_dkms_skips() {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("lib/modules/6.1.0-30-amd64/build");
        fs_err::create_dir_all(&build).unwrap();
        fs_err::write(build.join(".config"), "CONFIG_MODULES=y\nCONFIG_DRM=m\n").unwrap();
        let root = Root::new(dir.path()).unwrap();
        let rules = Exclusive::parse(
            "PACKAGE_NAME=\"nvidia\"\nBUILD_EXCLUSIVE_KERNEL=\"^(5\\.|6\\.1\\.)\"\n",
        );
        assert!(rules.allows(&root, "6.1.0-30-amd64"));
        assert!(rules.allows(&root, "5.10.0-33-amd64"));
        assert!(!rules.allows(&root, "6.12.9-amd64"));
        let config = Exclusive::parse("BUILD_EXCLUSIVE_CONFIG=\"CONFIG_DRM !CONFIG_XEN\"");
        assert!(config.allows(&root, "6.1.0-30-amd64"));
        let needs_xen = Exclusive::parse("BUILD_EXCLUSIVE_CONFIG=\"CONFIG_XEN\"");
        assert!(!needs_xen.allows(&root, "6.1.0-30-amd64"));
        let arch = Exclusive::parse("BUILD_EXCLUSIVE_ARCH=\"^(aarch64|ppc64le)$\"");
        assert_eq!(
            arch.allows(&root, "6.1.0-30-amd64"),
            std::env::consts::ARCH != "x86_64"
        );
        // What DKMS would expand is not guessed at: every kernel is checked.
        let expanded = Exclusive::parse("BUILD_EXCLUSIVE_KERNEL=\"^${kernelver}$\"");
        assert!(expanded.allows(&root, "6.12.9-amd64"));
    }

    #[test]
    fn the_excerpt_keeps_the_errors() {
        let log = "cc a.c\ncc b.c\nb.c:3: error: unknown type\nmake: *** Error 2\nleaving\n";
        assert_eq!(
            make_log_excerpt(log, 5),
            "b.c:3: error: unknown type\nmake: *** Error 2"
        );
        assert_eq!(make_log_excerpt("one\ntwo\nthree", 2), "two\nthree");
    }
}
