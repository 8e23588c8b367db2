//! The record's `firmware_baseline`: where each baseline component stood
//! before the firmware stage (its `inventory` step) and after (its `verify`
//! step), member by member, and the BIOS settings read back. Absent for a
//! node without firmware-stage steps, so records of older journals keep
//! their bytes (and their signatures).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::pipeline::record::{NodeRecord, latest};
use crate::stages::firmware::compliance::{ComponentCheck, Member};
use crate::stages::firmware::metrics::{InventoryMetrics, STAGE, VerifyMetrics};

use super::record::NOT_RECORDED;

/// The node's `firmware_baseline`, `None` when the firmware stage recorded
/// no step for it.
pub fn firmware_baseline(node: &NodeRecord) -> Option<Value> {
    if !node.steps.iter().any(|s| s.stage == STAGE) {
        return None;
    }
    let before = latest(node, |m: InventoryMetrics| {
        (!m.components.is_empty()).then_some(m.components)
    })
    .unwrap_or_default();
    let after = latest(node, |m: VerifyMetrics| {
        (!m.components.is_empty()).then_some(m.components)
    })
    .unwrap_or_default();
    let bios = latest(node, |m: VerifyMetrics| {
        (!m.bios.is_empty()).then_some(m.bios)
    });
    // Components in the order verify read them back, then any only the
    // inventory saw (verify did not run, or lost one).
    let mut order: Vec<&str> = after.iter().map(|c| c.component.as_str()).collect();
    for c in &before {
        if !order.contains(&c.component.as_str()) {
            order.push(&c.component);
        }
    }
    let find = |checks: &'_ [ComponentCheck], name: &str| -> Option<ComponentCheck> {
        checks.iter().find(|c| c.component == name).cloned()
    };
    let components: Vec<Value> = order
        .iter()
        .map(|name| component(find(&before, name), find(&after, name)))
        .collect();
    let bios = bios.map_or_else(
        || json!(NOT_RECORDED),
        |b| {
            Value::Array(
                b.iter()
                    .map(|s| {
                        json!({
                            "setting": s.setting,
                            "attribute": s.attribute,
                            "wanted": s.wanted,
                            "value": s.value,
                            "meets": s.meets,
                        })
                    })
                    .collect(),
            )
        },
    );
    Some(json!({ "components": components, "bios": bios }))
}

/// One component: each member's version before and after, and whether the
/// version after meets the baseline ("not recorded" without a read-back).
fn component(before: Option<ComponentCheck>, after: Option<ComponentCheck>) -> Value {
    let any = after.as_ref().or(before.as_ref());
    let name = any.map(|c| c.component.clone()).unwrap_or_default();
    let wanted = any.map(|c| c.wanted.clone()).unwrap_or_default();
    let members_of = |c: &Option<ComponentCheck>| -> Vec<Member> {
        c.as_ref().map(|c| c.members.clone()).unwrap_or_default()
    };
    let (before, after) = (members_of(&before), members_of(&after));
    // Keyed by id; BTreeMap keeps the listing stable whatever order the BMC
    // listed them in.
    let mut ids: BTreeMap<&str, (Option<&Member>, Option<&Member>)> = BTreeMap::new();
    for m in &before {
        ids.entry(&m.id).or_default().0 = Some(m);
    }
    for m in &after {
        ids.entry(&m.id).or_default().1 = Some(m);
    }
    let version = |m: Option<&Member>| m.map_or_else(|| json!(NOT_RECORDED), |m| json!(m.version));
    let members: Vec<Value> = ids
        .iter()
        .map(|(id, (b, a))| {
            json!({
                "id": id,
                "before": version(*b),
                "after": version(*a),
                "meets": a.map_or_else(|| json!(NOT_RECORDED), |m| json!(m.meets)),
            })
        })
        .collect();
    json!({ "component": name, "wanted": wanted, "members": members })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pipeline::record::{StepMetrics, StepRecord};
    use crate::stages::firmware::metrics::BiosCheck;

    fn check(version: &str, meets: bool) -> ComponentCheck {
        ComponentCheck {
            component: "bmc".into(),
            wanted: "7.10 or later".into(),
            members: vec![Member {
                id: "BMC".into(),
                version: version.into(),
                meets,
            }],
        }
    }

    fn step<T: StepMetrics>(m: &T) -> StepRecord {
        StepRecord {
            stage: T::STAGE.into(),
            step: T::STEP.into(),
            metrics: m.to_metrics(),
            ..StepRecord::default()
        }
    }

    #[test]
    fn before_comes_from_inventory_and_after_from_verify() {
        let node = NodeRecord {
            steps: vec![
                step(&InventoryMetrics {
                    components: vec![check("7.00", false)],
                }),
                step(&VerifyMetrics {
                    components: vec![check("7.10", true)],
                    bios: vec![BiosCheck {
                        setting: "sr-iov".into(),
                        attribute: Some("SriovEnable".into()),
                        wanted: json!("Enabled"),
                        value: Some(json!("Enabled")),
                        meets: true,
                    }],
                }),
            ],
            ..NodeRecord::default()
        };
        let b = firmware_baseline(&node).unwrap();
        let c = &b["components"][0];
        assert_eq!(c["component"], "bmc");
        assert_eq!(c["wanted"], "7.10 or later");
        assert_eq!(
            c["members"][0],
            json!({"id": "BMC", "before": "7.00", "after": "7.10", "meets": true})
        );
        assert_eq!(b["bios"][0]["attribute"], "SriovEnable");
        assert_eq!(b["bios"][0]["meets"], true);
    }

    #[test]
    fn without_verify_after_is_not_recorded() {
        let node = NodeRecord {
            steps: vec![step(&InventoryMetrics {
                components: vec![check("7.00", false)],
            })],
            ..NodeRecord::default()
        };
        let b = firmware_baseline(&node).unwrap();
        assert_eq!(b["components"][0]["members"][0]["after"], NOT_RECORDED);
        assert_eq!(b["components"][0]["members"][0]["meets"], NOT_RECORDED);
        assert_eq!(b["bios"], NOT_RECORDED);
    }

    #[test]
    fn a_node_without_firmware_steps_has_none() {
        assert_eq!(firmware_baseline(&NodeRecord::default()), None);
    }
}
