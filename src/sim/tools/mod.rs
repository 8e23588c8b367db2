//! Placeholder: replaced by the simulated tools.
#![allow(missing_docs)]
use crate::sim::hw::{NodeHardware, SoftwareState};
use std::time::Duration;

pub struct ToolFaults {
    pub package_install_failures: u32,
}
pub struct ToolCtx<'a> {
    pub hw: &'a NodeHardware,
    pub sw: &'a mut SoftwareState,
    pub faults: &'a mut ToolFaults,
    pub peers: &'a dyn Fn(&str) -> Option<NodeHardware>,
}
pub struct Step {
    pub after: Duration,
    pub stdout: String,
}
pub enum Effect {
    Reboot,
    PowerOff,
}
pub struct ToolRun {
    pub steps: Vec<Step>,
    pub stderr: String,
    pub code: i32,
    pub load: f64,
    pub effect: Option<Effect>,
}
pub const TOOLS: &[&str] = &["nvidia-smi", "reboot"];
pub fn is_simulated(name: &str) -> bool {
    TOOLS.contains(&name)
}
pub fn run(_ctx: &mut ToolCtx, argv: &[String]) -> ToolRun {
    match argv.first().map(String::as_str) {
        Some("reboot") => ToolRun { steps: vec![], stderr: String::new(), code: 0, load: 0.0, effect: Some(Effect::Reboot) },
        _ => ToolRun { steps: vec![Step { after: Duration::from_secs(1), stdout: "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n".into() }], stderr: String::new(), code: 9, load: 0.0, effect: None },
    }
}
