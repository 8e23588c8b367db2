//! The `nccl` stage: NCCL bandwidth in each node
//! ([`crate::acceptance::nccl_node`]), then across the rack's nodes
//! together ([`crate::acceptance::nccl_rack`], with bisection when the rack
//! misses its floor), journaled under the rack's own name.

use std::collections::HashMap;
use std::sync::Arc;

use crate::acceptance;
use crate::acceptance::nccl::{NcclOptions, RackNccl};
use crate::pipeline::node::NodeCx;
use crate::pipeline::setup::Setup;
use crate::pipeline::stages::{
    About, NodeWork, RackCx, RackVerdicts, Scope, StageDef, StageFuture,
};
use crate::pipeline::step::{Outcome, StepSink, Steps};

/// The `nccl` stage.
pub struct Nccl;

impl StageDef for Nccl {
    // The rack's nodes run together after each node's own run.
    fn about(&self) -> About {
        About {
            name: "nccl",
            scope: Scope::Rack,
            destructive: true,
        }
    }
    fn run_node<'a>(&'a self, cx: &'a NodeCx, steps: &'a mut Steps) -> NodeWork<'a> {
        Box::pin(async move {
            acceptance::nccl_node(
                &crate::acceptance::NodeCtx::for_run(cx),
                steps,
                &cx.hardware,
                &NcclOptions::for_profile(&cx.hardware),
            )
            .await
            .map(drop)
        })
    }
    fn rack_step(&self) -> &'static str {
        "rack"
    }
    fn run_rack<'a>(&'a self, part: RackCx<'a>) -> StageFuture<'a, RackVerdicts> {
        Box::pin(async move { rack(self.about().name, part.setup, part.sink, part.group) })
    }
}

/// The rack's nodes together; a fault between nodes leaves every node of
/// the rack unverified.
fn rack(
    stage: &'static str,
    setup: &Setup,
    sink: &Arc<dyn StepSink>,
    group: &[Arc<NodeCx>],
) -> RackVerdicts {
    if group.len() < 2 {
        return Ok(HashMap::new());
    }
    let rack = format!("rack:{}", group[0].node.rack);
    let mut steps = Steps::new(rack, stage, Arc::clone(sink), Arc::clone(&setup.stopping));
    let nodes: Vec<_> = group
        .iter()
        .map(|cx| crate::acceptance::NodeCtx::for_run(cx))
        .collect();
    let profile = &group[0].hardware;
    // The bisection's async closures defeat the compiler's proof that the
    // future is Send (rust-lang/rust#110338), so it runs to its end on this
    // worker thread, which hands its other tasks to the rest meanwhile.
    let result: RackNccl = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(acceptance::nccl_rack(
            &nodes,
            &mut steps,
            profile,
            &NcclOptions::for_profile(profile),
        ))
    })
    .map_err(drop)?;
    let mut out = HashMap::new();
    for (node, why) in result.bad {
        out.insert(node, Outcome::failed(why));
    }
    if !result.between.is_empty() {
        // A fault between nodes (a link or switch), not in one node: every
        // node of the rack is unverified until the fabric is fixed.
        for cx in group {
            out.entry(cx.node.name.clone()).or_insert_with(|| {
                Outcome::unverified(format!(
                    "rack NCCL failed between nodes: {}",
                    result.between.join("; ")
                ))
            });
        }
    }
    Ok(out)
}
