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
use crate::commands::provision::{self, ImagingRequest, Request};
use crate::exit::{BadInput, ExitStatus};
use crate::pipeline::progress::Progress;
use crate::vmlab::{VmRack, VmSpec};

/// The rack's loopback network (BMCs on 127.NET.0.x).
const NET: u8 = 203;

/// Runs `kiln demo --vm`.
pub fn run(ctx: &Ctx, args: &DemoArgs) -> anyhow::Result<ExitStatus> {
    let mut missing = crate::vmlab::missing();
    for what in [BuildTarget::DeployEnv, BuildTarget::Debian12] {
        missing.extend(super::image_build::missing_tools(what));
    }
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        return Err(BadInput(format!(
            "kiln demo --vm boots real virtual machines, and this machine lacks: {}.\n\
             On Debian 12, as root: scripts/vmrack/deps.sh (qemu-system-x86, ovmf, libvirt, \
             mmdebstrap, xorriso, grub-efi-amd64-bin, …; sushy-tools and libvirt-python from PyPI). \
             `kiln demo` without --vm needs none of it.",
            missing.join(", ")
        ))
        .into());
    }
    if !(1..=8).contains(&args.vms) {
        return Err(BadInput(format!("--vms must be 1 to 8, not {}", args.vms)).into());
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("kiln-demo-vm"));
    super::demo::prepare(&dir)?;
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vm-cache");
    ctx.printer.info(&format!(
        "kiln demo --vm: building (or reusing) the deploy environment and a Debian 12 image in {}",
        cache.display()
    ));
    let (deploy_env, images) = crate::vmlab::build_images(&cache)?;

    let key = dir.join("ssh-key");
    crate::vmlab::login_key(&key)?;
    let vms: Vec<VmSpec> = (0..args.vms)
        .map(|i| VmSpec::new(&format!("vm-n{}", i + 1), NET, i))
        .collect();
    let faulty = (args.vms >= 3).then(|| format!("vm-n{}", args.vms));
    if faulty.is_some() {
        let profiles = dir.join("profiles/images");
        std::fs::create_dir_all(&profiles)?;
        std::fs::write(
            profiles.join("debian-12-nvme.yaml"),
            format!(
                "# The demo's failure: a boot drive this machine does not have.\n\
                 name: debian-12-nvme\ndescription: Debian 12 on a Samsung NVMe boot drive\n\
                 family: debian\nversion: \"12\"\ndisk_image:\n  path: {}\n\
                 root_device: {{model: \"SAMSUNG MZ1L2960HCJR-00A07\"}}\nseed: nocloud\n",
                serde_json::Value::String(images.join("debian-12.raw.gz").display().to_string())
            ),
        )?;
    }
    ctx.printer.info(&format!(
        "kiln demo --vm: starting {} virtual machines behind sushy-tools BMCs (libvirt); working in {}",
        vms.len(),
        dir.display()
    ));
    let rack = VmRack::up(&dir.join("rack"), "kiln-demo", &vms)?;
    let overrides: Vec<(&str, &str)> = faulty
        .as_deref()
        .map(|n| vec![(n, "debian-12-nvme")])
        .unwrap_or_default();
    let site = dir.join("site.yaml");
    std::fs::write(&site, rack.inventory(&key, &overrides))?;
    if rack.info.accel == "tcg" {
        ctx.printer.info(
            "kiln demo --vm: QEMU emulates the CPUs in software here (no usable KVM): expect a few minutes per machine",
        );
    }
    // The rack's BMC password goes into a file beside the inventory, as
    // a site keeps its secrets out of the inventory itself.
    let password = rack
        .info
        .nodes
        .first()
        .map(|n| n.password.clone())
        .unwrap_or_default();
    std::fs::write(dir.join("bmc-password"), format!("{password}\n"))?;
    let text = std::fs::read_to_string(&site)?.replace(
        "password: {env: KILN_VM_BMC_PASSWORD}",
        "password: {file: bmc-password}",
    );
    std::fs::write(&site, text)?;

    let checked = crate::inventory::load_file(&site)?;
    for d in &checked.diagnostics {
        ctx.printer.diagnostic(d);
    }
    let inventory = checked
        .inventory
        .ok_or_else(|| anyhow::anyhow!("the VM rack's inventory does not load (a bug in kiln)"))?;
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
            ..ImagingRequest::default()
        },
        ..Request::default()
    };
    let state = state_dir(&site);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mode = Progress::mode_for(ctx.printer.json, ctx.printer.quiet);
    let finished = runtime.block_on(provision::execute(
        &inventory, &site, &state, &request, mode, ctx,
    ))?;
    let Some(finished) = finished else {
        return Ok(ExitStatus::Success);
    };
    // Each machine's console, beside the run's other outputs.
    let run_dir = state.join("runs").join(&finished.record.run.id);
    for n in &rack.info.nodes {
        let to = run_dir.join(&n.name);
        if std::fs::create_dir_all(&to).is_ok() {
            let _ = std::fs::copy(&n.serial_log, to.join("console.log"));
        }
    }
    provision::print_summary(ctx, &finished, mode);
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
            .env("KILN_STATE_DIR", &state)
            .arg("-i")
            .arg(&site)
            .args(["exec", "--select", &accepted.join(","), "--"])
            .arg("cloud-init status --long | head -3; uname -r; findmnt -n -o SOURCE,FSTYPE,SIZE /")
            .output()?;
        ctx.printer.info("kiln exec on the accepted machines:");
        ctx.printer.data(String::from_utf8_lossy(&out.stdout).trim_end());
    }
    ctx.printer.info(&format!(
        "consoles: {}/NODE/console.log\nexplore the run: kiln -i {} runs show {}\nthe machines are being stopped and removed",
        run_dir.display(),
        site.display(),
        finished.record.run.id,
    ));
    drop(rack);
    Ok(finished.status())
}

/// A loopback port nothing listens on now (the boot server's, which must
/// be known before it starts: it is on every node's kernel line).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}
