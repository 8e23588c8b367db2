//! `$expand` and `$select` on the virtual rack, per flavour, judged through
//! curl: expanded collections equal member-by-member GETs, and what a
//! flavour's service root does not advertise is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::simrack::{Rack, RackSpec};
use serde_json::Value;

/// Expands `path` one level and checks every member against its own GET.
fn expanded_equals_gets(rack: &Rack, path: &str) {
    let plain = rack.get(0, path);
    let expanded = rack.get(0, &format!("{path}?$expand=.($levels=1)"));
    let members = expanded["Members"].as_array().unwrap();
    assert_eq!(members.len(), plain["Members"].as_array().unwrap().len());
    assert!(!members.is_empty(), "{path}");
    for (m, link) in members.iter().zip(plain["Members"].as_array().unwrap()) {
        let id = link["@odata.id"].as_str().unwrap();
        assert_eq!(m, &rack.get(0, id), "{id}");
    }
}

#[test]
fn expand_and_select_per_flavour() {
    // (flavour, net, MaxLevels, ExpandAll, SelectQuery) as their mockups advertise.
    let cases = [
        ("generic", 185, 6, true, false),
        ("dell", 186, 1, true, true),
        ("hpe", 187, 1, false, true),
        ("supermicro", 188, 2, true, true),
        ("lenovo", 189, 2, true, true),
    ];
    for (flavour, net, max, all, select) in cases {
        let rack = Rack::start(RackSpec {
            net,
            nodes: 1,
            flavour,
            ..RackSpec::default()
        });
        let system = rack.get(0, &rack.system(0));
        let processors = system["Processors"]["@odata.id"].as_str().unwrap();
        expanded_equals_gets(&rack, processors);
        expanded_equals_gets(&rack, "/redfish/v1/UpdateService/FirmwareInventory");

        let star = format!("{processors}?$expand=*");
        let (code, body) = rack.curl(0, "GET", &star, None);
        assert_eq!(code, if all { 200 } else { 501 }, "{flavour}: {body}");
        let deep = format!("{processors}?$expand=.($levels={})", max + 1);
        let (code, body) = rack.curl(0, "GET", &deep, None);
        assert_eq!(code, 400, "{flavour}: {body}");

        let (code, body) = rack.curl(0, "GET", &format!("{processors}?$select=Name"), None);
        if select {
            assert_eq!(code, 200, "{flavour}: {body}");
            let doc: Value = serde_json::from_str(&body).unwrap();
            assert!(
                doc.get("Name").is_some() && doc.get("Members").is_none(),
                "{doc}"
            );
        } else {
            assert_eq!(code, 501, "{flavour}: {body}");
        }
    }
}
