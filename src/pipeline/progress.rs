//! Showing a run as it goes: indicatif bars on a terminal (one per rack
//! with its done / failed / active counts and each active node's step),
//! plain timestamped lines without one (CI logs), JSON lines with `--json`.
//! Progress goes to stderr; JSON lines are data and go to stdout.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::output::Printer;
use crate::pipeline::record::{NodeVerdict, StepRecord, StepStatus, UnixMs};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars on a terminal.
    Bars,
    /// A timestamped line per step end and node verdict.
    Lines,
    /// A JSON object per event on stdout.
    Json,
    /// Nothing (`-q`).
    Quiet,
}

/// Racks beyond this many are summed into one bar: a terminal cannot show
/// 800 of them.
const MAX_RACK_BARS: usize = 12;

/// The run's live display.
pub struct Progress {
    mode: Mode,
    bars: Option<Bars>,
    out: Mutex<()>,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    racks: BTreeMap<String, RackBar>,
    state: Mutex<BarState>,
}

struct RackBar {
    bar: ProgressBar,
}

#[derive(Default)]
struct BarState {
    failed: BTreeMap<String, usize>,
    active: BTreeMap<String, BTreeMap<String, String>>,
    failed_total: usize,
}

impl Progress {
    /// A display for `nodes` (name, rack) in `mode`.
    pub fn new(mode: Mode, nodes: &[(String, String)]) -> Progress {
        let bars = (mode == Mode::Bars).then(|| {
            let multi = MultiProgress::with_draw_target(Printer::draw_target());
            let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let total = multi.add(ProgressBar::new(nodes.len() as u64));
            total.set_style(style.clone());
            total.set_prefix("site");
            let mut per_rack: BTreeMap<String, u64> = BTreeMap::new();
            for (_, rack) in nodes {
                *per_rack.entry(rack.clone()).or_default() += 1;
            }
            let mut racks = BTreeMap::new();
            if per_rack.len() <= MAX_RACK_BARS {
                for (rack, n) in per_rack {
                    let bar = multi.add(ProgressBar::new(n));
                    bar.set_style(style.clone());
                    bar.set_prefix(rack.clone());
                    racks.insert(rack, RackBar { bar });
                }
            }
            Bars {
                multi,
                total,
                racks,
                state: Mutex::new(BarState::default()),
            }
        });
        Progress {
            mode,
            bars,
            out: Mutex::new(()),
        }
    }

    /// The mode for a command's flags and stderr.
    pub fn mode_for(json: bool, quiet: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if Printer::stderr_is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }

    /// A step started.
    pub fn step_started(&self, node: &str, rack: &str, stage: &str, step: &str) {
        match self.mode {
            Mode::Json => self.json_line(&json!({
                "event": "step_started", "at": crate::pipeline::step::now_ms(),
                "node": node, "rack": rack, "stage": stage, "step": step,
            })),
            Mode::Bars => {
                if let Some(b) = &self.bars {
                    let mut st = b.state.lock().unwrap_or_else(|e| e.into_inner());
                    st.active
                        .entry(rack.to_owned())
                        .or_default()
                        .insert(node.to_owned(), format!("{stage}/{step}"));
                    b.refresh(&st, rack);
                }
            }
            Mode::Lines | Mode::Quiet => {}
        }
    }

    /// A step ended.
    pub fn step_ended(&self, node: &str, rack: &str, r: &StepRecord) {
        match self.mode {
            Mode::Json => self.json_line(&json!({
                "event": "step_ended", "at": crate::pipeline::step::now_ms(),
                "node": node, "rack": rack, "stage": r.stage, "step": r.step,
                "status": r.status, "duration_ms": r.duration_ms, "detail": r.detail,
                "reasons": r.reasons,
            })),
            Mode::Lines => {
                let took = r
                    .duration_ms
                    .map(|ms| format!(" ({})", seconds(ms)))
                    .unwrap_or_default();
                self.line(&format!(
                    "{node} {}/{} {}{took}: {}",
                    r.stage,
                    r.step,
                    status_word(r.status),
                    r.detail
                ));
            }
            Mode::Bars => {
                if let Some(b) = &self.bars
                    && !matches!(r.status, StepStatus::Done | StepStatus::Skipped)
                {
                    b.multi
                        .println(crate::output::printable(&format!(
                            "{node} {}/{}: {}",
                            r.stage, r.step, r.detail
                        )))
                        .ok();
                }
            }
            Mode::Quiet => {}
        }
    }

    /// A node reached its verdict.
    pub fn node_finished(
        &self,
        node: &str,
        rack: &str,
        verdict: NodeVerdict,
        stage: Option<&str>,
        reasons: &[String],
    ) {
        match self.mode {
            Mode::Json => self.json_line(&json!({
                "event": "node_finished", "at": crate::pipeline::step::now_ms(),
                "node": node, "rack": rack, "verdict": verdict, "failed_stage": stage,
                "reasons": reasons,
            })),
            Mode::Lines => {
                let why = if reasons.is_empty() {
                    String::new()
                } else {
                    format!(" in {}: {}", stage.unwrap_or("?"), reasons.join("; "))
                };
                self.line(&format!("{node} {}{why}", verdict.word().to_uppercase()));
            }
            Mode::Bars => {
                if let Some(b) = &self.bars {
                    let mut st = b.state.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(active) = st.active.get_mut(rack) {
                        active.remove(node);
                    }
                    if !matches!(verdict, NodeVerdict::Accepted | NodeVerdict::Pending) {
                        *st.failed.entry(rack.to_owned()).or_default() += 1;
                        st.failed_total += 1;
                    }
                    b.total.inc(1);
                    if let Some(rb) = b.racks.get(rack) {
                        rb.bar.inc(1);
                    }
                    b.refresh(&st, rack);
                }
            }
            Mode::Quiet => {}
        }
    }

    /// A message for the operator (Ctrl-C, resume notes).
    pub fn note(&self, text: &str) {
        match (&self.bars, self.mode) {
            (Some(b), _) => {
                b.multi.println(crate::output::printable(text)).ok();
            }
            (None, Mode::Json) => self.json_line(&json!({
                "event": "note", "at": crate::pipeline::step::now_ms(), "text": text,
            })),
            (None, Mode::Quiet) => {}
            (None, _) => self.line(text),
        }
    }

    /// Clears the bars before the summary is printed.
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            for rb in b.racks.values() {
                rb.bar.finish();
            }
            b.total.finish();
            b.multi.clear().ok();
        }
    }

    /// Writes one JSON event (used for the run's start and end too).
    pub fn json_line(&self, value: &serde_json::Value) {
        if self.mode != Mode::Json {
            return;
        }
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Printer::out();
        // A closed stdout (a pipe to `head`) must not stop the run.
        let _ = writeln!(out, "{value}");
    }

    fn line(&self, text: &str) {
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            Printer::err(),
            "{} {}",
            rfc3339(crate::pipeline::step::now_ms()),
            crate::output::printable(text)
        );
    }
}

impl Bars {
    fn refresh(&self, st: &BarState, rack: &str) {
        let failed = st.failed_total;
        let active: usize = st.active.values().map(BTreeMap::len).sum();
        self.total
            .set_message(format!("failed {failed}, active {active}"));
        if let Some(rb) = self.racks.get(rack) {
            let nodes = st.active.get(rack);
            let mut msg = format!(
                "failed {}, active {}",
                st.failed.get(rack).copied().unwrap_or(0),
                nodes.map_or(0, BTreeMap::len)
            );
            if let Some(nodes) = nodes {
                let shown: Vec<String> = nodes
                    .iter()
                    .take(3)
                    .map(|(n, s)| format!("{n} {s}"))
                    .collect();
                if !shown.is_empty() {
                    msg.push_str(": ");
                    msg.push_str(&shown.join(", "));
                    if nodes.len() > 3 {
                        msg.push_str(", …");
                    }
                }
            }
            rb.bar.set_message(msg);
        }
    }
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Running => "running",
        StepStatus::Done => "done",
        StepStatus::Skipped => "skipped",
        StepStatus::Failed => "FAILED",
        StepStatus::Unverified => "UNVERIFIED",
    }
}

fn seconds(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// `2026-11-25T10:15:00Z` for a time in Unix milliseconds (UTC).
pub fn rfc3339(ms: UnixMs) -> String {
    crate::pipeline::time::rfc3339_utc(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_602_900_000), "2026-11-25T10:35:00Z");
    }
}
