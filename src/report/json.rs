//! The JSON report: the record as stored, with a computed summary between
//! the run and its nodes. Field order follows the record's types and maps
//! are sorted, so two renders of one record are byte-identical.

use serde::Serialize;

use super::Summary;
use crate::pipeline::record::{NodeRecord, RunInfo, RunRecord};

/// The document: `{"run": …, "summary": …, "nodes": […]}`.
#[derive(Serialize)]
struct Report<'a> {
    run: &'a RunInfo,
    summary: Summary,
    nodes: &'a [NodeRecord],
}

pub(super) fn render(record: &RunRecord) -> String {
    let report = Report {
        run: &record.run,
        summary: Summary::of(record),
        nodes: &record.nodes,
    };
    // Serialising plain data with string keys cannot fail; should it ever,
    // the report says so instead of panicking.
    let mut text = serde_json::to_string_pretty(&report)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    text.push('\n');
    text
}
