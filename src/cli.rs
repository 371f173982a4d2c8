//! Command-line definitions (clap). The contract other tools rely on:
//! `detect | plan | apply | rollback | compat | doctor`, each with `--root`
//! and `--json`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate as provision;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (nothing was left half-changed)
  2  changes pending (plan --detailed-exitcode only)
  3  failure, and the automatic undo could not restore everything
  64 usage error: the command line is wrong, nothing was read or run
A closed stdout (`provision detect | head`) ends the output quietly.";

#[derive(Debug, Parser)]
#[command(
    name = "provision",
    version,
    about = "Turns a host into a working NVIDIA GPU node from a TOML plan, and upgrades it without surprises.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Treat DIR as the host's `/`: files are read and written under it and
    /// commands run chrooted into it.
    #[arg(long, value_name = "DIR", global = true)]
    pub root: Option<PathBuf>,
    /// Print one JSON document on stdout instead of the human report.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The release a bundle is made for and where its packages come from.
#[derive(Args, Debug)]
pub struct BundleFor {
    /// The release to bundle for, as `detect` names it: debian-12,
    /// ubuntu-24.04, ...; rhel-9 for the RHEL family (default: the
    /// --host documents' release).
    #[arg(
        long = "for",
        value_name = "ID-VERSION",
        required_unless_present = "hosts"
    )]
    pub release: Option<String>,
    /// A host to bundle for: its `provision detect --json --packages`
    /// document, carried out of the site (repeatable). The bundle carries
    /// the headers of every kernel those hosts have and what they lack,
    /// nothing they already have at the version needed.
    #[arg(long = "host", value_name = "DETECT.json")]
    pub hosts: Vec<PathBuf>,
    #[arg(long, default_value = "x86_64", value_parser = ["x86_64", "sbsa"])]
    pub arch: String,
    /// A kernel to carry headers for (repeatable; default: the
    /// release's current kernel).
    #[arg(long = "kernel", value_name = "RELEASE")]
    pub kernels: Vec<String>,
    /// The distribution's repositories: Debian/Ubuntu, its archive
    /// (default: the official one); RHEL family (repeatable), dnf base
    /// URLs of BaseOS, AppStream, EPEL (default: NVIDIA's repository
    /// only).
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// RHEL family: an ASCII-armored key that signs the --mirror
    /// rpms (repeatable; RPM-GPG-KEY-redhat-release, ...).
    #[arg(long = "mirror-key", value_name = "FILE")]
    pub mirror_keys: Vec<PathBuf>,
}

impl From<BundleFor> for crate::bundle::build::Sources {
    fn from(target: BundleFor) -> Self {
        crate::bundle::build::Sources {
            release: target.release.unwrap_or_default(),
            hosts: target.hosts,
            arch: target.arch,
            kernels: target.kernels,
            mirrors: target.mirrors,
            mirror_keys: target.mirror_keys,
        }
    }
}

/// Serve the host from an offline bundle.
#[derive(Debug, Clone, Args)]
pub struct BundleArgs {
    /// The bundle (`provision bundle`) to serve packages from; overrides
    /// [repositories] bundle.
    #[arg(long, value_name = "FILE.tar")]
    pub bundle: Option<PathBuf>,
    /// The manifest's sha256 as `provision bundle` printed it: a bundle
    /// with another is refused.
    #[arg(long, value_name = "HASH", requires = "bundle")]
    pub bundle_sha256: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report what the host has, layer by layer: OS, GPUs, nouveau, kernel
    /// driver, user-mode driver, toolkits, environment, holders, packages.
    Detect {
        #[command(flatten)]
        common: Common,
        /// Also list initramfs images whose listing is not cached (slower).
        #[arg(long)]
        initramfs: bool,
        /// Also ask the package manager which repository each GPU package
        /// came from (slower).
        #[arg(long)]
        origins: bool,
        /// Also list every installed package (`installed` in the JSON):
        /// what `provision bundle --host` reads.
        #[arg(long, requires = "json")]
        packages: bool,
    },
    /// Show what `apply` would change. Never changes anything.
    Plan {
        /// The plan file (TOML).
        plan: PathBuf,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        bundle: BundleArgs,
        /// Exit 2 when changes are pending (0 when none).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Make the host match the plan, journaling every change. When the
    /// plan replaces the driver under a loaded module, the maintenance
    /// window ([upgrade]) drains the node, swaps the module live or leaves
    /// it to a reboot, and verifies. After that reboot the same apply (or
    /// provision-resume.service) finishes the generation.
    Apply {
        plan: PathBuf,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        bundle: BundleArgs,
        /// Wait up to SECONDS for another run's lock (0: fail at once).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        lock_timeout: u64,
    },
    /// Make an offline bundle: every package PLAN needs on a host of one
    /// release that a minimal install lacks, resolved by apt or dnf against
    /// that release's repositories (and NVIDIA's, or the mirrors), as a
    /// local repository and a manifest in one tar. Prints the manifest's
    /// sha256, which `--bundle-sha256` checks on the air-gapped host.
    Bundle {
        plan: PathBuf,
        #[command(flatten)]
        target: BundleFor,
        /// Where to write the bundle.
        #[arg(short = 'o', long = "output", value_name = "FILE.tar")]
        output: PathBuf,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check the host as it is, read-only: the module and user space agree,
    /// GPUs bound, nvidia-smi, and CUDA computing on every GPU (through the
    /// running driver's libcuda: no toolkit needed). Exit 0 healthy, 1 not:
    /// a Slurm HealthCheckProgram, an Ansible check, a cron job.
    Verify {
        #[command(flatten)]
        common: Common,
        /// Leave out the compute check (hosts without a real GPU).
        #[arg(long)]
        no_compute: bool,
    },
    /// Print the node's metrics in Prometheus' text format (the driver's
    /// layers, GPUs, the last generation, reboot pending, doctor, verify,
    /// drift from the last plan), or write them for node_exporter's
    /// textfile collector.
    Metrics {
        #[command(flatten)]
        common: Common,
        /// Write DIR/provision.prom atomically instead of printing (DIR in
        /// the root; node_exporter's --collector.textfile.directory).
        #[arg(long, value_name = "DIR")]
        textfile: Option<PathBuf>,
    },
    /// Undo the most recent applied generation (a driver swapped back is
    /// reloaded, or left to a reboot).
    Rollback {
        #[command(flatten)]
        common: Common,
        /// Wait up to SECONDS for another run's lock (0: fail at once).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        lock_timeout: u64,
    },
    /// List the generations: state (applied, awaiting-reboot, failed,
    /// rolled-back), plan and its hash, times.
    History {
        #[command(flatten)]
        common: Common,
    },
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (roff: provision.1 and one per subcommand) into
    /// DIR, for packaging.
    #[command(hide = true)]
    Manpage { dir: PathBuf },
    /// Download a file and verify it against its sha256 (resumable, cached):
    /// what runfile installs use, and a way to seed an air-gapped cache.
    Fetch {
        url: String,
        /// The expected sha256 (64 hexadecimal digits).
        #[arg(long)]
        sha256: String,
        /// The download cache.
        #[arg(long, default_value = provision::fetch::DEFAULT_CACHE)]
        cache: PathBuf,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Explain the host: the three version numbers, then every problem
    /// found with its evidence and a remedy.
    #[command(after_help = "Exit codes: 0 when no finding is an error, 1 otherwise.")]
    Doctor {
        #[command(flatten)]
        common: Common,
    },
    /// Which driver branch and flavour this host should get, with the
    /// reasons and the alternatives (what `branch = "recommended"` picks).
    #[command(
        after_help = "Exit codes: 0 with a recommendation, 1 when no branch serves the host."
    )]
    Recommend {
        /// The toolkit the branch must run natively (default: /usr/local/cuda's).
        #[arg(long)]
        cuda: Option<String>,
        /// Recommend for these GPUs (10de:2330, 0x2330 or a name; repeat for
        /// several) instead of the host's.
        #[arg(long)]
        gpu: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Will this CUDA release (or PyTorch wheel) run on this driver and GPU?
    /// Without --driver: every toolkit and compat package of the host.
    #[command(
        after_help = "Exit codes: 0 for any verdict but incompatible, 1 for incompatible or a bad question."
    )]
    Compat {
        /// Driver release (580.95.05) or branch (580, read as its newest release).
        #[arg(long)]
        driver: Option<String>,
        /// CUDA release: 12.8 (its GA), 12.8.1 (Update 1) or a full version (12.8.93).
        /// With --torch latest (or a release): the newest torch with a wheel
        /// for that CUDA line.
        #[arg(long)]
        cuda: Option<String>,
        /// PyTorch wheel (2.9.1+cu130), or a release (2.9.1, 2.9, latest, or a
        /// torchvision/torchaudio version): every CUDA variant of it, judged.
        #[arg(long)]
        torch: Option<String>,
        /// GPU: 10de:2330, 0x2330 or a name such as "H100 SXM5" or "RTX 4090".
        #[arg(long)]
        gpu: Option<String>,
        /// Kernel-module flavour.
        #[arg(long, value_parser = ["open", "proprietary"])]
        flavor: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}
