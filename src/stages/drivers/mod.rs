//! The `drivers` stage: the NVIDIA driver stack installed over SSH (the
//! work itself is [`crate::drivers::run`]).

use crate::pipeline::node::NodeCx;
use crate::pipeline::stages::{About, NodeWork, Scope, StageDef};
use crate::pipeline::step::Steps;

/// The `drivers` stage.
pub struct Drivers;

impl StageDef for Drivers {
    fn about(&self) -> About {
        About {
            name: "drivers",
            scope: Scope::Node,
            destructive: true,
        }
    }
    fn run_node<'a>(&'a self, cx: &'a NodeCx, steps: &'a mut Steps) -> NodeWork<'a> {
        Box::pin(crate::drivers::run(cx, steps))
    }
}
