//! BIOS settings on the virtual rack, judged through curl: PATCH of the
//! settings object, pending values, their move into the Bios resource at
//! system reset, stale ETags, and the ignored-attribute fault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::simrack::{Rack, RackSpec};

fn reset(rack: &Rack, i: usize) {
    let reset = format!("{}/Actions/ComputerSystem.Reset", rack.system(i));
    let (code, body) = rack.curl(i, "POST", &reset, Some(r#"{"ResetType":"ForceRestart"}"#));
    assert_eq!(code, 204, "{body}");
}

/// The settings object path of node `i`'s Bios resource.
fn settings(rack: &Rack, i: usize) -> (String, String) {
    let bios = format!("{}/Bios", rack.system(i));
    let doc = rack.get(i, &bios);
    let settings = doc["@Redfish.Settings"]["SettingsObject"]["@odata.id"]
        .as_str()
        .unwrap()
        .to_owned();
    (bios, settings)
}

#[test]
fn pending_bios_values_apply_at_reset() {
    let rack = Rack::start(RackSpec {
        net: 159,
        ..RackSpec::default()
    });
    let (bios, settings) = settings(&rack, 0);
    let body = r#"{"Attributes":{"BootMode":"LegacyBios"}}"#;
    let (code, reply) = rack.curl(0, "PATCH", &settings, Some(body));
    assert!(code == 200 || code == 204, "{code} {reply}");
    assert_eq!(
        rack.get(0, &settings)["Attributes"]["BootMode"],
        "LegacyBios"
    );
    assert_eq!(rack.get(0, &bios)["Attributes"]["BootMode"], "Uefi");
    reset(&rack, 0);
    assert_eq!(rack.get(0, &bios)["Attributes"]["BootMode"], "LegacyBios");
    let pending = rack.get(0, &settings);
    assert!(pending["Attributes"].as_object().unwrap().is_empty());

    let (code, reply) = rack.curl(
        0,
        "PATCH",
        &settings,
        Some(r#"{"Attributes":{"NoSuch":1}}"#),
    );
    assert_eq!(code, 400, "{reply}");
    assert!(reply.contains("NoSuch"), "{reply}");

    let stale = ["-u", "admin:test", "-H", "If-Match: W/\"0000000000000000\""];
    let (code, reply) = rack.curl_with(0, "PATCH", &settings, Some(body), &stale);
    assert_eq!(code, 412, "{reply}");
}

#[test]
fn an_ignored_bios_attribute_is_never_applied() {
    let faults = "faults:\n  - nodes: t-n01\n    bmc_bios_ignore: BootMode\n";
    let rack = Rack::start(RackSpec {
        net: 160,
        faults: Some(faults),
        ..RackSpec::default()
    });
    let (bios, settings) = settings(&rack, 0);
    let body = r#"{"Attributes":{"BootMode":"LegacyBios","EmbeddedSata":"Ahci"}}"#;
    let (code, reply) = rack.curl(0, "PATCH", &settings, Some(body));
    assert!(code == 200 || code == 204, "{code} {reply}");
    reset(&rack, 0);
    let doc = rack.get(0, &bios);
    assert_eq!(doc["Attributes"]["BootMode"], "Uefi");
    assert_eq!(doc["Attributes"]["EmbeddedSata"], "Ahci");
}
