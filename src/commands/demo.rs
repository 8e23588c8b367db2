//! `kiln demo`: the whole pipeline on a virtual rack, in-process, with a
//! few injected faults. It writes a real inventory, a password file and
//! the faults into a demo folder, starts the simulator on loopback
//! addresses, records each BMC's certificate (as `kiln bmc trust` would),
//! creates the site key, starts stand-ins for the site's package mirror and
//! cloud (`demo_cloud`), runs `kiln provision` through every stage and
//! prints the summary. Everything it leaves is
//! in the demo folder, so `kiln -i DIR/site.yaml runs show` works after.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::bmc::trust::{TrustStore, TrustTarget, fetch_fingerprint, state_dir};
use crate::cli::DemoArgs;
use crate::commands::Ctx;
use crate::commands::provision;
use crate::exit::{BadInput, ExitStatus};
use crate::inventory::Selection;
use crate::pipeline::progress::Progress;
use crate::run::{ImagingRequest, Request};
use crate::sim::SimOptions;
use crate::sim::faults::FaultPlan;

/// The demo's inventory, compiled in so the demo needs no checkout.
const INVENTORY: &str = include_str!("../../inventories/demo.yaml");
/// The demo's default faults.
const FAULTS: &str = include_str!("../../inventories/demo-faults.yaml");
/// Marks a folder as the demo's own, so a re-run may clear it.
const MARKER: &str = ".kiln-demo";

/// The demo mirror's `cuda-keyring` package: a real Debian package whose
/// keyring holds a key made for the demo (ed25519, no private half kept),
/// standing in for NVIDIA's. The simulated nodes check it with the host's
/// `dpkg-deb` and `gpg` as real ones would.
const DEMO_KEYRING_DEB: &[u8] = include_bytes!("../../inventories/demo-cuda-keyring_1.1-1_all.deb");

/// The fingerprint of the key in [`DEMO_KEYRING_DEB`], which the demo's
/// copy of the hardware profile pins instead of NVIDIA's.
const DEMO_REPO_KEY: &str = "17043C40B511FA7E55B9245AB491AFB4A7FA5D66";

/// The built-in hardware profile the demo's nodes use, and the line that
/// pins NVIDIA's key in it.
const DEMO_HARDWARE: (&str, &str) = (
    include_str!("../../inventories/profiles/hgx-h100-80gb-8x.yaml"),
    "repo_key: \"EB69 3B30 35CD 5710 E231  E123 A4B4 6996 3BF8 63CC\"",
);
/// The stages the demo runs.
const DEMO_STAGES: &str = "preflight,firmware,image,drivers,burnin,nccl,handoff";
/// Where the demo's stand-in cloud receives signed records.
const CLOUD: ([u8; 4], u16) = ([127, 10, 0, 253], 8480);

/// Runs `kiln demo`.
pub fn run(ctx: &Ctx, args: &DemoArgs) -> anyhow::Result<ExitStatus> {
    if args.vm {
        return super::demo_vm::run(ctx, args);
    }
    if !(args.time_scale.is_finite() && args.time_scale >= 1.0) {
        return Err(BadInput(format!(
            "--time-scale must be 1 or more, not {}",
            args.time_scale
        ))
        .into());
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("kiln-demo"));
    prepare(&dir)?;
    let faults_text = match &args.faults {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?,
        None if args.no_faults => "faults: []\n".to_owned(),
        None => FAULTS.to_owned(),
    };
    let site = write_files(&dir, &faults_text)?;
    let faults = FaultPlan::parse(&dir.join("faults.yaml").display().to_string(), &faults_text)
        .map_err(|e| BadInput(e.to_string()))?;

    let inventory = ctx.load_generated(&site, "the demo inventory")?;
    let runtime = crate::commands::runtime()?;
    let mode = Progress::mode_for(ctx.printer.json, ctx.printer.quiet);
    let finished = runtime.block_on(async {
        let nodes = inventory.select(&Selection::all())?;
        let options = SimOptions {
            time_scale: args.time_scale,
            faults,
            flavour: None,
            imaged: None,
            ssh: true,
            tool_exe: None,
            root: Some(dir.join("sim")),
        };
        let rack = crate::sim::start(&inventory, &nodes, options).await?;
        ctx.printer.info(&format!(
            "kiln demo: a virtual rack of {} nodes is up on loopback (BMCs on 127.10.x.x, SSH on 127.20.x.x); working in {}",
            rack.nodes.len(),
            dir.display()
        ));
        trust_all(&inventory, &site).await?;
        // The site's signing key, and the cloud that trusts its public half.
        let key = crate::handoff::sign::SiteKey::init(&state_dir(&site), true)?;
        let public = crate::handoff::sign::parse_public(&key.public_line())?;
        let cloud = super::demo_cloud::start(
            std::net::SocketAddr::from(CLOUD),
            dir.join("cloud"),
            public,
            dir.join("mirror"),
        )
        .await?;
        // The nodes arrive bare: the image stage installs their OS from a
        // boot server on loopback, serving a small installer image.
        let request = Request {
            stages: Some(DEMO_STAGES.into()),
            bmc_timeout: Some(Duration::from_secs(5)),
            imaging: ImagingRequest {
                bind: Some(std::net::SocketAddr::from(([127, 10, 0, 254], 0))),
                iso: Some(dir.join("installer.iso")),
                // r02's disk image and the deploy environment that writes it.
                iso_dir: Some(dir.join("images")),
                deploy_env: Some(dir.join("deploy-env")),
                // Simulated minutes pass in real seconds.
                install_timeout: Some(Duration::from_secs(120)),
                ssh_timeout: Some(Duration::from_secs(60)),
                poll: Some(Duration::from_millis(200)),
                ..ImagingRequest::default()
            },
            ..Request::default()
        };
        let state = state_dir(&site);
        let finished = provision::execute(ctx, &inventory, &site, &state, &request, mode)
            .await?
        .finished();
        drop(rack);
        drop(cloud);
        Ok::<_, anyhow::Error>(finished)
    })?;
    let Some(finished) = finished else {
        return Ok(ExitStatus::Success);
    };
    provision::print_summary(ctx, &finished, mode);
    let report = dir.join("report.html");
    // The run's summary leaves out step metrics; the report plots them.
    let full = crate::pipeline::journal::Journal::open(&state_dir(&site))?
        .load(&finished.record.run.id)?;
    std::fs::write(
        &report,
        crate::report::render(&full, crate::report::Format::Html),
    )
    .with_context(|| format!("cannot write {}", report.display()))?;
    ctx.printer.info(&format!(
        "report: {} (open it in a browser)\nexplore the run: kiln -i {} runs show {}\nsigned records the stand-in cloud received: {}/cloud (check one: kiln verify {}/cloud/r01-n01.json --key {}/.kiln/site-key.pub)",
        report.display(),
        site.display(),
        finished.record.run.id,
        dir.display(),
        dir.display(),
        dir.display(),
    ));
    Ok(finished.status())
}

/// Empties the demo folder, refusing one that kiln did not make.
pub(crate) fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(MARKER).exists() {
            return Err(BadInput(format!(
                "{} exists and is not a kiln demo folder; pass --dir with a new or empty folder",
                dir.display()
            ))
            .into());
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot clear the demo folder {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by kiln demo\n")?;
    Ok(())
}

/// Writes the inventory (its password read from a file beside it), a
/// fresh random password and the faults; returns the inventory's path.
fn write_files(dir: &Path, faults: &str) -> anyhow::Result<PathBuf> {
    let site = dir.join("site.yaml");
    let text = INVENTORY.replace(
        "password: {env: KILN_DEMO_BMC_PASSWORD}   # set by `kiln demo` / `kiln sim up`",
        "password: {file: bmc-password}   # written by `kiln demo`",
    );
    let text = text.replace(
        "\nnetworks:\n",
        &format!(
            "  # The demo's stand-ins for the site's package mirror and cloud,\n  # started by `kiln demo`.\n  mirror: \"http://{host}/nvidia\"\n  handoff:\n    - webhook: {{url: \"http://{host}/nodes\", failed: true}}\n\nnetworks:\n",
            host = format_args!(
                "{}.{}.{}.{}:{}",
                CLOUD.0[0], CLOUD.0[1], CLOUD.0[2], CLOUD.0[3], CLOUD.1
            )
        ),
    );
    let text = text.replace(
        "  ssh:\n    user: kiln\n",
        "  ssh:\n    user: kiln\n    key: ssh-key   # written by `kiln demo`; imaging authorizes it\n",
    );
    let text = text.replace(
        "  - name: r01\n    labels: {row: demo}\n",
        "  - name: r01\n    labels: {row: demo}\n    # Held to a firmware baseline (written by `kiln demo`).\n    hardware: hgx-h100-demo-baseline\n",
    );
    std::fs::write(&site, text).with_context(|| format!("cannot write {}", site.display()))?;
    let key = crate::sim::ssh::generate_host_key()?;
    write_private(&dir.join("ssh-key"), &crate::sim::ssh::private_pem(&key)?)?;
    std::fs::write(
        dir.join("ssh-key.pub"),
        format!("{} kiln-demo\n", crate::sim::ssh::public_line(&key)?),
    )?;
    // The mirror's one file the drivers stage downloads itself (apt does
    // the rest): the repository keyring package, holding the demo's key.
    for distro in ["ubuntu2404", "debian12"] {
        let repo = dir.join("mirror").join(distro).join("x86_64");
        std::fs::create_dir_all(&repo)?;
        std::fs::write(repo.join("cuda-keyring_1.1-1_all.deb"), DEMO_KEYRING_DEB)?;
    }
    // The site's copy of the hardware profile pins the demo's key (the
    // drivers stage refuses a keyring holding any other).
    let (hardware, nvidia) = DEMO_HARDWARE;
    anyhow::ensure!(
        hardware.contains(nvidia),
        "kiln bug: the built-in profile no longer pins `{nvidia}`"
    );
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles)?;
    std::fs::write(
        profiles.join("hgx-h100-80gb-8x.yaml"),
        hardware.replace(
            nvidia,
            &format!(
                "repo_key: \"{DEMO_REPO_KEY}\"   # kiln demo: the demo mirror's key, not NVIDIA's"
            ),
        ),
    )?;
    // r01 runs a copy of the profile with a firmware baseline its BMCs
    // are one release behind: the firmware stage updates them from the
    // package below, served by the boot server, before imaging.
    let package = "kiln-sim-firmware component=BMC version=1.46\nthe demo's BMC firmware\n";
    std::fs::create_dir_all(dir.join("firmware"))?;
    std::fs::write(dir.join("firmware").join("bmc-1.46.bin"), package)?;
    let digest = crate::imaging::verify::sha256_file(&dir.join("firmware/bmc-1.46.bin"), |_| {})?;
    let base = std::fs::read_to_string(profiles.join("hgx-h100-80gb-8x.yaml"))?;
    std::fs::write(
        profiles.join("hgx-h100-demo-baseline.yaml"),
        base.replace("name: hgx-h100-80gb-8x", "name: hgx-h100-demo-baseline")
            + &format!(
                "# kiln demo: the firmware and BIOS baseline r01's nodes are held to.\nfirmware:\n  - component: bmc\n    match: {{ id: BMC }}\n    minimum: \"1.46\"\n    package: {{ path: firmware/bmc-1.46.bin, sha256: {digest} }}\n    apply: immediate\nbios:\n  attributes:\n    - setting: power-profile\n      attribute: PowerProfile\n      value: MaxPerf\n"
            ),
    )?;
    // A small installer image in the shape of Ubuntu's (the simulated BMCs
    // fetch it for real, range by range, from the boot server).
    std::fs::write(
        dir.join("installer.iso"),
        crate::imaging::iso::demo_installer(256 << 10),
    )?;
    // r02's: the deploy environment's ISO (its grub.cfg names the agent's
    // URL, which the simulated nodes follow) and a small disk image whose
    // digest each node's agent checks as it downloads it.
    std::fs::create_dir_all(dir.join("deploy-env"))?;
    std::fs::write(
        dir.join("deploy-env").join(crate::imaging::DEPLOY_ISO),
        crate::imaging::iso::demo_deploy_env(256 << 10),
    )?;
    let images = dir.join("images");
    std::fs::create_dir_all(&images)?;
    let image: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(images.join("debian-12.raw.gz"), &image)?;
    let digest = crate::imaging::verify::sha256_file(&images.join("debian-12.raw.gz"), |_| {})?;
    std::fs::write(
        images.join("debian-12.raw.gz.sha256"),
        format!("{digest}  debian-12.raw.gz\n"),
    )?;
    let mut bytes = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for the demo's BMC password"))?;
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&dir.join("bmc-password"), &format!("{password}\n"))?;
    std::fs::write(dir.join("faults.yaml"), faults)?;
    Ok(site)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Records every BMC's certificate on first contact, as `kiln bmc trust`.
pub(crate) async fn trust_all(
    inventory: &crate::inventory::Inventory,
    site: &Path,
) -> anyhow::Result<()> {
    let path = TrustStore::path_in(&state_dir(site));
    let store = Arc::new(std::sync::Mutex::new(TrustStore::load(&path)?));
    let items: Vec<TrustTarget> = inventory.nodes.iter().map(TrustTarget::of).collect();
    let shared = Arc::clone(&store);
    crate::bmc::connect::each(
        items,
        64,
        move |TrustTarget {
                  node,
                  address,
                  host,
                  port,
                  ..
              }| {
            let store = Arc::clone(&shared);
            async move {
                // A BMC that does not answer is left untrusted here and
                // fails its preflight with the reason.
                if let Ok(fp) = fetch_fingerprint(&host, port, Duration::from_secs(3)).await {
                    store
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .set(&node, &address, &fp);
                }
            }
        },
        |_, _| {},
    )
    .await;
    store.lock().unwrap_or_else(|e| e.into_inner()).save()
}
