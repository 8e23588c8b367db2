//! The HTML report's firmware compliance tables: per rack, each baseline
//! component against the versions its nodes run (after the firmware stage,
//! or before it when the stage read nothing back), with the outliers
//! marked: versions below the baseline, and versions a minority holds
//! where the rack's nodes disagree.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::nodes_by_rack;
use super::text::xml_attr as esc;
use crate::pipeline::record::{NodeRecord, RunRecord, latest};
use crate::stages::firmware::compliance::ComponentCheck;
use crate::stages::firmware::metrics::{InventoryMetrics, VerifyMetrics};

/// Where `node` stands: the `verify` read-back, else the `inventory`.
fn checks(node: &NodeRecord) -> Option<Vec<ComponentCheck>> {
    latest(node, |m: VerifyMetrics| {
        (!m.components.is_empty()).then_some(m.components)
    })
    .or_else(|| {
        latest(node, |m: InventoryMetrics| {
            (!m.components.is_empty()).then_some(m.components)
        })
    })
}

/// A rack's nodes that have firmware metrics, each with where it stands.
type RackChecks<'a> = (&'a str, Vec<(&'a NodeRecord, Vec<ComponentCheck>)>);

/// The members at one version of one component.
#[derive(Default)]
struct Cell {
    /// `node/member` of each, for the hover text.
    holders: Vec<String>,
    /// Whether any of them is below the baseline.
    below: bool,
}

/// Writes the section; nothing when no node has firmware metrics.
pub(super) fn section(h: &mut String, record: &RunRecord) {
    let racks: Vec<RackChecks> = nodes_by_rack(record)
        .into_iter()
        .map(|(rack, nodes)| {
            let found: Vec<_> = nodes
                .into_iter()
                .filter_map(|(_, n)| Some((n, checks(n)?)))
                .collect();
            (rack, found)
        })
        .filter(|(_, found)| !found.is_empty())
        .collect();
    if racks.is_empty() {
        return;
    }
    h.push_str(
        "<section id=\"firmware\">\n<h2>Firmware compliance</h2>\n<p class=\"note\">Members \
         at each version, per rack; marked: below the baseline, or held by a minority where \
         the nodes disagree.</p>\n",
    );
    for (rack, nodes) in &racks {
        rack_table(h, rack, nodes);
    }
    h.push_str("</section>\n");
}

fn rack_table(h: &mut String, rack: &str, nodes: &[(&NodeRecord, Vec<ComponentCheck>)]) {
    // component → (wanted, version → cell), in the baseline's order.
    let mut rows: Vec<(String, String, BTreeMap<String, Cell>)> = Vec::new();
    for (node, checks) in nodes {
        for c in checks {
            let i = match rows.iter().position(|r| r.0 == c.component) {
                Some(i) => i,
                None => {
                    rows.push((c.component.clone(), c.wanted.clone(), BTreeMap::new()));
                    rows.len() - 1
                }
            };
            for m in &c.members {
                let cell = rows[i].2.entry(m.version.clone()).or_default();
                cell.holders.push(format!("{}/{}", node.name, m.id));
                cell.below |= !m.meets;
            }
        }
    }
    let mut versions: Vec<&str> = rows
        .iter()
        .flat_map(|r| r.2.keys().map(String::as_str))
        .collect();
    versions.sort_unstable();
    versions.dedup();
    let _ = write!(
        h,
        "<h3>Rack {}</h3>\n<div class=\"scroll\"><table class=\"firmware\">\n<thead><tr>\
         <th>Component</th><th>Wanted</th>",
        esc(rack)
    );
    for v in &versions {
        let _ = write!(h, "<th class=\"num\">{}</th>", esc(v));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for (component, wanted, cells) in &rows {
        let most = cells.values().map(|c| c.holders.len()).max().unwrap_or(0);
        let disagree = cells.len() > 1;
        let outlier = cells
            .values()
            .any(|c| c.below || (disagree && c.holders.len() < most));
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td>{}</td>",
            if outlier { " class=\"v-failed\"" } else { "" },
            esc(component),
            esc(wanted)
        );
        for v in &versions {
            match cells.get(*v) {
                None => h.push_str("<td></td>"),
                Some(c) => {
                    let class = if c.below {
                        "num v-failed"
                    } else if disagree && c.holders.len() < most {
                        "num v-unverified"
                    } else {
                        "num"
                    };
                    let _ = write!(
                        h,
                        "<td class=\"{class}\" title=\"{}\">{}</td>",
                        esc(&c.holders.join(", ")),
                        c.holders.len()
                    );
                }
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table></div>\n");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pipeline::record::{StepMetrics, StepRecord};
    use crate::stages::firmware::compliance::Member;

    fn node(name: &str, bmc: &str, meets: bool) -> NodeRecord {
        let m = VerifyMetrics {
            components: vec![ComponentCheck {
                component: "bmc".into(),
                wanted: "7.10 or later".into(),
                members: vec![Member {
                    id: "BMC".into(),
                    version: bmc.into(),
                    meets,
                }],
            }],
            bios: vec![],
        };
        NodeRecord {
            name: name.into(),
            rack: "r01".into(),
            steps: vec![StepRecord {
                stage: VerifyMetrics::STAGE.into(),
                step: VerifyMetrics::STEP.into(),
                metrics: m.to_metrics(),
                ..StepRecord::default()
            }],
            ..NodeRecord::default()
        }
    }

    #[test]
    fn counts_members_per_version_and_marks_the_outliers() {
        let mut record = RunRecord {
            nodes: vec![
                node("n1", "7.10", true),
                node("n2", "7.10", true),
                node("n3", "7.00", false),
            ],
            ..RunRecord::default()
        };
        let mut h = String::new();
        section(&mut h, &record);
        assert!(
            h.contains("<th class=\"num\">7.00</th><th class=\"num\">7.10</th>"),
            "{h}"
        );
        assert!(
            h.contains("<td class=\"num v-failed\" title=\"n3/BMC\">1</td>"),
            "{h}"
        );
        assert!(
            h.contains("<td class=\"num\" title=\"n1/BMC, n2/BMC\">2</td>"),
            "{h}"
        );

        // A minority at a version that meets the baseline is marked too.
        record.nodes[2] = node("n3", "7.20", true);
        let mut h = String::new();
        section(&mut h, &record);
        assert!(
            h.contains("<td class=\"num v-unverified\" title=\"n3/BMC\">1</td>"),
            "{h}"
        );
    }

    #[test]
    fn nothing_without_firmware_metrics() {
        let record = RunRecord {
            nodes: vec![NodeRecord::default()],
            ..RunRecord::default()
        };
        let mut h = String::new();
        section(&mut h, &record);
        assert!(h.is_empty());
    }
}
