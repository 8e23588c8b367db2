//! A stage's run-wide setup, in two phases: [`StageDef::prepare`] checks,
//! before any request and before a dry run returns, what would fail every
//! node alike; the [`Prepare`] it returns is [`Prepare::start`]ed once the
//! run is really going (a boot server listens only then), and its value is
//! kept in [`Prepared`] for the stage's nodes to find by type.
//!
//! [`StageDef::prepare`]: crate::pipeline::stages::StageDef::prepare
//! [`Prepared`]: crate::pipeline::node::Prepared

use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::imaging::setup::ImagingRequest;
use crate::inventory::{Inventory, Node};
use crate::pipeline::notice::Report;
use crate::pipeline::stages::StageFuture;
use crate::profiles::image::ImageProfile;
use crate::ssh::Pool;
use crate::ssh::auth::Credentials;

/// What a stage's preparation may look at: the run's inventory, nodes and
/// the operator's options.
pub struct PrepareCx<'a> {
    /// The inventory.
    pub inventory: &'a Inventory,
    /// The inventory file (read again by handoff for its signature).
    pub inventory_path: &'a Path,
    /// The state folder.
    pub state: &'a Path,
    /// The run's nodes, in inventory order.
    pub nodes: &'a [&'a Node],
    /// The image profiles the nodes name, by name.
    pub images: &'a HashMap<String, Arc<ImageProfile>>,
    /// SSH keys loaded for the run.
    pub credentials: &'a Credentials,
    /// The imaging stage's options.
    pub imaging: &'a ImagingRequest,
    /// First pause between handoff webhook attempts, when not the default.
    pub handoff_retry: Option<Duration>,
}

/// What a started preparation may use: shared run resources that exist
/// only once the run is going.
pub struct StartCx<'a> {
    /// The run's SSH pool.
    pub pool: &'a Arc<Pool>,
    /// Where to tell the operator something (the boot server's address).
    pub report: &'a Report,
    /// What the stages before this one started, and resources a stage
    /// shares with later ones (the boot server firmware and image both
    /// serve from), found by type.
    pub started: &'a mut crate::pipeline::node::Prepared,
}

/// A run-wide value prepared for a stage.
pub type PreparedValue = Arc<dyn Any + Send + Sync>;

/// A checked preparation, waiting for the run to start.
pub trait Prepare: Send {
    /// Starts what the stage needs for the whole run and returns it, to be
    /// found by type in [`crate::pipeline::node::SiteCx::prepared`].
    fn start<'a>(
        self: Box<Self>,
        cx: StartCx<'a>,
    ) -> StageFuture<'a, anyhow::Result<PreparedValue>>;
}
