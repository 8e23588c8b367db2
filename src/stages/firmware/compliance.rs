//! Where a node stands against its profile's firmware baseline: each
//! component of the baseline found in the BMC's firmware inventory (every
//! member its pattern matches: eight GPUs are eight members), and which
//! members are below it.

use serde::{Deserialize, Serialize};

use crate::bmc::facts::Firmware;
use crate::profiles::firmware::FirmwareComponent;

/// One inventory member a component's pattern matched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Its `Id`.
    pub id: String,
    /// The version it reports.
    pub version: String,
    /// Whether that version meets the baseline.
    pub meets: bool,
}

/// Where one component of the baseline stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentCheck {
    /// kiln's name for the component.
    pub component: String,
    /// The version wanted, in words (`7.10 or later`).
    pub wanted: String,
    /// The members found.
    pub members: Vec<Member>,
}

impl ComponentCheck {
    /// Every member found meets the baseline (and at least one was found).
    pub fn meets(&self) -> bool {
        !self.members.is_empty() && self.members.iter().all(|m| m.meets)
    }

    /// The members below the baseline.
    pub fn below(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.meets)
    }

    /// Why the component does not meet the baseline, in a technician's
    /// words; `None` when it does.
    pub fn shortfall(&self) -> Option<String> {
        if self.members.is_empty() {
            return Some(format!(
                "{}: no firmware inventory member matches (wanted {})",
                self.component, self.wanted
            ));
        }
        let below: Vec<String> = self
            .below()
            .map(|m| format!("{} at {}", m.id, m.version))
            .collect();
        (!below.is_empty()).then(|| {
            format!(
                "{}: {} (wanted {})",
                self.component,
                below.join(", "),
                self.wanted
            )
        })
    }
}

/// Whether a member is firmware the node runs: Dell's inventory also lists
/// the rollback image (`Previous-…`) and staged ones (`Available-…`) of
/// each component beside the running one (`Installed-…`, `Current-…`).
fn running(f: &Firmware) -> bool {
    !(f.id.starts_with("Previous-") || f.id.starts_with("Available-"))
}

/// Checks `inventory` against `baseline`, component by component.
pub fn check(baseline: &[FirmwareComponent], inventory: &[Firmware]) -> Vec<ComponentCheck> {
    baseline
        .iter()
        .map(|c| ComponentCheck {
            component: c.component.clone(),
            wanted: c.version.to_string(),
            members: inventory
                .iter()
                .filter(|f| running(f) && c.matches.matches(&f.id, &f.name))
                .map(|f| Member {
                    id: f.id.clone(),
                    version: f.version.clone(),
                    meets: c.version.accepts(&f.version),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::firmware::{ApplyTime, ComponentMatch, VersionRule};

    /// The firmware inventory of a real BMC tree, member by member.
    fn inventory(vendor: &str) -> Vec<Firmware> {
        let root = format!(
            "{}/redfish-mockups/{vendor}/redfish/v1/UpdateService/FirmwareInventory",
            env!("CARGO_MANIFEST_DIR")
        );
        let read = |path: &str| -> serde_json::Value {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let listing = read(&format!("{root}/index.json"));
        crate::bmc::discover::members(&listing)
            .iter()
            .filter_map(|m| {
                let id = m.rsplit('/').next()?;
                let doc = read(&format!("{root}/{id}/index.json"));
                Some(Firmware {
                    id: doc["Id"].as_str()?.to_owned(),
                    name: doc["Name"].as_str().unwrap_or_default().to_owned(),
                    version: doc["Version"].as_str().unwrap_or_default().to_owned(),
                    updateable: doc["Updateable"].as_bool(),
                })
            })
            .collect()
    }

    fn component(name: &str, m: ComponentMatch, rule: VersionRule) -> FirmwareComponent {
        FirmwareComponent {
            component: name.into(),
            matches: m,
            version: rule,
            package: None,
            apply: ApplyTime::Immediate,
        }
    }

    #[test]
    fn dell_rollback_images_are_not_held_to_the_baseline() {
        let inv = inventory("dell-idrac9-poweredge-r750");
        let checks = check(
            &[component(
                "bios",
                ComponentMatch::Id("*BIOS.Setup*".into()),
                VersionRule::Minimum("1.8.2".into()),
            )],
            &inv,
        );
        let ids: Vec<&str> = checks[0].members.iter().map(|m| m.id.as_str()).collect();
        assert!(
            !ids.is_empty() && ids.iter().all(|i| !i.starts_with("Previous-")),
            "{ids:?}"
        );
        assert!(checks[0].meets(), "{checks:?}");
    }

    #[test]
    fn a_dgx_baseline_finds_every_gpu_and_names_the_ones_below() {
        let inv = inventory("nvidia-dgx-h100-ami");
        let gpus: Vec<&Firmware> = inv
            .iter()
            .filter(|f| f.id.starts_with("HGX_FW_GPU_SXM_"))
            .collect();
        assert_eq!(gpus.len(), 8, "the HGX baseboard lists eight GPUs");
        let current = gpus[0].version.clone();
        let checks = check(
            &[
                component(
                    "gpu",
                    ComponentMatch::Id("HGX_FW_GPU_SXM_*".into()),
                    VersionRule::Minimum(current.clone()),
                ),
                component(
                    "gpu-next",
                    ComponentMatch::Id("HGX_FW_GPU_SXM_*".into()),
                    VersionRule::Minimum(format!("{current}.1")),
                ),
                component(
                    "nic",
                    ComponentMatch::Name("no such part".into()),
                    VersionRule::Exact("1".into()),
                ),
            ],
            &inv,
        );
        assert!(
            checks[0].meets() && checks[0].shortfall().is_none(),
            "{checks:?}"
        );
        assert_eq!(checks[1].below().count(), 8);
        let why = checks[1].shortfall().unwrap_or_default();
        assert!(
            why.starts_with("gpu-next: HGX_FW_GPU_SXM_1 at ")
                && why.ends_with(&format!("(wanted {current}.1 or later)")),
            "{why}"
        );
        assert!(
            checks[2]
                .shortfall()
                .is_some_and(|w| w.contains("no firmware inventory member matches"))
        );
    }
}
