//! One simulated node: its power and boot state machine, shared by its BMC
//! (which changes power, boot override and media) and its SSH host (which
//! answers only while the installed OS runs).
//!
//! Boot follows a real server: power on → firmware POST → the boot device
//! (one-time override first, then the disk) → the installer (reads its seed,
//! installs, reboots to disk) or the installed OS → SSH up. Every power
//! transition bumps the node's *epoch*; work started under an older epoch
//! (a boot in progress, an SSH session) stops when it sees a newer one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::sim::Clock;
use crate::sim::faults::NodeFaults;
use crate::sim::hw::{NodeHardware, SoftwareState};
use crate::sim::seed::InstalledOs;

/// Simulated durations of boot steps (before time scaling).
pub mod timing {
    use std::time::Duration;
    /// Firmware POST of an 8-GPU server.
    pub const POST: Duration = Duration::from_secs(150);
    /// The installer writing the disk.
    pub const INSTALL: Duration = Duration::from_secs(600);
    /// The installed OS booting to SSH.
    pub const OS_BOOT: Duration = Duration::from_secs(60);
    /// A graceful shutdown.
    pub const SHUTDOWN: Duration = Duration::from_secs(15);
}

/// Power as the BMC reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    /// Off.
    Off,
    /// On.
    On,
}

/// Where a powered node is in its boot.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Powered off.
    Off,
    /// Firmware POST.
    Posting,
    /// The installer is running.
    Installing,
    /// The installed OS is starting.
    BootingOs,
    /// The OS runs; SSH answers.
    Running,
    /// Stuck, with why (no boot device, installer error, hang). Only a power
    /// action gets it out.
    Stuck(String),
}

/// The one-time or persistent boot override.
#[derive(Clone, Debug, PartialEq)]
pub struct BootOverride {
    /// `BootSourceOverrideTarget`.
    pub target: String,
    /// `BootSourceOverrideEnabled`: Disabled, Once or Continuous.
    pub enabled: String,
    /// `BootSourceOverrideMode`: UEFI or Legacy.
    pub mode: String,
    /// `HttpBootUri` for UEFI HTTP boot.
    pub http_uri: Option<String>,
}

impl Default for BootOverride {
    fn default() -> Self {
        BootOverride {
            target: "None".into(),
            enabled: "Disabled".into(),
            mode: "UEFI".into(),
            http_uri: None,
        }
    }
}

/// One virtual-media slot's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Media {
    /// The image URL.
    pub image: Option<String>,
    /// Whether media is inserted.
    pub inserted: bool,
    /// Write protection as requested.
    pub write_protected: bool,
    /// The installer seed URL found in the image, if it is a kiln installer.
    pub seed_url: Option<String>,
    /// HPE: boot from this media on the next reset.
    pub boot_on_next_reset: bool,
}

/// Where a node is: what SSH needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach {
    /// Bumped by every power transition.
    pub epoch: u64,
    /// Whether the OS is up and SSH should answer.
    pub ssh_up: bool,
}

/// The mutable state of a node.
#[derive(Debug)]
pub struct NodeState {
    /// Power.
    pub power: Power,
    /// Boot phase.
    pub phase: Phase,
    /// Bumped by every power transition.
    pub epoch: u64,
    /// Boot override.
    pub boot: BootOverride,
    /// Virtual media, one per slot of the BMC flavour (same order).
    pub media: Vec<Media>,
    /// What the installer left on disk.
    pub os: Option<Arc<InstalledOs>>,
    /// The hardware model.
    pub hw: NodeHardware,
    /// Installed software.
    pub sw: SoftwareState,
    /// Virtual-media inserts still to fail.
    pub media_failures_left: u32,
    /// Package installs still to fail.
    pub package_failures_left: u32,
    /// GPU-loading tools running now.
    pub load_users: u32,
    /// Seconds-resolution history for operators: the last boot problem.
    pub last_event: String,
    /// A disk image was written and cloud-init has yet to run on it (its
    /// first boot phones home).
    pub first_boot: bool,
}

/// A simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// Node name from the inventory.
    pub name: String,
    /// Its hardware profile name.
    pub hardware: String,
    /// The image it is installed with (what the installed OS brings).
    pub image: Arc<crate::profiles::image::ImageProfile>,
    /// The faults it was started with.
    pub faults: NodeFaults,
    /// Its sandbox folder (SSH commands run here).
    pub sandbox: PathBuf,
    state: Mutex<NodeState>,
    reach: watch::Sender<Reach>,
}

/// The environment variable that names a node's root folder in its
/// shell (see [`SimNode::root`]).
pub const ROOT_ENV: &str = "KILN_NODE_ROOT";

impl SimNode {
    /// The node's own root folder inside its sandbox: where files a real
    /// OS keeps under `/etc` go (scripts prefix such paths with
    /// `$KILN_NODE_ROOT`, empty on a real node), and where the simulated
    /// boot reads `etc/modules-load.d`.
    pub fn root(&self) -> PathBuf {
        self.sandbox.join("root")
    }

    /// A node that starts powered off, with or without an installed OS.
    pub fn new(
        name: String,
        hardware: String,
        image: Arc<crate::profiles::image::ImageProfile>,
        faults: NodeFaults,
        sandbox: PathBuf,
        state: NodeState,
    ) -> SimNode {
        let (reach, _) = watch::channel(Reach {
            epoch: 0,
            ssh_up: false,
        });
        SimNode {
            name,
            hardware,
            image,
            faults,
            sandbox,
            state: Mutex::new(state),
            reach,
        }
    }

    /// Locks the state. Never held across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, NodeState> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows reachability changes.
    pub fn watch_reach(&self) -> watch::Receiver<Reach> {
        self.reach.subscribe()
    }

    /// Current reachability.
    pub fn reach(&self) -> Reach {
        *self.reach.borrow()
    }

    fn publish(&self, state: &NodeState) {
        let reach = Reach {
            epoch: state.epoch,
            ssh_up: state.phase == Phase::Running,
        };
        self.reach.send_if_modified(|r| {
            let changed = *r != reach;
            *r = reach;
            changed
        });
    }

    /// GPU load now, 0..1.
    pub fn load(&self) -> f64 {
        if self.lock().load_users > 0 { 1.0 } else { 0.0 }
    }
}

/// A power request, as the BMC's Reset action maps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    /// Power on (no-op when on).
    On,
    /// Cut power now.
    ForceOff,
    /// Ask the OS to shut down, then power off.
    GracefulShutdown,
    /// Off and on again at once.
    ForceRestart,
    /// Ask the OS to reboot.
    GracefulRestart,
    /// Off, a pause, on.
    PowerCycle,
    /// Toggle like the front-panel button.
    PushPowerButton,
    /// A restart that leaves the node hung (a firmware quirk some BMCs have).
    HangingRestart,
}

/// Applies a power action and starts whatever boot follows.
pub fn power(node: &Arc<SimNode>, clock: &Clock, action: PowerAction) {
    let mut st = node.lock();
    let on = st.power == Power::On;
    let action = match action {
        PowerAction::PushPowerButton if on => PowerAction::GracefulShutdown,
        PowerAction::PushPowerButton => PowerAction::On,
        other => other,
    };
    match action {
        PowerAction::On if on => {}
        PowerAction::ForceOff | PowerAction::GracefulShutdown if !on => {}
        PowerAction::On => start(node, &mut st, clock),
        PowerAction::ForceOff => off(node, &mut st),
        PowerAction::GracefulShutdown => {
            // The OS takes a moment; SSH drops at once as sshd stops.
            st.epoch += 1;
            st.phase = Phase::Stuck("shutting down".into());
            node.publish(&st);
            let epoch = st.epoch;
            let node = Arc::clone(node);
            let clock = *clock;
            tokio::spawn(async move {
                clock.sleep(timing::SHUTDOWN).await;
                let mut st = node.lock();
                if st.epoch == epoch {
                    off(&node, &mut st);
                }
            });
        }
        PowerAction::ForceRestart | PowerAction::GracefulRestart | PowerAction::PowerCycle => {
            off(node, &mut st);
            start(node, &mut st, clock);
        }
        PowerAction::HangingRestart => {
            st.epoch += 1;
            st.power = Power::On;
            st.phase = Phase::Stuck("hung in ForceRestart; needs ForceOff then On".into());
            st.last_event = "ForceRestart hung".into();
            node.publish(&st);
        }
        PowerAction::PushPowerButton => {}
    }
}

/// The OS asked for a reboot (the `reboot` command).
pub fn os_reboot(node: &Arc<SimNode>, clock: &Clock) {
    let mut st = node.lock();
    if st.power == Power::On {
        off(node, &mut st);
        start(node, &mut st, clock);
    }
}

/// The OS powered itself off (`poweroff`).
pub fn os_poweroff(node: &Arc<SimNode>) {
    let mut st = node.lock();
    off(node, &mut st);
}

fn off(node: &SimNode, st: &mut NodeState) {
    st.epoch += 1;
    st.power = Power::Off;
    st.phase = Phase::Off;
    st.load_users = 0;
    node.publish(st);
}

fn start(node: &Arc<SimNode>, st: &mut NodeState, clock: &Clock) {
    st.epoch += 1;
    st.power = Power::On;
    st.phase = Phase::Posting;
    node.publish(st);
    let epoch = st.epoch;
    let node = Arc::clone(node);
    let clock = *clock;
    tokio::spawn(async move { boot(node, clock, epoch).await });
}

/// What the firmware boots after POST.
#[derive(Debug, PartialEq)]
enum BootFrom {
    Installer(String),
    Disk,
    Nothing(String),
}

fn choose(st: &mut NodeState) -> BootFrom {
    let boot = st.boot.clone();
    let hpe_once = st
        .media
        .iter()
        .position(|m| m.boot_on_next_reset && m.inserted);
    if let Some(i) = hpe_once {
        st.media[i].boot_on_next_reset = false;
        return installer_on(&st.media[i]);
    }
    if boot.enabled == "Disabled" {
        return disk(st);
    }
    if boot.enabled == "Once" {
        // Real BMCs clear a one-time override once it is used.
        st.boot.enabled = "Disabled".into();
        st.boot.target = "None".into();
    }
    match boot.target.as_str() {
        "Cd" | "UsbCd" | "Usb" => match st.media.iter().find(|m| m.inserted) {
            Some(m) => installer_on(m),
            None => {
                BootFrom::Nothing("boot override to virtual media, but none is inserted".into())
            }
        },
        "UefiHttp" => match boot.http_uri {
            Some(uri) => BootFrom::Installer(format!("http-boot:{uri}")),
            None => {
                BootFrom::Nothing("UEFI HTTP boot without an HttpBootUri (no DHCP offer)".into())
            }
        },
        "Pxe" => BootFrom::Nothing("PXE: no DHCP offer on the provisioning network".into()),
        "BiosSetup" => BootFrom::Nothing("waiting in BIOS setup".into()),
        _ => disk(st),
    }
}

fn installer_on(media: &Media) -> BootFrom {
    match &media.seed_url {
        Some(seed) => BootFrom::Installer(seed.clone()),
        None => BootFrom::Nothing(format!(
            "booted {} but it is neither an installer with a NoCloud seed nor kiln's deploy environment",
            media.image.as_deref().unwrap_or("the virtual media")
        )),
    }
}

fn disk(st: &NodeState) -> BootFrom {
    if st.os.is_some() {
        BootFrom::Disk
    } else {
        BootFrom::Nothing("no bootable device".into())
    }
}

/// Runs one boot to its end, unless a power action (a newer epoch) cuts in.
async fn boot(node: Arc<SimNode>, clock: Clock, epoch: u64) {
    clock.sleep(timing::POST).await;
    let from = {
        let mut st = node.lock();
        if st.epoch != epoch {
            return;
        }
        choose(&mut st)
    };
    match from {
        BootFrom::Nothing(why) => set_phase(&node, epoch, Phase::Stuck(why)),
        BootFrom::Disk => {
            boot_os(&node, &clock, epoch).await;
            let first = {
                let mut st = node.lock();
                std::mem::take(&mut st.first_boot) && st.epoch == epoch
            };
            if first {
                // cloud-init on a written image's first boot: the seed the
                // deploy agent put on the root file system.
                phone_home(&node, epoch).await;
            }
        }
        BootFrom::Installer(seed) => {
            set_phase(&node, epoch, Phase::Installing);
            let seed = match seed.strip_prefix("http-boot:") {
                // UEFI HTTP boot: the firmware fetches the image first.
                Some(uri) => match seed_of_image(uri).await {
                    Ok(seed) => seed,
                    Err(why) => return set_phase(&node, epoch, Phase::Stuck(why)),
                },
                None => seed,
            };
            // kiln's deploy environment (`kiln.url=` on its kernel line).
            if let Some(base) = seed.strip_prefix("agent:") {
                return crate::sim::agent::run(&node, &clock, epoch, base).await;
            }
            // Anaconda (`inst.ks=`) or subiquity/cloud-init (`ds=nocloud`).
            let read = match seed.strip_prefix("ks:") {
                Some(ks) => read_kickstart(ks).await,
                None => read_seed(&seed).await,
            };
            let read = match read {
                Ok(os) if node.faults.host.broken_seed => {
                    let why = "autoinstall config did not validate against schema";
                    report(&os, "FAIL", why).await;
                    Err(why.to_owned())
                }
                other => other,
            };
            match read {
                Ok(os) => {
                    clock.sleep(timing::INSTALL).await;
                    report(&os, "SUCCESS", "installation finished").await;
                    {
                        let mut st = node.lock();
                        if st.epoch != epoch {
                            return;
                        }
                        st.os = Some(Arc::new(os));
                        st.sw = SoftwareState::for_image(&node.image);
                        st.last_event = format!("installed from {seed}");
                    }
                    // The installer reboots into the new system.
                    clock.sleep(timing::POST).await;
                    boot_os(&node, &clock, epoch).await;
                    first_boot_cloud_init(&node, epoch).await;
                    phone_home(&node, epoch).await;
                }
                Err(why) => set_phase(&node, epoch, Phase::Stuck(format!("installer: {why}"))),
            }
        }
    }
}

async fn boot_os(node: &Arc<SimNode>, clock: &Clock, epoch: u64) {
    set_phase(node, epoch, Phase::BootingOs);
    clock.sleep(timing::OS_BOOT).await;
    if node.faults.host.boot_hang {
        return set_phase(
            node,
            epoch,
            Phase::Stuck("hung while booting the OS".into()),
        );
    }
    {
        let mut st = node.lock();
        if st.epoch == epoch {
            // Loads the installed driver, starts enabled services, then
            // what systemd-modules-load reads from modules-load.d.
            st.sw.boot(clock.now_unix());
            let has_ib = !st.hw.ib_ports.is_empty();
            for module in modules_to_load(&node.root()) {
                if let Err(e) = st.sw.load_module(&module, has_ib) {
                    tracing::debug!(node = %node.name, "modules-load: {e}");
                }
            }
        }
    }
    set_phase(node, epoch, Phase::Running);
}

/// Module names listed in `ROOT/etc/modules-load.d/*.conf` (comments and
/// blank lines left out), as systemd-modules-load reads them at boot.
fn modules_to_load(root: &std::path::Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(root.join("etc/modules-load.d")) else {
        return Vec::new();
    };
    let mut files: Vec<_> = dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One event to the installer's webhook reporter, as subiquity posts it;
/// a failure to post is only noted.
async fn report(os: &InstalledOs, result: &str, description: &str) {
    if let Some(url) = &os.report_url {
        let event = serde_json::json!({
            "event_type": "finish", "name": "subiquity/Install", "origin": "curtin",
            "result": result, "description": description,
        });
        // A real installer carries on when its reporter cannot reach the
        // server; so does this one (the URL holds a token: not logged).
        let _ = crate::sim::fetch::post(url, "application/json", event.to_string()).await;
    }
}

/// cloud-init's phone_home on the installed system's first boot: POST the
/// form to the seed's URL, retrying like cloud-init (`tries`, a pause
/// between). A failure only leaves a line in `last_event`.
async fn phone_home(node: &Arc<SimNode>, epoch: u64) {
    let (os, running) = {
        let st = node.lock();
        (
            st.os.clone(),
            st.epoch == epoch && st.phase == Phase::Running,
        )
    };
    let Some(os) = os.filter(|_| running) else {
        return;
    };
    let Some(ph) = os.phone_home.clone() else {
        return;
    };
    let url = ph.url.replace("$INSTANCE_ID", &os.instance_id);
    let body = os.phone_home_body(&ph.post);
    for attempt in 1..=ph.tries {
        match crate::sim::fetch::post_form(&url, body.clone()).await {
            Ok(()) => return,
            Err(e) => {
                let mut st = node.lock();
                if st.epoch != epoch {
                    return;
                }
                st.last_event = format!("phone_home attempt {attempt}: {e}");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub(crate) fn set_phase(node: &SimNode, epoch: u64, phase: Phase) {
    let mut st = node.lock();
    if st.epoch != epoch {
        return;
    }
    if let Phase::Stuck(why) = &phase {
        st.last_event = why.clone();
    }
    st.phase = phase;
    node.publish(&st);
}

const SEED_LIMIT: u64 = 1 << 20;
const IMAGE_LIMIT: u64 = 16 << 30;

/// Scans an installer image at `url` for its seed URL.
pub async fn seed_of_image(url: &str) -> Result<String, String> {
    let mut scanner = crate::sim::fetch::SeedScanner::default();
    crate::sim::fetch::stream(url, IMAGE_LIMIT, |chunk| scanner.feed(chunk))
        .await
        .map_err(|e| e.to_string())?;
    scanner
        .finish()
        .ok_or_else(|| format!("{url} is not an installer with a NoCloud seed"))
}

pub(crate) async fn read_seed(seed: &str) -> Result<InstalledOs, String> {
    let base = if seed.ends_with('/') {
        seed.to_owned()
    } else {
        format!("{seed}/")
    };
    let meta = crate::sim::fetch::text(&format!("{base}meta-data"), SEED_LIMIT)
        .await
        .map_err(|e| format!("cannot read seed: {e}"))?;
    let user = crate::sim::fetch::text(&format!("{base}user-data"), SEED_LIMIT)
        .await
        .map_err(|e| format!("cannot read seed: {e}"))?;
    crate::sim::seed::parse(&meta, &user, seed).map_err(|e| e.to_string())
}

/// Reads an Anaconda kickstart the way the installer applies it (see
/// [`crate::sim::seed::parse_kickstart`]).
async fn read_kickstart(url: &str) -> Result<InstalledOs, String> {
    let text = crate::sim::fetch::text(url, SEED_LIMIT)
        .await
        .map_err(|e| format!("cannot read kickstart: {e}"))?;
    crate::sim::seed::parse_kickstart(&text, url).map_err(|e| e.to_string())
}

/// On a kickstart-installed system whose kernel command line carries a
/// NoCloud seed (`bootloader --append`), cloud-init reads it on the first
/// boot: its `phone_home` and instance id join what the installer left.
async fn first_boot_cloud_init(node: &Arc<SimNode>, epoch: u64) {
    let Some(os) = node.lock().os.clone() else {
        return;
    };
    let Some(seed) = os.cloud_init_seed.clone() else {
        return;
    };
    if let Ok(found) = read_seed(&seed).await {
        let mut st = node.lock();
        if st.epoch != epoch {
            return;
        }
        let mut merged = (*os).clone();
        merged.phone_home = found.phone_home;
        merged.instance_id = found.instance_id;
        if merged.host_public_keys.is_empty() {
            merged.host_public_keys = found.host_public_keys;
        }
        st.os = Some(Arc::new(merged));
    }
}

/// Marks a node as already installed and running (for racks started with
/// `--imaged`): as if kiln had imaged it before.
pub fn start_running(node: &SimNode, clock: &Clock, os: InstalledOs) {
    let mut st = node.lock();
    st.sw = SoftwareState::for_image(&node.image);
    st.sw.boot(clock.now_unix());
    st.os = Some(Arc::new(os));
    st.power = Power::On;
    st.phase = Phase::Running;
    st.epoch += 1;
    node.publish(&st);
}

/// A short text for status output.
pub fn describe(phase: &Phase) -> String {
    match phase {
        Phase::Off => "off".into(),
        Phase::Posting => "POST".into(),
        Phase::Installing => "installing".into(),
        Phase::BootingOs => "booting".into(),
        Phase::Running => "running".into(),
        Phase::Stuck(why) => format!("stuck: {why}"),
    }
}

/// Wait helper for tests and demos: until the node's SSH is up or `limit`
/// passes (real time).
pub async fn wait_ssh_up(node: &SimNode, limit: Duration) -> bool {
    let mut rx = node.watch_reach();
    tokio::time::timeout(limit, rx.wait_for(|r| r.ssh_up))
        .await
        .is_ok_and(|r| r.is_ok())
}
