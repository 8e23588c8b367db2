//! The `handoff` stage: as soon as a rack's other stages ended, its nodes
//! that passed every stage are handed to the cloud and its failed given
//! back, while other racks still work (the work
//! itself is [`crate::handoff::run`]); it decides the survivors' verdicts.

pub mod prepare;

use std::sync::Arc;

use crate::inventory::Inventory;
use crate::pipeline::node::NodeCx;
use crate::pipeline::prepare::{Prepare, PrepareCx};
use crate::pipeline::setup::Setup;
use crate::pipeline::stages::{About, NodeWork, Scope, StageDef, StageFuture};
use crate::pipeline::step::{Outcome, StepSink, Steps, Stop};

/// The `handoff` stage.
pub struct Handoff;

impl StageDef for Handoff {
    // It sees a rack's nodes at once, after that rack's other stages.
    fn about(&self) -> About {
        About {
            name: "handoff",
            scope: Scope::Run,
            destructive: false,
        }
    }
    // By default, hand off only where the inventory says where to.
    fn in_default_plan(&self, inventory: &Inventory) -> bool {
        !inventory.handoff.is_empty()
    }
    fn prepare(&self, run: &PrepareCx<'_>) -> anyhow::Result<Option<Box<dyn Prepare>>> {
        Ok(Some(Box::new(prepare::Handoff::read(run)?)))
    }
    fn run_node<'a>(&'a self, _cx: &'a NodeCx, _steps: &'a mut Steps) -> NodeWork<'a> {
        // Never called: a run stage has only its run-wide part.
        Box::pin(async {
            Err(Stop::Failed {
                step: "start",
                outcome: Box::new(Outcome::failed(
                    "handoff works on the whole run, not one node",
                )),
            })
        })
    }
    fn run_after_rack<'a>(
        &'a self,
        setup: &'a Arc<Setup>,
        sink: &'a Arc<dyn StepSink>,
        rack: &'a str,
        passed: Vec<Arc<NodeCx>>,
    ) -> StageFuture<'a, bool> {
        Box::pin(crate::handoff::run(
            crate::stages::Stage::Handoff,
            setup,
            sink,
            rack,
            passed,
        ))
    }
}
