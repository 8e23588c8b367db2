//! The virtual rack behind `kiln sim`, `kiln demo` and most tests: one
//! HTTPS Redfish BMC and one SSH host per inventory node, on the node's own
//! loopback addresses, driven by a per-node hardware model and a faults
//! file. It is an independent implementation of the server side — it
//! shares no Redfish or SSH code with kiln's clients.
//!
//! - [`node`]: power and boot state machine (POST, installer, OS, SSH up).
//! - [`redfish`]: the BMC's Redfish service, in vendor flavours.
//! - [`ssh`]: the node's SSH server; commands run in a real shell in a
//!   sandbox folder, with simulated hardware tools first on `PATH`.
//! - [`toolsock`]: how those tools reach the node's hardware model.
//! - [`hw`] and [`tools`]: the hardware model and the tools' outputs.

pub mod agent;
pub mod faults;
pub mod fetch;
pub mod https;
pub mod hw;
pub mod node;
pub mod redfish;
pub mod seed;
pub mod ssh;
pub mod tls;
pub mod tools;
pub mod toolsock;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::watch;

use crate::exit::BadInput;
use crate::inventory::{Host, Inventory, Node};
use faults::FaultPlan;
use redfish::flavour::{self, Vendor};

/// Compresses simulated time: at scale 60 a 10-minute install takes 10 s.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    scale: f64,
    origin: std::time::Instant,
    origin_unix: u64,
}

impl Clock {
    /// A clock running `scale` times faster than real time (at least 1).
    pub fn new(scale: f64) -> Clock {
        Clock {
            scale: if scale.is_finite() && scale >= 1.0 {
                scale
            } else {
                1.0
            },
            origin: std::time::Instant::now(),
            origin_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Simulated wall-clock time, seconds since the Unix epoch: it starts at
    /// the real time and runs `scale` times faster.
    pub fn now_unix(&self) -> u64 {
        self.origin_unix + (self.origin.elapsed().as_secs_f64() * self.scale) as u64
    }

    /// The real duration of a simulated one.
    pub fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.scale)
    }

    /// Sleeps for a simulated duration.
    pub async fn sleep(&self, simulated: Duration) {
        tokio::time::sleep(self.real(simulated)).await;
    }
}

/// How a rack is started.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Time compression (1 = real time).
    pub time_scale: f64,
    /// Faults to inject.
    pub faults: FaultPlan,
    /// BMC flavour for nodes without a `kiln.sim/flavour` label; `None`
    /// mixes vendors rack by rack.
    pub flavour: Option<Vendor>,
    /// Start every node installed and running, trusting these public keys
    /// (as if kiln had imaged it already). Host keys are generated.
    pub imaged: Option<Vec<String>>,
    /// Serve SSH as well as Redfish.
    pub ssh: bool,
    /// The `kiln` executable the simulated tools call back into.
    pub tool_exe: Option<PathBuf>,
    /// Folder for sandboxes and the tool socket (a fresh temporary folder
    /// when `None`, removed at stop).
    pub root: Option<PathBuf>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            time_scale: 1.0,
            faults: FaultPlan::none(),
            flavour: Some(Vendor::Generic),
            imaged: None,
            ssh: true,
            tool_exe: None,
            root: None,
        }
    }
}

/// What a script needs to reach one simulated node.
#[derive(Clone, Debug, Serialize)]
pub struct Endpoint {
    /// Node name.
    pub name: String,
    /// BMC flavour.
    pub flavour: Vendor,
    /// `https://IP:PORT`.
    pub bmc_url: String,
    /// BMC user.
    pub username: String,
    /// BMC password (the simulator's own; printed so tools can log in).
    pub password: String,
    /// SHA-256 fingerprint of the BMC certificate.
    pub bmc_fingerprint: String,
    /// `IP:PORT` of the SSH host.
    pub ssh: String,
    /// The SSH host's public key once it has one (`--imaged`), OpenSSH format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<String>,
}

/// A running virtual rack. Dropping it stops every server.
pub struct SimRack {
    /// One per node, inventory order.
    pub endpoints: Vec<Endpoint>,
    /// The nodes, same order.
    pub nodes: Vec<Arc<node::SimNode>>,
    /// The clock everything runs on.
    pub clock: Clock,
    /// The BMCs, same order.
    pub bmcs: Vec<Arc<redfish::Bmc>>,
    stop: watch::Sender<bool>,
    root: PathBuf,
    remove_root: bool,
}

impl std::fmt::Debug for SimRack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRack")
            .field("nodes", &self.nodes.len())
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl SimRack {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Arc<node::SimNode>> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The folder holding sandboxes and the tool socket.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stops every server (also done on drop).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for SimRack {
    fn drop(&mut self) {
        self.stop();
        if self.remove_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn loopback(node: &Node, what: &str, host: &Host, port: u16) -> anyhow::Result<SocketAddr> {
    match host {
        Host::Ip(ip @ IpAddr::V4(v4)) if v4.is_loopback() => Ok(SocketAddr::new(*ip, port)),
        Host::Ip(ip @ IpAddr::V6(v6)) if v6.is_loopback() => Ok(SocketAddr::new(*ip, port)),
        other => Err(BadInput(format!(
            "{}: the virtual rack serves only loopback addresses (127.0.0.0/8), but its {what} is {other}",
            node.name
        ))
        .into()),
    }
}

/// The connection a listener's `accept` gave, or None after pacing a
/// failed one, so that a listener out of files waits instead of spinning.
async fn connection(
    accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
) -> Option<tokio::net::TcpStream> {
    match accepted {
        Ok((tcp, _)) => Some(tcp),
        Err(e) => {
            crate::fdlimit::accept_failed(&e).await;
            None
        }
    }
}

fn fresh_root() -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    // Short: the tool socket path must fit in 108 bytes.
    let dir = std::env::temp_dir().join(format!("kiln-sim-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// A password for a BMC whose inventory password cannot be resolved here.
fn made_up_password(node: &str) -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let h = node.bytes().fold(seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("sim-{h:016x}")
}

/// Starts a rack for `nodes` of `inventory`. Every listener is bound when
/// this returns.
pub async fn start(
    inventory: &Inventory,
    nodes: &[&Node],
    options: SimOptions,
) -> anyhow::Result<SimRack> {
    let clock = Clock::new(options.time_scale);
    let (stop, stop_rx) = watch::channel(false);
    let (root, remove_root) = match &options.root {
        Some(r) => {
            std::fs::create_dir_all(r).with_context(|| format!("cannot create {}", r.display()))?;
            // Absolute: node shells run in their sandbox, so a relative
            // tool folder on their PATH would resolve to nothing there.
            let r = std::path::absolute(r)
                .with_context(|| format!("cannot resolve {}", r.display()))?;
            (r, false)
        }
        None => (fresh_root()?, true),
    };
    let mut rack = SimRack {
        endpoints: Vec::with_capacity(nodes.len()),
        nodes: Vec::with_capacity(nodes.len()),
        bmcs: Vec::with_capacity(nodes.len()),
        clock,
        stop,
        root: root.clone(),
        remove_root,
    };
    let rack_index = |name: &str| {
        inventory
            .racks
            .iter()
            .position(|r| r.name == name)
            .unwrap_or(0)
    };
    let mut metadata: std::collections::HashMap<Vendor, Arc<String>> =
        std::collections::HashMap::new();
    let mut host_keys = Vec::new();
    for inv_node in nodes {
        let bmc_addr = loopback(
            inv_node,
            "BMC",
            &inv_node.bmc.endpoint.host,
            inv_node.bmc.endpoint.port,
        )?;
        let ssh_addr = loopback(
            inv_node,
            "SSH address",
            &inv_node.ssh.endpoint.host,
            inv_node.ssh.endpoint.port,
        )?;
        let vendor = match inv_node.labels.get("kiln.sim/flavour") {
            Some(name) => Vendor::parse(name).ok_or_else(|| {
                BadInput(format!(
                    "{}: unknown simulator flavour `{name}` (known: {})",
                    inv_node.name,
                    Vendor::ALL.map(Vendor::name).join(", ")
                ))
            })?,
            None => options
                .flavour
                .unwrap_or(Vendor::ALL[rack_index(&inv_node.rack) % Vendor::ALL.len()]),
        };
        let flavour = flavour::flavour(vendor);
        let metadata = Arc::clone(
            metadata
                .entry(vendor)
                .or_insert_with(|| Arc::new(redfish::metadata::metadata(&flavour))),
        );
        let profile = inventory
            .catalog
            .hardware
            .get(&inv_node.hardware)
            .map(|e| &e.profile)
            .with_context(|| {
                format!(
                    "{}: no hardware profile {}",
                    inv_node.name, inv_node.hardware
                )
            })?;
        let faults = options.faults.for_node(inv_node);
        let mut hw = hw::NodeHardware::new(&inv_node.name, profile);
        for f in &faults.host.hardware {
            hw.apply(f).map_err(|e| {
                BadInput(format!(
                    "{}: fault {f:?} does not fit its hardware: {e}",
                    inv_node.name
                ))
            })?;
        }
        let image = inventory
            .catalog
            .images
            .get(&inv_node.image)
            .map(|e| Arc::new(e.profile.clone()))
            .with_context(|| format!("{}: no image profile {}", inv_node.name, inv_node.image))?;
        let sandbox = root.join("nodes").join(&inv_node.name);
        let state = node::NodeState {
            power: node::Power::Off,
            phase: node::Phase::Off,
            epoch: 0,
            boot: node::BootOverride::default(),
            media: vec![node::Media::default(); flavour.media.len()],
            os: None,
            hw,
            sw: hw::SoftwareState::for_image(&image),
            media_failures_left: faults.bmc.media_insert_failures,
            package_failures_left: faults.host.package_install_failures,
            load_users: 0,
            last_event: String::new(),
            first_boot: false,
        };
        let sim_node = Arc::new(node::SimNode::new(
            inv_node.name.clone(),
            inv_node.hardware.clone(),
            image,
            faults,
            sandbox,
            state,
        ));
        let mut ssh_host_key = None;
        if let Some(keys) = &options.imaged {
            let key = ssh::generate_host_key()?;
            ssh_host_key = Some(ssh::public_line(&key)?);
            node::start_running(
                &sim_node,
                &clock,
                seed::InstalledOs {
                    hostname: inv_node.name.clone(),
                    authorized_keys: keys.clone(),
                    host_keys: vec![ssh::private_pem(&key)?],
                    ..seed::InstalledOs::default()
                },
            );
            host_keys.push(key);
        }
        let password = inv_node
            .bmc
            .password
            .resolve()
            .map(|s| s.expose().to_owned())
            .unwrap_or_else(|_| made_up_password(&inv_node.name));
        let tls = tls::self_signed(&inv_node.name, bmc_addr.ip())?;
        let bmc = Arc::new(redfish::Bmc::new(
            Arc::clone(&sim_node),
            flavour,
            inv_node.bmc.username.clone(),
            password.clone(),
            clock,
            metadata,
        ));
        rack.bmcs.push(Arc::clone(&bmc));
        https::serve(bmc_addr, Arc::clone(&tls.config), bmc, stop_rx.clone()).await?;
        rack.endpoints.push(Endpoint {
            name: inv_node.name.clone(),
            flavour: vendor,
            bmc_url: format!("https://{bmc_addr}"),
            username: inv_node.bmc.username.clone(),
            password,
            bmc_fingerprint: tls.fingerprint,
            ssh: ssh_addr.to_string(),
            ssh_host_key,
        });
        rack.nodes.push(sim_node);
    }
    if options.ssh {
        let tools = toolsock::ToolServer::start(
            &root,
            rack.nodes.clone(),
            clock,
            options.tool_exe.clone(),
            stop_rx.clone(),
        )
        .await?;
        for (sim_node, endpoint) in rack.nodes.iter().zip(&rack.endpoints) {
            let addr: SocketAddr = endpoint.ssh.parse().context("SSH address")?;
            ssh::serve(
                Arc::clone(sim_node),
                addr,
                Arc::clone(&tools),
                clock,
                stop_rx.clone(),
            )?;
        }
    }
    Ok(rack)
}
