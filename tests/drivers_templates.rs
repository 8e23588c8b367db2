//! The drivers stage's install scripts: a snapshot per OS family (NVIDIA's
//! repository and a site mirror), every rendered script passes
//! `shellcheck`, hostile values stay one shell word, and the probe's
//! parser reads real tool layouts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use kiln::drivers::script::{ScriptContext, render};
use kiln::profiles::image::OsFamily;
use kiln::profiles::{Catalog, HardwareProfile, ImageProfile};

fn catalog() -> Catalog {
    Catalog::builtin().unwrap()
}

fn hw(name: &str) -> HardwareProfile {
    catalog().hardware[name].profile.clone()
}

fn image(name: &str) -> ImageProfile {
    catalog().images[name].profile.clone()
}

/// Every combination worth a snapshot: (snapshot name, script).
fn scripts() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for img in ["ubuntu-24.04", "ubuntu-22.04", "rocky-9"] {
        let image = image(img);
        for (tag, mirror) in [
            ("nvidia", None),
            ("mirror", Some("https://mirror.example.net/nvidia")),
        ] {
            let cx = ScriptContext::new("r01-n01", &hw("hgx-h100-80gb-8x"), &image, mirror);
            out.push((format!("{img}__{tag}"), render(image.family, &cx).unwrap()));
        }
    }
    out
}

#[test]
fn snapshot_per_os_family() {
    for (name, text) in scripts() {
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn rendered_scripts_pass_shellcheck() {
    if Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var_os("CI").is_some() {
            panic!("shellcheck is not installed (CI installs it: apt-get install shellcheck)");
        }
        eprintln!(
            "SKIPPED: shellcheck is not installed (apt-get install shellcheck); CI runs this"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut all = scripts();
    let hostile = hostile_context();
    all.push((
        "hostile".into(),
        render(OsFamily::Ubuntu, &hostile).unwrap(),
    ));
    all.push((
        "hostile-rhel".into(),
        render(OsFamily::Rhel, &hostile).unwrap(),
    ));
    for (name, text) in all {
        let path = dir.path().join(format!("{name}.sh"));
        std::fs::write(&path, &text).unwrap();
        let mut cmd = Command::new("shellcheck");
        cmd.args(["--shell=bash", "--severity=style", "--format=gcc"]);
        if name.starts_with("hostile") {
            // `$(…)` inside single quotes is the point of those values.
            cmd.arg("--exclude=SC2016");
        }
        let out = cmd.arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "shellcheck {name}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn hostile_context() -> ScriptContext {
    let mut cx = ScriptContext::new(
        "evil\nrm -rf / #",
        &hw("hgx-b200-180gb-8x"),
        &image("ubuntu-24.04"),
        Some("http://m/x'$(touch /tmp/pwned)`id`\"; rm -rf /"),
    );
    cx.driver_version = "570.1'; reboot; '".into();
    cx.repo_key = "EB69' $(reboot) '".into();
    cx.gpu_burn_sha256 = "`reboot`\n; rm -rf /".into();
    cx
}

#[test]
fn hostile_values_stay_single_words() {
    let cx = hostile_context();
    let text = render(OsFamily::Ubuntu, &cx).unwrap();
    // bash itself reads the assignments back: each value exactly as given.
    let vars: String = text
        .lines()
        .skip_while(|l| !l.starts_with("REPO="))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{vars}printf '%s\\n' \"$REPO\" \"$DRIVER_VERSION\" \"$REPO_KEY\" \"$GPU_BURN_SHA256\""
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{}\n{}\n{}\n{}\n",
            cx.repo, cx.driver_version, cx.repo_key, cx.gpu_burn_sha256
        )
    );
    assert!(cx.repo.starts_with(&cx.mirror));
    // The header comment is one line per value even with a newline in it.
    let header = text.lines().nth(1).unwrap();
    assert!(
        header.starts_with("# Rendered by kiln for evil"),
        "{header}"
    );
    assert!(!text.contains("\nrm -rf / #"));
}

#[test]
fn mirror_urls_are_checked_in_the_inventory() {
    for bad in ["ftp://m/x", "http://", "http://m/a b", "http://m/'x"] {
        let e = bad
            .parse::<kiln::inventory::schema::MirrorUrl>()
            .unwrap_err();
        assert!(e.contains("mirror"), "{bad}: {e}");
    }
    let ok: kiln::inventory::schema::MirrorUrl =
        "https://mirror.example.net/nvidia/".parse().unwrap();
    assert_eq!(ok.0, "https://mirror.example.net/nvidia");
}

#[test]
fn probe_output_is_read_and_judged_with_expected_and_observed() {
    use kiln::drivers::verify::{Facts, check, metrics, probe};
    let hw = hw("hgx-h100-80gb-8x");
    let script = probe(&hw, OsFamily::Ubuntu);
    assert!(script.contains("dpkg-query -W"), "{script}");
    let mut text = String::from(
        "@@kiln os\n Static hostname: n1\nOperating System: Ubuntu 24.04.2 LTS\n          Kernel: Linux 6.8.0-60-generic\n@@kiln-rc 0\n@@kiln gpus\n",
    );
    for i in 0..8 {
        let pcie = if i == 3 { 4 } else { 5 };
        text.push_str(&format!(
            "{i}, GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd, 165232400000{i}, NVIDIA H100 80GB HBM3, 570.133.20, {pcie}, 16, 16, Enabled\n"
        ));
    }
    text.push_str("@@kiln-rc 0\n@@kiln packages\nnvidia-driver-570-server-open 570.133.20-0ubuntu0.24.04.1\nnvidia-fabricmanager-570 570.124.06-0ubuntu0.24.04.1\ndatacenter-gpu-manager-4-cuda12 1:4.2.3-1\ncuda-toolkit-12-8 12.8.1-1\nlibnccl2 2.26.5-1+cuda12.8\n@@kiln-rc 0\n");
    text.push_str("@@kiln services\nfailed\nactive\nactive\n@@kiln-rc 3\n@@kiln modules\nModule                  Size  Used by\nnvidia              54386688  3\n@@kiln-rc 0\n@@kiln blacklist\nblacklist nouveau\n@@kiln-rc 0\n");
    let f = Facts::parse(&text, &hw, OsFamily::Ubuntu);
    let why = check(&f, &hw, OsFamily::Ubuntu);
    assert_eq!(
        why,
        vec![
            "GPU 3 (1652324000003) PCIe generation: expected Gen5, observed Gen4".to_owned(),
            "fabric manager (nvidia-fabricmanager-570): expected 570.133.20 (the driver's version), observed 570.124.06".to_owned(),
            "fabric manager (nvidia-fabricmanager): expected active, observed failed".to_owned(),
            "nvidia_peermem (GPUDirect RDMA over InfiniBand): expected loaded, observed not loaded".to_owned(),
        ]
    );
    let m = metrics(&f, &hw, OsFamily::Ubuntu);
    assert_eq!(m["driver"], "570.133.20");
    assert_eq!(m["os"], "Ubuntu 24.04.2 LTS");
    assert_eq!(m["kernel"], "6.8.0-60-generic");
    assert_eq!(m["cuda"], "12.8");
    assert_eq!(m["dcgm"], "4.2.3");
    assert_eq!(m["gpus"][3]["pcie_gen"], 4);
}

#[test]
fn the_log_names_why_an_install_failed() {
    let log = "kiln-drivers: installing: x\nE: Failed to fetch http://m/x.deb  Could not connect\nE: Unable to fetch some archives\nkiln-drivers: FAILED: apt-get install failed (exit 100)\n";
    assert_eq!(
        kiln::drivers::failure_reason(log).unwrap(),
        "apt-get install failed (exit 100): E: Failed to fetch http://m/x.deb  Could not connect"
    );
    assert_eq!(kiln::drivers::failure_reason("no marker\n"), None);
}
