//! The `image` stage inside a run: the run's boot server and installer
//! images are set up once (see [`crate::imaging::setup::ImagingSetup`]); each node is then imaged
//! by [`crate::imaging::deploy`], whose steps are journaled like every
//! other stage's, so a resumed run never powers a node off twice.

pub mod prepare;

use std::sync::Arc;

use crate::imaging::deploy::{ImageCx, deploy};
use crate::pipeline::node::NodeCx;
use crate::pipeline::prepare::{Prepare, PrepareCx};
use crate::pipeline::stages::{About, NodeWork, Scope, StageDef};
use crate::pipeline::step::{Outcome, Steps, Stop};

/// Images one node (a node that already runs its profile's OS with kiln's
/// host key is only checked).
pub async fn run(cx: &NodeCx, steps: &mut Steps) -> Result<(), Stop> {
    let fail = |why: String| Stop::Failed {
        step: "start",
        outcome: Box::new(Outcome::failed(why)),
    };
    let Some(setup) = cx.site.prepared::<crate::imaging::setup::ImagingSetup>() else {
        return Err(fail("the run has no boot server (a bug in kiln)".into()));
    };
    let Some(installer) = setup.installers.get(&cx.image.name) else {
        return Err(fail(format!(
            "no installer image for profile {}",
            cx.image.name
        )));
    };
    let authorized_keys = crate::imaging::authorized_keys(&cx.site.credentials, &cx.node)
        .map_err(|e| fail(format!("{e:#}")))?;
    let image = ImageCx {
        node: cx.node.clone(),
        profile: (*cx.image).clone(),
        bmc: Arc::clone(cx.bmc()),
        server: Arc::clone(&setup.server),
        media: installer.clone(),
        authorized_keys,
        credentials: Arc::clone(&cx.site.credentials),
        state_dir: cx.site.state.clone(),
        known_hosts: cx.site.known_hosts.clone(),
        deadlines: setup.deadlines,
        waits: setup.waits,
        reimage: setup.reimage,
        gates: Some(Arc::clone(&cx.gates)),
        layout: Some(cx.layout_cell()),
    };
    let deployed = deploy(&image, steps).await?;
    tracing::info!(node = %cx.node.name, already = deployed.already, "imaged: {} ({})", deployed.os, deployed.kernel);
    Ok(())
}

/// The `image` stage.
pub struct Image;

impl StageDef for Image {
    fn about(&self) -> About {
        About {
            name: "image",
            scope: Scope::Node,
            destructive: true,
        }
    }
    fn prepare(&self, run: &PrepareCx<'_>) -> anyhow::Result<Option<Box<dyn Prepare>>> {
        Ok(Some(Box::new(prepare::Imaging::check(run)?)))
    }
    fn run_node<'a>(&'a self, cx: &'a NodeCx, steps: &'a mut Steps) -> NodeWork<'a> {
        Box::pin(run(cx, steps))
    }
}
