//! The `drivers` stage: the NVIDIA driver stack installed over SSH (the
//! work itself is [`crate::drivers::run`]).

use crate::pipeline::node::NodeCx;
use crate::pipeline::stages::{Scope, StageDef, StageFuture};
use crate::pipeline::step::{Steps, Stop};

/// The `drivers` stage.
pub struct Drivers;

impl StageDef for Drivers {
    fn name(&self) -> &'static str {
        "drivers"
    }
    fn scope(&self) -> Scope {
        Scope::Node
    }
    fn destructive(&self) -> bool {
        true
    }
    fn run_node<'a>(
        &'a self,
        cx: &'a NodeCx,
        steps: &'a mut Steps,
    ) -> StageFuture<'a, Result<(), Stop>> {
        Box::pin(crate::drivers::run(cx, steps))
    }
}
