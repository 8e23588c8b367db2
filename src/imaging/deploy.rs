//! The imaging stage of one node, as named steps (see
//! [`crate::pipeline::step`]): each step first checks whether its work is
//! already true and reports `skipped` if so, so a resumed run never powers
//! a node off twice or reinserts media it already has.
//!
//! Steps, in order: `check-installed` (the node already runs the profile's
//! OS and answers SSH with kiln's host key: everything else is skipped),
//! `prepare` (BMC discovery, host key, seed and per-node installer image
//! registered with the boot server under a stable per-node token; redone on
//! every attempt since the boot server lives in this process), `power-off` (graceful, then forced),
//! `eject-stale`, `insert-installer`, `boot-once` (virtual CD in UEFI mode,
//! or UEFI HTTP boot with `HttpBootUri` where the profile asks and the BMC
//! can), `power-on`, `wait-installed` (the call-back), `wait-ssh`, `eject`,
//! `boot-disk`, `verify-os` (OS release and kernel over SSH).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;

use crate::bmc::client::BmcClient;
use crate::bmc::discover::{Layout, discover_bmc, read_media};
use crate::bmc::ops::{self, BootDevice, PowerOp, Waits};
use crate::imaging::server::{AgentPlan, BootServer, Progress, Registration, ServedFile};
use crate::imaging::{DiskMedia, DiskSource, Media, hostkeys, iso, seed};
use crate::inventory::Node;
use crate::pipeline::step::{Outcome, Steps, Stop};
use crate::profiles::image::{BootMethod, ImageProfile, OsFamily};
use crate::ssh::auth::Credentials;
use crate::ssh::exec::{Discard, ExecOptions, Input, RemoteCommand};
use crate::ssh::hostkeys::Verifier;
use crate::ssh::{Client, ClientOptions, Pool, Target};

/// How long each part of imaging may take.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// A graceful shutdown, before power is forced off.
    pub graceful: Duration,
    /// Each BMC step (power, media, boot override).
    pub bmc: Duration,
    /// From power-on to the install-finished call-back.
    pub install: Duration,
    /// From the call-back to a verified SSH login.
    pub ssh: Duration,
    /// One SSH connection attempt (the `check-installed` probe, commands).
    pub connect: Duration,
    /// From power-on to the deploy agent's first call (image-based
    /// deploys): a node that never boots the deploy environment fails
    /// after this, not after `install`.
    pub agent: Duration,
}

impl Default for Deadlines {
    fn default() -> Deadlines {
        Deadlines {
            graceful: Duration::from_secs(60),
            bmc: Duration::from_secs(300),
            install: Duration::from_secs(60 * 60),
            ssh: Duration::from_secs(10 * 60),
            connect: Duration::from_secs(10),
            agent: Duration::from_secs(15 * 60),
        }
    }
}

/// Everything the imaging stage of one node needs.
pub struct ImageCx {
    /// The node, from the inventory.
    pub node: Node,
    /// Its image profile.
    pub profile: ImageProfile,
    /// Its BMC.
    pub bmc: Arc<BmcClient>,
    /// The boot server the node fetches from.
    pub server: Arc<BootServer>,
    /// What the node boots: an installer, or the deploy environment and
    /// a disk image.
    pub media: Media,
    /// Public-key lines that may log in afterwards (the inventory's key).
    pub authorized_keys: Vec<String>,
    /// Loaded SSH keys, shared across nodes.
    pub credentials: Arc<Credentials>,
    /// Where host keys are kept (`host-keys/NODE.ed25519`).
    pub state_dir: PathBuf,
    /// kiln's known-hosts store (`ssh::hostkeys::store_path`).
    pub known_hosts: PathBuf,
    /// Step deadlines.
    pub deadlines: Deadlines,
    /// BMC read-back waits.
    pub waits: Waits,
    /// Reimage even if the node already runs the profile's OS.
    pub reimage: bool,
    /// The site's power-on waves (`limits.power_on`): a rack powering on
    /// at once trips its breakers. `None`: no limit.
    pub gates: Option<Arc<crate::pipeline::gates::Gates>>,
    /// The node's BMC layout as an earlier stage of this run discovered
    /// it (filled here when empty); `None` discovers it afresh.
    pub layout: Option<Arc<tokio::sync::OnceCell<Arc<Layout>>>>,
}

/// What imaging ended with.
#[derive(Clone, Debug, Serialize)]
pub struct Deployed {
    /// The node.
    pub node: String,
    /// It already ran the profile's OS with kiln's host key; nothing done.
    pub already: bool,
    /// The OS as the node reports it (`Ubuntu 24.04.1 LTS`).
    pub os: String,
    /// The running kernel.
    pub kernel: String,
    /// How the installer was booted (`virtual-media`, `uefi-http`), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booted_via: Option<&'static str>,
}

/// What `prepare` made.
struct Prepared {
    layout: Layout,
    reg: Registration,
    http_boot: bool,
    /// An image-based deploy.
    disk: Option<DiskMedia>,
}

/// Images one node. `steps` records each step; `Steps::unjournaled(node,
/// "image")` for a one-off command.
pub async fn deploy(cx: &ImageCx, steps: &mut Steps) -> Result<Deployed, Stop> {
    let d = cx.deadlines;
    let node = cx.node.name.clone();

    let mut found: Option<(String, String)> = None;
    let check = steps
        .run("check-installed", d.connect * 6, || async {
            if cx.reimage {
                return Ok(Outcome::done("reimage asked for"));
            }
            let probe = tokio::time::timeout(d.connect * 4, os_over_ssh(cx, d.connect))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer over SSH")));
            match probe {
                Ok((os, kernel)) => match matches_profile(&cx.profile, &os) {
                    Ok(()) => {
                        found = Some((os.clone(), kernel.clone()));
                        Ok(Outcome::skipped(format!(
                            "already runs {os} (kernel {kernel}) with kiln's host key"
                        )))
                    }
                    Err(why) => Ok(Outcome::done(format!("needs imaging: {why}"))),
                },
                Err(e) => Ok(Outcome::done(format!("needs imaging: {}", first_line(&e)))),
            }
        })
        .await?;
    if check.status == crate::pipeline::record::StepStatus::Skipped {
        let (os, kernel) = found.unwrap_or_default();
        return Ok(Deployed {
            node,
            already: true,
            os,
            kernel,
            booted_via: None,
        });
    }

    // Not a resumable step: the boot server's registrations live in this
    // process, so every attempt registers the node again, under the same
    // token (derived from the node's host key), so an installer started by
    // an earlier attempt still finds its seed and call-back. Its outcome
    // is still recorded.
    let sent_before_prepare = cx.bmc.requests();
    let prepared = prepare(cx).await;
    let summary = match &prepared {
        Ok(p) => Ok(format!(
            "{:?} ({}), seed at the boot server, {}{}",
            p.layout.identity.vendor,
            p.layout.identity.model,
            if p.http_boot {
                "UEFI HTTP boot"
            } else {
                "virtual CD"
            },
            match &p.disk {
                Some(d) => format!(
                    ", deploy environment writes {}",
                    match &d.image {
                        DiskSource::Local(path) => format!(
                            "{} served by kiln",
                            path.file_name().unwrap_or_default().to_string_lossy()
                        ),
                        DiskSource::Url(u) => u.clone(),
                    }
                ),
                None => String::new(),
            }
        )),
        Err(e) => Err(format!("{e:#}")),
    };
    steps.count_from(sent_before_prepare);
    steps
        .run("prepare", d.bmc, || async move {
            Ok(match summary {
                Ok(s) => Outcome::done(s),
                Err(e) => Outcome::failed(e),
            })
        })
        .await?;
    let p = prepared.map_err(|e| Stop::Failed {
        step: "prepare",
        outcome: Box::new(Outcome::failed(format!("{e:#}"))),
    })?;
    let layout = &p.layout;
    let c = &cx.bmc;
    let waits = &cx.waits;

    steps
        .run("power-off", d.bmc + d.graceful, || async {
            power_off(c, layout, waits, d.graceful).await
        })
        .await?;

    let iso_url = p.reg.iso_url.clone();
    // Whether the slots are as `prepare` read them (nothing ejected since).
    let mut slots_as_read = true;
    steps
        .run("eject-stale", d.bmc, || async {
            // `prepare` read the slots moments ago, on this attempt.
            let stale: Vec<String> = layout
                .media
                .iter()
                .filter(|s| {
                    s.state.inserted && (p.http_boot || s.state.image.as_deref() != Some(&iso_url))
                })
                .map(|s| s.state.image.clone().unwrap_or_else(|| s.id.clone()))
                .collect();
            if stale.is_empty() {
                return Ok(Outcome::skipped("no stale media"));
            }
            slots_as_read = false;
            ops::eject_media(c, layout, waits).await.map_err(clean)?;
            Ok(Outcome::done(format!(
                "ejected {}",
                redact_tokens(&stale.join(", "))
            )))
        })
        .await?;

    if !p.http_boot {
        steps
            .run("insert-installer", d.bmc, || async {
                let out = ops::insert_media(c, layout, &iso_url, waits, slots_as_read)
                    .await
                    .with_context(|| {
                        format!(
                            "inserting the installer on {node} (BMC {})",
                            cx.node.bmc.endpoint
                        )
                    })
                    .map_err(clean)?;
                Ok(if out.unchanged {
                    Outcome::skipped("installer already inserted")
                } else {
                    Outcome::done(format!(
                        "installer inserted in {} via {}",
                        out.slot, out.via
                    ))
                })
            })
            .await?;
    }

    // The power state boot-once read back, moments before power-on.
    let mut power_read_back: Option<String> = None;
    steps
        .run("boot-once", d.bmc, || async {
            let out = boot_installer_once(c, layout, p.http_boot, &iso_url).await?;
            power_read_back = out.power.clone();
            let mut detail = format!(
                "next boot: {} ({}, via {})",
                out.target, out.enabled, out.via
            );
            if !out.notes.is_empty() {
                detail.push_str(&format!("; {}", out.notes.join("; ")));
            }
            Ok(Outcome::done(detail))
        })
        .await?;

    steps
        .run("power-on", d.bmc * 2, || async {
            let before = match power_read_back.take() {
                Some(state) => state,
                None => ops::power_state(c, layout).await?,
            };
            let mut waited = Duration::ZERO;
            if before == "Off"
                && let Some(gates) = &cx.gates
            {
                let start = Instant::now();
                gates.power_on(&cx.node.rack).await;
                waited = start.elapsed();
            }
            // After a long wait for the wave, look again.
            let out = if waited > Duration::from_secs(2) {
                ops::power(c, layout, PowerOp::On, waits).await?
            } else {
                ops::power_from(c, layout, PowerOp::On, waits, before).await?
            };
            Ok(if out.sent.is_empty() {
                Outcome::skipped(format!("already {}", out.after))
            } else {
                Outcome::done(format!("powered on ({})", out.sent.join(", ")))
            })
        })
        .await?;

    // Installing takes minutes: no BMC connection is kept meanwhile. The
    // host reboots, so its system document's tag goes stale; the media
    // slot's stays as the insert left it.
    c.close_idle();
    c.forget_etag(&layout.system);
    let started = Instant::now();
    let mut progress = p.reg.progress.clone();
    if p.disk.is_some() {
        // A run resumed after power-on: the agent may have finished (and
        // powered off) or given up while no kiln was listening; a write
        // kiln did not see end is started again (writing is idempotent).
        let resumed = steps.ended_before("power-on") && !steps.ended_before("wait-written");
        steps
            .run(
                "wait-written",
                d.install * 2 + d.agent + d.connect,
                || async {
                    let restart =
                        resumed.then_some((&**c, layout, waits, p.http_boot, iso_url.as_str()));
                    wait_written(cx, &mut progress, d.agent, d.install, restart).await
                },
            )
            .await?;
        eject_step(steps, cx, &p).await?;
        boot_disk_step(steps, cx, layout).await?;
        steps
            .run("power-on-disk", d.bmc * 2 + d.graceful, || async {
                power_on_disk(cx, layout, d.graceful).await
            })
            .await?;
        c.close_idle();
        steps
            .run("wait-installed", d.install + d.connect * 2, || async {
                wait_installed(cx, &mut progress, d.install, None).await
            })
            .await?;
        wait_ssh_step(steps, cx).await?;
    } else {
        // A run resumed after power-on (kiln was killed or the laptop slept
        // while the node installed): the installer may have lost the boot
        // server it was reading from, and is then restarted once.
        let resumed = steps.ended_before("power-on") && !steps.ended_before("wait-installed");
        steps
            .run("wait-installed", d.install * 2 + d.connect * 2, || async {
                let restart =
                    resumed.then_some((&**c, layout, waits, p.http_boot, iso_url.as_str()));
                wait_installed(cx, &mut progress, d.install, restart).await
            })
            .await?;
        wait_ssh_step(steps, cx).await?;
        eject_step(steps, cx, &p).await?;
        boot_disk_step(steps, cx, layout).await?;
    }

    let mut verified: Option<(String, String)> = None;
    steps
        .run("verify-os", d.connect * 5, || async {
            let (os, kernel) = os_over_ssh(cx, d.connect).await?;
            match matches_profile(&cx.profile, &os) {
                Ok(()) => {
                    let o =
                        Outcome::done(format!("runs {os}, kernel {kernel}")).with_metrics(json!({
                            "os": os, "kernel": kernel,
                            "install_s": started.elapsed().as_secs_f64(),
                        }));
                    verified = Some((os, kernel));
                    Ok(o)
                }
                Err(why) => Ok(Outcome::failed(why)),
            }
        })
        .await?;
    let (os, kernel) = verified.unwrap_or_default();
    cx.server.unregister(&node);
    Ok(Deployed {
        node,
        already: false,
        os,
        kernel,
        booted_via: Some(if p.http_boot {
            "uefi-http"
        } else {
            "virtual-media"
        }),
    })
}

async fn wait_ssh_step(steps: &mut Steps, cx: &ImageCx) -> Result<(), Stop> {
    let d = cx.deadlines;
    steps
        .run("wait-ssh", d.ssh + d.connect, || async {
            let pool = pool(cx);
            let target = Target::from_node(&cx.node);
            let session = pool.wait_for_ssh(&target, d.ssh).await?;
            let trust = session.host_key().0.clone();
            pool.close(&cx.node.name).await;
            Ok(Outcome::done(format!(
                "SSH verified with kiln's host key {trust}"
            )))
        })
        .await?;
    Ok(())
}

async fn eject_step(steps: &mut Steps, cx: &ImageCx, p: &Prepared) -> Result<(), Stop> {
    let (c, layout, waits) = (&cx.bmc, &p.layout, &cx.waits);
    steps
        .run("eject", cx.deadlines.bmc, || async {
            if p.http_boot {
                return Ok(Outcome::skipped("nothing inserted (UEFI HTTP boot)"));
            }
            let out = ops::eject_cd(c, layout, waits).await.map_err(clean)?;
            Ok(if out.is_none() {
                Outcome::skipped("nothing inserted")
            } else if p.disk.is_some() {
                Outcome::done("deploy environment ejected")
            } else {
                Outcome::done("installer ejected")
            })
        })
        .await?;
    Ok(())
}

async fn boot_disk_step(steps: &mut Steps, cx: &ImageCx, layout: &Layout) -> Result<(), Stop> {
    let c = &cx.bmc;
    steps
        .run("boot-disk", cx.deadlines.bmc, || async {
            if !layout.boot_targets.is_empty() && !layout.boot_targets.iter().any(|t| t == "Hdd") {
                return Ok(Outcome::skipped(
                    "the BMC offers no Hdd boot target; the one-time override has lapsed",
                ));
            }
            let persistent = layout.boot_enabled.is_empty()
                || layout.boot_enabled.iter().any(|e| e == "Continuous");
            let out = ops::set_boot(c, layout, BootDevice::Disk, persistent, None).await?;
            Ok(Outcome::done(format!(
                "boot: {} ({})",
                out.target, out.enabled
            )))
        })
        .await?;
    Ok(())
}

/// Waits up to 5 s for the boot server's next progress, so a polling loop
/// notes both news and the clock. Past `deadline`: the progress last seen.
async fn wait_progress(
    progress: &mut tokio::sync::watch::Receiver<Progress>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Option<Progress>> {
    let wake = deadline.min(tokio::time::Instant::now() + Duration::from_secs(5));
    match tokio::time::timeout_at(wake, progress.changed()).await {
        Ok(Ok(())) | Err(_) => {}
        Ok(Err(_)) => anyhow::bail!("the boot server stopped"),
    }
    Ok((tokio::time::Instant::now() >= deadline).then(|| progress.borrow().clone()))
}

/// Waits for the deploy agent to write the image: its `hello` within
/// `boot` of power-on, its `done` or `failed` within `write` after that.
async fn wait_written(
    cx: &ImageCx,
    progress: &mut tokio::sync::watch::Receiver<Progress>,
    boot: Duration,
    write: Duration,
    mut restart: Option<Restart<'_>>,
) -> anyhow::Result<Outcome> {
    let node = &cx.node.name;
    let start = Instant::now();
    let mut deadline = tokio::time::Instant::now() + boot;
    // How long a resumed agent may stay silent before it is restarted.
    let quiet = (boot / 4).clamp(Duration::from_secs(1), Duration::from_secs(120));
    let mut said_hello = false;
    let mut next_note = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = progress.borrow().clone();
        let agent = &seen.agent;
        if let Some(done) = &agent.done {
            let field = |k: &str| done.get(k).cloned().unwrap_or_default();
            let bytes: u64 = field("bytes").parse().unwrap_or(agent.written);
            let seconds: f64 = field("seconds").parse().unwrap_or(0.0);
            let rate = if seconds > 0.0 {
                bytes as f64 / seconds / f64::from(1u32 << 20)
            } else {
                0.0
            };
            let device = agent.device.clone().unwrap_or_else(|| field("device"));
            return Ok(Outcome::done(format!(
                "wrote {:.2} GiB to {device} in {seconds:.0} s ({rate:.0} MiB/s), SHA-256 verified; root {} grown, seed written",
                bytes as f64 / f64::from(1u32 << 30),
                field("root")
            ))
            .with_metrics(json!({
                "device": device,
                "bytes": bytes,
                "write_s": seconds,
                "write_mib_s": rate,
                "sha256": field("sha256"),
                "peer_write_s": field("peer_seconds").parse::<f64>().ok(),
                "disks": agent.disks,
                "written_after_s": start.elapsed().as_secs_f64(),
            })));
        }
        if let Some(why) = &agent.failed {
            return Ok(Outcome::failed(format!(
                "{node}: the deploy environment failed on {}: {why}",
                agent.device.as_deref().unwrap_or("its disk")
            )));
        }
        if let Some(why) = &agent.refused {
            return Ok(Outcome::failed(format!("{node}: {why}")));
        }
        if let Some((c, layout, waits, http_boot, iso_url)) = restart
            && agent.hellos == 0
            && agent.written == 0
        {
            let off = ops::power_state(c, layout).await? == "Off";
            if off || start.elapsed() >= quiet {
                restart = None;
                tracing::warn!(node = %node, "the deploy environment started before kiln resumed is {}; starting it again",
                    if off { "off" } else { "silent" });
                boot_installer_once(c, layout, http_boot, iso_url).await?;
                let op = if off { PowerOp::On } else { PowerOp::Reset };
                ops::power(c, layout, op, waits).await?;
                deadline = tokio::time::Instant::now() + boot;
            }
        } else if agent.hellos > 0 || agent.written > 0 {
            restart = None;
        }
        if agent.hellos > 0 && !said_hello {
            said_hello = true;
            deadline = tokio::time::Instant::now() + write;
        }
        if Instant::now() >= next_note {
            next_note = Instant::now() + Duration::from_secs(30);
            if agent.hellos > 0 {
                tracing::info!(node = %node, written = agent.written, total = ?agent.total, "deploy agent writing");
            }
        }
        if let Some(seen) = wait_progress(progress, deadline).await? {
            return Ok(Outcome::failed(if seen.agent.hellos == 0 {
                format!(
                    "{node}: the deploy environment never called the boot server within {} s of power-on; {}",
                    boot.as_secs(),
                    if seen.iso_requests == 0 {
                        "the BMC did not fetch it either (did the virtual media mount?)"
                    } else {
                        "the BMC fetched it, so the node did not boot it, or it has no network path to the boot server"
                    }
                )
            } else {
                format!(
                    "{node}: the deploy environment started writing {} but did not finish within {} s ({} bytes written)",
                    seen.agent.device.as_deref().unwrap_or("its disk"),
                    write.as_secs(),
                    seen.agent.written
                )
            }));
        }
    }
}

/// Boots the disk kiln just wrote: the deploy agent powers the node off
/// when it is done (forced off if it has not within `graceful`), then on
/// (in the rack's power-on wave).
async fn power_on_disk(
    cx: &ImageCx,
    layout: &Layout,
    graceful: Duration,
) -> anyhow::Result<Outcome> {
    let (c, waits) = (&cx.bmc, &cx.waits);
    let start = Instant::now();
    let mut forced = false;
    loop {
        let state = ops::power_state(c, layout).await?;
        if state == "Off" {
            break;
        }
        if start.elapsed() >= graceful {
            ops::power(c, layout, PowerOp::Off, waits).await?;
            forced = true;
            break;
        }
        tokio::time::sleep(waits.poll).await;
    }
    if let Some(gates) = &cx.gates {
        gates.power_on(&cx.node.rack).await;
    }
    let out = ops::power(c, layout, PowerOp::On, waits).await?;
    Ok(Outcome::done(format!(
        "{}powered on from disk ({})",
        if forced {
            "forced off (the deploy environment had not powered it off), "
        } else {
            ""
        },
        out.sent.join(", ")
    )))
}

fn first_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.lines().next().unwrap_or_default().to_owned()
}

/// Tokens are secrets: any text shown (a BMC's error echoes the image
/// URL) has every 32-hex-digit run, a boot-server token, cut.
pub fn redact_tokens(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let run = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        let before_ok = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let after_ok = b.get(i + run).is_none_or(|c| !c.is_ascii_alphanumeric());
        if run == 32 && before_ok && after_ok {
            out.push_str("[token]");
            i += run;
        } else if run > 0 {
            out.push_str(&s[i..i + run]);
            i += run;
        } else {
            let ch = s[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// An error with boot-server tokens cut from its text.
/// Boots the installer once: over UEFI HTTP from `iso_url`, else from
/// the virtual CD. The URL carries a token, so its errors are cleaned.
async fn boot_installer_once(
    c: &BmcClient,
    layout: &Layout,
    http_boot: bool,
    iso_url: &str,
) -> anyhow::Result<ops::BootOutcome> {
    Ok(if http_boot {
        ops::set_boot(c, layout, BootDevice::Http, false, Some(iso_url))
            .await
            .map_err(clean)?
    } else {
        ops::set_boot(c, layout, BootDevice::Cd, false, None).await?
    })
}

fn clean(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::anyhow!(redact_tokens(&format!("{:#}", e.into())))
}

async fn prepare(cx: &ImageCx) -> anyhow::Result<Prepared> {
    let node = &cx.node.name;
    let bmc = &cx.node.bmc.endpoint;
    let discovered = async {
        let fresh = || async {
            discover_bmc(&cx.bmc, cx.node.bmc.system.as_deref())
                .await
                .map(Arc::new)
        };
        let shared = match &cx.layout {
            Some(cell) => Arc::clone(cell.get_or_try_init(fresh).await?),
            None => fresh().await?,
        };
        // Slots are read on every attempt: their state is what the
        // eject-stale and insert steps act on.
        let mut layout = (*shared).clone();
        layout.media_read = false;
        read_media(&cx.bmc, &mut layout).await?;
        Ok::<_, crate::bmc::client::BmcError>(layout)
    };
    let layout = discovered
        .await
        .with_context(|| format!("discovering BMC {bmc} of {node}"))?;
    let http_boot = cx.profile.boot == BootMethod::UefiHttp
        && layout.http_boot_uri
        && layout.boot_targets.iter().any(|t| t == "UefiHttp");
    if cx.profile.boot == BootMethod::UefiHttp && !http_boot {
        tracing::info!(node = %node, bmc = %bmc, "BMC cannot take an HttpBootUri; using the virtual CD");
    }
    if !http_boot && layout.cd_slot().is_none() && layout.media_enable.is_none() {
        anyhow::bail!("BMC {bmc} of {node} has no virtual CD slot");
    }
    let key = hostkeys::load_or_create(&cx.state_dir, node)?;
    // Record the key before the node can offer it: the first login after
    // the install is then verified, never trusted on first use.
    let target = Target::from_node(&cx.node);
    crate::imaging::hostkeys::record(
        &cx.known_hosts,
        &crate::ssh::known_hosts::host_name(&target.host, target.port),
        node,
        std::slice::from_ref(&key.public),
    )?;
    let (boot_iso, grub_path, disk) = match &cx.media {
        Media::Installer(path) => (
            path.clone(),
            cx.profile
                .installer
                .as_ref()
                .map(|i| i.grub_cfg.clone())
                .unwrap_or_else(|| "/boot/grub/grub.cfg".to_owned()),
            None,
        ),
        Media::Disk(d) => (
            d.deploy_iso.clone(),
            seed::DEPLOY_GRUB_CFG.to_owned(),
            Some(d.clone()),
        ),
    };
    let (found, original) = iso::read_file(&boot_iso, &grub_path)
        .with_context(|| format!("reading {}", boot_iso.display()))?;
    let original = String::from_utf8_lossy(&original).into_owned();
    let instance_id = format!("kiln-{node}-{}", crate::pipeline::step::now_ms());
    let token = hostkeys::node_token(&cx.state_dir, node, &key)?;
    let reg = cx.server.register_as(node, Some(&token), |urls| {
        let (seed_url, done_url) = (urls.seed.as_str(), urls.done.as_str());
        let scx = seed::context_with(
            &cx.profile,
            node,
            &cx.node.ssh.user,
            cx.authorized_keys.clone(),
            key.private_pem.expose().to_owned(),
            key.public_line.clone(),
            seed_url,
            done_url,
            &urls.report,
            cx.node.mac.as_ref().map(|m| m.to_string()),
            &instance_id,
        );
        let files = seed::render_seed(&cx.profile, &scx)?;
        let grub = match &disk {
            Some(_) => seed::deploy_grub_cfg(&original, node, &urls.agent)?,
            None => seed::grub_cfg(&cx.profile, node, &original, seed_url, &scx.ks_url)?,
        };
        let overlay = iso::plan_replace(&boot_iso, &grub_path, &found, grub.as_bytes())?;
        let mut served = ServedFile::plain(&boot_iso)?;
        served.overlay = Arc::new(overlay);
        Ok::<_, anyhow::Error>((files, Some(served)))
    })?;
    if let Some(d) = &disk {
        let (image_url, image_file) = match &d.image {
            DiskSource::Local(path) => (None, Some(ServedFile::plain(path)?)),
            DiskSource::Url(url) => (Some(url.clone()), None),
        };
        cx.server.set_agent_plan(
            node,
            AgentPlan {
                hints: cx
                    .node
                    .root_device
                    .clone()
                    .unwrap_or_else(|| cx.profile.root_device.clone()),
                image_url,
                image_file,
                sha256: d.sha256.clone(),
                compression: d.compression,
                root_partition: d.root_partition,
                bench_peer: d.bench_peer,
            },
        );
    }
    Ok(Prepared {
        layout,
        reg,
        http_boot,
        disk,
    })
}

async fn power_off(
    c: &BmcClient,
    layout: &Layout,
    waits: &Waits,
    graceful: Duration,
) -> anyhow::Result<Outcome> {
    let before = ops::power_state(c, layout).await?;
    if before == "Off" {
        return Ok(Outcome::skipped("already off"));
    }
    let offers =
        |t: &str| layout.reset_types.is_empty() || layout.reset_types.iter().any(|r| r == t);
    if offers("GracefulShutdown") {
        c.action(
            &layout.reset_target,
            &json!({"ResetType": "GracefulShutdown"}),
            Duration::from_secs(120),
        )
        .await?;
        let start = Instant::now();
        while start.elapsed() < graceful {
            tokio::time::sleep(waits.poll).await;
            if ops::power_state(c, layout).await? == "Off" {
                return Ok(Outcome::done(format!(
                    "shut down gracefully in {:.0} s",
                    start.elapsed().as_secs_f64()
                )));
            }
        }
    }
    ops::power(c, layout, PowerOp::Off, waits).await?;
    Ok(Outcome::done(if offers("GracefulShutdown") {
        format!(
            "forced off after a graceful shutdown did not finish in {} s",
            graceful.as_secs()
        )
    } else {
        "forced off (the BMC offers no graceful shutdown)".to_owned()
    }))
}

/// What restarting an install needs: the BMC, its layout and waits, and
/// how the installer boots (UEFI HTTP, with its URL, or the virtual CD).
type Restart<'a> = (&'a BmcClient, &'a Layout, &'a Waits, bool, &'a str);

/// Waits for the install-finished call-back. With `restart` (a resumed
/// run whose installer was started by an earlier kiln process), an install
/// that shows no sign of life on this boot server within a few minutes
/// (and does not answer SSH as installed) is restarted once: boot-once to
/// the installer again and a reset.
async fn wait_installed(
    cx: &ImageCx,
    progress: &mut tokio::sync::watch::Receiver<Progress>,
    within: Duration,
    mut restart: Option<Restart<'_>>,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let mut deadline = tokio::time::Instant::now() + within;
    let mut restarted = false;
    // How long a resumed install may stay silent before it is restarted.
    let quiet = (within / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
    // A call-back may have gone to an earlier kiln process (resumed after a
    // restart), so also accept a verified login now and then.
    let mut next_probe = start + Duration::from_secs(60);
    loop {
        if let Some(fields) = progress.borrow().done.clone() {
            let host = fields.get("hostname").cloned().unwrap_or_default();
            return Ok(Outcome::done(format!(
                "install finished after {:.0} s (call-back from {}){}",
                start.elapsed().as_secs_f64(),
                if host.is_empty() {
                    cx.node.name.clone()
                } else {
                    host
                },
                if restarted {
                    "; restarted once after kiln resumed, the first attempt had lost its boot server"
                } else {
                    ""
                }
            )));
        }
        if restart.is_some() && start.elapsed() >= quiet {
            let seen = progress.borrow().clone();
            let silent =
                seen.iso_requests == 0 && seen.seed_files.is_empty() && seen.installer_events == 0;
            if let Some((c, layout, waits, http_boot, iso_url)) = restart.take()
                && silent
            {
                if let Ok((os, _)) = os_over_ssh(cx, cx.deadlines.connect).await
                    && matches_profile(&cx.profile, &os).is_ok()
                {
                    return Ok(Outcome::done(format!(
                        "{os} answers SSH with kiln's host key"
                    )));
                }
                tracing::warn!(node = %cx.node.name, "the install started before kiln resumed shows no sign of life; restarting it");
                boot_installer_once(c, layout, http_boot, iso_url).await?;
                ops::power(c, layout, PowerOp::Reset, waits).await?;
                restarted = true;
                deadline = tokio::time::Instant::now() + within;
            }
        }
        if let Some(error) = progress.borrow().installer_error.clone() {
            return Ok(Outcome::failed(format!(
                "{}: the installer failed ({error})",
                cx.node.name
            )));
        }
        if Instant::now() >= next_probe {
            next_probe = Instant::now() + Duration::from_secs(60);
            if let Ok((os, _)) = os_over_ssh(cx, cx.deadlines.connect).await
                && matches_profile(&cx.profile, &os).is_ok()
            {
                return Ok(Outcome::done(format!(
                    "{os} answers SSH with kiln's host key"
                )));
            }
        }
        if let Some(seen) = wait_progress(progress, deadline).await? {
            return Ok(Outcome::failed(no_callback_reason(
                &cx.node.name,
                &seen,
                within,
            )));
        }
    }
}

/// Says how far the node got, from what the boot server saw.
pub fn no_callback_reason(node: &str, seen: &Progress, within: Duration) -> String {
    let mins = within.as_secs_f64() / 60.0;
    let after = if mins >= 1.0 {
        format!("{mins:.0} min")
    } else {
        format!("{} s", within.as_secs())
    };
    if seen.seed_files.is_empty() {
        format!(
            "{node}: no install-finished call-back within {after}; the installer never fetched its seed from the boot server (the BMC did {}fetch the installer image; did the node boot from it?)",
            if seen.iso_requests == 0 { "not " } else { "" }
        )
    } else if let Some(error) = &seen.installer_error {
        format!("{node}: the installer failed ({error}); it had fetched its seed")
    } else if seen.installer_done {
        format!(
            "{node}: the installer finished, but the installed system did not call back within {after}: it did not complete its first boot (hung, or no network)"
        )
    } else {
        format!(
            "{node}: no install-finished call-back within {after}; the installer fetched {} but never reported finishing (it refused the seed, or the install is stuck)",
            seen.seed_files
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn pool(cx: &ImageCx) -> Pool {
    // A fresh verifier that reads kiln's store now (it caches files): the
    // key `prepare` recorded is the only one accepted.
    let verifier = Verifier::new(Vec::new(), Some(cx.known_hosts.clone()), false);
    Pool::new(Client::new(
        Arc::new(verifier),
        Arc::clone(&cx.credentials),
        ClientOptions {
            connect_timeout: cx.deadlines.connect,
            ..ClientOptions::default()
        },
    ))
}

/// The node's OS and kernel as `hostnamectl` reports them, over an SSH
/// login verified against kiln's store.
async fn os_over_ssh(cx: &ImageCx, within: Duration) -> anyhow::Result<(String, String)> {
    // kiln's own key, not merely a trusted one: a key recorded by `kiln
    // ssh trust` for the vendor's preinstalled OS does not count.
    let Some(ours) = hostkeys::load(&cx.state_dir, &cx.node.name)? else {
        anyhow::bail!("{}: kiln has not given it a host key yet", cx.node.name);
    };
    let ours = crate::ssh::known_hosts::fingerprint(&ours.public);
    let pool = pool(cx);
    let target = Target::from_node(&cx.node);
    let session = tokio::time::timeout(within * 2, pool.session(&target))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{}: no SSH login within {} s",
                cx.node.name,
                (within * 2).as_secs()
            )
        })??;
    let offered = session.host_key().0.clone();
    if offered != ours {
        pool.close(&cx.node.name).await;
        anyhow::bail!(
            "{}: answers with host key {offered}, not kiln's {ours}",
            cx.node.name
        );
    }
    let cmd = RemoteCommand::shell("hostnamectl").timeout(Some(within));
    let mut sink = Discard;
    let out = tokio::time::timeout(
        within * 2,
        pool.run(
            &target,
            &cmd,
            Input::None,
            &mut sink,
            &ExecOptions::default(),
        ),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "{}: no answer over SSH within {} s",
            cx.node.name,
            (within * 2).as_secs()
        )
    })??;
    pool.close(&cx.node.name).await;
    let out = out.check(&cx.node.name, &cmd)?;
    let text = String::from_utf8_lossy(out.stdout.bytes()).into_owned();
    parse_hostnamectl(&text).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: hostnamectl printed no `Operating System` line",
            cx.node.name
        )
    })
}

/// `Operating System:` and `Kernel:` from `hostnamectl` (kernel without
/// its `Linux ` prefix).
pub fn parse_hostnamectl(text: &str) -> Option<(String, String)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    };
    let os = field("Operating System")?;
    let kernel = field("Kernel").unwrap_or_default();
    let kernel = kernel.strip_prefix("Linux ").unwrap_or(&kernel).to_owned();
    Some((os, kernel))
}

/// Whether `os` (hostnamectl's `Operating System`) is the profile's.
pub fn matches_profile(profile: &ImageProfile, os: &str) -> Result<(), String> {
    let family_ok = match profile.family {
        OsFamily::Ubuntu => os.starts_with("Ubuntu"),
        OsFamily::Debian => os.starts_with("Debian"),
        OsFamily::Rhel => ["Rocky Linux", "Red Hat Enterprise Linux", "AlmaLinux"]
            .iter()
            .any(|p| os.starts_with(p)),
    };
    let version = os
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("");
    let version_ok =
        version == profile.version || version.starts_with(&format!("{}.", profile.version));
    if family_ok && version_ok {
        Ok(())
    } else {
        Err(format!(
            "runs {os}, expected {} ({})",
            profile.description, profile.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnamectl_and_profile_match() {
        let text = " Static hostname: n1\n       Icon name: computer-server\nOperating System: Ubuntu 24.04.1 LTS\n          Kernel: Linux 6.8.0-45-generic\n    Architecture: x86-64\n";
        let (os, kernel) = parse_hostnamectl(text).unwrap();
        assert_eq!(kernel, "6.8.0-45-generic");
        let mut p = ImageProfile {
            name: "ubuntu-24.04".into(),
            description: "Ubuntu 24.04".into(),
            version: "24.04".into(),
            ..ImageProfile::default()
        };
        assert_eq!(matches_profile(&p, &os), Ok(()));
        p.version = "22.04".into();
        assert!(matches_profile(&p, &os).is_err());
        p.family = OsFamily::Rhel;
        p.version = "9".into();
        assert_eq!(matches_profile(&p, "Rocky Linux 9.6 (Blue Onyx)"), Ok(()));
        assert!(matches_profile(&p, "Rocky Linux 8.10 (Green Obsidian)").is_err());
    }

    #[test]
    fn reasons_say_how_far_the_node_got() {
        let mut seen = Progress::default();
        let r = no_callback_reason("n1", &seen, Duration::from_secs(1800));
        assert!(
            r.contains("never fetched its seed") && r.contains("did not fetch"),
            "{r}"
        );
        seen.iso_requests = 1;
        seen.seed_files.insert("user-data".into());
        let r = no_callback_reason("n1", &seen, Duration::from_secs(1800));
        assert!(
            r.contains("fetched user-data") && r.contains("30 min"),
            "{r}"
        );
        assert_eq!(
            redact_tokens("mount http://h/node/0123456789abcdef0123456789abcdef/installer.iso: no"),
            "mount http://h/node/[token]/installer.iso: no"
        );
    }
}
