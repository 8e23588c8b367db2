//! The image stage's run-wide setup: check, before any request, that
//! every node's media and login key are at hand, then start the boot
//! server once the run goes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::bmc::ops::Waits;
use crate::exit::BadInput;
use crate::imaging::deploy::Deadlines;
use crate::imaging::server::BootServer;
use crate::imaging::setup::{ImagingRequest, ImagingSetup};
use crate::inventory::Node;
use crate::pipeline::notice::Notice;
use crate::pipeline::prepare::{Prepare, PrepareCx, PreparedValue, StartCx};
use crate::pipeline::stages::StageFuture;
use crate::ssh::auth::Credentials;

/// The checked media, waiting for the run to start the boot server.
pub struct Imaging {
    installers: HashMap<String, crate::imaging::Media>,
    request: ImagingRequest,
}

impl Imaging {
    /// Checks what imaging needs for the run's nodes (see [`check_imaging`]).
    pub fn check(run: &PrepareCx<'_>) -> Result<Imaging, BadInput> {
        let installers = check_imaging(
            run.nodes,
            run.images,
            run.credentials,
            run.imaging,
            run.state,
        )?;
        Ok(Imaging {
            installers,
            request: run.imaging.clone(),
        })
    }
}

impl Prepare for Imaging {
    fn start<'a>(
        self: Box<Self>,
        cx: StartCx<'a>,
    ) -> StageFuture<'a, anyhow::Result<PreparedValue>> {
        Box::pin(async move {
            let server = boot_server(&self.request, cx).await?;
            let setup = start_imaging(self.installers, &self.request, server);
            Ok(Arc::new(setup) as PreparedValue)
        })
    }
}

/// Checks, before any request, what imaging needs for every node: a local
/// installer image, or the deploy environment and a disk image (a local
/// one's digest checked), per image profile, and a key to log in with
/// afterwards. Returns the media by profile name.
pub fn check_imaging(
    nodes: &[&Node],
    images: &HashMap<String, Arc<crate::profiles::image::ImageProfile>>,
    credentials: &Credentials,
    request: &ImagingRequest,
    state: &Path,
) -> Result<HashMap<String, crate::imaging::Media>, BadInput> {
    let bind = request.bind.unwrap_or(DEFAULT_BIND);
    crate::listen::check_bind(bind, request.advertise.as_deref()).map_err(BadInput)?;
    let mut problems = Vec::new();
    let mut installers = HashMap::new();
    for (name, profile) in images {
        if !nodes.iter().any(|n| &n.image == name) {
            continue;
        }
        match crate::imaging::locate(
            profile,
            crate::imaging::Places {
                iso: request.iso.as_deref(),
                image_dir: request.iso_dir.as_deref(),
                deploy_env: request.deploy_env.as_deref(),
                state,
            },
        ) {
            Ok(mut media) => {
                if let crate::imaging::Media::Disk(d) = &mut media {
                    d.bench_peer = request.bench_peer;
                }
                installers.insert(name.clone(), media);
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    for node in nodes {
        if let Err(e) = crate::imaging::authorized_keys(credentials, node) {
            problems.push(format!("{e:#}"));
        }
    }
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        Ok(installers)
    } else {
        Err(BadInput(crate::diag::clip(&problems.join("\n"), 4000)))
    }
}

/// The default `--bind` of the boot server.
const DEFAULT_BIND: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);

/// The run's boot server: the one an earlier stage of the run started
/// (firmware packages and installers are served by one server), or a new
/// one, kept in the run's started resources for later stages.
pub async fn boot_server(
    request: &ImagingRequest,
    cx: StartCx<'_>,
) -> anyhow::Result<Arc<BootServer>> {
    if let Some(server) = cx.started.get::<BootServer>() {
        return Ok(server);
    }
    let server = BootServer::start(
        request.bind.unwrap_or(DEFAULT_BIND),
        request.advertise.as_deref(),
    )
    .await
    .map_err(|e| BadInput(e.to_string()))?
    .with_media_url(request.advertise_bmc.as_deref());
    (cx.report)(Notice::BootServer {
        url: server.base_url().to_string(),
    });
    let server = Arc::new(server);
    cx.started.add(Arc::clone(&server) as PreparedValue);
    Ok(server)
}

/// The imaging setup of a run whose boot server is `server`.
pub fn start_imaging(
    installers: HashMap<String, crate::imaging::Media>,
    request: &ImagingRequest,
    server: Arc<BootServer>,
) -> ImagingSetup {
    let defaults = Deadlines::default();
    ImagingSetup {
        server,
        installers,
        deadlines: Deadlines {
            install: request.install_timeout.unwrap_or(defaults.install),
            ssh: request.ssh_timeout.unwrap_or(defaults.ssh),
            agent: request.boot_timeout.unwrap_or(defaults.agent),
            ..defaults
        },
        waits: Waits {
            poll: request.poll.unwrap_or(Duration::from_secs(1)),
            ..Waits::default()
        },
        reimage: request.reimage,
    }
}
