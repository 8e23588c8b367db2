//! DMTF's Redfish Service Validator, run offline against simulated BMCs of
//! every flavour. The generic flavour must show no failure at all; a vendor
//! flavour may show only the failures the real vendor tree it is built from
//! shows too (`tests/interop/validator-baseline/`).
//!
//! Needs Python 3 and PyPI (the validator is installed into a venv by
//! `tests/interop/setup-python.sh`). Set `KILN_SKIP_INTEROP=1` to skip on a
//! machine without them; CI never sets it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::simrack::{FileServer, Rack, RackSpec};

fn skip() -> bool {
    common::skip_interop("the Redfish validator", None)
}

/// Runs the validator against node 0 of `rack`; returns the normalised
/// failure list file.
fn validate(rack: &Rack, out: &Path) -> std::path::PathBuf {
    let root = common::root();
    let status = Command::new(root.join("tests/interop/run_validator.sh"))
        .arg(rack.bmc(0))
        .args(["admin", "test"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run_validator.sh");
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "the validator could not run (see {}); set KILN_SKIP_INTEROP=1 on machines without Python/PyPI",
        out.join("validator.log").display()
    );
    out.join("failures.txt")
}

fn compare(failures: &Path, baselines: &[&str]) {
    let root = common::root();
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("tests/interop/compare_baseline.py"))
        .arg(failures);
    for b in baselines {
        cmd.arg(root.join("tests/interop/validator-baseline").join(b));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "failures the real BMC does not show:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Gives the BMC a session and a finished task, so those resources are
/// validated too.
fn exercise(rack: &Rack, net: u8) {
    let (code, _) = rack.curl(
        0,
        "POST",
        "/redfish/v1/SessionService/Sessions",
        Some(r#"{"UserName":"admin","Password":"test"}"#),
    );
    assert_eq!(code, 201);
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("x.iso"), vec![0u8; 4096]).unwrap();
    let server = FileServer::start(files.path(), &format!("127.{net}.9.1"));
    let system = rack.system(0);
    let slot = format!("{system}/VirtualMedia/CD1");
    let body = format!(r#"{{"Image":"{}/x.iso"}}"#, server.url);
    let (code, _) = rack.curl(
        0,
        "POST",
        &format!("{slot}/Actions/VirtualMedia.InsertMedia"),
        Some(&body),
    );
    assert_eq!(code, 202);
    rack.wait_until(
        "the insert task",
        std::time::Duration::from_secs(20),
        || rack.get(0, "/redfish/v1/TaskService/Tasks/2")["TaskState"] == "Completed",
    );
}

/// Gives the BMC a firmware update task (completed within milliseconds at
/// the rack's time scale, and still listed under TaskService) and pending
/// BIOS values, so UpdateService, the task and the BIOS settings object are
/// validated as kiln's firmware stage leaves them. Returns the task path
/// and the settings object's (`None`: the flavour's tree has no Bios, as
/// the HPE mockup it is built from has none).
fn exercise_firmware(rack: &Rack, packages: &str) -> (String, Option<String>) {
    let inventory = rack.get(0, "/redfish/v1/UpdateService/FirmwareInventory");
    let target = inventory["Members"][0]["@odata.id"].as_str().unwrap();
    let body = format!(
        r#"{{"ImageURI":"{packages}/fw.bin","Targets":["{target}"],"@Redfish.OperationApplyTime":"OnReset"}}"#
    );
    let (code, reply) = rack.curl(
        0,
        "POST",
        "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
        Some(&body),
    );
    assert_eq!(code, 202, "{reply}");
    let task: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let task = task["@odata.id"].as_str().unwrap().to_owned();

    let system = rack.get(0, &rack.system(0));
    let Some(bios_path) = system["Bios"]["@odata.id"].as_str() else {
        return (task, None);
    };
    let bios = rack.get(0, bios_path);
    let settings = bios["@Redfish.Settings"]["SettingsObject"]["@odata.id"]
        .as_str()
        .expect("a BIOS settings object");
    let (name, value) = bios["Attributes"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let body = serde_json::json!({ "Attributes": { name: value } }).to_string();
    let (code, reply) = rack.curl(0, "PATCH", settings, Some(&body));
    assert!(
        matches!(code, 200 | 204),
        "PATCH {settings}: {code} {reply}"
    );
    assert_eq!(rack.get(0, settings)["Attributes"][name], *value);
    (task, Some(settings.trim_end_matches('/').to_owned()))
}

#[test]
fn every_flavour_passes_the_dmtf_validator_as_well_as_its_real_bmc() {
    if skip() {
        return;
    }
    let cases: [(&str, u8, &[&str]); 5] = [
        ("generic", 230, &["generic.txt"]),
        (
            "dell",
            231,
            &[
                "dell-idrac9-poweredge-r750.txt",
                "dell-idrac9-poweredge-r750.trimmed.txt",
            ],
        ),
        (
            "hpe",
            232,
            &[
                "hpe-ilo6-proliant-dl380a-gen11.txt",
                "hpe-ilo6-proliant-dl380a-gen11.trimmed.txt",
            ],
        ),
        (
            "supermicro",
            233,
            &[
                "supermicro-x13-sys-821ge-tnhr.txt",
                "supermicro-x13-sys-821ge-tnhr.trimmed.txt",
            ],
        ),
        (
            "lenovo",
            234,
            &[
                "lenovo-xcc-thinksystem-sr670v2.txt",
                "lenovo-xcc-thinksystem-sr670v2.trimmed.txt",
            ],
        ),
    ];
    let out = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(
        files.path().join("fw.bin"),
        "kiln-sim-firmware component=any version=9.9.9\npayload\n",
    )
    .unwrap();
    let packages = FileServer::start(files.path(), "127.166.9.1");
    for (flavour, net, baselines) in cases {
        let rack = Rack::start(RackSpec {
            net,
            flavour,
            ..RackSpec::default()
        });
        if flavour == "generic" {
            exercise(&rack, net);
        }
        let (task, settings) = exercise_firmware(&rack, &packages.url);
        let failures = validate(&rack, &out.path().join(flavour));
        compare(&failures, baselines);
        let results =
            std::fs::read_to_string(out.path().join(flavour).join("results.json")).unwrap();
        assert!(
            settings.is_some() || flavour == "hpe",
            "{flavour}: no BIOS settings object"
        );
        let reached = [
            Some(task.as_str()),
            Some("/redfish/v1/UpdateService"),
            settings.as_deref(),
        ];
        for reached in reached.into_iter().flatten() {
            assert!(
                results.contains(reached),
                "{flavour}: the validator did not reach {reached}"
            );
        }
        // The task is the simulator's own JSON: clean whatever the real BMC
        // shows (UpdateService and Dell's settings object are mockup JSON,
        // with OEM actions the real iDRAC fails on too).
        let text = std::fs::read_to_string(&failures).unwrap();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{task}\t")))
            .collect();
        assert!(
            bad.is_empty(),
            "{flavour}: {task} fails:\n{}",
            bad.join("\n")
        );
        if flavour == "generic" {
            let text = std::fs::read_to_string(&failures).unwrap();
            assert!(text.trim().is_empty(), "generic flavour failures:\n{text}");
            // The validator walked the generated resources, too.
            let results =
                std::fs::read_to_string(out.path().join(flavour).join("results.json")).unwrap();
            for generated in [
                "Processors/GPU8",
                "Chassis/1U/Power",
                "Chassis/1U/Thermal",
                "Sessions/1",
                "Tasks/2",
            ] {
                assert!(
                    results.contains(generated),
                    "the validator did not reach {generated}"
                );
            }
        }
    }
}

/// The tree shapes the simulator gives BMCs unlike its mockups (a sled's
/// second system and enclosure manager, GPUs as PCIe functions, paged
/// collections, no chassis link, a null power total, another GPU model,
/// error replies ended by a close), all at once on one generic BMC: no
/// failure at all.
#[test]
fn reshaped_trees_pass_the_dmtf_validator() {
    if skip() {
        return;
    }
    let rack = Rack::start(RackSpec {
        net: 235,
        faults: Some(
            "faults:\n  - nodes: \"*\"\n    bmc_sled: true\n    bmc_gpus_as_pcie: true\n    bmc_page_size: 2\n    bmc_unlinked_chassis: true\n    bmc_null_power: true\n    bmc_gpu_model: {model: \"AMD Instinct MI250X OAM\", vendor: AMD}\n    bmc_close_delimited_errors: true\n",
        ),
        ..RackSpec::default()
    });
    let out = tempfile::tempdir().unwrap();
    let failures = validate(&rack, out.path());
    let text = std::fs::read_to_string(&failures).unwrap();
    assert!(text.trim().is_empty(), "reshaped tree failures:\n{text}");
    let results = std::fs::read_to_string(out.path().join("results.json")).unwrap();
    for reached in [
        "Systems/437XR1138R2-Node1/Processors/FPGA1",
        "Managers/Enclosure",
        "PCIeDevices/",
        "PCIeFunctions/0",
        "Chassis/1U/Power",
    ] {
        assert!(
            results.contains(reached),
            "the validator did not reach {reached}"
        );
    }
}
