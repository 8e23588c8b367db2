//! A rack of real machines on this one: UEFI virtual machines (QEMU, OVMF,
//! a blank virtio disk) under libvirt, each behind its own Redfish BMC
//! written by others (sushy-tools' libvirt driver, HTTPS with basic auth),
//! all on loopback. kiln images them the way it images servers: nothing
//! in this module talks to a VM; it only starts and stops the rack
//! (`scripts/vmrack/up.sh`, `down.sh`), builds what the rack boots
//! (`kiln image build`), and writes the inventory that describes it.
//!
//! Guests reach this machine through QEMU's user networking: the host's
//! 127.0.0.1 is 10.0.2.2 inside every guest, so the boot server is bound
//! on 127.0.0.1 and advertised to nodes as `http://10.0.2.2:PORT`, while
//! the BMCs (processes on this machine) fetch virtual media from
//! `http://127.0.0.1:PORT` (`--advertise-bmc`). Each guest's sshd is
//! forwarded to its own 127.0.0.1 port.
//!
//! Used by `kiln demo --vm`, `kiln bench deploy` and `tests/vm_rack.rs`;
//! the scripts come from the source tree kiln was built from.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::cli::BuildTarget;

/// Where the rack's scripts are: the source tree kiln was built from.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vmrack")
}

/// One VM to start.
#[derive(Clone, Debug, Serialize)]
pub struct VmSpec {
    /// The node's name (also its inventory name).
    pub name: String,
    /// Its blank disk.
    pub disk_gib: u32,
    /// Guest memory.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// With a network card (false: a node that boots but can never reach
    /// the boot server).
    pub nic: bool,
    /// Where the guest's sshd is forwarded (`127.0.0.1:PORT`); none
    /// without a NIC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// The BMC's loopback address.
    pub bmc_ip: String,
    /// The BMC's port.
    pub bmc_port: u16,
    /// The NIC's MAC; none without a NIC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `ok`, or `refuse`: the BMC refuses virtual media.
    pub media: String,
}

impl VmSpec {
    /// The same machine without a network card: it boots, but can never
    /// reach anything.
    pub fn without_nic(mut self) -> VmSpec {
        self.nic = false;
        self.ssh_port = None;
        self.mac = None;
        self
    }

    /// A healthy node `name`, number `i` (from 0) of rack network `net`
    /// (BMC on 127.NET.0.(i+1), SSH on 127.0.0.1:(20000 + NET×32 + i)).
    pub fn new(name: &str, net: u8, i: u8) -> VmSpec {
        VmSpec {
            name: name.to_owned(),
            disk_gib: 5,
            memory_mib: 1024,
            vcpus: 2,
            nic: true,
            ssh_port: Some(20000 + u16::from(net) * 32 + u16::from(i)),
            bmc_ip: format!("127.{net}.0.{}", u16::from(i) + 1),
            bmc_port: 8443,
            mac: Some(format!("52:54:00:6b:{net:02x}:{:02x}", i + 1)),
            media: "ok".into(),
        }
    }
}

/// What `up.sh` reports of one VM.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VmNode {
    /// The node's name.
    pub name: String,
    /// The libvirt domain.
    pub domain: String,
    /// The system's UUID (its Redfish id).
    pub uuid: String,
    /// `https://IP:PORT`.
    pub bmc_url: String,
    /// `/redfish/v1/Systems/UUID`.
    pub system: String,
    /// The BMC's user.
    pub username: String,
    /// The BMC's password.
    pub password: String,
    /// The BMC certificate's SHA-256 fingerprint (`sha256:AB:CD:…`).
    pub fingerprint: String,
    /// `127.0.0.1:PORT`; none without a NIC.
    pub ssh: Option<String>,
    /// The NIC's MAC; none without a NIC.
    pub mac: Option<String>,
    /// The serial console's log file.
    pub serial_log: PathBuf,
}

/// `up.sh`'s report.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RackInfo {
    /// `tcg` (software emulation) or `kvm`.
    pub accel: String,
    /// The VMs.
    pub nodes: Vec<VmNode>,
}

/// A running VM rack; stopped (domains and BMCs removed) when dropped.
pub struct VmRack {
    /// Where its files are.
    pub workdir: PathBuf,
    /// What is running.
    pub info: RackInfo,
    /// What was asked for.
    pub specs: Vec<VmSpec>,
}

/// What this machine lacks to run a VM rack (empty: nothing).
pub fn missing() -> Vec<String> {
    let mut out = Vec::new();
    let on_path = |cmd: &str| {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths)
                .chain([PathBuf::from("/usr/sbin")])
                .any(|d| d.join(cmd).is_file())
        })
    };
    for (cmd, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("virsh", "libvirt-clients"),
        ("libvirtd", "libvirt-daemon-system"),
        ("python3", "python3"),
        ("openssl", "openssl"),
    ] {
        if !on_path(cmd) {
            out.push(format!("{cmd} (Debian package {pkg})"));
        }
    }
    if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file() {
        out.push("/usr/share/OVMF/OVMF_CODE_4M.fd (Debian package ovmf)".into());
    }
    if !scripts_dir().join("up.sh").is_file() {
        out.push(format!(
            "{} (the VM rack's scripts come from kiln's source tree)",
            scripts_dir().join("up.sh").display()
        ));
    }
    out
}

impl VmRack {
    /// Starts `vms` under domain names `PREFIX-NAME`, files in `workdir`.
    pub fn up(workdir: &Path, prefix: &str, vms: &[VmSpec]) -> anyhow::Result<VmRack> {
        std::fs::create_dir_all(workdir)
            .with_context(|| format!("creating {}", workdir.display()))?;
        let spec = workdir.join("spec.json");
        std::fs::write(
            &spec,
            serde_json::to_vec_pretty(&serde_json::json!({ "prefix": prefix, "nodes": vms }))?,
        )?;
        let out = Command::new(scripts_dir().join("up.sh"))
            .arg(workdir)
            .arg(&spec)
            .stdin(std::process::Stdio::null())
            .output()
            .context("running scripts/vmrack/up.sh")?;
        if !out.status.success() {
            anyhow::bail!(
                "starting the VM rack failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let last = line.trim().lines().last().unwrap_or_default();
        let info: RackInfo = serde_json::from_str(last)
            .with_context(|| format!("reading up.sh's report {last:?}"))?;
        Ok(VmRack {
            workdir: workdir.to_owned(),
            info,
            specs: vms.to_vec(),
        })
    }

    /// The site inventory of this rack: every node `debian-12` (or the
    /// image in `images` by node name), SSH as `kiln` with `key`, BMC
    /// certificates pinned, passwords from `KILN_VM_BMC_PASSWORD`.
    pub fn inventory(&self, key: &Path, images: &[(&str, &str)]) -> String {
        let mut y = String::from(
            "# A rack of QEMU virtual machines behind sushy-tools BMCs (kiln::vmlab).\n\
             site: vmlab\n\
             defaults:\n  hardware: hgx-h100-80gb-8x\n  image: debian-12\n\
             \x20 bmc:\n    username: admin\n    password: {env: KILN_VM_BMC_PASSWORD}\n",
        );
        y.push_str(&format!(
            "  ssh:\n    user: kiln\n    key: {}\n",
            json_str(&key.display().to_string())
        ));
        y.push_str(
            "limits:\n  per_bmc: 1\n  power_on: {per_rack: 16, interval: 1s}\nracks:\n  - name: vm\n    nodes:\n",
        );
        for n in &self.info.nodes {
            // A machine without a NIC still needs an SSH address: the
            // discard port, where nothing answers.
            let ssh = n.ssh.clone().unwrap_or_else(|| "127.0.0.1:9".to_owned());
            y.push_str(&format!(
                "      - name: {}\n        bmc: {{address: {}, system: {}, tls: {{pin: {}}}}}\n        ssh: {}\n",
                n.name,
                json_str(&n.bmc_url),
                json_str(&n.uuid),
                json_str(&n.fingerprint),
                json_str(&ssh),
            ));
            if let Some(mac) = &n.mac {
                y.push_str(&format!("        mac: {}\n", json_str(mac)));
            }
            if let Some((_, image)) = images.iter().find(|(node, _)| *node == n.name) {
                y.push_str(&format!("        image: {}\n", json_str(image)));
            }
        }
        y
    }

    /// Stops the rack now (also done on drop).
    pub fn down(&self) {
        let _ = Command::new(scripts_dir().join("down.sh"))
            .arg(&self.workdir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for VmRack {
    fn drop(&mut self) {
        self.down();
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Builds (or reuses) the deploy environment and the debian-12 image under
/// `cache`; returns (deploy environment folder, images folder).
pub fn build_images(cache: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let env = crate::commands::image_build::run(BuildTarget::DeployEnv, &cache.join("deploy-env"))?;
    let images = crate::commands::image_build::run(BuildTarget::Debian12, &cache.join("images"))?;
    Ok((env, images))
}

/// A fresh Ed25519 login key at `path` (mode 0600) and its public line.
pub fn login_key(path: &Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = crate::imaging::hostkeys::generate("kiln-vmlab")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(key.private_pem.expose().as_bytes())?;
    Ok(key.public_line)
}
