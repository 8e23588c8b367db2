//! `kiln demo --vm`: the image stage on real machines. It starts a rack of
//! QEMU/OVMF virtual machines behind sushy-tools BMCs ([`crate::vmlab`]),
//! builds (once, cached in the source tree's `target/vm-cache/`) the
//! deploy environment and a Debian 12 image, and runs `kiln provision
//! --stages preflight,image` on the rack: every machine from powered off
//! to a verified SSH login into the OS kiln wrote. With three or more
//! machines the last one is given a root-device hint that matches no disk,
//! so the summary shows a failure with its reason. Each VM's serial
//! console is kept in the run folder (`NODE/console.log`); the machines
//! are stopped and removed when the demo ends.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::bmc::trust::state_dir;
use crate::cli::{BuildTarget, DemoArgs};
use crate::commands::Ctx;
use crate::commands::provision;
use crate::exit::{BadInput, ExitStatus};
use crate::pipeline::progress::Progress;
use crate::run::{Finished, ImagingRequest, Request};
use crate::vmlab::{VmRack, VmSpec};

/// The rack's loopback network (BMCs on 127.NET.0.x).
const NET: u8 = 203;

/// What this machine lacks for `--vm` (the rack and the image builds), as
/// a message for the user, or `None`.
pub(crate) fn lacks(what: &str) -> Option<String> {
    let mut missing = crate::vmlab::missing();
    for target in [BuildTarget::DeployEnv, BuildTarget::Debian12] {
        missing.extend(super::image_build::missing_tools(target));
    }
    missing.sort();
    missing.dedup();
    (!missing.is_empty()).then(|| {
        format!(
            "{what} boots real virtual machines, and this machine lacks: {}.\n\
             On Debian 12, as root: scripts/vmrack/deps.sh (qemu-system-x86, ovmf, libvirt, \
             mmdebstrap, xorriso, grub-efi-amd64-bin, …; sushy-tools and libvirt-python from PyPI).",
            missing.join(", ")
        )
    })
}

/// A finished run of the image stage on a VM rack.
pub(crate) struct VmRun {
    /// The rack, still up (stopped when dropped).
    pub rack: VmRack,
    /// Its inventory.
    pub site: std::path::PathBuf,
    /// The state folder.
    pub state: std::path::PathBuf,
    /// The run.
    pub finished: Option<Finished>,
    /// kiln's CPU time (user + system) during the run, in seconds.
    pub cpu_s: f64,
}

/// Builds (or reuses) the images, starts `vms` on network `net` in `dir`,
/// and runs `kiln provision --stages preflight,image` on them. `overrides`
/// gives some nodes another image profile, written into `profiles` (name,
/// YAML with `IMAGE` standing for the debian-12 image's path).
pub(crate) fn image_rack(
    ctx: &Ctx,
    dir: &Path,
    prefix: &str,
    vms: &[VmSpec],
    overrides: &[(&str, &str, &str)],
    bench_peer: bool,
) -> anyhow::Result<VmRun> {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vm-cache");
    ctx.printer.info(&format!(
        "building (or reusing) the deploy environment and a Debian 12 image in {}",
        cache.display()
    ));
    let (deploy_env, images) = crate::vmlab::build_images(&cache)?;
    let key = dir.join("ssh-key");
    crate::vmlab::login_key(&key)?;
    let profiles = dir.join("profiles/images");
    std::fs::create_dir_all(&profiles)?;
    let image_path =
        serde_json::Value::String(images.join("debian-12.raw.gz").display().to_string())
            .to_string();
    for (_, name, yaml) in overrides {
        std::fs::write(
            profiles.join(format!("{name}.yaml")),
            yaml.replace("IMAGE", &image_path),
        )?;
    }
    ctx.printer.info(&format!(
        "starting {} virtual machines behind sushy-tools BMCs (libvirt); working in {}",
        vms.len(),
        dir.display()
    ));
    let rack = VmRack::up(&dir.join("rack"), prefix, vms)?;
    if rack.info.accel == "tcg" {
        ctx.printer.info(
            "QEMU emulates the CPUs in software here (no usable KVM): expect a few minutes per machine",
        );
    }
    let nodes: Vec<(&str, &str)> = overrides.iter().map(|(n, p, _)| (*n, *p)).collect();
    // The rack's BMC password goes into a file beside the inventory, as
    // a site keeps its secrets out of the inventory itself.
    let password = rack
        .info
        .nodes
        .first()
        .map(|n| n.password.clone())
        .unwrap_or_default();
    std::fs::write(dir.join("bmc-password"), format!("{password}\n"))?;
    let site = dir.join("site.yaml");
    std::fs::write(
        &site,
        rack.inventory(&key, &nodes).replace(
            "password: {env: KILN_VM_BMC_PASSWORD}",
            "password: {file: bmc-password}",
        ),
    )?;
    let inventory = ctx.load_generated(&site, "the VM rack's inventory")?;
    let port = free_port()?;
    let request = Request {
        stages: Some("preflight,image".into()),
        bmc_timeout: Some(Duration::from_secs(60)),
        imaging: ImagingRequest {
            bind: Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
            // QEMU's user network: the host's 127.0.0.1 is 10.0.2.2 to a
            // guest; the BMCs run on this machine.
            advertise: Some(format!("http://10.0.2.2:{port}")),
            advertise_bmc: Some(format!("http://127.0.0.1:{port}")),
            deploy_env: Some(deploy_env),
            iso_dir: Some(images),
            boot_timeout: Some(Duration::from_secs(10 * 60)),
            install_timeout: Some(Duration::from_secs(30 * 60)),
            bench_peer,
            ..ImagingRequest::default()
        },
        ..Request::default()
    };
    let state = state_dir(&site);
    let runtime = crate::commands::runtime()?;
    let mode = Progress::mode_for(ctx.printer.json, ctx.printer.quiet);
    let cpu = cpu_seconds();
    let finished = runtime
        .block_on(provision::execute(
            ctx, &inventory, &site, &state, &request, mode,
        ))?
        .finished();
    let cpu_s = cpu_seconds() - cpu;
    if let Some(f) = &finished {
        // Each machine's console, beside the run's other outputs.
        let run_dir = state.join("runs").join(&f.record.run.id);
        for n in &rack.info.nodes {
            let to = run_dir.join(&n.name);
            if std::fs::create_dir_all(&to).is_ok() {
                let _ = std::fs::copy(&n.serial_log, to.join("console.log"));
            }
        }
    }
    Ok(VmRun {
        rack,
        site,
        state,
        finished,
        cpu_s,
    })
}

/// This process's CPU time so far (user + system), in seconds.
fn cpu_seconds() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// Runs `kiln demo --vm`.
pub fn run(ctx: &Ctx, args: &DemoArgs) -> anyhow::Result<ExitStatus> {
    if let Some(why) = lacks("kiln demo --vm") {
        return Err(BadInput(format!("{why} `kiln demo` without --vm needs none of it.")).into());
    }
    if !(1..=8).contains(&args.vms) {
        return Err(BadInput(format!("--vms must be 1 to 8, not {}", args.vms)).into());
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("kiln-demo-vm"));
    super::demo::prepare(&dir)?;
    let vms: Vec<VmSpec> = (0..args.vms)
        .map(|i| VmSpec::new(&format!("vm-n{}", i + 1), NET, i))
        .collect();
    let faulty = (args.vms >= 3).then(|| format!("vm-n{}", args.vms));
    let overrides: Vec<(&str, &str, &str)> = faulty
        .as_deref()
        .map(|n| vec![(n, "debian-12-nvme", NVME_PROFILE)])
        .unwrap_or_default();
    let run = image_rack(ctx, &dir, "kiln-demo", &vms, &overrides, false)?;
    let Some(finished) = &run.finished else {
        return Ok(ExitStatus::Success);
    };
    let mode = Progress::mode_for(ctx.printer.json, ctx.printer.quiet);
    provision::print_summary(ctx, finished, mode);
    // What the machines say about themselves, over verified SSH.
    let accepted: Vec<String> = finished
        .record
        .nodes
        .iter()
        .filter(|n| n.verdict == crate::pipeline::record::NodeVerdict::Accepted)
        .map(|n| n.name.clone())
        .collect();
    if !accepted.is_empty() && !ctx.printer.json {
        let out = std::process::Command::new(std::env::current_exe()?)
            .env("KILN_STATE_DIR", &run.state)
            .arg("-i")
            .arg(&run.site)
            .args(["exec", "--select", &accepted.join(","), "--"])
            .arg("cloud-init status --long | head -3; uname -r; findmnt -n -o SOURCE,FSTYPE,SIZE /")
            .output()?;
        ctx.printer.info("kiln exec on the accepted machines:");
        ctx.printer.data(&format!(
            "{}\n",
            String::from_utf8_lossy(&out.stdout).trim_end()
        ));
    }
    ctx.printer.info(&format!(
        "consoles: {}/NODE/console.log\nexplore the run: kiln -i {} runs show {}\nthe machines are being stopped and removed",
        run.state.join("runs").join(&finished.record.run.id).display(),
        run.site.display(),
        finished.record.run.id,
    ));
    Ok(finished.status())
}

/// The demo's failing node's profile: a boot drive the VM does not have.
const NVME_PROFILE: &str = "# The demo's failure: a boot drive this machine does not have.
name: debian-12-nvme
description: Debian 12 on a Samsung NVMe boot drive
family: debian
version: \"12\"
disk_image:
  path: IMAGE
root_device: {model: \"SAMSUNG MZ1L2960HCJR-00A07\"}
seed: nocloud
";

/// A loopback port nothing listens on now (the boot server's, which must
/// be known before it starts: it is on every node's kernel line).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}
