//! The stages a run goes through, one folder each, and their registry:
//! [`ALL`] in pipeline order and [`plan`], which picks the run's stages.
//! Each stage is one type implementing [`StageDef`]; the engine
//! (`crate::pipeline::engine`) gets the planned handles through the run's
//! setup and knows no stage by name.

use std::str::FromStr;

use crate::exit::BadInput;
pub use crate::pipeline::stages::{Scope, Stage, StageDef};

pub mod burnin;
pub mod drivers;
pub mod firmware;
pub mod handoff;
pub mod image;
pub mod nccl;
pub mod preflight;

// The handles keep the enum's old spelling (`Stage::Image`), so code that
// names a stage reads as it did.
#[allow(non_upper_case_globals)]
impl Stage {
    /// Each BMC reachable, trusted and identified; the GPUs it sees.
    pub const Preflight: Stage = Stage::new(0, &preflight::Preflight);
    /// Firmware and BIOS brought to the hardware profile's baseline.
    pub const Firmware: Stage = Stage::new(1, &firmware::FirmwareStage);
    /// The OS installed from the boot server.
    pub const Image: Stage = Stage::new(2, &image::Image);
    /// The NVIDIA driver stack installed.
    pub const Drivers: Stage = Stage::new(3, &drivers::Drivers);
    /// GPU burn-in and diagnostics.
    pub const Burnin: Stage = Stage::new(4, &burnin::Burnin);
    /// NCCL bandwidth in the node, then across the rack.
    pub const Nccl: Stage = Stage::new(5, &nccl::Nccl);
    /// Accepted nodes handed to the cloud.
    pub const Handoff: Stage = Stage::new(6, &handoff::Handoff);

    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 7] = ALL;
}

/// Every stage, in pipeline order.
pub const ALL: [Stage; 7] = [
    Stage::Preflight,
    Stage::Firmware,
    Stage::Image,
    Stage::Drivers,
    Stage::Burnin,
    Stage::Nccl,
    Stage::Handoff,
];

impl FromStr for Stage {
    type Err = BadInput;
    fn from_str(s: &str) -> Result<Stage, BadInput> {
        ALL.into_iter().find(|st| st.name() == s).ok_or_else(|| {
            BadInput(format!(
                "unknown stage `{s}` (stages: {})",
                ALL.map(Stage::name).join(", ")
            ))
        })
    }
}

/// The stages to run: `--stages` (any order, put in pipeline order) cut
/// at `--until`; by default every stage.
pub fn plan(stages: Option<&str>, until: Option<&str>) -> Result<Vec<Stage>, BadInput> {
    let mut chosen: Vec<Stage> = match stages {
        Some(list) => {
            let mut v = Vec::new();
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let stage: Stage = part.parse()?;
                if !v.contains(&stage) {
                    v.push(stage);
                }
            }
            v
        }
        None => ALL.to_vec(),
    };
    chosen.sort();
    if let Some(until) = until {
        let last: Stage = until.parse()?;
        chosen.retain(|s| *s <= last);
    }
    if chosen.is_empty() {
        return Err(BadInput(format!(
            "no stage left to run (stages: {})",
            ALL.map(Stage::name).join(", ")
        )));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stages_are_put_in_pipeline_order_and_cut() {
        assert_eq!(plan(None, None).unwrap()[0], Stage::Preflight);
        assert_eq!(
            plan(Some("preflight,preflight"), None).unwrap(),
            vec![Stage::Preflight]
        );
        assert_eq!(
            plan(Some("nccl,image"), Some("drivers")).unwrap(),
            vec![Stage::Image]
        );
        let e = plan(Some("burn"), None).unwrap_err();
        assert!(e.0.contains("unknown stage `burn`"), "{e}");
        let e = plan(Some("preflight"), Some("nope")).unwrap_err();
        assert!(e.0.contains("unknown stage `nope`"), "{e}");
    }

    /// Every registered stage states its name, scope and whether it
    /// changes the node; a new stage is added here on purpose.
    #[test]
    fn every_stage_states_what_it_is() {
        let got: Vec<(&str, Scope, bool)> = ALL
            .iter()
            .map(|s| (s.name(), s.scope(), s.destructive()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("preflight", Scope::Node, false),
                ("firmware", Scope::Node, true),
                ("image", Scope::Node, true),
                ("drivers", Scope::Node, true),
                ("burnin", Scope::Rack, true),
                ("nccl", Scope::Rack, true),
                ("handoff", Scope::Run, false),
            ]
        );
        for (i, s) in ALL.iter().enumerate() {
            assert_eq!(s.name().parse::<Stage>().unwrap(), *s);
            assert!(ALL[..i].iter().all(|before| before < s));
        }
    }
}
