//! The image stage's preparation: check, before any request, that every
//! node's media and login key are at hand, then start the boot server.
//! (To become the image stage's `prepare` hook.)

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{ImagingRequest, Notice, Report};
use crate::bmc::ops::Waits;
use crate::exit::BadInput;
use crate::imaging::deploy::Deadlines;
use crate::imaging::server::BootServer;
use crate::imaging::setup::ImagingSetup;
use crate::inventory::Node;
use crate::ssh::auth::Credentials;

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

/// Starts the run's boot server.
pub async fn start_imaging(
    installers: HashMap<String, crate::imaging::Media>,
    request: &ImagingRequest,
    report: &Report,
) -> anyhow::Result<ImagingSetup> {
    let server = BootServer::start(
        request.bind.unwrap_or(DEFAULT_BIND),
        request.advertise.as_deref(),
    )
    .await
    .map_err(|e| BadInput(e.to_string()))?
    .with_media_url(request.advertise_bmc.as_deref());
    report(Notice::BootServer {
        url: server.base_url().to_string(),
    });
    let defaults = Deadlines::default();
    Ok(ImagingSetup {
        server: Arc::new(server),
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
    })
}
