//! `source = "runfile"`: NVIDIA's installers fetched from loopback,
//! verified, run silently with the flags the plan implies in the Debian
//! rootfs, and uninstalled on rollback. The stand-ins behave like the real
//! ones where provision can tell: they take the same flags, put libcuda and
//! the toolkit where the real ones do, run ldconfig, and leave their
//! uninstallers (nvidia-uninstall, cuda-uninstaller).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::support::http::Server;
use crate::support::{Rootfs, assert_same_tree, plan_file, provision};

const TRACKED: &[&str] = &[
    "etc",
    "boot",
    "usr/bin",
    "usr/local",
    "usr/lib/x86_64-linux-gnu",
];
const DRIVER: &str = "580.95.05";

/// A real tiny ELF shared object (so ldconfig caches it), base64.
fn elf(dir: &Path, soname: &str) -> String {
    let source = dir.join("empty.c");
    fs_err::write(&source, "int provision_test_symbol(void) { return 0; }\n").unwrap();
    let out = dir.join(format!("{soname}.elf"));
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-nostdlib"])
        .arg(format!("-Wl,-soname,{soname}"))
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("gcc");
    assert!(status.success());
    base64::engine::general_purpose::STANDARD.encode(fs_err::read(&out).unwrap())
}

struct Runfiles {
    dir: tempfile::TempDir,
    server: Server,
    cache: tempfile::TempDir,
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(fs_err::read(path).unwrap()))
}

impl Runfiles {
    fn new() -> Runfiles {
        let dir = tempfile::tempdir().unwrap();
        let libcuda = elf(dir.path(), "libcuda.so.1");
        let cudart = elf(dir.path(), "libcudart.so.12");
        let lib = "/usr/lib/x86_64-linux-gnu";
        fs_err::write(
            dir.path().join(format!("NVIDIA-Linux-x86_64-{DRIVER}.run")),
            format!(
                r#"#!/bin/sh
# NVIDIA-Linux-x86_64-{DRIVER}.run (test stand-in for the makeself installer)
set -e
touch /etc/runfile-was-executed
echo "$*" >> /var/log/nvidia-installer-args.log
mkdir -p {lib} /usr/bin /var/lib/dkms/nvidia/{DRIVER}
base64 -d > {lib}/libcuda.so.{DRIVER} <<'ELF'
{libcuda}
ELF
ln -sf libcuda.so.{DRIVER} {lib}/libcuda.so.1
cat > /usr/bin/nvidia-uninstall <<'UNINSTALL'
#!/bin/sh
rm -f {lib}/libcuda.so.{DRIVER} {lib}/libcuda.so.1 /etc/runfile-was-executed
rm -rf /var/lib/dkms/nvidia/{DRIVER}
rm -f /usr/bin/nvidia-uninstall
ldconfig
UNINSTALL
chmod 755 /usr/bin/nvidia-uninstall
ldconfig
"#
            ),
        )
        .unwrap();
        let cuda = "/usr/local/cuda-12.8";
        fs_err::write(
            dir.path().join("cuda_12.8.1_570.124.06_linux.run"),
            format!(
                r#"#!/bin/sh
# cuda_12.8.1_570.124.06_linux.run (test stand-in)
set -e
echo "$*" >> /var/log/cuda-installer-args.log
case " $* " in *" --driver "*) echo "the bundled driver must not be installed" >&2; exit 3 ;; esac
mkdir -p {cuda}/bin {cuda}/targets/x86_64-linux/lib
base64 -d > {cuda}/targets/x86_64-linux/lib/libcudart.so.12.8.90 <<'ELF'
{cudart}
ELF
ln -sf libcudart.so.12.8.90 {cuda}/targets/x86_64-linux/lib/libcudart.so.12
printf '#!/bin/sh\necho "Cuda compilation tools, release 12.8, V12.8.93"\n' > {cuda}/bin/nvcc
printf '{{"cuda": {{"name": "CUDA SDK", "version": "12.8.1"}}}}\n' > {cuda}/version.json
printf '#!/bin/sh\nrm -rf {cuda}\n' > {cuda}/bin/cuda-uninstaller
chmod 755 {cuda}/bin/nvcc {cuda}/bin/cuda-uninstaller
"#
            ),
        )
        .unwrap();
        let server = Server::serve(dir.path());
        Runfiles {
            dir,
            server,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn plan(&self, driver_sha: &str) -> String {
        let driver = format!("NVIDIA-Linux-x86_64-{DRIVER}.run");
        let toolkit = "cuda_12.8.1_570.124.06_linux.run";
        format!(
            "[driver]\nversion = \"{DRIVER}\"\nflavor = \"open\"\nsource = \"runfile\"\nrunfile = \"{}\"\nsha256 = \"{driver_sha}\"\n\
             [toolkit]\nversion = \"12.8\"\nrunfile = \"{}\"\nsha256 = \"{}\"\n\
             [environment]\npath = true\nloader = \"ld.so.conf\"\n",
            self.server.url(&driver),
            self.server.url(toolkit),
            sha256(&self.path(toolkit)),
        )
    }

    fn run(&self, args: &[&str]) -> crate::support::Run {
        let output = Command::new(env!("CARGO_BIN_EXE_provision"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("PROVISION_CACHE", self.cache.path())
            .output()
            .unwrap();
        crate::support::Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

#[test]
fn runfiles_install_verified_with_the_plans_flags_reapply_is_a_no_op_and_rollback_uninstalls() {
    let files = Runfiles::new();
    let rootfs = Rootfs::new();
    let dir = tempfile::tempdir().unwrap();
    let driver_sha = sha256(&files.path(&format!("NVIDIA-Linux-x86_64-{DRIVER}.run")));
    let plan = plan_file(dir.path(), "runfile.toml", &files.plan(&driver_sha));
    let before = rootfs.tree(TRACKED);

    let planned = files.run(&[
        "plan",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(planned.code, 0, "{planned:?}");
    let report = planned.json();
    let steps = report["steps"].as_array().unwrap();
    let driver = steps.iter().find(|s| s["id"] == "runfile:driver").unwrap();
    assert_eq!(driver["action"], "create");
    assert!(
        driver["commands"]
            .to_string()
            .contains("--silent --dkms --kernel-module-type=open"),
        "{driver:#}"
    );
    assert_same_tree(&before, &rootfs.tree(TRACKED), "plan");

    let applied = files.run(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let args = rootfs.read("/var/log/nvidia-installer-args.log");
    let kernel = rootfs.kernel();
    assert_eq!(
        args.trim(),
        format!(
            "--silent --dkms --kernel-module-type=open --kernel-name={}",
            kernel
        ),
        "an image's own kernel, not the build machine's"
    );
    let toolkit_args = rootfs.read("/var/log/cuda-installer-args.log");
    assert_eq!(
        toolkit_args.trim(),
        "--silent --toolkit --toolkitpath=/usr/local/cuda-12.8",
        "the toolkit alone, never the bundled driver"
    );
    let facts = provision(&["detect", "--root", rootfs.arg(), "--json"]).json();
    assert_eq!(facts["user_driver"]["version"], DRIVER);
    assert_eq!(
        facts["toolkits"]["installed"][0]["path"],
        "/usr/local/cuda-12.8"
    );
    assert_eq!(facts["toolkits"]["installed"][0]["release"], "12.8.1");
    let shell = rootfs.chroot(&["bash", "-lc", "command -v nvcc"]);
    assert_eq!(shell.trim(), "/usr/local/cuda-12.8/bin/nvcc");
    // The download stayed in the shared cache, under its hash.
    assert!(files.cache.path().join(&driver_sha).is_file());

    let again = files.run(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    let again = again.json();
    assert_eq!(again["changed"], false, "{again:#}");
    assert_eq!(
        rootfs
            .read("/var/log/nvidia-installer-args.log")
            .lines()
            .count(),
        1,
        "the installer ran once"
    );

    let rolled = files.run(&["rollback", "--root", rootfs.arg(), "--json"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_same_tree(&before, &rootfs.tree(TRACKED), "rollback");
    assert!(!rootfs.path().join("usr/local/cuda-12.8").exists());
}

#[test]
fn a_runfile_whose_hash_differs_is_never_executed() {
    let files = Runfiles::new();
    let rootfs = Rootfs::new();
    let dir = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let plan = plan_file(dir.path(), "runfile.toml", &files.plan(&wrong));
    let before = rootfs.tree(TRACKED);
    let run = files.run(&[
        "apply",
        plan.to_str().unwrap(),
        "--root",
        rootfs.arg(),
        "--json",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    let msg = run.json()["msg"].as_str().unwrap().to_string();
    let actual = sha256(&files.path(&format!("NVIDIA-Linux-x86_64-{DRIVER}.run")));
    assert!(
        msg.contains(&wrong) && msg.contains(&actual),
        "both hashes named: {msg}"
    );
    assert!(
        !rootfs.path().join("etc/runfile-was-executed").exists(),
        "the unverified runfile ran"
    );
    assert_same_tree(&before, &rootfs.tree(TRACKED), "refused runfile");
    let leftovers: Vec<_> = fs_err::read_dir(files.cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "nothing unverified stays cached: {leftovers:?}"
    );
}
