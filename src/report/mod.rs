//! Run reports: one [`RunRecord`] rendered as JSON, JUnit XML, Markdown or a
//! self-contained HTML page with SVG plots. Pure functions from a record to
//! text; reading the record (journal or file) and writing the result is the
//! command's job.
//!
//! Every string in a record may come from an inventory or a tool's output, so
//! each renderer escapes for its own syntax: nothing a node name or a log
//! line contains can break out of a table cell, an XML attribute or HTML.

mod example;
mod firmware;
mod html;
mod json;
mod junit;
mod markdown;
pub mod svg;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::pipeline::record::{NodeRecord, NodeVerdict, RunRecord, StepRecord, UnixMs};

pub use example::example_record;
pub use text::{human_duration_ms, rfc3339_utc};

/// A report format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    /// The record, pretty-printed, with a computed summary.
    Json,
    /// JUnit XML for CI systems: a suite per rack, a case per node and step.
    Junit,
    /// One self-contained HTML file with SVG plots (works offline).
    Html,
    /// Markdown: a summary table and a section per node.
    #[value(alias = "markdown")]
    Md,
}

impl Format {
    /// Every format, in the order help lists them.
    pub const ALL: [Format; 4] = [Format::Json, Format::Junit, Format::Html, Format::Md];

    /// The format's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Junit => "junit",
            Format::Html => "html",
            Format::Md => "md",
        }
    }

    /// The usual file extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Junit => "xml",
            Format::Html => "html",
            Format::Md => "md",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of [`Format::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown report format {given:?}: expected json, junit, html or md")]
pub struct UnknownFormat {
    /// What was given.
    pub given: String,
}

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "junit" | "xml" => Ok(Format::Junit),
            "html" => Ok(Format::Html),
            "md" | "markdown" => Ok(Format::Md),
            _ => Err(UnknownFormat {
                given: s.to_owned(),
            }),
        }
    }
}

/// Renders `record` in `format`. The output ends with a newline.
pub fn render(record: &RunRecord, format: Format) -> String {
    match format {
        Format::Json => json::render(record),
        Format::Junit => junit::render(record),
        Format::Html => html::render(record),
        Format::Md => markdown::render(record),
    }
}

/// Nodes per verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerdictCounts {
    /// All nodes.
    pub total: usize,
    /// Accepted nodes.
    pub accepted: usize,
    /// Failed nodes.
    pub failed: usize,
    /// Unverified nodes.
    pub unverified: usize,
    /// Pending nodes.
    pub pending: usize,
}

impl VerdictCounts {
    fn add(&mut self, verdict: NodeVerdict) {
        self.total += 1;
        match verdict {
            NodeVerdict::Accepted => self.accepted += 1,
            NodeVerdict::Failed => self.failed += 1,
            NodeVerdict::Unverified => self.unverified += 1,
            NodeVerdict::Pending => self.pending += 1,
        }
    }

    /// The count for one verdict.
    pub fn get(&self, verdict: NodeVerdict) -> usize {
        match verdict {
            NodeVerdict::Accepted => self.accepted,
            NodeVerdict::Failed => self.failed,
            NodeVerdict::Unverified => self.unverified,
            NodeVerdict::Pending => self.pending,
        }
    }
}

/// One rack's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RackSummary {
    /// The rack's name.
    pub rack: String,
    /// Its nodes per verdict.
    #[serde(flatten)]
    pub counts: VerdictCounts,
}

/// What a report says first: nodes per verdict, for the run and per rack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The whole run.
    #[serde(flatten)]
    pub counts: VerdictCounts,
    /// Per rack, in the order racks first appear in the record.
    pub racks: Vec<RackSummary>,
    /// Nodes failed per stage (the stage that failed them), by stage name.
    pub failed_by_stage: BTreeMap<String, usize>,
}

impl Summary {
    /// Counts `record`'s nodes.
    pub fn of(record: &RunRecord) -> Summary {
        let mut summary = Summary::default();
        // Rack name to its index in `racks`: a site has hundreds of racks.
        let mut index: HashMap<&str, usize> = HashMap::new();
        for node in &record.nodes {
            summary.counts.add(node.verdict);
            let i = *index.entry(&node.rack).or_insert_with(|| {
                summary.racks.push(RackSummary {
                    rack: node.rack.clone(),
                    counts: VerdictCounts::default(),
                });
                summary.racks.len() - 1
            });
            summary.racks[i].counts.add(node.verdict);
            if node.verdict == NodeVerdict::Failed {
                let stage = node.failed_stage.clone().unwrap_or_else(|| "-".into());
                *summary.failed_by_stage.entry(stage).or_default() += 1;
            }
        }
        summary
    }
}

/// Every verdict, in the order reports list them (worst first).
pub const VERDICTS: [NodeVerdict; 4] = [
    NodeVerdict::Failed,
    NodeVerdict::Unverified,
    NodeVerdict::Pending,
    NodeVerdict::Accepted,
];

/// Racks in the order they first appear, each with its nodes (and their
/// indexes in `record.nodes`) in record order.
pub fn nodes_by_rack(record: &RunRecord) -> Vec<(&str, Vec<(usize, &NodeRecord)>)> {
    let mut racks: Vec<(&str, Vec<(usize, &NodeRecord)>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, node) in record.nodes.iter().enumerate() {
        let r = *index.entry(&node.rack).or_insert_with(|| {
            racks.push((&node.rack, Vec::new()));
            racks.len() - 1
        });
        racks[r].1.push((i, node));
    }
    racks
}

/// The node's time span: from its first step's start to its last step's end.
pub fn node_span_ms(node: &NodeRecord) -> Option<(UnixMs, UnixMs)> {
    let mut span: Option<(UnixMs, UnixMs)> = None;
    for step in &node.steps {
        let Some(start) = step.started_ms else {
            continue;
        };
        let end = start.saturating_add(step.duration_ms.unwrap_or(0));
        span = Some(match span {
            None => (start, end),
            Some((a, b)) => (a.min(start), b.max(end)),
        });
    }
    span
}

/// The sum of the node's step durations.
pub fn node_busy_ms(node: &NodeRecord) -> u64 {
    node.steps.iter().filter_map(|s| s.duration_ms).sum()
}

/// The reason shown first for a node: its own, else its failing step's.
pub fn first_reason(node: &NodeRecord) -> Option<&str> {
    node.reasons
        .first()
        .or_else(|| node.steps.iter().find_map(|s| s.reasons.first()))
        .map(String::as_str)
}

/// A step's `stage/step` name.
pub fn step_name(step: &StepRecord) -> String {
    format!("{}/{}", step.stage, step.step)
}

#[cfg(test)]
mod tests;
