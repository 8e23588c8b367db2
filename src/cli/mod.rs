//! The command line, as clap derive types. Parsing only: the work is in
//! [`crate::commands`].

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::ColorChoice;

/// kiln turns racks of new GPU servers into validated cloud capacity.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Data on stdout as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// When to use colour (NO_COLOR is respected with `auto`).
    #[arg(long, value_enum, default_value_t, global = true, value_name = "WHEN")]
    pub color: ColorChoice,
    /// The site inventory.
    #[arg(
        short,
        long,
        env = "KILN_INVENTORY",
        global = true,
        value_name = "FILE"
    )]
    pub inventory: Option<PathBuf>,
}

/// kiln's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check, show or generate site inventories.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// List or show hardware profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Judge one captured tool output offline, as the pipeline does.
    Judge(JudgeArgs),
    /// Burn in this machine's GPUs against a hardware profile, through
    /// the burn-in stage's own steps: a burn-in station, or a GPU node
    /// testing itself. Remote nodes: `kiln provision --stages burnin`.
    Burnin(BurninArgs),
    /// Measure kiln's own speed and memory.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a virtual rack: Redfish BMCs and SSH hosts that behave like
    /// real servers, on loopback addresses.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Drive the nodes' BMCs over Redfish: status, power, boot, virtual
    /// media, inventory, sensors, certificate trust.
    #[command(subcommand)]
    Bmc(BmcCommand),
    /// Check the selected nodes' firmware and BIOS against their hardware
    /// profiles' baselines, or update them to it.
    #[command(subcommand)]
    Firmware(FirmwareCommand),
    /// Run a command on every selected node over SSH; output is streamed
    /// prefixed by node, then grouped (like `dshbak -c`).
    Exec(ExecArgs),
    /// Copy a file to every selected node (or, with --download, from them).
    Copy(CopyArgs),
    /// SSH helpers: record host keys, wait for nodes to answer.
    #[command(subcommand)]
    Ssh(SshCommand),
    /// Take the selected nodes through the pipeline (preflight, image,
    /// drivers, burnin, nccl, handoff), journaled so a killed run resumes.
    Provision(ProvisionArgs),
    /// List or show the runs recorded in the state folder's journal.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// The whole pipeline on a virtual rack of 16 simulated HGX nodes, with
    /// a few injected faults: no hardware, no root, no network needed.
    Demo(DemoArgs),
    /// Image profiles and imaging: list, show, verify an installer,
    /// deploy an OS onto nodes through their BMCs.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The NVIDIA driver stack: install it at the hardware profile's pinned
    /// versions and verify it, or verify only.
    #[command(subcommand)]
    Drivers(DriversCommand),
    /// Run the boot server alone: installer images, and the seeds of the
    /// selected nodes behind their tokens.
    Serve(ServeArgs),
    /// Preview one installer template rendered for a node.
    Render(RenderArgs),
    /// Render a run's report: JSON, JUnit XML, Markdown, or one HTML file
    /// with plots.
    Report(ReportArgs),
    /// The site's signing key for acceptance records.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check a signed acceptance record and print its verdicts (exit 0
    /// valid, 1 invalid or tampered, 2 unreadable, 4 intact but its signer
    /// not checked against a trusted key).
    Verify(VerifyArgs),
}

/// `kiln keys`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the site's Ed25519 key in the state folder (0600) and print
    /// its public half, for the receivers of handoff records.
    Init {
        /// Replace an existing key (records signed with it will no longer
        /// verify against the new one).
        #[arg(long)]
        force: bool,
    },
    /// Print the site's public key.
    Show,
}

/// `kiln verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The signed record (`.kiln/runs/RUN/NODE/acceptance.json`).
    #[arg(value_name = "RECORD")]
    pub record: PathBuf,
    /// The site's public key: a `site-key.pub` file or its base64. Without
    /// it, the state folder's key when an inventory is given; with neither,
    /// the record is checked against the key inside it, which proves it
    /// intact but not who signed it, and kiln exits 4.
    #[arg(long, value_name = "PUB")]
    pub key: Option<String>,
    /// Check only that the record is intact (against the key inside it)
    /// and exit 0 when it is: anyone can sign a record with a key of their
    /// own, so this says nothing about who did.
    #[arg(long, conflicts_with = "key")]
    pub integrity_only: bool,
}

/// `kiln demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The folder for the demo's inventory, journal, raw outputs and report
    /// (default: kiln-demo in the temporary folder; cleared first).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Simulated seconds per real second (installs, reboots, burn-in).
    #[arg(long, value_name = "X", default_value_t = 60.0)]
    pub time_scale: f64,
    /// Inject these faults instead of the demo's own.
    #[arg(long, value_name = "FILE", conflicts_with = "no_faults")]
    pub faults: Option<PathBuf>,
    /// Inject no faults: every node should be accepted.
    #[arg(long)]
    pub no_faults: bool,
    /// Image real machines instead: QEMU/OVMF virtual machines behind
    /// sushy-tools Redfish BMCs (libvirt), Debian 12 written by kiln's
    /// deploy environment (needs root, Debian's qemu-system-x86, ovmf,
    /// libvirt and mmdebstrap; `scripts/vmrack/deps.sh` installs them).
    #[arg(long, conflicts_with_all = ["faults", "no_faults", "time_scale"])]
    pub vm: bool,
    /// With --vm: how many machines (the last of three or more is given a
    /// root-device hint that matches no disk, to show a failure).
    #[arg(long, value_name = "N", default_value_t = 3, requires = "vm")]
    pub vms: u8,
}

/// What `kiln provision` and `kiln firmware update` share: the nodes, how
/// hard the run may push their BMCs, and the run's boot server.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which nodes: name globs and ranges (r01-n[01-08]), rack:NAME,
    /// label=VALUE; `,` for either, `&` for both, `!` for not.
    #[arg(short, long, value_name = "EXPR")]
    pub select: Option<String>,
    /// Allow destructive stages (firmware, image, drivers) on nodes marked
    /// `in_service`.
    #[arg(long)]
    pub allow_in_service: bool,
    /// Nodes worked on at once (default: the inventory's limits.concurrency).
    #[arg(short = 'c', long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Longest wait for one Redfish request.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub bmc_timeout: std::time::Duration,
    /// The run's boot server (installers, deploy environment, firmware
    /// packages): address and port (port 0: any free one).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8080")]
    pub bind: std::net::SocketAddr,
    /// The URL nodes and BMCs reach the boot server at (needed when
    /// binding 0.0.0.0).
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
}

/// `kiln provision`
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The nodes, BMC limits and boot server.
    #[command(flatten)]
    pub run: RunArgs,
    /// The stages to run, comma-separated (run in pipeline order).
    #[arg(long, value_name = "LIST")]
    pub stages: Option<String>,
    /// Stop after this stage.
    #[arg(long, value_name = "STAGE")]
    pub until: Option<String>,
    /// Show the plan and check credentials and trust; touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue a run (the newest if none is named): finished steps are
    /// not repeated, nodes with a verdict keep it.
    #[arg(
        long,
        value_name = "RUN",
        num_args = 0..=1,
        default_missing_value = "",
        conflicts_with_all = ["select", "stages", "until"]
    )]
    pub resume: Option<String>,
    /// Stop starting new steps at the first node that fails.
    #[arg(long)]
    pub fail_fast: bool,
    /// The installer image for every node (default: each image profile's
    /// path, or its URL's file name in --iso-dir).
    #[arg(long, value_name = "FILE")]
    pub iso: Option<PathBuf>,
    /// Where the images and the deploy environment are.
    #[command(flatten)]
    pub dirs: ImageDirs,
    /// The URL BMCs reach the boot server at, for virtual media, when it
    /// differs from --advertise (a separate management network).
    #[arg(long, value_name = "URL")]
    pub advertise_bmc: Option<String>,
    /// Reimage nodes that already run their profile's OS.
    #[arg(long)]
    pub reimage: bool,
    /// Longest wait from power-on to the installer's install-finished
    /// call-back.
    #[arg(long, value_name = "DURATION", default_value = "60m", value_parser = parse_duration)]
    pub install_timeout: std::time::Duration,
    /// Longest wait from power-on to the deploy environment's first call
    /// (disk-image profiles): a node that never boots it fails then.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    pub boot_timeout: std::time::Duration,
}

/// `kiln runs …`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Every run, newest first, with its node counts.
    List,
    /// One run (the newest if none is named): each node's verdict and
    /// reasons; with --json the whole record.
    Show {
        /// The run's id.
        run: Option<String>,
    },
}

/// `kiln report`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run (default: the newest in the inventory's journal).
    #[arg(value_name = "RUN", conflicts_with = "record")]
    pub run: Option<String>,
    /// Read the run record from this JSON file (as `--format json` or
    /// `kiln runs show --json` writes it) instead of the journal.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// The report's format (default: md, or json with --json).
    #[arg(short, long, value_enum, value_name = "FORMAT")]
    pub format: Option<crate::report::Format>,
    /// Write the report to this file instead of stdout (replaced if it
    /// exists).
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `kiln image …`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the image profiles.
    List,
    /// Show one image profile, as written.
    Show {
        /// The profile's name.
        name: String,
    },
    /// Stream an installer image and check its SHA-256 against the profile.
    Verify {
        /// The profile's name.
        name: String,
        /// Where the image is (default: the profile's path, or its URL's
        /// file name in --iso-dir).
        #[arg(long, value_name = "FILE")]
        iso: Option<PathBuf>,
        /// Folder holding downloaded installer images.
        #[arg(long, value_name = "DIR", env = "KILN_ISO_DIR")]
        iso_dir: Option<PathBuf>,
    },
    /// Image the selected nodes: power off, insert the installer, boot it
    /// once, wait for the install to call back and SSH to answer with the
    /// host key kiln gave the node, boot from disk, verify the OS.
    Deploy(Box<DeployArgs>),
    /// Build, from Debian's packages, the deploy environment (kernel and
    /// busybox initramfs whose agent writes disk images; ISO and files)
    /// or the debian-12 disk image. Needs Debian's mmdebstrap, xorriso,
    /// grub-efi-amd64-bin, mtools, dosfstools, fdisk, e2fsprogs, cpio.
    Build {
        /// What to build.
        #[arg(value_enum)]
        what: BuildTarget,
        /// Output folder (default: the state folder's `deploy-env/` or
        /// `images/`, where `provision` and `image deploy` look).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// What `kiln image build` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BuildTarget {
    /// The deploy environment: vmlinuz, initrd.img, deploy.iso.
    DeployEnv,
    /// A small Debian 12 UEFI disk image with cloud-init:
    /// debian-12.raw.gz and its .sha256.
    #[value(name = "debian-12")]
    Debian12,
}

/// `kiln drivers …`
#[derive(Debug, Subcommand)]
pub enum DriversCommand {
    /// Install the driver stack where it is not exactly at the pinned
    /// versions (from the inventory's `mirror` when set), reboot only when
    /// the new driver cannot be loaded in place, then verify.
    Install(DriversArgs),
    /// Verify the driver stack against the hardware profile; change nothing.
    Verify(DriversArgs),
}

/// `kiln drivers install|verify`
#[derive(Debug, Args)]
pub struct DriversArgs {
    /// Which nodes: name globs and ranges (r01-n[01-08]), rack:NAME,
    /// label=VALUE; `,` for either, `&` for both, `!` for not.
    #[arg(short, long, value_name = "EXPR")]
    pub select: Option<String>,
    /// Nodes worked on at once (default: the inventory's limits.concurrency).
    #[arg(short = 'c', long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Longest run of the install script on one node.
    #[arg(long, value_name = "DURATION", default_value = "60m", value_parser = parse_duration)]
    pub install_timeout: std::time::Duration,
    /// Longest wait from a reboot to the node running the new driver.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub reboot_timeout: std::time::Duration,
    /// Folder for the install logs and probe outputs (default: a new
    /// folder under the state folder's `drivers/`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Install on nodes marked in service too (old name: `--force`).
    #[arg(long, alias = "force")]
    pub allow_in_service: bool,
}

/// Where imaging finds its files, as `kiln provision` and `kiln image
/// deploy` both take them.
#[derive(Debug, Args)]
pub struct ImageDirs {
    /// Folder holding downloaded installer and disk images.
    #[arg(
        long,
        visible_alias = "image-dir",
        value_name = "DIR",
        env = "KILN_ISO_DIR"
    )]
    pub iso_dir: Option<PathBuf>,
    /// The deploy environment for disk-image profiles (`kiln image build
    /// deploy-env`; default: the state folder's `deploy-env/`).
    #[arg(long, value_name = "DIR", env = "KILN_DEPLOY_ENV")]
    pub deploy_env: Option<PathBuf>,
}

/// `kiln image deploy`
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Which nodes: name globs and ranges (r01-n[01-08]), rack:NAME,
    /// label=VALUE; `,` for either, `&` for both, `!` for not.
    #[arg(short, long, value_name = "EXPR")]
    pub select: Option<String>,
    /// The installer image to serve for every selected node (default: each
    /// node's profile's path, or its URL's file name in --iso-dir).
    #[arg(long, value_name = "FILE")]
    pub iso: Option<PathBuf>,
    /// Where the images and the deploy environment are.
    #[command(flatten)]
    pub dirs: ImageDirs,
    /// The boot server's address and port (port 0: any free one).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8080")]
    pub bind: std::net::SocketAddr,
    /// The URL nodes and BMCs reach the boot server at (default: the bound
    /// address; needed when binding 0.0.0.0).
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// The URL BMCs reach the boot server at, for virtual media, when it
    /// differs from --advertise (a separate management network).
    #[arg(long, value_name = "URL")]
    pub advertise_bmc: Option<String>,
    /// Longest wait from power-on to the deploy environment's first call
    /// (disk-image profiles).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    pub boot_timeout: std::time::Duration,
    /// Nodes imaged at once (default: the inventory's limits.concurrency).
    #[arg(short = 'c', long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Longest wait for one Redfish request.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Longest wait from power-on to the install-finished call-back.
    #[arg(long, value_name = "DURATION", default_value = "60m", value_parser = parse_duration)]
    pub install_timeout: std::time::Duration,
    /// Longest wait from the call-back to a verified SSH login.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub ssh_timeout: std::time::Duration,
    /// Longest wait for a graceful shutdown before power is forced off.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub graceful_timeout: std::time::Duration,
    /// Poll interval for BMC read-backs.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub poll: std::time::Duration,
    /// Reimage nodes that already run their profile's OS.
    #[arg(long)]
    pub reimage: bool,
    /// Allow imaging nodes marked in service (destroys what they run;
    /// old name: `--force`).
    #[arg(long, alias = "force")]
    pub allow_in_service: bool,
}

/// `kiln serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8080")]
    pub bind: std::net::SocketAddr,
    /// The URL nodes reach the server at (default: the bound address;
    /// needed when binding 0.0.0.0).
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// Serve every `*.iso` in this folder at /iso/NAME.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Also register these inventory nodes (seed and per-node installer
    /// image behind a token; their URLs are printed).
    #[arg(short, long, value_name = "EXPR")]
    pub select: Option<String>,
    /// The installer image for the registered nodes (default: each node's
    /// profile's).
    #[arg(long, value_name = "FILE")]
    pub iso: Option<PathBuf>,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
}

/// `kiln render`
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The node to render for (its name, user, MAC and image profile).
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// The template: user-data, meta-data, network-config, vendor-data,
    /// ks.cfg, or a template name (nocloud/user-data, ubuntu/autoinstall,
    /// rhel/kickstart, grub.cfg).
    pub template: String,
    /// Render for this image profile instead of the node's.
    #[arg(long, value_name = "PROFILE")]
    pub image: Option<String>,
}

/// How to reach the nodes: shared by `exec`, `copy` and `ssh`.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Which nodes: name globs and ranges (r01-n[01-08]), rack:NAME,
    /// label=VALUE; `,` for either, `&` for both, `!` for not.
    #[arg(short, long, value_name = "EXPR")]
    pub select: Option<String>,
    /// Nodes worked on at once.
    #[arg(short, long, value_name = "N", default_value_t = 64)]
    pub fanout: usize,
    /// Limit for connecting and logging in to one node.
    #[arg(long, value_name = "D", default_value = "15s", value_parser = crate::yaml::decode::parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// Trust and record host keys seen for the first time (TOFU). A changed
    /// key is still refused.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Run here instead, as the node kiln runs on (no inventory needed).
    #[arg(long, conflicts_with_all = ["select", "accept_new_host_keys"])]
    pub local: bool,
}

/// `kiln exec`
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Nodes and connection settings.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Kill the command (and everything it started) after this long.
    #[arg(short, long, value_name = "D", value_parser = crate::yaml::decode::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Run as root with sudo (password from KILN_SUDO_PASSWORD if asked).
    #[arg(long)]
    pub sudo: bool,
    /// The command, run by the login shell with LC_ALL=C (words are
    /// joined with spaces, as ssh does).
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `kiln copy`
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Nodes and connection settings.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Copy from the nodes: SOURCE is a path on each node, DEST a local
    /// folder that gets one `NODE/FILE` per node.
    #[arg(long)]
    pub download: bool,
    /// Read or write the remote file as root with sudo.
    #[arg(long)]
    pub sudo: bool,
    /// Limit for each node's copy.
    #[arg(short, long, value_name = "D", value_parser = crate::yaml::decode::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// A local file (upload) or a remote path (--download).
    pub source: String,
    /// A remote path (upload) or a local folder (--download).
    pub dest: String,
}

/// `kiln ssh …`
#[derive(Debug, Subcommand)]
pub enum SshCommand {
    /// Connect to each node and record its host key in kiln's store
    /// (`.kiln/ssh_known_hosts` beside the inventory) if it is not known
    /// yet: trust on first use, done explicitly.
    Trust(RemoteArgs),
    /// Wait until every node answers SSH (after a reboot), with backoff.
    Wait {
        /// Nodes and connection settings.
        #[command(flatten)]
        remote: RemoteArgs,
        /// Give up after this long.
        #[arg(long, value_name = "D", default_value = "10m", value_parser = crate::yaml::decode::parse_duration)]
        within: std::time::Duration,
    },
}

/// Which BMCs, and how hard to push them.
#[derive(Debug, Args)]
pub struct BmcTarget {
    /// Which nodes: name globs and ranges (r01-n[01-08]), rack:NAME,
    /// label=VALUE; `,` for either, `&` for both, `!` for not.
    #[arg(short, long, value_name = "EXPR")]
    pub select: Option<String>,
    /// BMCs worked on at once (default: the inventory's limits.concurrency).
    #[arg(short = 'c', long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Longest wait for one Redfish request (e.g. 30s).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|n| (n.trim(), *m)))
    .unwrap_or((t, 1));
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a size like 1GiB, 64MiB or 4096"))
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::yaml::decode::parse_duration(text)
}

/// `kiln firmware …`
#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Read each node's firmware inventory and BIOS and name what falls
    /// short of the baseline; exit 1 when some node does.
    Check(BmcTarget),
    /// Run the `preflight` and `firmware` stages on the selected nodes.
    Update(FirmwareUpdateArgs),
}

/// `kiln firmware update`
#[derive(Debug, Args)]
pub struct FirmwareUpdateArgs {
    /// The nodes, BMC limits and the boot server BMCs pull packages from.
    #[command(flatten)]
    pub run: RunArgs,
}

/// `kiln bmc …`
#[derive(Debug, Subcommand)]
pub enum BmcCommand {
    /// A table: vendor/model, power, health, BMC and BIOS firmware, GPUs
    /// the BMC sees, virtual media.
    Status(BmcTarget),
    /// Power on, off, cycle or reset, verified by reading the state back.
    /// Off, cycle and reset of a node marked in service need
    /// --allow-in-service.
    Power {
        /// What to do.
        #[arg(value_enum)]
        op: crate::bmc::ops::PowerOp,
        /// Allow off, cycle and reset on nodes marked in service (old
        /// name: `--force`).
        #[arg(long, alias = "force")]
        allow_in_service: bool,
        /// Longest wait for the power state to change (e.g. 2m).
        #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
        wait: std::time::Duration,
        /// Which BMCs.
        #[command(flatten)]
        target: BmcTarget,
    },
    /// Set the boot override (UEFI): next boot only, or persistent.
    Boot {
        /// The device.
        #[arg(value_enum)]
        device: crate::bmc::ops::BootDevice,
        /// Next boot only (the default).
        #[arg(long, conflicts_with = "persistent")]
        once: bool,
        /// Every boot until changed.
        #[arg(long)]
        persistent: bool,
        /// UEFI HTTP boot URI (with `http`).
        #[arg(long, value_name = "URL")]
        uri: Option<String>,
        /// Which BMCs.
        #[command(flatten)]
        target: BmcTarget,
    },
    /// Virtual media: insert an image, eject, or show the slots.
    #[command(subcommand)]
    Media(MediaCommand),
    /// Firmware versions and GPU inventory (serials, part numbers).
    Inventory(BmcTarget),
    /// Power draw and temperatures.
    Sensors(BmcTarget),
    /// Fetch each BMC's certificate and record its SHA-256 fingerprint.
    Trust {
        /// Replace a recorded fingerprint that changed (after a BMC reset
        /// or certificate renewal you have checked).
        #[arg(long)]
        replace: bool,
        /// Which BMCs.
        #[command(flatten)]
        target: BmcTarget,
    },
}

/// `kiln bmc media …`
#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Insert the image at URL into the virtual CD and wait until the BMC
    /// reports it inserted (anything else in the slot is ejected first).
    Insert {
        /// The image URL (http:// or https://), as the BMC will fetch it.
        url: String,
        /// Longest wait for the BMC to report the media (e.g. 5m).
        #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
        wait: std::time::Duration,
        /// Which BMCs.
        #[command(flatten)]
        target: BmcTarget,
    },
    /// Eject every inserted virtual medium, confirmed by reading back.
    Eject {
        /// Longest wait for the BMC to report the slot empty.
        #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
        wait: std::time::Duration,
        /// Which BMCs.
        #[command(flatten)]
        target: BmcTarget,
    },
    /// The virtual-media slots: where, how they insert, what they hold.
    Status(BmcTarget),
}

/// `kiln sim`
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve every selected node of the inventory until Ctrl-C. Prints the
    /// endpoints first (`--json`: one document).
    Up(SimUpArgs),
    /// Run a simulated hardware tool (used by the virtual rack's nodes).
    #[command(hide = true)]
    Tool(SimToolArgs),
}

/// `kiln sim up`
#[derive(Debug, Args)]
pub struct SimUpArgs {
    /// Which nodes: name globs and ranges (r01-n[01-08]), rack:NAME,
    /// label=VALUE; `,` for either, `&` for both, `!` for not.
    #[arg(short, long, value_name = "EXPR")]
    pub select: Option<String>,
    /// Faults to inject (YAML; see the README).
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// Simulated seconds per real second (installs, reboots, burn-in).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub time_scale: f64,
    /// BMC flavour: generic, dell, hpe, supermicro, lenovo, or mixed (by
    /// rack). A node label `kiln.sim/flavour` overrides it.
    #[arg(long, value_name = "NAME", default_value = "generic")]
    pub flavour: String,
    /// Start nodes installed and running, trusting this public key file
    /// (as if already imaged); without it nodes start blank and powered off.
    #[arg(long, value_name = "PUBKEY")]
    pub imaged: Option<PathBuf>,
    /// Serve only the BMCs (for BMC-level tests of very large sites).
    #[arg(long)]
    pub no_ssh: bool,
    /// Answer each line read on stdin with one JSON line, the BMC requests
    /// served so far per node (`{"requests": {"NODE": N, …}}`), so a
    /// benchmark driving the simulator from outside can count them.
    #[arg(long)]
    pub requests_on_stdin: bool,
}

/// `kiln sim tool`
#[derive(Debug, Args)]
pub struct SimToolArgs {
    /// Tool name.
    pub name: String,
    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Which tool produced the output to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JudgeKind {
    /// nccl-tests (all_reduce_perf, all_gather_perf, …).
    Nccl,
    /// wilicc/gpu-burn.
    GpuBurn,
    /// `dcgmi diag` (table or `-j` JSON).
    Dcgm,
    /// `nvidia-smi` (default table), `-q`, `-q -x` or `--query-gpu=… --format=csv`.
    NvidiaSmi,
    /// A kernel log (`dmesg`, `journalctl -k`): Xid and SXid lines.
    Dmesg,
    /// huggingface/gpu-fryer.
    GpuFryer,
    /// NVIDIA/nvbandwidth.
    Nvbandwidth,
    /// perftest's ib_write_bw.
    IbWriteBw,
    /// `nvidia-smi nvlink -s` or `dcgmi nvlink -s`.
    Nvlink,
    /// `nvidia-smi topo -m`.
    Topo,
    /// Azure HPC node health checks (azurehpc-health-checks) log.
    Aznhc,
}

/// `kiln judge`
#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// The tool that produced the output.
    #[arg(value_enum)]
    pub kind: JudgeKind,
    /// The captured output (`-` for stdin).
    pub file: PathBuf,
    /// Also apply this hardware profile's floors (without it, only the
    /// output's integrity is judged: errors, wrong values, crashes).
    #[arg(short, long, value_name = "NAME")]
    pub profile: Option<String>,
}

/// `kiln burnin`
#[derive(Debug, Args)]
pub struct BurninArgs {
    /// The hardware profile to judge against (built in, or in `profiles/`
    /// beside the inventory named by `-i`).
    #[arg(short, long, value_name = "NAME")]
    pub profile: String,
    /// Burn this long instead of the profile's duration (at least 10s).
    #[arg(short, long, value_name = "D", value_parser = crate::yaml::decode::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// The gpu_burn command line before its duration; gpu_burn reads its
    /// kernel from its working folder, e.g. `cd /opt/gpu-burn && ./gpu_burn -tc`.
    #[arg(long, value_name = "CMD", default_value = "gpu_burn -tc")]
    pub gpu_burn: String,
    /// Time between GPU telemetry samples during the burn (default 10s).
    #[arg(long, value_name = "D", value_parser = crate::yaml::decode::parse_duration)]
    pub sample_every: Option<std::time::Duration>,
    /// Where the captured outputs go, as `DIR/HOST/burnin/FILE`.
    #[arg(short, long, value_name = "DIR", default_value = "kiln-burnin")]
    pub out: PathBuf,
    /// Read the kernel log through sudo (`kernel.dmesg_restrict=1`).
    #[arg(long)]
    pub sudo_dmesg: bool,
}

/// `kiln inventory …`
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Validate the inventory and report every problem at once.
    Check,
    /// Show the resolved nodes, with every default applied.
    Show(ShowArgs),
    /// Write a synthetic site inventory to stdout (for tests and demos).
    Generate(GenerateArgs),
}

/// `kiln inventory show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Which nodes: name globs and ranges (r01-n[01-08]), rack:NAME,
    /// label=VALUE; `,` for either, `&` for both, `!` for not.
    #[arg(short, long, value_name = "EXPR")]
    pub select: Option<String>,
}

/// `kiln inventory generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of racks.
    #[arg(long, value_name = "R")]
    pub racks: u32,
    /// Nodes in each rack.
    #[arg(long, value_name = "N")]
    pub nodes_per_rack: u32,
    /// Site name.
    #[arg(long, default_value = "synthetic")]
    pub site: String,
    /// First BMC address; each node takes the next.
    #[arg(long, default_value = "10.10.0.1", value_name = "ADDR")]
    pub base_bmc: Ipv4Addr,
    /// BMC port for every node (default 443).
    #[arg(long, value_name = "PORT")]
    pub bmc_port: Option<u16>,
    /// First SSH address; each node takes the next.
    #[arg(long, default_value = "10.20.0.1", value_name = "ADDR")]
    pub base_ssh: Ipv4Addr,
    /// SSH port for every node (default 22).
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,
    /// Hardware profile for every node.
    #[arg(long, default_value = "hgx-h100-80gb-8x", value_name = "PROFILE")]
    pub hardware: String,
    /// Image profile for every node.
    #[arg(long, default_value = "ubuntu-24.04", value_name = "PROFILE")]
    pub image: String,
    /// Write to this file instead of stdout (refuses to overwrite).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `kiln profile …`
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// List the hardware profiles.
    List,
    /// Show one hardware profile, with the sources of its numbers.
    Show {
        /// The profile's name.
        name: String,
    },
}

/// `kiln bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// A whole simulated site (racks of 8) through `kiln provision
    /// --stages preflight`, power-on waves included, against one node
    /// alone plus its rack's wave waits; reports the ratio and peak memory.
    Fleet {
        /// Nodes in the site, rounded up to whole racks.
        #[arg(long, default_value_t = 12_500)]
        nodes: u32,
        /// Latency each simulated BMC adds to every response. 1 s is a
        /// brisk BMC of an HGX node (many take seconds per request); much
        /// lower, and kiln plus the simulators outrun a small machine's
        /// cores, which the report's `cpu_floor_ratio` shows.
        #[arg(long, value_name = "D", default_value = "1s", value_parser = parse_duration)]
        latency: std::time::Duration,
        /// Keep the scratch folder (generated site, journal of both runs)
        /// and print where it is, to look into step timings afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// The firmware stage on a virtual rack (racks of 8, a child `kiln sim`):
    /// BMC requests per node for a baseline check that updates nothing,
    /// and an update wave's wall time against one node alone times the
    /// rack's waves, measured in the same run.
    Firmware {
        /// Nodes below the baseline, rounded up to whole racks.
        #[arg(long, default_value_t = 1000)]
        nodes: u32,
        /// Nodes of a rack updating at once (`limits.firmware.per_rack`).
        #[arg(long, default_value_t = 4)]
        per_rack: usize,
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 1000.0)]
        time_scale: f64,
        /// BMCs on 127.NET.x.x (tests pick one no other test uses).
        #[arg(long, default_value_t = 178, hide = true)]
        net: u8,
    },
    /// Time checking a generated site against parsing the same YAML alone.
    Inventory {
        /// Nodes in the generated site (racks of 20).
        #[arg(long, default_value_t = 12_500)]
        nodes: u32,
        /// Timed repetitions; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
    /// Start a virtual rack in this process; report its start-up time and
    /// memory, and the time to reach every BMC once against reaching one.
    Sim {
        /// Nodes in the rack (racks of 32, BMCs from 127.30.0.1).
        #[arg(long, default_value_t = 12_500)]
        nodes: u32,
        /// Serve SSH too (nodes start installed; SSH from 127.40.0.1).
        #[arg(long)]
        ssh: bool,
        /// Requests in flight at once while reaching every BMC.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// `kiln bmc status` over simulated BMCs that answer slowly, against
    /// one BMC in the same run; checks the per-BMC request limit held.
    Bmc {
        /// Simulated BMCs (from 127.31.0.1).
        #[arg(long, default_value_t = 1000)]
        nodes: u32,
        /// Added to every BMC response.
        #[arg(long, default_value = "200ms", value_parser = parse_duration)]
        latency: std::time::Duration,
        /// BMCs worked on at once (default: all).
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Serve one file to many concurrent clients with kiln's boot server
    /// and with nginx (if installed), in the same run; report the ratio.
    Bootserver {
        /// File size (e.g. 1GiB).
        #[arg(long, default_value = "1GiB", value_parser = parse_size)]
        size: u64,
        /// Concurrent clients, each fetching the whole file.
        #[arg(long, default_value_t = 32)]
        clients: u32,
        /// Timed rounds per server (interleaved); the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// Image a rack of real VMs (`kiln demo --vm`'s): power-on to verified
    /// SSH per machine, the deploy agent's write rate against a plain dd
    /// of the same image to the same disk, kiln's CPU per GiB served.
    Deploy {
        /// Virtual machines.
        #[arg(long, default_value_t = 2)]
        vms: u8,
        /// Work folder (default: kiln-bench-deploy in the temporary
        /// folder; cleared first).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run `true` on many hosts with `kiln exec`, pdsh and clush, against
    /// one local OpenSSH server on a loopback address per host.
    Ssh {
        /// Hosts (127.60.100.1 upwards).
        #[arg(long, default_value_t = 200)]
        hosts: u32,
        /// Connections at once, for every tool.
        #[arg(long, default_value_t = 64)]
        fanout: u32,
        /// Timed runs of each tool (interleaved); the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Log in as this user (default: the current one). A user whose
        /// shell start-up is heavy (pyenv, conda) measures that, not the tools.
        #[arg(long)]
        user: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// `--allow-in-service` on every command that can disrupt a node in
    /// service, with `--force` kept for existing scripts.
    #[test]
    fn in_service_opt_in_has_one_name_and_keeps_the_old_one() {
        for flag in ["--allow-in-service", "--force"] {
            let cli = Cli::try_parse_from(["kiln", "bmc", "power", "off", flag]).unwrap();
            assert!(matches!(
                cli.command,
                Command::Bmc(BmcCommand::Power {
                    allow_in_service: true,
                    ..
                })
            ));
            let cli = Cli::try_parse_from(["kiln", "image", "deploy", flag]).unwrap();
            assert!(
                matches!(cli.command, Command::Image(ImageCommand::Deploy(a)) if a.allow_in_service)
            );
            let cli = Cli::try_parse_from(["kiln", "drivers", "install", flag]).unwrap();
            assert!(
                matches!(cli.command, Command::Drivers(DriversCommand::Install(a)) if a.allow_in_service)
            );
            let cli = Cli::try_parse_from(["kiln", "provision", "--allow-in-service"]).unwrap();
            assert!(matches!(cli.command, Command::Provision(a) if a.run.allow_in_service));
        }
    }

    #[test]
    fn firmware_update_takes_the_selection_and_the_in_service_guard() {
        let cli = Cli::try_parse_from([
            "kiln",
            "firmware",
            "update",
            "-s",
            "rack:r01",
            "--allow-in-service",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Firmware(FirmwareCommand::Update(a))
                if a.run.allow_in_service && a.run.select.as_deref() == Some("rack:r01")
        ));
    }
}
