//! The judges against real captured outputs (tests/fixtures/judge, sources in
//! its SOURCES.md) and against fragments they must refuse to judge.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeSet;
use std::path::Path;

use kiln::judge::{
    DEFAULT_FATAL_XIDS, DEFAULT_MAX_SPREAD_PCT, Judgement, NvbandwidthFloors, NvidiaSmiLimits,
    NvlinkLimits, ParseError, TopoLimits, Verdict, judge_aznhc, judge_dcgm, judge_dmesg,
    judge_gpu_burn, judge_gpu_fryer, judge_ib_write_bw, judge_nccl, judge_nvbandwidth,
    judge_nvidia_smi, judge_nvlink, judge_topo,
};

const ROOT: &str = "tests/fixtures/judge";

/// Every fixture with its verdict (judged with no floor) and a substring of
/// its first reason ("" for a pass, which has none). A fixture missing here
/// fails `every_fixture_has_an_expectation`.
const EXPECTED: &[(&str, &str, Verdict, &str)] = &[
    (
        "nccl-tests",
        "all_gather_perf_1node_8xV100_oldformat_oob-2-FAILED_hash-stripped_issue37.txt",
        Verdict::Fail,
        "'Out of bounds values : 2 FAILED'",
    ),
    (
        "nccl-tests",
        "all_gather_perf_2node_16xB200_roce_gke-a4_nccl2.26.6.txt",
        Verdict::Pass,
        "",
    ),
    (
        "nccl-tests",
        "all_reduce_perf_1node_8xA100-40GB_oldformat_error-column.txt",
        Verdict::Pass,
        "",
    ),
    (
        "nccl-tests",
        "all_reduce_perf_1node_8xH100_crash_system-not-yet-initialized.txt",
        Verdict::Fail,
        "test crashed: Test CUDA failure common.cu:941 'system not yet initialized'",
    ),
    (
        "nccl-tests",
        "all_reduce_perf_1node_8xH100_nvls_476GBps_issue290.txt",
        Verdict::Pass,
        "",
    ),
    (
        "nccl-tests",
        "all_reduce_perf_2node_16xH100_gcp-a3mega_tcpxo.txt",
        Verdict::Pass,
        "",
    ),
    (
        "nccl-tests",
        "all_reduce_perf_2node_16xH100_ndr_degraded-155GBps_srun-label_validation0_issue290.txt",
        Verdict::Pass,
        "",
    ),
    (
        "nccl-tests",
        "all_reduce_perf_v2.17.8_2node_2xGH200_wrong-nonzero_oob-FAILED.txt",
        Verdict::Fail,
        "#wrong = 128 at 1 MiB (1048576 bytes): data corruption (96 out-of-place, 32 in-place)",
    ),
    (
        "nccl-tests",
        "all_reduce_perf_v2.17.8_2node_8xGH200_crash_device-busy-exclusive-process.txt",
        Verdict::Fail,
        "'CUDA-capable device(s) is/are busy or unavailable' (on gpu-1-1)",
    ),
    (
        "nccl-tests",
        "all_reduce_perf_v2.18.3_2node_16xH200_roce-bf3-400G_nccl2.30.4.txt",
        Verdict::Pass,
        "",
    ),
    (
        "gpu-burn",
        "gpu_burn_16gpu_all-FAULTY_warning-errors_tail_issue12.txt",
        Verdict::Fail,
        "GPU 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 reported FAULTY",
    ),
    (
        "gpu-burn",
        "gpu_burn_6gpu_init-failed-but-all-OK_issue7.txt",
        Verdict::Fail,
        "Couldn't init a GPU test",
    ),
    (
        "gpu-burn",
        "gpu_burn_8xA100-80GB_all-ok.txt",
        Verdict::Pass,
        "",
    ),
    (
        "gpu-burn",
        "gpu_burn_1xH200_tc_90s_all-ok_580.159.04.txt",
        Verdict::Pass,
        "",
    ),
    (
        "dcgmi-diag",
        "diag-r2-j_dcgm4.2.3_GB10_partial-skip_persistence-fail.json",
        Verdict::Fail,
        "DCGM test 'software' failed on GPU 0: Persistence Mode: Persistence mode for GPU 0 is disabled.",
    ),
    (
        "dcgmi-diag",
        "diag-r3_8xH100_fail_fabricmanager-down_cuinit.txt",
        Verdict::Fail,
        "DCGM test 'GPU Memory' failed on all GPUs: GPU 0 Error using CUDA API cuInit Check DCGM and system logs",
    ),
    (
        "dcgmi-diag",
        "diag-r4_all-pass_dcgm2x-blacklist-era_meta-gcm.txt",
        Verdict::Pass,
        "",
    ),
    (
        "dcgmi-diag",
        "nvvs-json_dcgm3.1.0_8gpu_all-PASS_with-junk-prefix-and-nulls.txt",
        Verdict::Pass,
        "",
    ),
    (
        // Trimmed by its source: one <gpu> of the 4 attached.
        "nvidia-smi",
        "nvidia-smi-q-x_A100-SXM4-80GB_mig_535.54.03_dtd-v12.xml",
        Verdict::Unknown,
        "nvidia-smi says 4 GPUs are attached but the output lists 1",
    ),
    (
        // Idle at PCIe Gen 1 of 4: a warning, not a failure, when idle.
        "nvidia-smi",
        "nvidia-smi-q-x_RTX-PRO-6000-Blackwell_dtd-v13.xml",
        Verdict::Pass,
        "",
    ),
    (
        "nvidia-smi",
        "nvidia-smi-q_1xH200_590.48.01_load.txt",
        Verdict::Pass,
        "",
    ),
    (
        "nvidia-smi",
        "nvidia-smi-q-x_1xH200_580.159.04_vm_idle.xml",
        Verdict::Pass,
        "",
    ),
    (
        "nvidia-smi",
        "nvidia-smi-q-x_1xH200_580.159.04_vm_load-gpuburn.xml",
        Verdict::Pass,
        "",
    ),
    (
        "nvidia-smi",
        "nvidia-smi-q_8xH100-80GB-HBM3_535.183.01.txt",
        Verdict::Fail,
        "GPU 2 (00000000:75:00.0, serial 1654922018857): clocks slowed down (hw_power_brake_slowdown, sw_thermal_slowdown)",
    ),
    (
        "nvidia-smi",
        "query-gpu_allfields_1xH100-80GB-HBM3_590.48.01_idle.csv",
        Verdict::Pass,
        "",
    ),
    (
        "nvidia-smi",
        "query-gpu_allfields_1xH100-80GB-HBM3_590.48.01_load-gpuburn.csv",
        Verdict::Pass,
        "",
    ),
    (
        "nvidia-smi",
        "query-gpu_allfields_1xH200_590.48.01_load-gpuburn.csv",
        Verdict::Pass,
        "",
    ),
    (
        "dmesg",
        "dmesg_xid-119_gsp-timeout_H100.txt",
        Verdict::Fail,
        "GPU at PCI 0000:9b:00 (serial 1650124014249): Xid 119 (5 times): Timeout after 6s",
    ),
    (
        "gpu-fryer",
        "gpu-fryer_1xT4_healthy_tail_issue29.txt",
        Verdict::Pass,
        "",
    ),
    (
        // The tool said "All GPUs seem healthy" at 0 Gflops/s (its issue #10).
        "gpu-fryer",
        "gpu-fryer_4gpu_broken-0gflops_reported-healthy_issue10.txt",
        Verdict::Fail,
        "GPU 0: 0 Gflops/s: it did no work",
    ),
    (
        "nvbandwidth",
        "nvbandwidth-v0.4_d2d-read-ce_8xH100_570.133.20_azure-ndv5.txt",
        Verdict::Pass,
        "",
    ),
    (
        // Every test on one GPU: those needing two are waived, not failed.
        "nvbandwidth",
        "nvbandwidth-v0.8_all-tests_1xH200_580.159.04_vm_waived-d2d.txt",
        Verdict::Pass,
        "",
    ),
    (
        "ib_write_bw",
        "ib_write_bw_client_roce_gdr-cuda-dmabuf_16qp_Gbps_A40.txt",
        Verdict::Pass,
        "",
    ),
    (
        "ib_write_bw",
        "ib_write_bw_loopback_8MB_HDR_MBps.txt",
        Verdict::Pass,
        "",
    ),
    (
        "nvidia-smi",
        "nvidia-smi_default_8xH100-80GB-HBM3_560.35.03.txt",
        Verdict::Pass,
        "",
    ),
    ("nvlink", "nvlink-s_1xH100_18links.txt", Verdict::Pass, ""),
    // A lone H200 in a VM: the driver lists no NVLink (judged with a
    // profile's link count, this fails).
    (
        "nvlink",
        "nvlink-s_1xH200_vm-passthrough_empty.txt",
        Verdict::Pass,
        "",
    ),
    (
        "nvlink",
        "dcgmi-nvlink-s_8gpu_12links_all-up.txt",
        Verdict::Pass,
        "",
    ),
    (
        "topo",
        "topo-m_1xH100_vm_ansi-escapes.txt",
        Verdict::Pass,
        "",
    ),
    ("topo", "topo-m_8xB200_8nic_gke-a4.txt", Verdict::Pass, ""),
    (
        "topo",
        "topo-m_8xHopper-NV18_8ib-5eth-nics_mlx5_ibN-naming.txt",
        Verdict::Pass,
        "",
    ),
    (
        // NV1/NV2/SYS mix of a V100 hybrid cube mesh: whole, so it passes
        // without a profile (an HGX H100 profile would fail it).
        "topo",
        "topo-m_8xV100-SXM2_hybrid-cube-mesh_old-format_issue37.txt",
        Verdict::Pass,
        "",
    ),
    (
        "aznhc",
        "aznhc_run_nd96isr_h100_v5_all-pass.txt",
        Verdict::Pass,
        "",
    ),
    (
        "aznhc",
        "aznhc_fail_check_gpu_bw_p2p-below-threshold.txt",
        Verdict::Fail,
        "NHC check_gpu_bw: P2P test on GPU 1 to GPU 0 failed. Bandwidth 162.45 is less than 335 (FaultCode NHC2020)",
    ),
    (
        "aznhc",
        "aznhc_fail_nccl_allreduce_rc3.txt",
        Verdict::Fail,
        "NHC collect_nccl_allreduce_data: nccl_allreduce returned error code 3 (FaultCode NHCNA)",
    ),
];

/// Fixtures that are fragments of an output: each must be refused (exit 2),
/// with a substring of what the judge says it expected.
const FRAGMENTS: &[(&str, &str, &str)] = &[
    (
        // One result object of a DCGM 3 JSON, line-wrapped as pasted.
        "dcgmi-diag",
        "diag-j_dcgm3x_FRAGMENT_diagnostic-fail_low-gflops_gpu5_issue122.txt",
        "test_categories",
    ),
    (
        // One test object of a DCGM 4 JSON: a single test cannot clear a node.
        "dcgmi-diag",
        "diag-r4_dcgm4_json_FRAGMENT_diagnostic-test_8gpu_issue215.txt",
        "test_categories",
    ),
];

/// The judge kind (`Judgement::kind`) for each fixture directory.
const KINDS: &[(&str, &str)] = &[
    ("nccl-tests", "nccl-tests"),
    ("gpu-burn", "gpu-burn"),
    ("dcgmi-diag", "dcgm"),
    ("nvidia-smi", "nvidia-smi"),
    ("dmesg", "dmesg"),
    ("gpu-fryer", "gpu-fryer"),
    ("nvbandwidth", "nvbandwidth"),
    ("ib_write_bw", "ib-write-bw"),
    ("nvlink", "nvlink"),
    ("topo", "topo"),
    ("aznhc", "aznhc"),
];

fn read(dir: &str, file: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(dir).join(file)).unwrap()
}

/// Judges `text` as the tool of fixture directory `dir`, integrity only.
fn judge_as(dir: &str, text: &str) -> Result<Judgement, ParseError> {
    match dir {
        "nccl-tests" => judge_nccl(text, None).map(|j| j.into_json()),
        "gpu-burn" => judge_gpu_burn(text).map(|j| j.into_json()),
        "dcgmi-diag" => judge_dcgm(text).map(|j| j.into_json()),
        "nvidia-smi" => judge_nvidia_smi(text, &NvidiaSmiLimits::default()).map(|j| j.into_json()),
        "dmesg" => judge_dmesg(text, DEFAULT_FATAL_XIDS),
        "gpu-fryer" => judge_gpu_fryer(text, DEFAULT_MAX_SPREAD_PCT),
        "nvbandwidth" => {
            judge_nvbandwidth(text, &NvbandwidthFloors::default()).map(|j| j.into_json())
        }
        "ib_write_bw" => judge_ib_write_bw(text, None).map(|j| j.into_json()),
        "nvlink" => judge_nvlink(text, &NvlinkLimits::default()),
        "topo" => judge_topo(text, &TopoLimits::default()),
        "aznhc" => judge_aznhc(text),
        other => panic!("no judge for {other}"),
    }
}

fn judge(dir: &str, file: &str, floor: Option<f64>) -> Judgement {
    let text = read(dir, file);
    match dir {
        "nccl-tests" => judge_nccl(&text, floor).map(|j| j.into_json()),
        _ => judge_as(dir, &text),
    }
    .unwrap_or_else(|e| panic!("{dir}/{file}: {e}"))
}

#[test]
fn every_fixture_has_an_expectation() {
    // Every file under every folder, so a new folder without a judge fails
    // here too.
    let mut on_disk = BTreeSet::new();
    for dir in std::fs::read_dir(ROOT).unwrap() {
        let dir = dir.unwrap();
        if !dir.file_type().unwrap().is_dir() {
            continue;
        }
        let dir_name = dir.file_name().into_string().unwrap();
        assert!(
            KINDS.iter().any(|(d, _)| *d == dir_name),
            "no judge kind listed for fixture folder {dir_name}"
        );
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name != "SOURCES.md" {
                on_disk.insert((dir_name.clone(), name));
            }
        }
    }
    let listed: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(d, f, _, _)| ((*d).to_owned(), (*f).to_owned()))
        .chain(
            FRAGMENTS
                .iter()
                .map(|(d, f, _)| ((*d).to_owned(), (*f).to_owned())),
        )
        .collect();
    assert_eq!(on_disk, listed, "fixtures and EXPECTED disagree");
}

#[test]
fn every_fixture_gets_its_verdict() {
    for (dir, file, verdict, reason) in EXPECTED {
        let j = judge(dir, file, None);
        let kind = KINDS.iter().find(|(d, _)| d == dir).map(|(_, k)| *k);
        assert_eq!(Some(j.kind), kind, "{dir}/{file}");
        assert_eq!(j.verdict, *verdict, "{dir}/{file}: {:?}", j.reasons);
        if *verdict == Verdict::Pass {
            assert!(j.reasons.is_empty(), "{dir}/{file}: {:?}", j.reasons);
        } else {
            assert!(
                j.reasons[0].contains(reason),
                "{dir}/{file}: {:?} lacks {reason:?}",
                j.reasons
            );
        }
    }
}

#[test]
fn every_fragment_is_refused() {
    for (dir, file, expected) in FRAGMENTS {
        let err = judge_as(dir, &read(dir, file)).expect_err(file);
        assert!(err.expected.contains(expected), "{dir}/{file}: {err}");
    }
}

const DEGRADED: &str =
    "all_reduce_perf_2node_16xH100_ndr_degraded-155GBps_srun-label_validation0_issue290.txt";
const H100_476: &str = "all_reduce_perf_1node_8xH100_nvls_476GBps_issue290.txt";
const H200: &str = "all_reduce_perf_v2.18.3_2node_16xH200_roce-bf3-400G_nccl2.30.4.txt";

#[test]
fn degraded_two_node_run_fails_a_350_floor() {
    let j = judge("nccl-tests", DEGRADED, Some(350.0));
    assert_eq!(j.verdict, Verdict::Fail);
    assert_eq!(
        j.reasons,
        ["nccl-tests busbw 155.6 GB/s < 350 floor at 8 GiB (8589934592 bytes)"]
    );
}

#[test]
fn healthy_node_passes_a_440_floor() {
    let j = judge("nccl-tests", H100_476, Some(440.0));
    assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
    // The better half decides: in-place 476.53 clears 476, out-of-place
    // 473.60 would not.
    let j = judge("nccl-tests", H100_476, Some(476.0));
    assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
    let j = judge("nccl-tests", H100_476, Some(480.0));
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(j.reasons[0].contains("476.5 GB/s < 480 floor at 4 GiB"));
}

#[test]
fn floor_uses_largest_size_not_average() {
    // Avg bus bandwidth is 178 GB/s; at 16 GiB the run reaches 485.7 GB/s.
    let j = judge("nccl-tests", H200, Some(480.0));
    assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
    assert_eq!(j.metrics["avg_busbw_reported"], 178.222);
    assert_eq!(j.metrics["busbw_at_largest"], 485.66);
    assert_eq!(j.metrics["largest_size"], 17_179_869_184_u64);
    assert_eq!(j.metrics["test"], "all_reduce_perf");
}

#[test]
fn a_floor_adds_to_corruption_failures() {
    let j = judge(
        "nccl-tests",
        "all_reduce_perf_v2.17.8_2node_2xGH200_wrong-nonzero_oob-FAILED.txt",
        Some(20.0),
    );
    assert_eq!(j.verdict, Verdict::Fail);
    // Corruption, then the tool's own FAILED footer; the exit lines that
    // follow a failed check are not reported as a crash.
    assert_eq!(j.reasons.len(), 2, "{:?}", j.reasons);
    assert!(j.reasons[1].contains("Out of bounds values : 4 FAILED"));
    // 128 MiB is too small to judge bandwidth reliably: said, not failed.
    let warnings = j.metrics["warnings"].to_string();
    assert!(warnings.contains("128 MiB"), "{warnings}");
}

#[test]
fn srun_labelled_output_is_fully_read() {
    let j = judge("nccl-tests", DEGRADED, None);
    let m = &j.metrics;
    assert_eq!(m["gpus"], 16);
    assert_eq!(m["gpu_models"]["NVIDIA H100 80GB HBM3"], 16);
    assert_eq!(m["hosts"], serde_json::json!(["node005", "node007"]));
    assert_eq!(m["rows"].as_array().unwrap().len(), 11);
    assert_eq!(m["validation"], false);
    assert_eq!(m["rows"][0]["wrong_out_of_place"], serde_json::Value::Null);
    assert!(m["warnings"].to_string().contains("-c 0"));
}

#[test]
fn old_format_rows_and_info_lines() {
    let j = judge(
        "nccl-tests",
        "all_reduce_perf_1node_8xA100-40GB_oldformat_error-column.txt",
        None,
    );
    // 34 rows; the interleaved `NCCL INFO` line is not one of them.
    assert_eq!(j.metrics["rows"].as_array().unwrap().len(), 34);
    assert_eq!(j.metrics["busbw_at_largest"], 235.26);
}

#[test]
fn hash_stripped_old_format_is_read() {
    let j = judge(
        "nccl-tests",
        "all_gather_perf_1node_8xV100_oldformat_oob-2-FAILED_hash-stripped_issue37.txt",
        None,
    );
    let row = &j.metrics["rows"][0];
    assert_eq!(row["size"], 4_294_967_296_u64);
    assert_eq!(row["busbw_in_place"], 128.84);
    assert_eq!(row["error_out_of_place"], 1.0);
    assert_eq!(j.metrics["avg_busbw_reported"], 128.942);
}

#[test]
fn gpu_burn_metrics() {
    let j = judge("gpu-burn", "gpu_burn_8xA100-80GB_all-ok.txt", None);
    assert_eq!(j.metrics["gpus"], 8);
    assert_eq!(j.metrics["max_errors"], 0);
    assert_eq!(j.metrics["per_gpu"][1]["last_gflops"], 17093.0);
    assert_eq!(j.metrics["per_gpu"][1]["model"], "NVIDIA A100-SXM4-80GB");

    let j = judge(
        "gpu-burn",
        "gpu_burn_16gpu_all-FAULTY_warning-errors_tail_issue12.txt",
        None,
    );
    assert_eq!(j.metrics["max_errors"], -524_288_000);
    assert!(j.reasons[1].contains("GPU 1, 2, 3, 4, 9, 11, 14 had calculation errors"));
}

#[test]
fn init_failure_fails_despite_all_ok_summary() {
    let j = judge(
        "gpu-burn",
        "gpu_burn_6gpu_init-failed-but-all-OK_issue7.txt",
        None,
    );
    assert!(
        j.reasons.iter().any(|r| r.contains("0 Gflop/s")),
        "{:?}",
        j.reasons
    );
    assert_eq!(j.metrics["per_gpu"][0]["status"], "OK");
}

#[test]
fn fragments_are_parse_errors() {
    for text in [
        "",
        "\n\n",
        "# nThread 1 nGpus 8 minBytes 8 maxBytes 134217728 step: 2(factor)\n#\n# Using devices\n",
        "# Avg bus bandwidth    : 439.369\n",
        "Tue Nov 19 10:00:00 2024\n| NVIDIA-SMI 560.35.03    Driver Version: 560.35.03 |\n",
    ] {
        let err = judge_nccl(text, Some(400.0)).unwrap_err();
        assert!(err.expected.contains("nccl-tests"), "{text:?}");
        assert!(judge_gpu_burn(text).is_err(), "{text:?}");
        assert!(judge_dcgm(text).is_err(), "{text:?}");
        assert!(
            judge_nvidia_smi(text, &NvidiaSmiLimits::default()).is_err(),
            "{text:?}"
        );
    }
}

#[test]
fn wrong_tool_is_a_parse_error() {
    let burn = read("gpu-burn", "gpu_burn_8xA100-80GB_all-ok.txt");
    assert!(judge_nccl(&burn, None).is_err());
    let nccl = read("nccl-tests", H100_476);
    assert!(judge_gpu_burn(&nccl).is_err());
}

#[test]
fn truncated_outputs_are_unknown() {
    // Rows but no footer: the run may have crashed after the last row.
    let nccl = read("nccl-tests", H100_476);
    let cut = nccl.split("# Out of bounds").next().unwrap();
    let j = judge_nccl(cut, Some(440.0)).unwrap();
    assert_eq!(j.verdict, Verdict::Unknown, "{:?}", j.reasons);

    let burn = read("gpu-burn", "gpu_burn_8xA100-80GB_all-ok.txt");
    let cut = burn.split("Tested 8 GPUs").next().unwrap();
    let j = judge_gpu_burn(cut).unwrap();
    assert_eq!(j.verdict, Verdict::Unknown, "{:?}", j.reasons);
}

#[test]
fn judgement_serializes() {
    let j = judge("nccl-tests", DEGRADED, Some(350.0));
    let v = serde_json::to_value(&j).unwrap();
    assert_eq!(v["kind"], "nccl-tests");
    assert_eq!(v["verdict"], "fail");
}

#[test]
fn nvidia_smi_profile_count_model_and_load() {
    let text = read("nvidia-smi", "nvidia-smi-q_1xH200_590.48.01_load.txt");
    let limits = NvidiaSmiLimits {
        gpu_count: Some(8),
        model: Some("NVIDIA H100 80GB HBM3".to_owned()),
        ..NvidiaSmiLimits::default()
    };
    let j = judge_nvidia_smi(&text, &limits).unwrap();
    assert_eq!(j.verdict, Verdict::Fail);
    assert_eq!(
        j.reasons[0],
        "GPU 0 (00000000:83:00.0): model 'NVIDIA H200', expected 'NVIDIA H100 80GB HBM3'"
    );
    assert!(j.reasons[1].starts_with("nvidia-smi shows 1 GPUs, expected 8"));

    // Gen 1 of 4 is a warning when idle, a failure under load.
    let rtx = read(
        "nvidia-smi",
        "nvidia-smi-q-x_RTX-PRO-6000-Blackwell_dtd-v13.xml",
    );
    let loaded = NvidiaSmiLimits {
        under_load: true,
        ..NvidiaSmiLimits::default()
    };
    let j = judge_nvidia_smi(&rtx, &loaded).unwrap();
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(j.reasons[0].contains("PCIe link at Gen 1 x16, expected Gen 4 x16 under load"));
}

/// The captures `kiln burnin` took on a real H200 (SOURCES.md): the judges
/// read the load from the capture itself, and gpu_burn's throughput.
#[test]
fn real_h200_burn_in_captures() {
    let idle = judge(
        "nvidia-smi",
        "nvidia-smi-q-x_1xH200_580.159.04_vm_idle.xml",
        None,
    );
    let load = judge(
        "nvidia-smi",
        "nvidia-smi-q-x_1xH200_580.159.04_vm_load-gpuburn.xml",
        None,
    );
    assert_eq!(
        (idle.metrics["load"].as_str(), load.metrics["load"].as_str()),
        (Some("idle"), Some("under_load"))
    );
    let gpu = &load.metrics["per_gpu"][0];
    assert_eq!(
        (gpu["name"].as_str(), gpu["pcie_gen"].as_u64()),
        (Some("NVIDIA H200"), Some(5))
    );
    assert!(gpu["power_draw_w"].as_f64().unwrap() > 650.0, "{gpu}");
    let burn = judge(
        "gpu-burn",
        "gpu_burn_1xH200_tc_90s_all-ok_580.159.04.txt",
        None,
    );
    assert_eq!(burn.metrics["per_gpu"][0]["last_gflops"], 348_692.0);
    assert_eq!(burn.metrics["per_gpu"][0]["model"], "NVIDIA H200");
}

#[test]
fn nvidia_smi_formats_agree() {
    let csv = judge(
        "nvidia-smi",
        "query-gpu_allfields_1xH200_590.48.01_load-gpuburn.csv",
        None,
    );
    let q = judge("nvidia-smi", "nvidia-smi-q_1xH200_590.48.01_load.txt", None);
    assert_eq!(csv.metrics["format"], "csv");
    assert_eq!(q.metrics["format"], "q");
    for key in ["name", "bus_id", "pcie_gen", "pcie_width"] {
        assert_eq!(
            csv.metrics["per_gpu"][0][key], q.metrics["per_gpu"][0][key],
            "{key}"
        );
    }
    let h100 = judge(
        "nvidia-smi",
        "nvidia-smi-q_8xH100-80GB-HBM3_535.183.01.txt",
        None,
    );
    assert_eq!(h100.metrics["gpus"], 8);
}

#[test]
fn xid_list_comes_from_the_caller() {
    let log = read("dmesg", "dmesg_xid-119_gsp-timeout_H100.txt");
    // A profile that does not list 119: reported, not failed.
    let j = judge_dmesg(&log, &[48, 79]).unwrap();
    assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
    assert_eq!(j.metrics["xids"][0]["count"], 5);
    assert!(j.metrics["warnings"][0].to_string().contains("Xid 119"));
}

#[test]
fn gpu_fryer_cut_before_verdict_is_unknown() {
    let text = read("gpu-fryer", "gpu-fryer_1xT4_healthy_tail_issue29.txt");
    let cut = text.split("All GPUs").next().unwrap();
    let j = judge_gpu_fryer(cut, DEFAULT_MAX_SPREAD_PCT).unwrap();
    assert_eq!(j.verdict, Verdict::Unknown, "{:?}", j.reasons);
    assert_eq!(j.metrics["per_gpu"][0]["gflops"], 4444.0);
}

#[test]
fn nvbandwidth_floor_names_the_pairs() {
    let text = read(
        "nvbandwidth",
        "nvbandwidth-v0.4_d2d-read-ce_8xH100_570.133.20_azure-ndv5.txt",
    );
    let floors = NvbandwidthFloors {
        d2d_read_gbps: Some(370.5),
        ..NvbandwidthFloors::default()
    };
    let j = judge_nvbandwidth(&text, &floors).unwrap().into_json();
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(
        j.reasons[0].starts_with("device_to_device_memcpy_read_ce: 8 of 56 below the 370.5 GB/s floor: GPU 0 -> GPU 4 370.4"),
        "{:?}",
        j.reasons
    );
    assert_eq!(j.metrics["tests"][0]["sum"], 20785.58);
    // A run cut after its header is not a pass.
    let cut = text.split("memcpy CE").next().unwrap();
    assert_eq!(
        judge_nvbandwidth(cut, &floors).unwrap().verdict,
        Verdict::Unknown
    );
}

/// The real H200 run (SOURCES.md): one-way floors only, and a waived
/// device-to-device test fails a floor that expects it.
#[test]
fn nvbandwidth_waived_tests_and_one_way_floors() {
    let text = read(
        "nvbandwidth",
        "nvbandwidth-v0.8_all-tests_1xH200_580.159.04_vm_waived-d2d.txt",
    );
    let one_gpu = NvbandwidthFloors {
        h2d_gbps: Some(48.0),
        d2h_gbps: Some(48.0),
        d2d_read_gbps: None,
    };
    let j = judge_nvbandwidth(&text, &one_gpu).unwrap();
    // 42.4 GB/s each way in the bidirectional SM copies is not below 48.
    assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
    let h2d = j
        .metrics
        .tests
        .iter()
        .find(|t| t.test == "host_to_device_memcpy_ce")
        .unwrap();
    assert_eq!((h2d.min, h2d.floor), (Some(55.51), Some(48.0)));
    let hgx = NvbandwidthFloors {
        d2d_read_gbps: Some(335.0),
        ..one_gpu
    };
    let j = judge_nvbandwidth(&text, &hgx).unwrap();
    assert_eq!(j.verdict, Verdict::Fail);
    assert_eq!(j.reasons.len(), 1, "{:?}", j.reasons);
    assert!(
        j.reasons[0]
            .starts_with("device_to_device_memcpy_read_*: not measured: nvbandwidth waived 17"),
        "{:?}",
        j.reasons
    );
}

#[test]
fn ib_write_bw_floor_and_units() {
    let text = read("ib_write_bw", "ib_write_bw_loopback_8MB_HDR_MBps.txt");
    // 24056.72 MB/s (MiB) is 201.8 Gb/s.
    let j = judge_ib_write_bw(&text, Some(380.0)).unwrap();
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(
        j.reasons[0].starts_with("ib0: BW average 201.8 Gb/s < 380 Gb/s floor at 8388608 bytes"),
        "{:?}",
        j.reasons
    );
    let gdr = read(
        "ib_write_bw",
        "ib_write_bw_client_roce_gdr-cuda-dmabuf_16qp_Gbps_A40.txt",
    );
    assert_eq!(
        judge_ib_write_bw(&gdr, Some(180.0)).unwrap().verdict,
        Verdict::Pass
    );
    // Header only: the run did not complete.
    let cut = gdr.split(" #bytes").next().unwrap();
    assert_eq!(
        judge_ib_write_bw(cut, None).unwrap().verdict,
        Verdict::Unknown
    );
    let broken = format!("{cut}\n Couldn't connect to 10.6.145.32:18515\n");
    let j = judge_ib_write_bw(&broken, None).unwrap();
    assert_eq!(
        j.reasons,
        ["ib_write_bw failed: Couldn't connect to 10.6.145.32:18515"]
    );
}

#[test]
fn nvlink_against_an_h100_profile() {
    let h100 = NvlinkLimits {
        links_per_gpu: Some(18),
        link_gbps: Some(26.562),
    };
    let smi = read("nvlink", "nvlink-s_1xH100_18links.txt");
    let j = judge_nvlink(&smi, &h100).unwrap();
    assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
    assert_eq!(j.metrics["per_gpu"][0]["up"], 18);
    // A link dropped to <inactive> names the GPU and the link.
    let down = smi.replace("Link 7: 26.562 GB/s", "Link 7: <inactive>");
    let j = judge_nvlink(&down, &h100).unwrap();
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(
        j.reasons[0].starts_with("GPU 0 (NVIDIA H100 80GB HBM3): NVLink 7 is down"),
        "{:?}",
        j.reasons
    );
    // An A100-class board (12 links) is not an H100 board.
    let dcgmi = read("nvlink", "dcgmi-nvlink-s_8gpu_12links_all-up.txt");
    let j = judge_nvlink(&dcgmi, &h100).unwrap();
    assert_eq!(j.verdict, Verdict::Fail);
    assert_eq!(j.reasons[0], "GPU 0: 12 NVLinks up, expected 18");
    assert_eq!(j.metrics["format"], "dcgmi");
}

#[test]
fn topo_against_an_hgx_profile() {
    let hgx = TopoLimits {
        gpu_count: Some(8),
        nvlinks_per_pair: Some(18),
        compute_nics: Some(8),
    };
    for file in [
        "topo-m_8xB200_8nic_gke-a4.txt",
        "topo-m_8xHopper-NV18_8ib-5eth-nics_mlx5_ibN-naming.txt",
    ] {
        let j = judge_topo(&read("topo", file), &hgx).unwrap();
        assert_eq!(j.verdict, Verdict::Pass, "{file}: {:?}", j.reasons);
        assert_eq!(j.metrics["gpus"], 8);
    }
    let v100 = read(
        "topo",
        "topo-m_8xV100-SXM2_hybrid-cube-mesh_old-format_issue37.txt",
    );
    let j = judge_topo(&v100, &hgx).unwrap();
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(
        j.reasons[0].starts_with("GPU0: expected NV18 to every GPU, found GPU1 NV1"),
        "{:?}",
        j.reasons
    );
    let vm = read("topo", "topo-m_1xH100_vm_ansi-escapes.txt");
    let j = judge_topo(&vm, &hgx).unwrap();
    assert!(j.reasons[0].starts_with("topo -m shows 1 GPUs, expected 8"));
    // A cut matrix (the last GPU row half gone) is not a pass.
    let b200 = read("topo", "topo-m_8xB200_8nic_gke-a4.txt");
    let cut: String = b200
        .lines()
        .take(8)
        .chain(["GPU7    NV18    NV18"])
        .map(|l| format!("{l}\n"))
        .collect();
    let j = judge_topo(&cut, &TopoLimits::default()).unwrap();
    assert_eq!(j.verdict, Verdict::Unknown, "{:?}", j.reasons);
}

#[test]
fn nvidia_smi_table_reads_each_gpu() {
    let text = read(
        "nvidia-smi",
        "nvidia-smi_default_8xH100-80GB-HBM3_560.35.03.txt",
    );
    let limits = NvidiaSmiLimits {
        gpu_count: Some(8),
        model: Some("NVIDIA H100 80GB HBM3".to_owned()),
        max_temp_c: Some(85),
        ..NvidiaSmiLimits::default()
    };
    let j = judge_nvidia_smi(&text, &limits).unwrap().into_json();
    assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
    assert_eq!(j.metrics["format"], "table");
    assert_eq!(j.metrics["driver"], "560.35.03");
    assert_eq!(j.metrics["per_gpu"][7]["bus_id"], "00000000:DB:00.0");
    assert_eq!(j.metrics["per_gpu"][0]["temp_c"], 38.0);
    let hot = judge_nvidia_smi(
        &text,
        &NvidiaSmiLimits {
            max_temp_c: Some(37),
            ..NvidiaSmiLimits::default()
        },
    )
    .unwrap();
    assert_eq!(hot.reasons.len(), 2, "{:?}", hot.reasons);
    assert!(hot.reasons[0].starts_with("GPU 0 (00000000:19:00.0): 38 C, above the 37 C limit"));
    let ecc = text.replacen(
        "00000000:19:00.0 Off |                    0",
        "00000000:19:00.0 Off |                    3",
        1,
    );
    let j = judge_nvidia_smi(&ecc, &NvidiaSmiLimits::default()).unwrap();
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(j.reasons[0].contains("3 uncorrectable ECC errors (volatile)"));
}

#[test]
fn aznhc_metrics() {
    let j = judge_aznhc(&read("aznhc", "aznhc_run_nd96isr_h100_v5_all-pass.txt")).unwrap();
    assert_eq!(j.metrics["nccl_allreduce_gbps"], 480.318);
    assert_eq!(j.metrics["ib_write_bw_gbps"]["mlx5_ib0"], 392.82);
    assert_eq!(j.metrics["exit_code"], 0);
    assert!(
        j.metrics["passed"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("check_gpu_xid"))
    );
}
