//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer)
//! and for `tests/fuzz_regressions.rs`, which replays the kept corpus and
//! every crash ever found without libFuzzer. Each takes arbitrary bytes
//! and drives one reader of untrusted input the way kiln does; none may
//! panic, and none may use memory out of proportion to its input.

use std::path::Path;
use std::sync::OnceLock;

/// One fuzz target: it takes any bytes and must not panic.
pub type Target = fn(&[u8]);

/// The targets, by name (the folder names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("inventory", inventory),
    ("judge", judge),
    ("redfish_response", redfish_response),
    ("boot_server", boot_server),
    ("record", record),
];

/// A site inventory (YAML) checked against the built-in profiles, as
/// `kiln inventory check` does.
pub fn inventory(data: &[u8]) {
    static CATALOG: OnceLock<crate::profiles::Catalog> = OnceLock::new();
    let catalog = CATALOG.get_or_init(|| crate::profiles::Catalog::builtin().unwrap_or_default());
    let text = String::from_utf8_lossy(data).into_owned();
    let _ = crate::inventory::check_str(
        "site.yaml",
        text,
        Path::new("/nonexistent"),
        catalog.clone(),
    );
}

/// A tool's output, judged by one of `kiln judge`'s parsers: the first byte
/// picks which, the rest is the output (read lossily, as from a node).
pub fn judge(data: &[u8]) {
    use crate::judge::*;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let _ = match pick % 11 {
        0 => judge_nccl(&text, Some(100.0)).map(|j| j.into_json()),
        1 => judge_gpu_burn(&text).map(|j| j.into_json()),
        2 => judge_dcgm(&text).map(|j| j.into_json()),
        3 => judge_nvidia_smi(&text, &NvidiaSmiLimits::default()).map(|j| j.into_json()),
        4 => judge_dmesg(&text, DEFAULT_FATAL_XIDS),
        5 => judge_gpu_fryer(&text, DEFAULT_MAX_SPREAD_PCT),
        6 => judge_nvbandwidth(&text, &NvbandwidthFloors::default()).map(|j| j.into_json()),
        7 => judge_ib_write_bw(&text, Some(300.0)).map(|j| j.into_json()),
        8 => judge_nvlink(&text, &NvlinkLimits::default()),
        9 => judge_topo(&text, &TopoLimits::default()),
        _ => judge_aznhc(&text),
    };
}

/// A BMC's answer as bytes off the wire: the HTTP/1.1 head, a body framed
/// by length, chunks or close, then the JSON and the readers kiln applies
/// to Redfish documents (members, links, power, vendor identity).
pub fn redfish_response(data: &[u8]) {
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().build().ok();
    }
    let Some((&flags, wire)) = data.split_first() else {
        return;
    };
    let response = RUNTIME.with(|rt| {
        let rt = rt.as_ref()?;
        let mut io = wire;
        rt.block_on(crate::bmc::h1::read_response(
            &mut io,
            flags & 1 == 1,
            4 << 20,
        ))
        .ok()
    });
    let Some(response) = response else {
        return;
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
        return;
    };
    let _ = crate::bmc::discover::members(&doc);
    let _ = crate::bmc::discover::link(&doc);
    let _ = crate::bmc::facts::power_of(&doc);
    let _ = crate::bmc::vendor::identify(&doc, &doc);
}

/// What the boot server reads from a node: the deploy agent's `hello`
/// (its disks, then the choice among them), its `progress`/`done`/`failed`
/// key-value bodies, an installer event (JSON), and a `Range` header.
pub fn boot_server(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match pick % 4 {
        0 => {
            if let Ok(disks) = crate::imaging::rootdev::parse_disks(&text) {
                let hints = crate::profiles::image::RootDeviceHints::default();
                let _ = crate::imaging::rootdev::choose(&disks, &hints);
            }
        }
        1 => {
            let _ = crate::imaging::server::kv_lines(&text);
        }
        2 => {
            let _ = serde_json::from_slice::<serde_json::Value>(rest);
        }
        _ => {
            let _ = crate::imaging::server::parse_range(Some(&text), 1 << 30);
        }
    }
}

/// A signed acceptance record as `kiln verify` reads it: JSON, then the
/// signature checked (with and without a trusted key).
pub fn record(data: &[u8]) {
    let Ok(signed) = serde_json::from_slice::<crate::handoff::sign::SignedRecord>(data) else {
        return;
    };
    let _ = crate::handoff::sign::verify(&signed, None);
    let _ = crate::handoff::sign::verify(&signed, Some(&[7u8; 32]));
}
