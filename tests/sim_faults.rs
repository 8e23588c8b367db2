//! Hardware and software faults of the virtual rack, seen the way an
//! operator sees them on a real node: over OpenSSH (nvidia-smi, dmesg,
//! nccl-tests, ib_write_bw, apt) and over Redfish with curl (telemetry,
//! GPU inventory). Tool outputs are judged by `kiln judge`, whose parsers
//! are tested on real captured outputs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::simrack::{Rack, RackSpec};

/// Installs the driver stack over SSH the way a technician would, then
/// reboots and waits for the node.
fn install_stack(rack: &Rack, i: usize) {
    let (code, out, err) = rack.ssh(
        i,
        "sudo apt-get install -y nvidia-driver-570-server-open nvidia-fabricmanager-570 \
         datacenter-gpu-manager-4-cuda12 libnccl2 perftest openmpi-bin >/dev/null \
         && sudo systemctl enable nvidia-fabricmanager nvidia-dcgm >/dev/null 2>&1 && sudo reboot",
    );
    assert_eq!(code, 0, "{out}{err}");
    rack.wait_until(
        "SSH after the driver install",
        Duration::from_secs(30),
        || rack.ssh(i, "nvidia-smi -L >/dev/null").0 == 0,
    );
}

fn judge(kind: &str, text: &str, profile: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.txt");
    std::fs::write(&file, text).unwrap();
    let mut cmd = common::kiln();
    cmd.args(["judge", kind]).arg(&file);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    let (code, out, err) = common::run(&mut cmd);
    (code, format!("{out}{err}"))
}

#[test]
fn before_the_driver_nvidia_smi_fails_like_the_real_one() {
    let rack = Rack::start(RackSpec {
        net: 240,
        ..RackSpec::default()
    });
    let (code, out, _) = rack.ssh(0, "nvidia-smi");
    assert_eq!(code, 9);
    assert!(
        out.contains("couldn't communicate with the NVIDIA driver"),
        "{out}"
    );
}

#[test]
fn a_healthy_node_passes_and_a_missing_gpu_shows_everywhere() {
    let faults = "faults:\n  - nodes: t-n02\n    gpu_missing: 3\n";
    let rack = Rack::start(RackSpec {
        net: 241,
        nodes: 2,
        faults: Some(faults),
        ..RackSpec::default()
    });
    install_stack(&rack, 0);
    install_stack(&rack, 1);
    let (_, healthy, _) = rack.ssh(0, "nvidia-smi -L | wc -l");
    assert_eq!(healthy.trim(), "8");
    let (_, seven, _) = rack.ssh(1, "nvidia-smi -L | wc -l");
    assert_eq!(seven.trim(), "7");
    let (_, dmesg, _) = rack.ssh(1, "dmesg | grep -i xid");
    assert!(dmesg.contains("Xid") && dmesg.contains("79"), "{dmesg}");
    // The BMC sees seven GPUs too.
    let processors = rack.get(1, &format!("{}/Processors", rack.system(1)));
    let gpus = processors["Members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["@odata.id"].as_str().unwrap().contains("/GPU"))
        .count();
    assert_eq!(gpus, 7);
    // In-node NCCL on the healthy node passes the profile's floor.
    let (code, out, _) = rack.ssh(0, "all_reduce_perf -b 8 -e 8G -f 2 -g 8");
    assert_eq!(code, 0);
    let (verdict, text) = judge("nccl", &out, Some("hgx-h100-80gb-8x"));
    assert_eq!(verdict, 0, "{text}");
}

#[test]
fn a_down_nvlink_fails_the_in_node_bandwidth_floor() {
    let faults = "faults:\n  - nodes: t-n01\n    nvlink_down: {gpu: 2, link: 5}\n";
    let rack = Rack::start(RackSpec {
        net: 242,
        faults: Some(faults),
        ..RackSpec::default()
    });
    install_stack(&rack, 0);
    let (_, links, _) = rack.ssh(0, "nvidia-smi nvlink -s -i 2");
    assert!(links.contains("inactive"), "{links}");
    let (_, out, _) = rack.ssh(0, "all_reduce_perf -b 8 -e 8G -f 2 -g 8");
    let (verdict, text) = judge("nccl", &out, Some("hgx-h100-80gb-8x"));
    assert_eq!(verdict, 1, "{text}");
    assert!(text.contains("< 450 floor"), "{text}");
}

#[test]
fn a_degraded_infiniband_port_lowers_cross_node_bandwidth() {
    let faults = "faults:\n  - nodes: t-n02\n    ib_degraded: {port: 1, rate_gbps: 100}\n";
    let rack = Rack::start(RackSpec {
        net: 243,
        nodes: 2,
        faults: Some(faults),
        ..RackSpec::default()
    });
    install_stack(&rack, 0);
    install_stack(&rack, 1);
    let (_, bw, _) = rack.ssh(1, "ib_write_bw -d mlx5_1 --report_gbits");
    let (_, good, _) = rack.ssh(0, "ib_write_bw -d mlx5_1 --report_gbits");
    let last_number = |text: &str| -> f64 {
        text.lines()
            .rfind(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        last_number(&bw) < last_number(&good) / 2.0,
        "degraded {bw}\nhealthy {good}"
    );
    let (_, out, _) = rack.ssh(
        0,
        "mpirun -np 16 -H t-n01:8,t-n02:8 all_reduce_perf -b 8 -e 8G -f 2 -g 1",
    );
    let (verdict, text) = judge("nccl", &out, Some("hgx-h100-80gb-8x"));
    assert_eq!(verdict, 1, "{text}\n{out}");
}

#[test]
fn a_hot_gpu_shows_in_redfish_telemetry_under_load() {
    let faults = "faults:\n  - nodes: t-n01\n    hot_gpu: {gpu: 4, temp_c: 95}\n    xid: {gpu: 1, code: 94}\n";
    let rack = Rack::start(RackSpec {
        net: 244,
        faults: Some(faults),
        time_scale: 60,
        ..RackSpec::default()
    });
    install_stack(&rack, 0);
    let thermal = format!(
        "{}/Thermal",
        rack.get(0, "/redfish/v1/Chassis")["Members"][0]["@odata.id"]
            .as_str()
            .unwrap()
    );
    let reading = |name: &str| -> f64 {
        rack.get(0, &thermal)["Temperatures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["Name"] == name)
            .map(|t| t["ReadingCelsius"].as_f64().unwrap())
            .unwrap()
    };
    let idle = reading("GPU 5 Temp");
    // A 60-second burn at time scale 60 runs about a second.
    let burn = std::thread::spawn({
        let key = rack.key();
        let known = rack.dir.path().join("known_hosts");
        let addr = rack.nodes[0]["ssh"].as_str().unwrap().to_owned();
        move || {
            let (ip, port) = addr.rsplit_once(':').unwrap();
            std::process::Command::new("ssh")
                .arg("-i")
                .arg(key)
                .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o"])
                .arg(format!("UserKnownHostsFile={}", known.display()))
                .args(["-p", port, &format!("kiln@{ip}"), "gpu_burn 120"])
                .output()
                .unwrap()
        }
    });
    // Poll until the load shows (the burn lasts about two seconds).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut hot = reading("GPU 5 Temp");
    while !(hot >= 90.0 && hot > idle + 20.0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        hot = reading("GPU 5 Temp");
    }
    let normal = reading("GPU 1 Temp");
    let out = burn.join().unwrap();
    assert!(
        hot >= 90.0 && hot > idle + 20.0,
        "idle {idle}, under load {hot}"
    );
    assert!(normal < hot, "GPU 1 {normal}, GPU 5 {hot}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Tested 8 GPUs:\n") && text.contains("\tGPU 0: OK\n"),
        "{text}"
    );
    let (_, dmesg, _) = rack.ssh(0, "dmesg");
    assert!(dmesg.contains("Xid") && dmesg.contains(": 94,"), "{dmesg}");
}

#[test]
fn ecc_errors_and_pending_remaps_show_in_nvidia_smi() {
    let faults = "faults:\n  - nodes: t-n01\n    ecc_uncorrectable: 6\n    row_remap_pending: 6\n";
    let rack = Rack::start(RackSpec {
        net: 245,
        faults: Some(faults),
        ..RackSpec::default()
    });
    install_stack(&rack, 0);
    let (code, csv, _) = rack.ssh(
        0,
        "nvidia-smi --query-gpu=index,ecc.errors.uncorrected.volatile.total,remapped_rows.pending --format=csv,noheader",
    );
    assert_eq!(code, 0);
    let row6 = csv.lines().find(|l| l.starts_with("6,")).unwrap();
    let row0 = csv.lines().find(|l| l.starts_with("0,")).unwrap();
    assert!(!row6.contains(" 0, "), "{row6}");
    assert!(row6.to_lowercase().contains("yes"), "{row6}");
    assert!(
        row0.contains(" 0, ") && row0.to_lowercase().contains("no"),
        "{row0}"
    );
}

#[test]
fn package_installs_fail_like_apt_when_the_mirror_drops() {
    let faults = "faults:\n  - nodes: t-n01\n    package_install_failures: 1\n";
    let rack = Rack::start(RackSpec {
        net: 246,
        faults: Some(faults),
        ..RackSpec::default()
    });
    let (code, _, err) = rack.ssh(0, "sudo apt-get install -y libnccl2");
    assert_eq!(code, 100);
    assert!(err.contains("E:"), "{err}");
    let (code, _, _) = rack.ssh(
        0,
        "sudo apt-get install -y libnccl2 && dpkg-query -W libnccl2",
    );
    assert_eq!(code, 0);
}

#[test]
fn a_slow_gpu_is_slower_in_gpu_burn() {
    let faults = "faults:\n  - nodes: t-n01\n    slow_gpu: {gpu: 3, factor: 0.5}\n";
    let rack = Rack::start(RackSpec {
        net: 247,
        faults: Some(faults),
        ..RackSpec::default()
    });
    install_stack(&rack, 0);
    let (_, out, err) = rack.ssh(0, "gpu_burn 60");
    let (_, text) = judge("gpu-burn", &format!("{out}{err}"), None);
    // Per-GPU Gflop/s are in the judgement's metrics; GPU 3 lags.
    let (_, json) = {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("burn.txt");
        std::fs::write(&file, format!("{out}{err}")).unwrap();
        let mut cmd = common::kiln();
        cmd.args(["--json", "judge", "gpu-burn"]).arg(&file);
        let (code, out, _) = common::run(&mut cmd);
        (code, out)
    };
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|_| panic!("{json}\n{text}"));
    let per_gpu = v["metrics"]["per_gpu"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    let gflops: Vec<f64> = per_gpu
        .iter()
        .map(|g| g["last_gflops"].as_f64().unwrap_or(0.0))
        .collect();
    assert_eq!(gflops.len(), 8, "{v}");
    let best = gflops.iter().cloned().fold(0.0, f64::max);
    assert!(gflops[3] < best * 0.7, "{gflops:?}");
}
