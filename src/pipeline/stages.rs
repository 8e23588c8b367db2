//! The stages a run goes through, in their fixed order, and which of them
//! this build can run.

use std::fmt;
use std::str::FromStr;

use crate::exit::BadInput;

/// One stage of provisioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Each BMC reachable, trusted and identified; the GPUs it sees.
    Preflight,
    /// The OS installed from the boot server.
    Image,
    /// The NVIDIA driver stack installed.
    Drivers,
    /// GPU burn-in and diagnostics.
    Burnin,
    /// NCCL bandwidth in the node, then across the rack.
    Nccl,
    /// Accepted nodes handed to the cloud.
    Handoff,
}

/// Whether a stage works on one node at a time, or on a rack's nodes
/// together once they all reached it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Each node on its own.
    Node,
    /// The rack's surviving nodes together (cross-node measurements).
    Rack,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Preflight,
        Stage::Image,
        Stage::Drivers,
        Stage::Burnin,
        Stage::Nccl,
        Stage::Handoff,
    ];

    /// The stage's name on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Preflight => "preflight",
            Stage::Image => "image",
            Stage::Drivers => "drivers",
            Stage::Burnin => "burnin",
            Stage::Nccl => "nccl",
            Stage::Handoff => "handoff",
        }
    }

    /// How the stage is scheduled.
    pub fn scope(self) -> Scope {
        match self {
            // Burn-in compares each GPU with the rack's median; NCCL runs
            // across the rack's nodes after each node's own run.
            Stage::Burnin | Stage::Nccl => Scope::Rack,
            _ => Scope::Node,
        }
    }

    /// Whether the stage changes the node (power, disks): such stages need
    /// `--allow-in-service` for nodes marked `in_service`.
    pub fn destructive(self) -> bool {
        matches!(
            self,
            Stage::Image | Stage::Drivers | Stage::Burnin | Stage::Nccl
        )
    }

    /// Whether this build can run the stage.
    pub fn available(self) -> bool {
        matches!(
            self,
            Stage::Preflight
                | Stage::Image
                | Stage::Drivers
                | Stage::Burnin
                | Stage::Nccl
                | Stage::Handoff
        )
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stage {
    type Err = BadInput;
    fn from_str(s: &str) -> Result<Stage, BadInput> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                BadInput(format!(
                    "unknown stage `{s}` (stages: {})",
                    Stage::ALL.map(Stage::name).join(", ")
                ))
            })
    }
}

/// The stages to run: `--stages` (any order, put in pipeline order) cut
/// at `--until`; by default every stage this build can run.
pub fn plan(stages: Option<&str>, until: Option<&str>) -> Result<Vec<Stage>, BadInput> {
    let mut chosen: Vec<Stage> = match stages {
        Some(list) => {
            let mut v = Vec::new();
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let stage: Stage = part.parse()?;
                if !stage.available() {
                    return Err(BadInput(format!(
                        "stage `{stage}` is not built into this kiln yet (available: {})",
                        available_names()
                    )));
                }
                if !v.contains(&stage) {
                    v.push(stage);
                }
            }
            v
        }
        None => Stage::ALL.into_iter().filter(|s| s.available()).collect(),
    };
    chosen.sort();
    if let Some(until) = until {
        let last: Stage = until.parse()?;
        chosen.retain(|s| *s <= last);
    }
    if chosen.is_empty() {
        return Err(BadInput(format!(
            "no stage left to run (available: {})",
            available_names()
        )));
    }
    Ok(chosen)
}

fn available_names() -> String {
    Stage::ALL
        .into_iter()
        .filter(|s| s.available())
        .map(Stage::name)
        .collect::<Vec<_>>()
        .join(", ")
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
        let e = plan(Some("burn"), None).unwrap_err();
        assert!(e.0.contains("unknown stage `burn`"), "{e}");
        let e = plan(Some("preflight"), Some("nope")).unwrap_err();
        assert!(e.0.contains("unknown stage `nope`"), "{e}");
    }
}
