//! kiln's deploy environment as a simulated node runs it: the agent's side
//! of `scripts/deploy-env/PROTOCOL.md`, over real HTTP to kiln's boot
//! server, so the image stage's disk-image path runs in the demo and in
//! fast tests as it does on the VM rack.
//!
//! What it does as the real agent does: `hello` with the node's disks,
//! then the plan kiln chose; the image is downloaded for real and its
//! SHA-256 computed over the bytes as fetched (a mismatch wipes the disk
//! and reports `failed`); the NoCloud seed is read as cloud-init will read
//! it on the first boot; `done`, then power off. What it leaves out: the
//! decompression and the partition arithmetic (the simulated disk has no
//! bytes), and a plan's `bench=1` copy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest as _, Sha256};

use super::Clock;
use super::fetch;
use super::node::{self, Phase, SimNode};
use crate::sim::hw::fnv1a;

/// How long the deploy environment takes to boot and get a lease.
const BOOT: std::time::Duration = std::time::Duration::from_secs(40);
/// How long writing a disk image takes (a 3 GiB image at ~1 GiB/s with
/// its partition grown and seed written).
const WRITE: std::time::Duration = std::time::Duration::from_secs(90);
/// The largest image the simulator downloads.
const IMAGE_LIMIT: u64 = 16 << 30;
/// `hello` attempts before the agent gives up on kiln (the real one
/// retries forever; the simulated one stops when its power is cut).
const HELLO_TRIES: u32 = 20;

/// One block device, as the agent lists it in `hello`.
#[derive(Clone, Debug, PartialEq)]
pub struct Disk {
    /// `/dev` name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Model string.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// udev's by-path name.
    pub by_path: String,
}

/// The disks of an 8-GPU server: two M.2 boot drives and eight U.2 data
/// drives, serials derived from the node's name.
pub fn disks(node: &str) -> Vec<Disk> {
    let seed = fnv1a(node.as_bytes());
    (0..10u64)
        .map(|i| {
            let boot = i < 2;
            Disk {
                name: format!("nvme{i}n1"),
                size: if boot {
                    960_197_124_096
                } else {
                    3_840_755_982_336
                },
                model: if boot {
                    "SAMSUNG MZ1L2960HCJR-00A07"
                } else {
                    "SAMSUNG MZQL23T8HCLS-00A07"
                }
                .into(),
                serial: format!("S6{:010X}", (seed ^ (i * 0x9e37_79b9)) & 0xff_ffff_ffff),
                by_path: format!("pci-0000:{:02x}:00.0-nvme-1", 0x41 + i),
            }
        })
        .collect()
}

fn hello_body(node: &str) -> String {
    let mut body = String::from("agent=1\n");
    for d in disks(node) {
        // disk NAME SIZE ROTATIONAL MODEL SERIAL WWN BY_PATH VENDOR
        body.push_str(&format!(
            "disk\t{}\t{}\t0\t{}\t{}\t\t{}\t\n",
            d.name, d.size, d.model, d.serial, d.by_path
        ));
    }
    body
}

/// Runs the deploy environment booted with `kiln.url=BASE`, to its
/// power-off. Returns early, doing nothing more, if a power action cuts in.
pub async fn run(node: &Arc<SimNode>, clock: &Clock, epoch: u64, base: &str) {
    node::set_phase(node, epoch, Phase::Installing);
    clock.sleep(BOOT).await;
    let Some(plan) = hello(node, clock, epoch, base).await else {
        return;
    };
    let outcome = match plan.get("action").map(String::as_str) {
        Some("deploy") => write(node, clock, epoch, base, &plan).await,
        Some("fail") => Err(None),
        other => Err(Some(format!("unknown action {other:?} in kiln's plan"))),
    };
    if !alive(node, epoch) {
        return;
    }
    match outcome {
        Ok(done) => {
            let _ = fetch::post(&format!("{base}/done"), "text/plain", done).await;
        }
        Err(Some(reason)) => {
            node.lock().last_event = format!("kiln-agent: {reason}");
            let body = format!("reason={reason}\n");
            let _ = fetch::post(&format!("{base}/failed"), "text/plain", body).await;
        }
        Err(None) => {
            let reason = plan.get("reason").cloned().unwrap_or_default();
            node.lock().last_event = format!("kiln-agent: kiln refused: {reason}");
        }
    }
    if alive(node, epoch) {
        node::os_poweroff(node);
    }
}

fn alive(node: &SimNode, epoch: u64) -> bool {
    node.lock().epoch == epoch
}

/// `hello` until kiln answers with a plan (backing off like the agent).
async fn hello(
    node: &Arc<SimNode>,
    clock: &Clock,
    epoch: u64,
    base: &str,
) -> Option<BTreeMap<String, String>> {
    let body = hello_body(&node.name);
    for attempt in 1..=HELLO_TRIES {
        if !alive(node, epoch) {
            return None;
        }
        match fetch::post(&format!("{base}/hello"), "text/plain", body.clone()).await {
            Ok(text) => return Some(crate::imaging::server::kv_lines(&text)),
            Err(e) => {
                node.lock().last_event = format!("kiln-agent: hello attempt {attempt}: {e}");
                clock
                    .sleep(std::time::Duration::from_secs(
                        u64::from(attempt.min(6)) * 5,
                    ))
                    .await;
            }
        }
    }
    node::set_phase(
        node,
        epoch,
        Phase::Stuck("deploy agent: kiln never answered hello".into()),
    );
    None
}

/// Downloads and "writes" the image, reads the seed; the `done` body, or
/// why it failed.
async fn write(
    node: &Arc<SimNode>,
    clock: &Clock,
    epoch: u64,
    base: &str,
    plan: &BTreeMap<String, String>,
) -> Result<String, Option<String>> {
    let field = |k: &str| {
        plan.get(k)
            .cloned()
            .ok_or_else(|| Some(format!("kiln's plan has no {k}")))
    };
    let (device, image, want, seed) = (
        field("device")?,
        field("image")?,
        field("sha256")?,
        field("seed")?,
    );
    let name = device.trim_start_matches("/dev/");
    if !disks(&node.name).iter().any(|d| d.name == name) {
        return Err(Some(format!("{device} does not exist on this machine")));
    }
    let started = Instant::now();
    let mut hasher = Sha256::new();
    let bytes = fetch::stream(&image, IMAGE_LIMIT, |chunk| hasher.update(chunk))
        .await
        .map_err(|e| Some(format!("downloading the image: {e}; the disk was wiped")))?;
    let got = hex(&hasher.finalize());
    let progress = format!("written={bytes}\ntotal={bytes}\n");
    let _ = fetch::post(&format!("{base}/progress"), "text/plain", progress).await;
    clock.sleep(WRITE).await;
    if !got.eq_ignore_ascii_case(&want) {
        node.lock().os = None;
        return Err(Some(format!(
            "image digest {got} does not match {want}; the disk was wiped"
        )));
    }
    let os = node::read_seed(&seed)
        .await
        .map_err(|e| Some(format!("seed: {e}")))?;
    {
        let mut st = node.lock();
        if st.epoch != epoch {
            return Err(None);
        }
        st.os = Some(Arc::new(os));
        st.sw = crate::sim::hw::SoftwareState::for_image(&node.image);
        st.first_boot = true;
        st.last_event = format!("kiln-agent: wrote {image} to {device}");
    }
    let root_partition: u32 = plan
        .get("root_partition")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let part = if root_partition == 0 {
        2
    } else {
        root_partition
    };
    Ok(format!(
        "sha256={got}\nbytes={bytes}\nseconds={:.3}\ndevice={device}\nroot={device}p{part}\n",
        started.elapsed().as_secs_f64()
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_lists_disks_the_way_kiln_parses_them() {
        let parsed = crate::imaging::rootdev::parse_disks(&hello_body("n1")).unwrap();
        assert_eq!(parsed.len(), 10);
        assert_eq!(parsed[0].name, "nvme0n1");
        assert_eq!(parsed[0].model, "SAMSUNG MZ1L2960HCJR-00A07");
        assert_ne!(disks("n1")[0].serial, disks("n2")[0].serial);
    }
}
