//! The `drivers` stage: the NVIDIA driver stack, installed at the versions
//! the hardware profile pins and verified against it.
//!
//! Steps, each journaled ([`Steps::run`]):
//! - `inspect`: one read-only probe ([`verify::probe`]); a node already
//!   exactly right is not touched again.
//! - `install`: the script rendered from `templates/drivers/` for the OS
//!   family ([`script`]) is copied to the node and run with sudo, its log
//!   streamed to `RUN/NODE/drivers/install.log`. Skipped when `inspect`
//!   found nothing to do, or when the image carries the stack.
//! - `reboot`: only when the script says the new module cannot be loaded
//!   in place (nouveau holds the GPUs, another driver is loaded); waits
//!   until the node runs the pinned driver.
//! - `settle`: after a reboot, the script once more (services, persistence
//!   mode, `nvidia_peermem`); nothing to install by then.
//! - `verify`: the probe again, held to the profile by [`verify::check`];
//!   its metrics carry the versions, OS, kernel and GPUs.
//!
//! It talks to nodes only through [`Remote`], never to a BMC.

pub mod metrics;
pub mod script;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

use crate::acceptance::{NodeCtx, artifact_path, capture};
use crate::inventory::Node;
use crate::pipeline::node::NodeCx;
use crate::pipeline::step::{Outcome, Steps, Stop};
use crate::profiles::hardware::HardwareProfile;
use crate::profiles::image::ImageProfile;
use crate::ssh::exec::Discard;
use crate::ssh::{ExecOptions, Input, Remote, RemoteCommand};

use metrics::{InspectMetrics, ScriptMetrics};
use verify::Facts;

use crate::pipeline::record::StepMetrics as _;

/// The stage's name in records and artifact paths.
const STAGE: &str = "drivers";
/// Where the script lands on the node: the login user's home folder (the
/// working folder of every command), not a shared `/tmp` name another
/// user could have put there first.
const REMOTE_SCRIPT: &str = ".kiln-drivers-install.sh";
/// The script's last line when the node must reboot.
const REBOOT_MARKER: &str = "KILN_REBOOT_REQUIRED";

/// Install and verify, or only verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Install what is missing, then verify.
    Install,
    /// Verify only; change nothing.
    Verify,
}

/// How long each step may take.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// The probe (`inspect`, `verify`).
    pub probe: Duration,
    /// The install script (downloads of several GB, DKMS builds).
    pub install: Duration,
    /// From `reboot` to the node running the new driver.
    pub reboot: Duration,
    /// Between looks at a rebooting node.
    pub poll: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            probe: Duration::from_secs(120),
            install: Duration::from_secs(60 * 60),
            reboot: Duration::from_secs(30 * 60),
            poll: Duration::from_secs(10),
        }
    }
}

/// What the stage needs of one node.
#[derive(Clone)]
pub struct DriversCx {
    /// The node.
    pub node: Node,
    /// Its hardware profile (the pins and what to verify).
    pub hardware: Arc<HardwareProfile>,
    /// Its image profile (OS family; whether the image carries the stack).
    pub image: Arc<ImageProfile>,
    /// How to run commands on it.
    pub remote: Remote,
    /// The run folder (the log goes to `NODE/drivers/`).
    pub run_dir: PathBuf,
    /// Install or only verify.
    pub mode: Mode,
    /// Step deadlines.
    pub deadlines: Deadlines,
}

impl DriversCx {
    /// The drivers stage's view of a pipeline node.
    pub fn from_node(cx: &NodeCx) -> DriversCx {
        DriversCx {
            node: cx.node.clone(),
            hardware: Arc::clone(&cx.hardware),
            image: Arc::clone(&cx.image),
            remote: cx.remote.clone(),
            run_dir: cx.run_dir.clone(),
            mode: Mode::Install,
            deadlines: Deadlines::default(),
        }
    }

    fn name(&self) -> &str {
        &self.node.name
    }

    fn ctx(&self) -> NodeCtx {
        NodeCtx::new(self.remote.clone(), self.run_dir.clone())
    }
}

/// What the stage did on one node.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// The node.
    pub node: String,
    /// Whether the install script ran (false: already right, verify only,
    /// or an image that carries the stack).
    pub installed: bool,
    /// Whether the node was rebooted.
    pub rebooted: bool,
    /// The `verify` step's metrics.
    pub metrics: Value,
}

/// The pipeline's `drivers` stage for one node.
pub async fn run(cx: &NodeCx, steps: &mut Steps) -> Result<(), Stop> {
    stage(&DriversCx::from_node(cx), steps).await.map(drop)
}

/// Runs the stage's steps on one node (see the module documentation).
pub async fn stage(cx: &DriversCx, steps: &mut Steps) -> Result<Report, Stop> {
    let hw = &cx.hardware;
    let family = cx.image.family;
    let install = cx.mode == Mode::Install && !cx.image.includes_driver_stack;
    let mut installed = false;
    let mut rebooted = false;
    if install {
        let inspect = steps
            .run("inspect", cx.deadlines.probe, || async {
                let (facts, artifact) = probe(cx, "inspect.txt").await?;
                let why = verify::check(&facts, hw, family);
                let detail = if why.is_empty() {
                    "already at the pinned versions".to_owned()
                } else {
                    format!("{} difference(s): {}", why.len(), why[0])
                };
                Ok(Outcome::done(detail)
                    .with_metrics(InspectMetrics { differences: why }.to_metrics())
                    .with_artifact(artifact))
            })
            .await?;
        let converged = InspectMetrics::from_metrics(&inspect.metrics)
            .is_some_and(|m| m.differences.is_empty());
        let out = steps
            .run("install", cx.deadlines.install, || async {
                if converged {
                    return Ok(Outcome::skipped(format!(
                        "driver {} and its stack already installed",
                        hw.drivers.version
                    )));
                }
                run_script(cx, "install.log").await
            })
            .await?;
        installed = out.status == crate::pipeline::record::StepStatus::Done;
        let reboot = ScriptMetrics::from_metrics(&out.metrics).is_some_and(|m| m.reboot);
        let out = steps
            .run("reboot", cx.deadlines.reboot, || async {
                if !reboot {
                    return Ok(Outcome::skipped("not needed"));
                }
                reboot_node(cx).await
            })
            .await?;
        rebooted = out.status == crate::pipeline::record::StepStatus::Done;
        steps
            .run("settle", cx.deadlines.install, || async {
                if !rebooted {
                    return Ok(Outcome::skipped("no reboot"));
                }
                let out = run_script(cx, "settle.log").await?;
                if ScriptMetrics::from_metrics(&out.metrics).is_some_and(|m| m.reboot) {
                    return Ok(Outcome::failed(format!(
                        "still cannot load driver {} after a reboot (see {})",
                        hw.drivers.version,
                        out.artifacts.first().map_or("the log", String::as_str)
                    ))
                    .with_metrics(out.metrics));
                }
                Ok(out)
            })
            .await?;
    }
    let out = steps
        .run("verify", cx.deadlines.probe, || async {
            let (facts, artifact) = probe(cx, "verify.txt").await?;
            let why = verify::check(&facts, hw, family);
            let metrics = verify::metrics(&facts, hw, family);
            let mut o = if why.is_empty() {
                Outcome::done(format!(
                    "driver {}, {} x {}",
                    hw.drivers.version,
                    facts.gpus.len(),
                    hw.gpu.model
                ))
            } else {
                let mut o = Outcome::failed(why[0].clone());
                o.reasons = why;
                o
            };
            o.metrics = metrics;
            Ok(o.with_artifact(artifact))
        })
        .await?;
    Ok(Report {
        node: cx.name().to_owned(),
        installed,
        rebooted,
        metrics: out.metrics,
    })
}

/// Runs the probe, keeping its output as `NODE/drivers/FILE`.
async fn probe(cx: &DriversCx, file: &str) -> anyhow::Result<(Facts, String)> {
    let rel = artifact_path(cx.name(), STAGE, file);
    let script = verify::probe(&cx.hardware, cx.image.family);
    let c = capture(&cx.ctx(), &rel, script, false, cx.deadlines.probe).await?;
    if c.output.timed_out {
        anyhow::bail!("the probe timed out after {:?}", cx.deadlines.probe);
    }
    Ok((
        Facts::parse(&c.text, &cx.hardware, cx.image.family),
        c.artifact,
    ))
}

/// Renders the script, copies it to the node and runs it with sudo,
/// streaming its log to `NODE/drivers/LOG`. Metrics: `{"reboot": bool}`.
async fn run_script(cx: &DriversCx, log: &str) -> anyhow::Result<Outcome> {
    let node = cx.name();
    let context =
        script::ScriptContext::new(node, &cx.hardware, &cx.image, cx.node.mirror.as_deref());
    let text = script::render(cx.image.family, &context)?;
    let kept = artifact_path(node, STAGE, "install.sh");
    let path = cx.run_dir.join(&kept);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    let upload = crate::ssh::copy::upload_command(REMOTE_SCRIPT, 0o700)
        .timeout(Some(Duration::from_secs(60)));
    let out = cx
        .remote
        .run(
            &upload,
            Input::Bytes(text.into_bytes().into()),
            &mut Discard,
            &ExecOptions::default(),
        )
        .await
        .with_context(|| format!("{node}: copying the install script"))?;
    out.check(node, &upload)
        .with_context(|| format!("{node}: copying the install script"))?;
    let rel = artifact_path(node, STAGE, log);
    let c = capture(
        &cx.ctx(),
        &rel,
        format!("bash {REMOTE_SCRIPT}"),
        true,
        cx.deadlines.install,
    )
    .await?;
    let reboot = c.text.lines().any(|l| l.trim() == REBOOT_MARKER);
    let metrics = ScriptMetrics {
        reboot,
        exit: c.output.outcome().into(),
    }
    .to_metrics();
    if c.output.success() {
        let detail = if reboot {
            format!(
                "driver {} installed; reboot needed",
                cx.hardware.drivers.version
            )
        } else {
            format!(
                "driver {} and its stack installed",
                cx.hardware.drivers.version
            )
        };
        return Ok(Outcome::done(detail)
            .with_metrics(metrics)
            .with_artifact(kept)
            .with_artifact(c.artifact));
    }
    let reason = failure_reason(&c.text)
        .unwrap_or_else(|| format!("the install script {}", c.output.outcome()));
    Ok(Outcome::failed(format!("{reason} (log: {})", c.artifact))
        .with_metrics(metrics)
        .with_artifact(kept)
        .with_artifact(c.artifact))
}

/// The line that says why the script failed: its own `FAILED:` line, with
/// the package manager's first error when there is one.
pub fn failure_reason(log: &str) -> Option<String> {
    let ours = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("kiln-drivers: FAILED: "))?;
    let tool = log.lines().find(|l| {
        l.starts_with("E: ") || l.starts_with("Error: ") || l.starts_with("Error downloading")
    });
    Some(match tool {
        Some(t) => format!("{ours}: {}", t.trim()),
        None => ours.to_owned(),
    })
}

/// Reboots the node and waits until it runs the pinned driver. A node
/// that already does (a resumed run) is not rebooted again.
async fn reboot_node(cx: &DriversCx) -> anyhow::Result<Outcome> {
    let want = &cx.hardware.drivers.version;
    let running = |f: &Facts| f.smi_error().is_none() && f.driver() == Some(want.as_str());
    if let Ok((f, _)) = probe(cx, "before-reboot.txt").await
        && running(&f)
        && !f.modules.iter().any(|m| m == "nouveau")
    {
        return Ok(Outcome::skipped(format!("already running driver {want}")));
    }
    if let Remote::Local { .. } = cx.remote {
        return Ok(Outcome::failed(format!(
            "driver {want} needs a reboot; reboot this machine and run kiln again"
        )));
    }
    let cmd = RemoteCommand::shell("reboot")
        .sudo(true)
        .timeout(Some(Duration::from_secs(30)));
    // The connection may drop before the command reports back.
    let _ = cx
        .remote
        .run(&cmd, Input::None, &mut Discard, &ExecOptions::default())
        .await;
    cx.remote.close().await;
    let start = Instant::now();
    let mut last;
    loop {
        tokio::time::sleep(cx.deadlines.poll).await;
        match probe(cx, "after-reboot.txt").await {
            Ok((f, _)) if running(&f) => {
                return Ok(Outcome::done(format!(
                    "rebooted in {:.0} s; driver {want} loaded",
                    start.elapsed().as_secs_f64()
                )));
            }
            Ok((f, _)) => {
                last = f
                    .smi_error()
                    .unwrap_or_else(|| format!("driver {}", f.driver().unwrap_or("unknown")));
            }
            Err(e) => {
                last = crate::pipeline::step::error_text(&e);
                cx.remote.close().await;
            }
        }
        if start.elapsed() + cx.deadlines.poll >= cx.deadlines.reboot {
            return Ok(Outcome::failed(format!(
                "not running driver {want} {:.0} s after the reboot: {last}",
                start.elapsed().as_secs_f64()
            )));
        }
    }
}
