//! The acceptance record of one node: who it is (from the BMC and from
//! nvidia-smi, which must agree), what it runs, every check with its
//! metrics and verdict, when, and by which kiln from which inventory.
//! Built from the run's journal record, so a resumed run builds the same.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::drivers::metrics::VerifyMetrics;
use crate::pipeline::record::{NodeRecord, NodeVerdict, StepStatus, UnixMs, latest};
use crate::stages::preflight::metrics::{BmcMetrics, FirmwareMetrics, GpusMetrics, HostMetrics};

/// The record format's name and version.
pub const FORMAT: &str = "kiln.acceptance/1";

/// What a part of the record says when no stage recorded it.
pub const NOT_RECORDED: &str = "not recorded";

/// The run-wide facts every record carries.
#[derive(Clone, Debug, Default)]
pub struct RunFacts {
    /// The site.
    pub site: String,
    /// The run's id.
    pub run: String,
    /// `sha256:` of the inventory file as it was read for this run.
    pub inventory_sha256: String,
    /// The kiln version.
    pub kiln_version: String,
    /// When the run started.
    pub started_ms: UnixMs,
}

fn or_not_recorded(v: Option<Value>) -> Value {
    v.unwrap_or_else(|| json!(NOT_RECORDED))
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether the BMC's and nvidia-smi's views of the GPUs agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Agreement {
    /// Both list the same serials.
    Agree,
    /// One side (or both) did not record serials.
    NotRecorded,
    /// They differ; the sentence says how.
    Disagree(String),
}

/// Builds the identity part and checks the two GPU views against each other.
pub fn identity(node: &NodeRecord, mac: Option<String>) -> (Value, Agreement) {
    let host_facts = latest(node, |m: HostMetrics| m.host);
    let host = |key: &str| host_facts.as_ref().and_then(|h| h.get(key)).cloned();
    let bmc = latest(node, |m: BmcMetrics| m.identity.filter(|v| !v.is_null()));
    let bmc_gpus: Vec<Value> = latest(node, |m: GpusMetrics| m.gpus).unwrap_or_default();
    let smi_gpus: Vec<Value> = latest(node, |m: VerifyMetrics| m.gpus)
        .unwrap_or_default()
        .iter()
        .map(|g| json!(g))
        .collect();
    let serials = |gpus: &[Value]| -> BTreeSet<String> {
        gpus.iter().filter_map(|g| text(g.get("serial"))).collect()
    };
    let (b, s) = (serials(&bmc_gpus), serials(&smi_gpus));
    let agreement = if b.is_empty() || s.is_empty() {
        Agreement::NotRecorded
    } else if b == s {
        Agreement::Agree
    } else {
        let only_bmc: Vec<&str> = b.difference(&s).map(String::as_str).collect();
        let only_smi: Vec<&str> = s.difference(&b).map(String::as_str).collect();
        Agreement::Disagree(format!(
            "GPU serials disagree: the BMC lists {} that nvidia-smi does not ({}), nvidia-smi lists {} that the BMC does not ({})",
            only_bmc.len(),
            crate::diag::clip(&only_bmc.join(", "), 120),
            only_smi.len(),
            crate::diag::clip(&only_smi.join(", "), 120),
        ))
    };
    let gpus_bmc: Vec<Value> = bmc_gpus
        .iter()
        .map(|g| {
            json!({
                "id": g.get("id").cloned().unwrap_or(Value::Null),
                "model": g.get("model").cloned().unwrap_or(Value::Null),
                "vendor": or_not_recorded(g.get("vendor").cloned()),
                "serial": or_not_recorded(g.get("serial").cloned()),
            })
        })
        .collect();
    let gpus_smi: Vec<Value> = smi_gpus
        .iter()
        .map(|g| {
            json!({
                "index": g.get("index").cloned().unwrap_or(Value::Null),
                "uuid": or_not_recorded(g.get("uuid").cloned()),
                "serial": or_not_recorded(g.get("serial").cloned()),
                "model": g.get("model").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    let list = |v: Vec<Value>| {
        if v.is_empty() {
            json!(NOT_RECORDED)
        } else {
            Value::Array(v)
        }
    };
    let bmc_mac = bmc
        .as_ref()
        .and_then(|b| b.get("mac").cloned())
        .or_else(|| host("bmc_mac"));
    let value = json!({
        "system_serial": or_not_recorded(host("serial")),
        "system_model": or_not_recorded(host("model")),
        "manufacturer": or_not_recorded(host("manufacturer")),
        "bmc_mac": or_not_recorded(bmc_mac),
        "install_mac": mac.map_or_else(|| json!(NOT_RECORDED), Value::String),
        "bmc": or_not_recorded(bmc),
        "gpus_bmc": list(gpus_bmc),
        "gpus_nvidia_smi": list(gpus_smi),
        "gpus_agree": match &agreement {
            Agreement::Agree => json!(true),
            Agreement::NotRecorded => json!(NOT_RECORDED),
            Agreement::Disagree(_) => json!(false),
        },
    });
    (value, agreement)
}

/// The software part: the drivers stage's `verify` metrics, each part
/// "not recorded" when absent.
fn software(node: &NodeRecord) -> Value {
    let mut out = Map::new();
    for key in [
        "os",
        "kernel",
        "driver",
        "cuda",
        "fabricmanager",
        "dcgm",
        "nccl",
    ] {
        let part = latest(node, |m: VerifyMetrics| m.software(key).map(Value::from));
        out.insert(key.into(), or_not_recorded(part));
    }
    // Without the drivers stage, the image stage's check of the OS.
    if out.get("os").and_then(Value::as_str) == Some(NOT_RECORDED)
        && let Some(os) = node
            .steps
            .iter()
            .rev()
            .find(|s| s.stage == "image" && s.step == "verify-os" && !s.detail.is_empty())
    {
        out.insert("os".into(), json!(os.detail));
    }
    Value::Object(out)
}

fn status_word(s: StepStatus) -> &'static str {
    s.word()
}

/// The whole record of `node`, with `verdict` and `reasons` as the handoff
/// decided them (the identity check may fail a node the stages passed).
pub fn build(
    facts: &RunFacts,
    node: &NodeRecord,
    mac: Option<String>,
    verdict: NodeVerdict,
    reasons: &[String],
    issued_ms: UnixMs,
) -> Value {
    let (identity, _) = identity(node, mac);
    let checks: Vec<Value> = node
        .steps
        .iter()
        .filter(|s| s.stage != "handoff")
        .map(|s| {
            json!({
                "stage": s.stage,
                "step": s.step,
                "verdict": status_word(s.status),
                "detail": s.detail,
                "reasons": s.reasons,
                "metrics": s.metrics,
                "started_ms": s.started_ms,
                "duration_ms": s.duration_ms,
            })
        })
        .collect();
    let firmware = latest(node, |m: FirmwareMetrics| {
        m.firmware.filter(|v| !v.is_null())
    });
    let bios = latest(node, |m: HostMetrics| m.host).and_then(|h| h.get("bios").cloned());
    let finished = node
        .steps
        .iter()
        .filter(|s| s.stage != "handoff")
        .filter_map(|s| Some(s.started_ms? + s.duration_ms.unwrap_or(0)))
        .max();
    let mut record = json!({
        "format": FORMAT,
        "site": facts.site,
        "run": facts.run,
        "node": node.name,
        "rack": node.rack,
        "hardware": node.hardware,
        "verdict": verdict.word(),
        "failed_stage": node.failed_stage,
        "reasons": reasons,
        "identity": identity,
        "firmware": {
            "bios": or_not_recorded(bios),
            "components": or_not_recorded(firmware),
        },
        "software": software(node),
        "checks": checks,
        "started_ms": facts.started_ms,
        "finished_ms": finished,
        "issued_ms": issued_ms,
        "kiln_version": facts.kiln_version,
        "inventory_sha256": facts.inventory_sha256,
    });
    // Only when the firmware stage ran: older records keep their bytes.
    if let (Some(baseline), Some(map)) = (
        super::baseline::firmware_baseline(node),
        record.as_object_mut(),
    ) {
        map.insert("firmware_baseline".into(), baseline);
    }
    record
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pipeline::record::StepRecord;

    fn step(stage: &str, step: &str, metrics: Value) -> StepRecord {
        StepRecord {
            stage: stage.into(),
            step: step.into(),
            status: StepStatus::Done,
            started_ms: Some(1000),
            duration_ms: Some(5),
            metrics,
            ..StepRecord::default()
        }
    }

    #[test]
    fn missing_parts_are_not_recorded_and_serials_are_compared() {
        let mut node = NodeRecord {
            name: "r01-n01".into(),
            rack: "r01".into(),
            steps: vec![
                step(
                    "preflight",
                    "host",
                    json!({"host": {"serial": "SN1", "model": "HGX", "manufacturer": "X", "bios": "1.2"}}),
                ),
                step(
                    "preflight",
                    "gpus",
                    json!({"gpus": [{"id": "GPU_0", "model": "H100", "serial": "A"}, {"id": "GPU_1", "model": "H100", "serial": "B"}]}),
                ),
            ],
            ..NodeRecord::default()
        };
        let facts = RunFacts::default();
        let r = build(&facts, &node, None, NodeVerdict::Accepted, &[], 5);
        assert_eq!(r["identity"]["system_serial"], "SN1");
        assert_eq!(r["identity"]["gpus_agree"], NOT_RECORDED);
        assert_eq!(r["identity"]["bmc_mac"], NOT_RECORDED);
        assert_eq!(r["software"]["driver"], NOT_RECORDED);
        assert_eq!(r["firmware"]["bios"], "1.2");
        assert_eq!(r["checks"].as_array().unwrap().len(), 2);

        node.steps.push(step("drivers", "verify", json!({"driver": "570.86.15", "gpus": [
            {"index": 0, "uuid": "GPU-1", "serial": "A"}, {"index": 1, "uuid": "GPU-2", "serial": "B"}]})));
        assert_eq!(identity(&node, None).1, Agreement::Agree);
        let r = build(&facts, &node, None, NodeVerdict::Accepted, &[], 5);
        assert_eq!(r["software"]["driver"], "570.86.15");
        assert_eq!(r["identity"]["gpus_nvidia_smi"][1]["uuid"], "GPU-2");

        node.steps.push(step("drivers", "verify", json!({"gpus": [
            {"index": 0, "uuid": "GPU-1", "serial": "A"}, {"index": 1, "uuid": "GPU-3", "serial": "C"}]})));
        match identity(&node, None).1 {
            Agreement::Disagree(why) => {
                assert!(why.contains("(B)") && why.contains("(C)"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_firmware_baseline_appears_only_with_firmware_steps() {
        use crate::stages::firmware::compliance::{ComponentCheck, Member};
        let check = |v: &str, meets: bool| ComponentCheck {
            component: "bios".into(),
            wanted: "2.1".into(),
            members: vec![Member {
                id: "BIOS".into(),
                version: v.into(),
                meets,
            }],
        };
        let mut node = NodeRecord::default();
        let facts = RunFacts::default();
        let r = build(&facts, &node, None, NodeVerdict::Accepted, &[], 5);
        assert!(r.get("firmware_baseline").is_none());
        node.steps.push(step(
            "firmware",
            "inventory",
            json!({"components": [check("2.0", false)]}),
        ));
        node.steps.push(step(
            "firmware",
            "verify",
            json!({"components": [check("2.1", true)], "bios": []}),
        ));
        let r = build(&facts, &node, None, NodeVerdict::Accepted, &[], 5);
        let m = &r["firmware_baseline"]["components"][0]["members"][0];
        assert_eq!((&m["before"], &m["after"]), (&json!("2.0"), &json!("2.1")));
    }

    /// A node's steps as the journal held them before metrics were typed.
    const OLD_JOURNAL_STEPS: &str = include_str!("testdata/old_journal_steps.json");

    /// The record kiln built from them then, byte for byte.
    const OLD_RECORD: &str = include_str!("testdata/old_record.json");

    fn old_node() -> NodeRecord {
        NodeRecord {
            name: "r01-n01".into(),
            rack: "r01".into(),
            hardware: "hgx-h100".into(),
            steps: serde_json::from_str(OLD_JOURNAL_STEPS).unwrap(),
            ..NodeRecord::default()
        }
    }

    /// Reads `T` from the old step it belongs to and writes it back.
    fn round_trip<T: crate::pipeline::record::StepMetrics>(node: &NodeRecord) {
        let step = node
            .steps
            .iter()
            .find(|s| s.stage == T::STAGE && s.step == T::STEP)
            .unwrap();
        let typed = T::from_metrics(&step.metrics).unwrap();
        let written = typed.to_metrics();
        // The burn step keeps more than its telemetry: compare that part.
        let old: Value = if T::STEP == "burn" {
            json!({ "telemetry": step.metrics["telemetry"] })
        } else {
            step.metrics.clone()
        };
        assert_eq!(
            serde_json::to_string(&written).unwrap(),
            serde_json::to_string(&old).unwrap(),
            "{}/{}",
            T::STAGE,
            T::STEP
        );
    }

    #[test]
    fn old_journal_metrics_read_into_their_types_and_write_back_unchanged() {
        use crate::acceptance::burnin::BurnTelemetry;
        use crate::drivers::metrics::{InspectMetrics, ScriptMetrics};
        let node = old_node();
        round_trip::<BmcMetrics>(&node);
        round_trip::<HostMetrics>(&node);
        round_trip::<GpusMetrics>(&node);
        round_trip::<FirmwareMetrics>(&node);
        round_trip::<InspectMetrics>(&node);
        round_trip::<ScriptMetrics>(&node);
        round_trip::<VerifyMetrics>(&node);
        round_trip::<BurnTelemetry>(&node);
    }

    #[test]
    fn an_old_journal_builds_the_record_it_built_before_byte_for_byte() {
        let facts = RunFacts {
            site: "lab".into(),
            run: "20261125-101500-3f9a".into(),
            inventory_sha256: "sha256:00".into(),
            kiln_version: "0.1.0".into(),
            started_ms: 900,
        };
        let mac = Some("aa:bb:cc:00:00:02".to_owned());
        let r = build(&facts, &old_node(), mac, NodeVerdict::Accepted, &[], 2000);
        // The same bytes sign and verify the same.
        assert_eq!(serde_json::to_string(&r).unwrap(), OLD_RECORD.trim_end());
    }
}
