//! The HTML report: one self-contained file (inline CSS and SVG, no script,
//! no external URL) that opens offline in any browser. Every string from
//! the record goes through [`esc`]; element ids are made from node indexes,
//! never from names.

use std::fmt::Write as _;

use serde_json::Value;

use super::markdown::status_word;
use super::svg::{self, Bar, HLine, LineChart, RackCell, Series, XScale};
use super::text::{human_duration_ms, one_line, rfc3339_utc, xml_attr as esc};
use super::{Summary, VERDICTS, first_reason, node_span_ms, nodes_by_rack};
use crate::acceptance::burnin::BurnTelemetry;
use crate::pipeline::record::{
    NodeRecord, NodeVerdict, RunRecord, RunState, StepMetrics as _, StepRecord, StepStatus,
};

/// Above this many nodes, only nodes that are not accepted get a detailed
/// section (a 12,500-node site would otherwise make a file of gigabytes).
const DETAIL_ALL_UP_TO: usize = 200;

/// Racks per row of the rack map.
const RACKS_PER_ROW: usize = 7;

/// Line colours for GPUs (Paul Tol's "muted" scheme, told apart by people
/// with common colour-vision deficiencies).
const PALETTE: [&str; 9] = [
    "#332288", "#88ccee", "#44aa99", "#117733", "#999933", "#cc6677", "#882255", "#aa4499",
    "#555555",
];

/// A verdict's fill colour (the word is always written beside it).
fn verdict_colour(v: NodeVerdict) -> &'static str {
    match v {
        NodeVerdict::Accepted => "#7cc47f",
        NodeVerdict::Failed => "#e86b6b",
        NodeVerdict::Unverified => "#ffbf4d",
        NodeVerdict::Pending => "#cfd6dc",
    }
}

fn status_colour(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Done => "#5aab5e",
        StepStatus::Skipped => "#aab4bc",
        StepStatus::Failed => "#d83b3b",
        StepStatus::Unverified => "#f0a020",
        StepStatus::Running => "#4a90d9",
        StepStatus::Pending => "#e0e4e8",
    }
}

const CSS: &str = "
:root{color-scheme:light;--fg:#1b1f24;--muted:#5b6570;--line:#d8dde3;--bg:#ffffff;--alt:#f5f7f9}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1320px;padding:24px 32px;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;color:var(--fg);background:var(--bg)}
h1{font-size:24px;margin:0 0 8px}h1 code{font-size:22px}h2{font-size:19px;margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:16px;margin:0 0 6px}h4{font-size:14px;margin:14px 0 6px;color:var(--muted)}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dl.meta dt{color:var(--muted)}dl.meta dd{margin:0}
.chips{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0 12px}
.chip{border:1px solid var(--line);border-radius:6px;padding:6px 12px;min-width:110px}
.chip b{display:block;font-size:22px}
.badge{display:inline-block;border-radius:4px;padding:0 7px;font-size:12px;font-weight:600;color:#1b1f24;border:1px solid rgba(0,0,0,.25)}
table{border-collapse:collapse;width:100%;margin:6px 0 10px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--alt);font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}.nowrap{white-space:nowrap}
tr.v-failed td:first-child{border-left:4px solid #e86b6b}tr.v-unverified td:first-child{border-left:4px solid #ffbf4d}
tr.v-accepted td:first-child{border-left:4px solid #7cc47f}td.v-failed{background:#fbe1e1;font-weight:600}td.v-unverified{background:#fff0d4;font-weight:600}tr.v-pending td:first-child{border-left:4px solid #cfd6dc}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:4px 0 8px}
.legend span{display:inline-flex;align-items:center;gap:6px}
.swatch{display:inline-block;width:16px;height:16px;border-radius:3px;border:1px solid rgba(0,0,0,.3)}
.scroll{overflow-x:auto}
article.node{border:1px solid var(--line);border-radius:8px;padding:14px 18px;margin:16px 0;break-inside:avoid}
ul.reasons{margin:6px 0;padding-left:20px}ul.reasons li{white-space:pre-wrap}
.plots{display:flex;flex-wrap:wrap;gap:12px}
.note{color:var(--muted)}
footer{margin-top:32px;color:var(--muted);font-size:12px}
svg text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;fill:#1b1f24}
svg .title{font-size:13px;font-weight:600}svg .tick{font-size:11px;fill:#4a535c}
svg .axis-title{font-size:12px;fill:#4a535c}svg .legend{font-size:11px}
svg .grid{stroke:#e6e9ed;stroke-width:1}svg .axis{stroke:#6b747d;stroke-width:1}
svg .rack{fill:#f3f5f7;stroke:#b9c1c9}svg .rack-name{font-size:12px;font-weight:600}
svg .cell{stroke:rgba(0,0,0,.35);stroke-width:1}svg .cell-name{font-size:12px;font-weight:600}
svg .cell-tag{font-size:10px;font-weight:700;letter-spacing:.04em}
@media print{body{max-width:none;padding:0}.scroll{overflow:visible}}
";

pub(super) fn render(record: &RunRecord) -> String {
    let run = &record.run;
    let summary = Summary::of(record);
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"kiln {}\">\n<title>kiln run {} — {}</title>\n\
         <style>{CSS}</style>\n</head>\n<body>\n",
        esc(&run.kiln_version),
        esc(&run.id),
        esc(&run.site)
    );
    header(&mut h, record);
    summary_section(&mut h, &summary);
    rack_map_section(&mut h, record);
    super::firmware::section(&mut h, record);
    node_table(&mut h, record);
    details(&mut h, record);
    let _ = write!(
        h,
        "<footer>Generated by kiln {} from run {}. Times are UTC. This file is self-contained: \
         it needs no network and no script.</footer>\n</body>\n</html>\n",
        esc(&run.kiln_version),
        esc(&run.id)
    );
    h
}

fn badge(v: NodeVerdict) -> String {
    format!(
        "<span class=\"badge\" style=\"background:{}\">{}</span>",
        verdict_colour(v),
        v.word()
    )
}

fn header(h: &mut String, record: &RunRecord) {
    let run = &record.run;
    let _ = writeln!(
        h,
        "<header>\n<h1>kiln run <code>{}</code></h1>\n<dl class=\"meta\">",
        esc(&run.id)
    );
    let mut row = |k: &str, v: String| {
        let _ = writeln!(h, "<dt>{k}</dt><dd>{v}</dd>");
    };
    row("Site", esc(&run.site));
    row("Inventory", format!("<code>{}</code>", esc(&run.inventory)));
    row("Stages", esc(&run.stages.join(" → ")));
    row(
        "Started",
        format!("<time>{}</time>", rfc3339_utc(run.started_ms)),
    );
    row(
        "Finished",
        match run.finished_ms {
            Some(end) => format!(
                "<time>{}</time> ({})",
                rfc3339_utc(end),
                human_duration_ms(end.saturating_sub(run.started_ms))
            ),
            None => "not yet".into(),
        },
    );
    row(
        "State",
        match run.state {
            RunState::Running => "running",
            RunState::Interrupted => "interrupted (resumable)",
            RunState::Finished => "finished",
        }
        .into(),
    );
    row("kiln", esc(&run.kiln_version));
    h.push_str("</dl>\n</header>\n");
}

fn summary_section(h: &mut String, summary: &Summary) {
    h.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"chips\">\n");
    let _ = writeln!(
        h,
        "<div class=\"chip\"><b>{}</b>nodes</div>",
        summary.counts.total
    );
    for v in VERDICTS {
        let _ = writeln!(
            h,
            "<div class=\"chip\" style=\"border-left:6px solid {}\"><b>{}</b>{}</div>",
            verdict_colour(v),
            summary.counts.get(v),
            v.word()
        );
    }
    h.push_str("</div>\n");
    if !summary.failed_by_stage.is_empty() {
        let parts: Vec<String> = summary
            .failed_by_stage
            .iter()
            .map(|(stage, n)| format!("{} in {}", n, esc(stage)))
            .collect();
        let _ = writeln!(h, "<p>Failed: {}.</p>", parts.join(", "));
    }
    h.push_str(
        "<table class=\"racks\">\n<thead><tr><th>Rack</th><th class=\"num\">Nodes</th>\
         <th class=\"num\">Accepted</th><th class=\"num\">Failed</th>\
         <th class=\"num\">Unverified</th><th class=\"num\">Pending</th></tr></thead>\n<tbody>\n",
    );
    for rack in &summary.racks {
        let c = &rack.counts;
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&rack.rack),
            c.total,
            c.accepted,
            c.failed,
            c.unverified,
            c.pending
        );
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

fn legend(h: &mut String) {
    h.push_str("<div class=\"legend\" aria-label=\"Legend\">");
    for v in [
        NodeVerdict::Accepted,
        NodeVerdict::Failed,
        NodeVerdict::Unverified,
        NodeVerdict::Pending,
    ] {
        let _ = write!(
            h,
            "<span><i class=\"swatch\" style=\"background:{}\"></i>{} ({})</span>",
            verdict_colour(v),
            v.word(),
            tag(v)
        );
    }
    h.push_str("</div>\n");
}

/// The short word in a rack-map cell.
fn tag(v: NodeVerdict) -> &'static str {
    match v {
        NodeVerdict::Accepted => "OK",
        NodeVerdict::Failed => "FAIL",
        NodeVerdict::Unverified => "UNVERIFIED",
        NodeVerdict::Pending => "PENDING",
    }
}

fn rack_map_section(h: &mut String, record: &RunRecord) {
    h.push_str("<section id=\"rack-map\">\n<h2>Rack map</h2>\n");
    legend(h);
    let racks: Vec<(String, Vec<RackCell>)> = nodes_by_rack(record)
        .into_iter()
        .map(|(rack, nodes)| {
            let cells = nodes
                .into_iter()
                .map(|(i, n)| RackCell {
                    name: n.name.clone(),
                    tag: tag(n.verdict).into(),
                    colour: verdict_colour(n.verdict).into(),
                    href: format!("#node-{i}"),
                })
                .collect();
            (rack.to_owned(), cells)
        })
        .collect();
    for chunk in racks.chunks(RACKS_PER_ROW) {
        let _ = writeln!(h, "<div class=\"scroll\">{}</div>", svg::rack_map(chunk));
    }
    h.push_str("</section>\n");
}

fn node_table(h: &mut String, record: &RunRecord) {
    h.push_str(
        "<section id=\"nodes\">\n<h2>Nodes</h2>\n<table>\n<thead><tr><th>Node</th><th>Rack</th>\
         <th>Hardware</th><th>Verdict</th><th>Failing stage</th><th>Reason</th>\
         <th class=\"num\">Time</th></tr></thead>\n<tbody>\n",
    );
    for v in VERDICTS {
        for (i, node) in record
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.verdict == v)
        {
            let time = node_span_ms(node)
                .map(|(a, b)| human_duration_ms(b - a))
                .unwrap_or_default();
            let _ = writeln!(
                h,
                "<tr class=\"v-{}\"><td class=\"nowrap\"><a href=\"#node-{i}\">{}</a></td>\
                 <td class=\"nowrap\">{}</td><td class=\"nowrap\">{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td class=\"num nowrap\">{}</td></tr>",
                v.word(),
                esc(&node.name),
                esc(&node.rack),
                esc(&node.hardware),
                badge(node.verdict),
                esc(node.failed_stage.as_deref().unwrap_or("")),
                esc(&one_line(first_reason(node).unwrap_or(""))),
                time
            );
        }
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

fn details(h: &mut String, record: &RunRecord) {
    h.push_str("<section id=\"details\">\n<h2>Node details</h2>\n");
    let all = record.nodes.len() <= DETAIL_ALL_UP_TO;
    if !all {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} nodes: details are shown for the nodes that are not accepted; \
             the JSON report has every node.</p>",
            record.nodes.len()
        );
    }
    for (i, node) in record.nodes.iter().enumerate() {
        if all || node.verdict != NodeVerdict::Accepted {
            node_details(h, i, node);
        }
    }
    h.push_str("</section>\n");
}

fn node_details(h: &mut String, i: usize, node: &NodeRecord) {
    let _ = writeln!(
        h,
        "<article class=\"node\" id=\"node-{i}\">\n<h3>{} {}</h3>",
        esc(&node.name),
        badge(node.verdict)
    );
    let mut facts = vec![format!("rack {}", esc(&node.rack))];
    if !node.hardware.is_empty() {
        facts.push(format!("hardware <code>{}</code>", esc(&node.hardware)));
    }
    if let Some(stage) = &node.failed_stage {
        facts.push(format!("failed in <b>{}</b>", esc(stage)));
    }
    if let Some((a, b)) = node_span_ms(node) {
        facts.push(format!(
            "{} from first step to last (started <time>{}</time>)",
            human_duration_ms(b - a),
            rfc3339_utc(a)
        ));
    }
    let _ = writeln!(h, "<p>{}</p>", facts.join(" · "));
    if !node.reasons.is_empty() {
        h.push_str("<ul class=\"reasons\">\n");
        for r in &node.reasons {
            let _ = writeln!(h, "<li>{}</li>", esc(r));
        }
        h.push_str("</ul>\n");
    }
    if node.steps.is_empty() {
        h.push_str("<p class=\"note\">No steps recorded.</p>\n</article>\n");
        return;
    }
    timeline(h, node);
    step_table(h, node);
    let plots: Vec<String> = node.steps.iter().flat_map(step_plots).collect();
    if !plots.is_empty() {
        h.push_str("<h4>Measurements</h4>\n<div class=\"plots\">\n");
        for p in plots {
            h.push_str(&p);
        }
        h.push_str("</div>\n");
    }
    h.push_str("</article>\n");
}

fn timeline(h: &mut String, node: &NodeRecord) {
    let Some((origin, _)) = node_span_ms(node) else {
        return;
    };
    let bars: Vec<Bar> = node
        .steps
        .iter()
        .filter_map(|s| {
            let start = s.started_ms?;
            let length = s.duration_ms.unwrap_or(0);
            Some(Bar {
                label: super::step_name(s),
                start_s: (start - origin) as f64 / 1000.0,
                length_s: length as f64 / 1000.0,
                colour: status_colour(s.status).into(),
                tip: format!(
                    "{}: {}, {}",
                    super::step_name(s),
                    status_word(s.status),
                    s.duration_ms
                        .map(human_duration_ms)
                        .unwrap_or("running".into())
                ),
            })
        })
        .collect();
    if bars.is_empty() {
        return;
    }
    h.push_str("<h4>Timeline</h4>\n<div class=\"scroll\">");
    h.push_str(&svg::timeline(&format!("Steps of {}", node.name), &bars));
    h.push_str("</div>\n");
}

fn step_table(h: &mut String, node: &NodeRecord) {
    h.push_str(
        "<h4>Steps</h4>\n<table class=\"steps\">\n<thead><tr><th>Stage</th><th>Step</th>\
         <th>Status</th><th>Started</th><th class=\"num\">Duration</th><th>Detail</th></tr>\
         </thead>\n<tbody>\n",
    );
    for s in &node.steps {
        let mut detail = esc(&s.detail);
        if !s.reasons.is_empty() {
            detail.push_str("<ul class=\"reasons\">");
            for r in &s.reasons {
                let _ = write!(detail, "<li>{}</li>", esc(r));
            }
            detail.push_str("</ul>");
        }
        for a in &s.artifacts {
            let _ = write!(
                detail,
                "<div class=\"note\">kept: <code>{}</code></div>",
                esc(a)
            );
        }
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td><i class=\"swatch\" style=\"background:{};\
             width:10px;height:10px\"></i> {}</td><td>{}</td><td class=\"num\">{}</td>\
             <td>{}</td></tr>",
            esc(&s.stage),
            esc(&s.step),
            status_colour(s.status),
            status_word(s.status),
            s.started_ms
                .map(|t| format!("<time>{}</time>", rfc3339_utc(t)))
                .unwrap_or_default(),
            s.duration_ms.map(human_duration_ms).unwrap_or_default(),
            detail
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

/// The plots a step's metrics call for (see the record's metrics module):
/// burn-in telemetry (GPU temperatures with the BMC's inlet reading, and
/// the BMC's chassis power), nccl-tests rows.
fn step_plots(step: &StepRecord) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(chart) = temperature_chart(step) {
        out.push(chart.to_svg());
    }
    if let Some(chart) = chassis_power_chart(step) {
        out.push(chart.to_svg());
    }
    if let Some(chart) = nccl_chart(step) {
        out.push(chart.to_svg());
    }
    out
}

fn temperature_chart(step: &StepRecord) -> Option<LineChart> {
    let samples = BurnTelemetry::from_metrics(&step.metrics)?.telemetry;
    let mut gpus: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for s in samples {
        let (gpu, t, temp) = (s.gpu.label(), s.t_s, s.temp_c);
        match gpus.iter_mut().find(|(g, _)| *g == gpu) {
            Some((_, pts)) => pts.push((t, temp)),
            None => gpus.push((gpu, vec![(t, temp)])),
        }
    }
    if gpus.is_empty() {
        return None;
    }
    // The air the GPUs were fed, from the BMC, with its limit.
    let inlet = bmc_series(step, "inlet_c");
    let inlet_limit = step
        .metrics
        .get("bmc")
        .and_then(|b| b.get("inlet_limit_c"))
        .and_then(Value::as_f64)
        .filter(|_| !inlet.is_empty());
    let t_max = gpus
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(t, _)| *t))
        .fold(0.0, f64::max);
    let (unit, div) = if t_max > 1200.0 {
        ("min", 60.0)
    } else {
        ("s", 1.0)
    };
    let mut series: Vec<Series> = gpus
        .into_iter()
        .enumerate()
        .map(|(i, (gpu, mut pts))| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: format!("GPU {gpu}"),
                points: pts.into_iter().map(|(t, y)| (t / div, y)).collect(),
                colour: PALETTE[i % PALETTE.len()].into(),
            }
        })
        .collect();
    if !inlet.is_empty() {
        series.push(Series {
            label: "inlet (BMC)".into(),
            points: inlet.into_iter().map(|(t, y)| (t / div, y)).collect(),
            colour: INLET_COLOUR.into(),
        });
    }
    Some(LineChart {
        title: format!("GPU temperature during burn-in ({})", step.step),
        x_label: format!("time ({unit})"),
        y_label: "temperature (°C)".into(),
        x_scale: XScale::Linear,
        y_from_zero: false,
        series,
        hlines: inlet_limit
            .map(|y| HLine {
                y,
                label: format!("inlet ≤ {y} °C"),
                colour: "#cc3311".into(),
            })
            .into_iter()
            .collect(),
    })
}

/// The inlet line's colour: black, apart from the GPUs' palette.
const INLET_COLOUR: &str = "#222222";

/// `(t_s, KEY)` of the BMC's samples of a burn, in time order.
fn bmc_series(step: &StepRecord, key: &str) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = step
        .metrics
        .get("bmc")
        .and_then(|b| b.get("samples"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s.get("t_s")?.as_f64()?, s.get(key)?.as_f64()?)))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// The BMC's chassis power over the burn, with the draw a full load should
/// reach at least.
fn chassis_power_chart(step: &StepRecord) -> Option<LineChart> {
    let pts = bmc_series(step, "power_w");
    if pts.len() < 2 {
        return None;
    }
    let t_max = pts.iter().map(|(t, _)| *t).fold(0.0, f64::max);
    let (unit, div) = if t_max > 1200.0 {
        ("min", 60.0)
    } else {
        ("s", 1.0)
    };
    let expected = step
        .metrics
        .get("bmc")
        .and_then(|b| b.get("expected_min_power_w"))
        .and_then(Value::as_f64);
    Some(LineChart {
        title: format!("Chassis power during burn-in, from the BMC ({})", step.step),
        x_label: format!("time ({unit})"),
        y_label: "power (W)".into(),
        x_scale: XScale::Linear,
        y_from_zero: true,
        series: vec![Series {
            label: "chassis".into(),
            points: pts.into_iter().map(|(t, y)| (t / div, y)).collect(),
            colour: "#332288".into(),
        }],
        hlines: expected
            .map(|y| HLine {
                y,
                label: format!("load ≥ {y:.0} W"),
                colour: "#cc3311".into(),
            })
            .into_iter()
            .collect(),
    })
}

fn nccl_chart(step: &StepRecord) -> Option<LineChart> {
    let rows = step.metrics.get("rows")?.as_array()?;
    let column = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.get("size")?.as_f64()?, r.get(key)?.as_f64()?)))
            .collect()
    };
    let out = column("busbw_out_of_place");
    let inp = column("busbw_in_place");
    if out.is_empty() && inp.is_empty() {
        return None;
    }
    let mut series = Vec::new();
    if !out.is_empty() {
        series.push(Series {
            label: "out-of-place".into(),
            points: out,
            colour: "#332288".into(),
        });
    }
    if !inp.is_empty() {
        series.push(Series {
            label: "in-place".into(),
            points: inp,
            colour: "#44aa99".into(),
        });
    }
    let hlines = step
        .metrics
        .get("busbw_floor")
        .and_then(Value::as_f64)
        .map(|floor| HLine {
            y: floor,
            label: format!("floor {floor} GB/s"),
            colour: "#cc3311".into(),
        })
        .into_iter()
        .collect();
    let test = step
        .metrics
        .get("test")
        .and_then(Value::as_str)
        .unwrap_or("nccl-tests");
    Some(LineChart {
        title: format!("NCCL bus bandwidth: {test} ({})", step.step),
        x_label: "message size (log₂ scale)".into(),
        y_label: "bus bandwidth (GB/s)".into(),
        x_scale: XScale::Log2Bytes,
        y_from_zero: true,
        series,
        hlines,
    })
}
