//! The `burnin` stage: each node burns its GPUs in
//! ([`crate::acceptance::burnin`]), then each GPU's throughput is held to
//! the rack's median. The per-node numbers come from the journal, so a
//! resumed run compares the same measurements.

use std::sync::Arc;

use crate::acceptance;
use crate::acceptance::burnin::{BurninOptions, GpuGflops};
use crate::pipeline::node::NodeCx;
use crate::pipeline::setup::Setup;
use crate::pipeline::stages::{
    About, NodeWork, RackCx, RackVerdicts, Scope, StageDef, StageFuture,
};
use crate::pipeline::step::{Outcome, Steps};

/// The `burnin` stage.
pub struct Burnin;

impl StageDef for Burnin {
    // Each GPU is compared with the rack's median.
    fn about(&self) -> About {
        About {
            name: "burnin",
            scope: Scope::Rack,
            destructive: true,
        }
    }
    fn run_node<'a>(&'a self, cx: &'a NodeCx, steps: &'a mut Steps) -> NodeWork<'a> {
        Box::pin(async move {
            acceptance::burnin(
                &crate::acceptance::NodeCtx::for_run(cx),
                steps,
                &cx.hardware,
                &BurninOptions::for_profile(&cx.hardware),
            )
            .await
            .map(drop)
        })
    }
    fn rack_step(&self) -> &'static str {
        "rack-median"
    }
    fn run_rack<'a>(&'a self, rack: RackCx<'a>) -> StageFuture<'a, RackVerdicts> {
        Box::pin(async move { rack_median(rack.setup, rack.group) })
    }
}

/// Each GPU's throughput against the rack's median.
fn rack_median(setup: &Setup, group: &[Arc<NodeCx>]) -> RackVerdicts {
    let mut rack = Vec::new();
    for cx in group {
        let metrics = setup
            .journal
            .stage_metrics(&cx.node.name, "burnin")
            .map_err(|e| {
                tracing::error!("cannot read the journal for the rack comparison: {e:#}");
            })?;
        // The last step that measured is the burn.
        let gflops: Vec<(u32, f64)> = metrics
            .iter()
            .rev()
            .find_map(GpuGflops::from_metrics)
            .unwrap_or_default()
            .into_iter()
            .map(|g| (g.gpu, g.gflops))
            .collect();
        if !gflops.is_empty() {
            rack.push((cx.node.name.clone(), gflops));
        }
    }
    let spread = group[0].hardware.burnin.max_spread_pct;
    Ok(acceptance::stragglers(&rack, spread)
        .into_iter()
        .map(|(node, reasons)| {
            let mut o = Outcome::failed(reasons.join("; "));
            o.reasons = reasons;
            (node, o)
        })
        .collect())
}
