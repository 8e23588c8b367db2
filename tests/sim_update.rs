//! Firmware updates on the virtual rack, judged through curl: SimpleUpdate
//! on every flavour, the task monitor, FirmwareInventory before and after
//! the apply step, and the update faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::simrack::{FileServer, Rack, RackSpec};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const ACTION: &str = "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate";
const INVENTORY: &str = "/redfish/v1/UpdateService/FirmwareInventory";

/// A package server on `127.<net>.9.1` with `fw.bin` for version 9.9.9.
fn package_server(net: u8) -> (tempfile::TempDir, FileServer) {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(
        files.path().join("fw.bin"),
        "kiln-sim-firmware component=any version=9.9.9\npayload\n",
    )
    .unwrap();
    std::fs::write(files.path().join("junk.bin"), "MZ not a package\n").unwrap();
    let server = FileServer::start(files.path(), &format!("127.{net}.9.1"));
    (files, server)
}

/// The first FirmwareInventory member and its version.
fn first_component(rack: &Rack) -> (String, String) {
    let inv = rack.get(0, INVENTORY);
    let path = inv["Members"][0]["@odata.id"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let version = rack.get(0, &path)["Version"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (path, version)
}

/// Polls node `i`'s task monitor until it stops answering 202 (or 503
/// while the BMC reboots); returns that status and body.
fn finish(rack: &Rack, i: usize, task: &Value) -> (u16, String) {
    let monitor = task["TaskMonitor"].as_str().unwrap().to_owned();
    let start = Instant::now();
    loop {
        let (code, body) = rack.curl(i, "GET", &monitor, None);
        if (code != 202 && code != 503) || start.elapsed() > WAIT {
            return (code, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn update(rack: &Rack, url: &str, target: &str, apply: &str) -> (u16, String) {
    let body = format!(
        r#"{{"ImageURI":"{url}","Targets":["{target}"],"@Redfish.OperationApplyTime":"{apply}"}}"#
    );
    rack.curl(0, "POST", ACTION, Some(&body))
}

#[test]
fn every_flavour_updates_firmware_and_shows_it_only_after_apply() {
    for (k, flavour) in ["generic", "dell", "hpe", "supermicro", "lenovo"]
        .into_iter()
        .enumerate()
    {
        let net = 151 + k as u8;
        let (_files, server) = package_server(net);
        let rack = Rack::start(RackSpec {
            net,
            flavour,
            ..RackSpec::default()
        });
        let (target, before) = first_component(&rack);
        let url = format!("{}/fw.bin", server.url);
        let (code, reply) = update(&rack, &url, &target, "Immediate");
        assert_eq!(code, 202, "{flavour}: {reply}");
        let task: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(finish(&rack, 0, &task).0, 204, "{flavour}");
        assert_eq!(
            rack.get(0, &target)["Version"],
            "9.9.9",
            "{flavour} was {before}"
        );
        let id = task["Id"].as_str().unwrap();
        let done = rack.get(0, &format!("/redfish/v1/TaskService/Tasks/{id}"));
        assert_eq!(done["TaskState"], "Completed");
        assert_eq!(done["PercentComplete"], 100);

        // A junk image is refused up front.
        let (code, reply) = update(
            &rack,
            &format!("{}/junk.bin", server.url),
            &target,
            "Immediate",
        );
        assert_eq!(code, 400, "{flavour}: {reply}");
        assert!(reply.contains("not a firmware package"), "{reply}");
    }
}

#[test]
fn on_reset_updates_wait_for_the_system_reset() {
    let (_files, server) = package_server(157);
    let rack = Rack::start(RackSpec {
        net: 157,
        ..RackSpec::default()
    });
    let (target, before) = first_component(&rack);
    let (code, reply) = update(&rack, &format!("{}/fw.bin", server.url), &target, "OnReset");
    assert_eq!(code, 202, "{reply}");
    let task: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(finish(&rack, 0, &task).0, 204);
    assert_eq!(
        rack.get(0, &target)["Version"].as_str().unwrap_or(""),
        before
    );
    let reset = format!("{}/Actions/ComputerSystem.Reset", rack.system(0));
    let (code, _) = rack.curl(0, "POST", &reset, Some(r#"{"ResetType":"ForceRestart"}"#));
    assert_eq!(code, 204);
    assert_eq!(rack.get(0, &target)["Version"], "9.9.9");
}

#[test]
fn update_faults_show_as_a_real_bmc_shows_them() {
    let (_files, server) = package_server(158);
    let faults = "faults:\n  - nodes: t-n01\n    bmc_update_fault: rejected\n  - nodes: t-n02\n    bmc_update_fault: exception\n  - nodes: t-n03\n    bmc_update_fault: unchanged\n";
    let rack = Rack::start(RackSpec {
        net: 158,
        nodes: 3,
        faults: Some(faults),
        ..RackSpec::default()
    });
    let url = format!("{}/fw.bin", server.url);
    let post = |i: usize| {
        let inv = rack.get(i, INVENTORY);
        let target = inv["Members"][0]["@odata.id"].as_str().unwrap().to_owned();
        let body = format!(r#"{{"ImageURI":"{url}","Targets":["{target}"]}}"#);
        let (code, reply) = rack.curl(i, "POST", ACTION, Some(&body));
        (code, reply, target)
    };
    let (code, reply, _) = post(0);
    assert_eq!(code, 400, "{reply}");
    assert!(reply.contains("verification"), "{reply}");

    let (code, reply, _) = post(1);
    assert_eq!(code, 202, "{reply}");
    let task: Value = serde_json::from_str(&reply).unwrap();
    let (code, body) = finish(&rack, 1, &task);
    assert_eq!(code, 500, "{body}");
    let id = task["Id"].as_str().unwrap();
    let done = rack.get(1, &format!("/redfish/v1/TaskService/Tasks/{id}"));
    assert_eq!(done["TaskState"], "Exception");
    assert!(
        done["Messages"][0]["Message"]
            .as_str()
            .unwrap()
            .contains("failed")
    );

    let (code, reply, target) = post(2);
    assert_eq!(code, 202, "{reply}");
    let before = rack.get(2, &target)["Version"].clone();
    let task: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(finish(&rack, 2, &task).0, 204);
    assert_eq!(rack.get(2, &target)["Version"], before);
}

/// A Redfish client for node `i`, pinned to its BMC's certificate.
fn client(rack: &Rack, i: usize) -> kiln::bmc::client::BmcClient {
    use kiln::bmc::transport::{Transport, TransportOptions};
    let n = &rack.nodes[i];
    let pin = n["bmc_fingerprint"]
        .as_str()
        .unwrap()
        .replace(':', "")
        .parse()
        .unwrap();
    let tls = kiln::bmc::tls::pinned(pin).unwrap();
    let addr = n["bmc_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let transport = Transport::new(
        host,
        port.parse().unwrap(),
        tls,
        TransportOptions::default(),
    );
    kiln::bmc::client::BmcClient::new(
        n["name"].as_str().unwrap(),
        transport,
        n["username"].as_str().unwrap(),
        kiln::secret::Secret::new(n["password"].as_str().unwrap().to_owned()),
    )
}

/// The flavour's `MultipartHttpPushUri`, as kiln reads its UpdateService.
fn push_uri(rack: &Rack) -> String {
    use kiln::bmc::update::{UpdateMethod, UpdateService};
    let path = "/redfish/v1/UpdateService";
    let doc = rack.get(0, path);
    let mut service = UpdateService::of(path, &doc);
    // Push is chosen only where SimpleUpdate is not offered.
    service.simple_update = None;
    match service.method("https", 4096) {
        Ok(UpdateMethod::Push(uri)) => uri,
        other => panic!("no multipart push: {other:?}"),
    }
}

#[test]
fn multipart_pushes_update_the_inventory_and_rejections_carry_the_bmc_message() {
    use kiln::bmc::update::{TaskEnd, follow_task, push};
    let faults = "faults:\n  - nodes: t-n02\n    bmc_update_fault: rejected\n";
    let rack = Rack::start(RackSpec {
        net: 163,
        nodes: 2,
        flavour: "supermicro",
        faults: Some(faults),
        ..RackSpec::default()
    });
    let (target, before) = first_component(&rack);
    let uri = push_uri(&rack);
    // Over 64 KiB, so the package follows the request head in its own
    // writes, as a real package does.
    let mut image = b"kiln-sim-firmware component=any version=9.9.9\n".to_vec();
    image.resize(image.len() + (96 << 10), b'p');
    image.push(b'\n');
    let digest = kiln::imaging::verify::sha256_hex(&image);
    let image = bytes::Bytes::from(image);
    let targets = vec![target.clone()];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = client(&rack, 0);
        let monitor = push(
            &c,
            &uri,
            &targets,
            "Immediate",
            "fw.bin",
            image.clone(),
            &digest,
        )
        .await
        .unwrap()
        .expect("a task monitor");
        let end = follow_task(&c, &monitor, WAIT, WAIT, Duration::from_millis(100), |_| {})
            .await
            .unwrap();
        assert_eq!(end, TaskEnd::Completed);

        let c = client(&rack, 1);
        let err = push(&c, &uri, &targets, "Immediate", "fw.bin", image, &digest)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400), "{err}");
        assert!(err.to_string().contains("signature verification"), "{err}");
    });
    assert_eq!(rack.get(0, &target)["Version"], "9.9.9", "was {before}");
}

#[test]
fn malformed_multipart_uploads_answer_400() {
    let rack = Rack::start(RackSpec {
        net: 164,
        flavour: "lenovo",
        ..RackSpec::default()
    });
    let uri = push_uri(&rack);
    for (content_type, body) in [
        ("multipart/form-data; boundary=x", "--x\r\nno header end"),
        ("multipart/form-data", "--x--\r\n"),
        (
            "multipart/form-data; boundary=x",
            "--x\r\nContent-Disposition: form-data; name=\"UpdateParameters\"\r\n\r\n{}\r\n--x--\r\n",
        ),
    ] {
        let (code, reply) = rack.curl_with(
            0,
            "POST",
            &uri,
            None,
            &[
                "-u",
                "admin:test",
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
                body,
            ],
        );
        assert_eq!(code, 400, "{content_type}: {reply}");
        let doc: Value = serde_json::from_str(&reply).unwrap();
        assert!(
            doc["error"]["@Message.ExtendedInfo"][0]["Message"].is_string(),
            "{reply}"
        );
    }
}
