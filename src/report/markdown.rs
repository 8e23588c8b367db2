//! Markdown (GitHub flavour): the run, a summary, a table of nodes, then a
//! section per node with its reasons and steps. Cells escape `|`, line
//! breaks and `<`, so tool output cannot break a table or inject HTML.

use std::fmt::Write as _;

use super::text::{human_duration_ms, rfc3339_utc};
use super::{Summary, VERDICTS, first_reason, node_span_ms};
use crate::pipeline::record::{NodeRecord, RunRecord, StepStatus};

pub(super) fn render(record: &RunRecord) -> String {
    let run = &record.run;
    let summary = Summary::of(record);
    let mut md = String::new();
    let _ = writeln!(md, "# kiln run {}\n", inline(&run.id));
    let _ = writeln!(md, "- **Site:** {}", inline(&run.site));
    let _ = writeln!(md, "- **Inventory:** {}", code(&run.inventory));
    let _ = writeln!(md, "- **Stages:** {}", inline(&run.stages.join(" → ")));
    let _ = writeln!(md, "- **Started:** {}", rfc3339_utc(run.started_ms));
    match run.finished_ms {
        Some(end) => {
            let _ = writeln!(
                md,
                "- **Finished:** {} ({})",
                rfc3339_utc(end),
                human_duration_ms(end.saturating_sub(run.started_ms))
            );
        }
        None => md.push_str("- **Finished:** not yet\n"),
    }
    let _ = writeln!(md, "- **State:** {}", state_word(record));
    let _ = writeln!(md, "- **kiln:** {}\n", inline(&run.kiln_version));

    md.push_str("## Summary\n\n");
    md.push_str("| Rack | Nodes | Accepted | Failed | Unverified | Pending |\n");
    md.push_str("|---|--:|--:|--:|--:|--:|\n");
    for rack in &summary.racks {
        let c = &rack.counts;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&rack.rack),
            c.total,
            c.accepted,
            c.failed,
            c.unverified,
            c.pending
        );
    }
    let c = &summary.counts;
    let _ = writeln!(
        md,
        "| **all** | **{}** | **{}** | **{}** | **{}** | **{}** |\n",
        c.total, c.accepted, c.failed, c.unverified, c.pending
    );

    md.push_str("## Nodes\n\n");
    md.push_str("| Node | Rack | Verdict | Failing stage | Reason |\n");
    md.push_str("|---|---|---|---|---|\n");
    // Worst first, so the nodes that need a technician lead the table.
    for verdict in VERDICTS {
        for node in record.nodes.iter().filter(|n| n.verdict == verdict) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                cell(&node.name),
                cell(&node.rack),
                node.verdict.word(),
                cell(node.failed_stage.as_deref().unwrap_or("")),
                cell(first_reason(node).unwrap_or("")),
            );
        }
    }
    md.push('\n');

    for node in &record.nodes {
        node_section(&mut md, node);
    }
    md
}

fn state_word(record: &RunRecord) -> &'static str {
    use crate::pipeline::record::RunState;
    match record.run.state {
        RunState::Running => "running",
        RunState::Interrupted => "interrupted",
        RunState::Finished => "finished",
    }
}

fn node_section(md: &mut String, node: &NodeRecord) {
    let _ = writeln!(md, "### {} — {}\n", inline(&node.name), node.verdict.word());
    let _ = write!(md, "Rack {}", inline(&node.rack));
    if !node.hardware.is_empty() {
        let _ = write!(md, ", hardware {}", inline(&node.hardware));
    }
    if let Some(stage) = &node.failed_stage {
        let _ = write!(md, ", failed in {}", inline(stage));
    }
    if let Some((a, b)) = node_span_ms(node) {
        let _ = write!(md, ", {} from first step to last", human_duration_ms(b - a));
    }
    md.push_str(".\n\n");
    if !node.reasons.is_empty() {
        for reason in &node.reasons {
            let _ = writeln!(md, "- {}", inline(reason));
        }
        md.push('\n');
    }
    if node.steps.is_empty() {
        md.push_str("No steps recorded.\n\n");
        return;
    }
    md.push_str("| Stage | Step | Status | Duration | Detail |\n");
    md.push_str("|---|---|---|--:|---|\n");
    for step in &node.steps {
        let mut detail = step.detail.clone();
        for reason in &step.reasons {
            if !detail.is_empty() {
                detail.push('\n');
            }
            detail.push_str(reason);
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            cell(&step.stage),
            cell(&step.step),
            status_word(step.status),
            step.duration_ms.map(human_duration_ms).unwrap_or_default(),
            cell(&detail),
        );
    }
    md.push('\n');
}

/// A step status as reports spell it.
pub(super) fn status_word(status: StepStatus) -> &'static str {
    status.word()
}

/// Escapes text for a table cell: `|` would end the cell and a line break
/// the row; `<` could open HTML; `\` would escape what follows.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let s = s.replace("\r\n", "\n");
    for c in s.trim().chars() {
        match c {
            '|' => out.push_str("\\|"),
            '\\' => out.push_str("\\\\"),
            '\n' | '\r' => out.push_str("<br>"),
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for one line outside a table (headings, list items).
fn inline(s: &str) -> String {
    cell(s).replace("<br>", " ").replace("\\|", "|")
}

/// Inline code; backticks inside would end it, so they are dropped.
fn code(s: &str) -> String {
    format!("`{}`", super::text::one_line(s).replace('`', "'"))
}
