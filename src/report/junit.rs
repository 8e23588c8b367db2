//! JUnit XML, the dialect Jenkins, GitLab and GitHub test reporters read:
//! `<testsuites>` holding a `<testsuite>` per rack; in each, per node a
//! `verdict` case and a case per step (`stage/step`, classname the node).
//! Failed is `<failure>`, unverified, pending and running are `<skipped>`
//! (not proven either way), done and skipped-as-already-done pass.

use std::fmt::Write as _;

use super::text::{junit_timestamp, one_line, seconds, xml_attr as attr, xml_text as text};
use super::{Summary, node_busy_ms, node_span_ms, nodes_by_rack, step_name};
use crate::pipeline::record::{NodeRecord, NodeVerdict, RunRecord, StepRecord, StepStatus};

/// One `<testcase>` before it is written.
struct Case {
    classname: String,
    name: String,
    time_ms: u64,
    outcome: Outcome,
    /// Lines for `<system-out>`: what the step did, its artifacts.
    out: Vec<String>,
}

enum Outcome {
    Pass,
    Failure { message: String, body: String },
    Skipped { message: String },
}

pub(super) fn render(record: &RunRecord) -> String {
    let summary = Summary::of(record);
    let mut suites = String::new();
    let (mut tests, mut failures, mut skipped, mut total_ms) = (0, 0, 0, 0u64);
    for (i, (rack, nodes)) in nodes_by_rack(record).into_iter().enumerate() {
        let cases: Vec<Case> = nodes
            .iter()
            .flat_map(|(_, n)| node_cases(record, n))
            .collect();
        let fails = cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failure { .. }))
            .count();
        let skips = cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Skipped { .. }))
            .count();
        // Nodes in a rack run side by side: the rack took as long as its
        // slowest node, not the sum of its steps.
        let rack_ms = nodes
            .iter()
            .filter_map(|(_, n)| node_span_ms(n).map(|(a, b)| b - a))
            .max()
            .unwrap_or(0);
        tests += cases.len();
        failures += fails;
        skipped += skips;
        total_ms = total_ms.max(rack_ms);
        let _ = writeln!(
            suites,
            "  <testsuite name=\"{}\" id=\"{i}\" package=\"{}\" tests=\"{}\" failures=\"{fails}\" \
             errors=\"0\" skipped=\"{skips}\" time=\"{}\" timestamp=\"{}\" hostname=\"{}\">",
            attr(&format!("{} rack {rack}", record.run.site)),
            attr(&record.run.site),
            cases.len(),
            seconds(rack_ms),
            junit_timestamp(record.run.started_ms),
            attr(rack),
        );
        for case in &cases {
            write_case(&mut suites, case);
        }
        suites.push_str("  </testsuite>\n");
    }
    let run_ms = match record.run.finished_ms {
        Some(end) => end.saturating_sub(record.run.started_ms),
        None => total_ms,
    };
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<!-- kiln run {}: {} nodes, {} accepted, {} failed, {} unverified, {} pending -->",
        comment(&record.run.id),
        summary.counts.total,
        summary.counts.accepted,
        summary.counts.failed,
        summary.counts.unverified,
        summary.counts.pending,
    );
    let _ = writeln!(
        xml,
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"{skipped}\" time=\"{}\">",
        attr(&format!("kiln run {} ({})", record.run.id, record.run.site)),
        seconds(run_ms),
    );
    xml.push_str(&suites);
    xml.push_str("</testsuites>\n");
    xml
}

fn node_cases(record: &RunRecord, node: &NodeRecord) -> Vec<Case> {
    let classname = format!("{}.{}.{}", record.run.site, node.rack, node.name);
    let mut cases = Vec::with_capacity(node.steps.len() + 1);
    let verdict_outcome = match node.verdict {
        NodeVerdict::Accepted => Outcome::Pass,
        NodeVerdict::Failed => Outcome::Failure {
            message: message(&node.reasons, "failed"),
            body: node.reasons.join("\n"),
        },
        NodeVerdict::Unverified => Outcome::Skipped {
            message: format!("unverified: {}", message(&node.reasons, "not proven good")),
        },
        NodeVerdict::Pending => Outcome::Skipped {
            message: "pending: not through all of its stages".into(),
        },
    };
    let mut out = vec![format!("verdict: {}", node.verdict.word())];
    if !node.hardware.is_empty() {
        out.push(format!("hardware: {}", node.hardware));
    }
    if let Some(stage) = &node.failed_stage {
        out.push(format!("failed stage: {stage}"));
    }
    cases.push(Case {
        classname: classname.clone(),
        name: "verdict".into(),
        time_ms: node_busy_ms(node),
        outcome: verdict_outcome,
        out,
    });
    for step in &node.steps {
        cases.push(step_case(&classname, step));
    }
    cases
}

fn step_case(classname: &str, step: &StepRecord) -> Case {
    let outcome = match step.status {
        StepStatus::Done | StepStatus::Skipped => Outcome::Pass,
        StepStatus::Failed => Outcome::Failure {
            message: message(&step.reasons, "failed"),
            body: step.reasons.join("\n"),
        },
        StepStatus::Unverified => Outcome::Skipped {
            message: format!("unverified: {}", message(&step.reasons, "no result")),
        },
        StepStatus::Pending => Outcome::Skipped {
            message: "pending: not started".into(),
        },
        StepStatus::Running => Outcome::Skipped {
            message: "running: not finished".into(),
        },
    };
    let mut out = Vec::new();
    if step.status == StepStatus::Skipped {
        out.push("skipped: already done or not needed".into());
    }
    if !step.detail.is_empty() {
        out.push(step.detail.clone());
    }
    out.extend(step.artifacts.iter().map(|a| format!("artifact: {a}")));
    Case {
        classname: classname.into(),
        name: step_name(step),
        time_ms: step.duration_ms.unwrap_or(0),
        outcome,
        out,
    }
}

/// The `message` attribute: the reasons on one line.
fn message(reasons: &[String], otherwise: &str) -> String {
    if reasons.is_empty() {
        otherwise.into()
    } else {
        reasons
            .iter()
            .map(|r| one_line(r))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn write_case(xml: &mut String, case: &Case) {
    let _ = write!(
        xml,
        "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
        attr(&case.classname),
        attr(&case.name),
        seconds(case.time_ms),
    );
    if matches!(case.outcome, Outcome::Pass) && case.out.is_empty() {
        xml.push_str("/>\n");
        return;
    }
    xml.push_str(">\n");
    match &case.outcome {
        Outcome::Pass => {}
        Outcome::Failure { message, body } => {
            let _ = writeln!(
                xml,
                "      <failure message=\"{}\" type=\"failed\">{}</failure>",
                attr(message),
                text(body),
            );
        }
        Outcome::Skipped { message } => {
            let _ = writeln!(xml, "      <skipped message=\"{}\"/>", attr(message));
        }
    }
    if !case.out.is_empty() {
        let _ = writeln!(
            xml,
            "      <system-out>{}</system-out>",
            text(&case.out.join("\n"))
        );
    }
    xml.push_str("    </testcase>\n");
}

/// Text for inside a comment, which may not contain `--`.
fn comment(s: &str) -> String {
    let mut s = text(s);
    while s.contains("--") {
        s = s.replace("--", "- -");
    }
    s
}
