//! One test per inventory validation rule, through the library API.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use kiln::diag::Severity;
use kiln::inventory::{Selection, TlsPolicy};

/// A valid site with two nodes; tests append to or edit it.
const BASE: &str = "\
site: par1
defaults:
  hardware: hgx-h100-80gb-8x
  image: ubuntu-24.04
  bmc: {username: admin, password: {env: KILN_TEST_BMC_PASSWORD}}
  ssh: {user: ubuntu}
racks:
  - name: r01
    nodes:
      - {name: r01-n01, bmc: 10.10.1.11, ssh: 10.20.1.11}
      - {name: r01-n02, bmc: 10.10.1.12, ssh: 10.20.1.12}
";

/// The errors of `text` as (line, col, message).
fn errors(text: &str) -> Vec<(u32, u32, String)> {
    common::check(text)
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| {
            let p = d.pos.unwrap_or_default();
            (p.line, p.col, d.message.clone())
        })
        .collect()
}

fn one_error(text: &str) -> (u32, u32, String) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    errs.into_iter().next().unwrap()
}

fn with_node(line: &str) -> String {
    format!("{BASE}      - {line}\n")
}

#[test]
fn the_base_is_valid() {
    let checked = common::check(BASE);
    assert_eq!(checked.errors(), 0, "{:#?}", checked.diagnostics);
    assert_eq!(checked.inventory.unwrap().nodes.len(), 2);
}

#[test]
fn examples_in_the_repository_are_valid() {
    for file in ["inventories/example-site.yaml", "inventories/demo.yaml"] {
        let checked = kiln::inventory::load_file(&common::root().join(file)).unwrap();
        assert_eq!(checked.errors(), 0, "{file}: {:#?}", checked.diagnostics);
    }
}

#[test]
fn unknown_keys_are_errors_with_a_hint() {
    let text = BASE.replace("  image: ubuntu-24.04", "  imgae: ubuntu-24.04");
    let errs = errors(&text);
    assert_eq!(errs[0], (4, 3, "unknown key `imgae` in defaults".into()));
    let checked = common::check(&text);
    assert_eq!(
        checked.diagnostics[0].help.as_deref(),
        Some("did you mean `image`?")
    );
    // The misspelt key is not also reported as a missing image profile.
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

#[test]
fn duplicate_node_names() {
    let (line, col, msg) = one_error(&with_node(
        "{name: r01-n01, bmc: 10.10.1.13, ssh: 10.20.1.13}",
    ));
    assert_eq!((line, col), (12, 16));
    assert_eq!(
        msg,
        "duplicate node name `r01-n01`: already used by node r01-n01 (line 10)"
    );
}

#[test]
fn duplicate_rack_names() {
    let text = format!("{BASE}  - name: r01\n    nodes: []\n");
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.2.starts_with("duplicate rack name `r01`")),
        "{errs:#?}"
    );
}

#[test]
fn duplicate_bmc_addresses() {
    let (_, _, msg) = one_error(&with_node(
        "{name: r01-n03, bmc: \"https://10.10.1.11:443\", ssh: 10.20.1.13}",
    ));
    assert_eq!(
        msg,
        "duplicate BMC `https://10.10.1.11:443`: already used by node r01-n01 (line 10)"
    );
}

#[test]
fn one_bmc_may_serve_several_systems() {
    let text = format!(
        "{BASE}      - {{name: r01-n03, bmc: {{address: 10.9.0.1, system: \"1\"}}, ssh: 10.20.1.13}}\n      \
         - {{name: r01-n04, bmc: {{address: 10.9.0.1, system: \"2\"}}, ssh: 10.20.1.14}}\n      \
         - {{name: r01-n05, bmc: {{address: 10.9.0.1, system: \"2\"}}, ssh: 10.20.1.15}}\n"
    );
    let (line, _, msg) = one_error(&text);
    assert_eq!(line, 14);
    assert!(
        msg.contains("duplicate BMC `https://10.9.0.1:443 system 2`"),
        "{msg}"
    );
}

#[test]
fn duplicate_ssh_addresses() {
    let (_, _, msg) = one_error(&with_node(
        "{name: r01-n03, bmc: 10.10.1.13, ssh: \"10.20.1.12:22\"}",
    ));
    assert_eq!(
        msg,
        "duplicate SSH address `10.20.1.12:22`: already used by node r01-n02 (line 11)"
    );
    // The same host on another port is another node (an emulator, a NAT).
    assert!(
        errors(&with_node(
            "{name: r01-n03, bmc: 10.10.1.13, ssh: \"10.20.1.12:2222\"}"
        ))
        .is_empty()
    );
}

#[test]
fn duplicate_macs() {
    let text = BASE
        .replace(
            "ssh: 10.20.1.11}",
            "ssh: 10.20.1.11, mac: \"04:3f:72:00:00:01\"}",
        )
        .replace(
            "ssh: 10.20.1.12}",
            "ssh: 10.20.1.12, mac: \"04-3F-72-00-00-01\"}",
        );
    let (line, _, msg) = one_error(&text);
    assert_eq!(line, 11);
    assert_eq!(
        msg,
        "duplicate MAC address `04:3f:72:00:00:01`: already used by node r01-n01 (line 10)"
    );
}

#[test]
fn invalid_addresses() {
    for (bad, expected) in [
        ("10.10.1.300", "`10.10.1.300` is not a valid IPv4 address"),
        (
            "\"http://10.10.1.13\"",
            "`http://10.10.1.13`: Redfish is only spoken over https",
        ),
        (
            "\"10.10.1.13:70000\"",
            "`70000` is not a valid port (1-65535)",
        ),
        (
            "\"bmc;reboot\"",
            "`bmc;reboot` is not a valid IP address or host name",
        ),
        (
            "\"https://10.10.1.13/redfish/v1\"",
            "`https://10.10.1.13/redfish/v1`: give the BMC's base URL without a path (kiln finds /redfish/v1 itself)",
        ),
    ] {
        let (line, col, msg) = one_error(&with_node(&format!(
            "{{name: r01-n03, bmc: {bad}, ssh: 10.20.1.13}}"
        )));
        assert_eq!((line, col, msg.as_str()), (12, 30, expected));
    }
    let (_, _, msg) = one_error(&with_node(
        "{name: r01-n03, bmc: 10.10.1.13, ssh: \"ubuntu@10.20.1.13\"}",
    ));
    assert!(msg.contains("the user goes in `ssh.user`"), "{msg}");
}

#[test]
fn invalid_cidrs_and_addresses_outside_networks() {
    let text = BASE.replace(
        "racks:",
        "networks: {bmc: 10.10.0.0/16, ssh: [10.20.0.0/33]}\nracks:",
    );
    let (line, _, msg) = one_error(&text);
    assert_eq!(line, 7);
    assert_eq!(msg, "`/33` in `10.20.0.0/33` is not a prefix length (0-32)");

    let text = BASE
        .replace(
            "racks:",
            "networks: {bmc: 10.10.0.0/16, ssh: 10.20.0.0/16}\nracks:",
        )
        .replace("bmc: 10.10.1.12", "bmc: 10.11.1.12");
    let (line, col, msg) = one_error(&text);
    assert_eq!((line, col), (12, 30));
    assert_eq!(
        msg,
        "BMC address 10.11.1.12 is outside the BMC network (10.10.0.0/16)"
    );
}

#[test]
fn unknown_profiles() {
    let text = BASE.replace("hgx-h100-80gb-8x", "hgx-h100-8x");
    let (line, col, msg) = one_error(&text);
    assert_eq!(
        (line, col, msg.as_str()),
        (3, 13, "unknown hardware profile `hgx-h100-8x`")
    );
    let text = BASE.replace("ubuntu-24.04", "ubuntu-26.04");
    let (line, _, msg) = one_error(&text);
    assert_eq!(
        (line, msg.as_str()),
        (4, "unknown image profile `ubuntu-26.04`")
    );
}

#[test]
fn node_names_must_be_host_names() {
    for bad in [
        "R01-N03",
        "r01_n03",
        "-r01",
        "\"r01 n03\"",
        "\"$(reboot)\"",
        "r01-n03.",
    ] {
        let (line, col, msg) = one_error(&with_node(&format!(
            "{{name: {bad}, bmc: 10.10.1.13, ssh: 10.20.1.13}}"
        )));
        assert_eq!((line, col), (12, 16), "{bad}");
        assert!(msg.ends_with("is not a valid host name"), "{bad}: {msg}");
    }
}

#[test]
fn plaintext_secrets_are_refused() {
    let text = BASE.replace(
        "password: {env: KILN_TEST_BMC_PASSWORD}",
        "password: hunter2",
    );
    let (line, col, msg) = one_error(&text);
    assert_eq!(
        (line, col, msg.as_str()),
        (5, 36, "plaintext secrets are refused")
    );
    // The secret itself never appears in a diagnostic.
    let checked = common::check(&text);
    for d in &checked.diagnostics {
        assert!(
            !d.render(false).contains("hunter2") || d.render(false).contains("password: hunter2")
        );
        assert!(!d.message.contains("hunter2"));
    }
}

#[test]
fn a_missing_secret_variable_is_a_warning() {
    let text = BASE.replace("KILN_TEST_BMC_PASSWORD", "KILN_SURELY_UNSET_VARIABLE");
    let checked = common::check(&text);
    assert_eq!(checked.errors(), 0);
    assert_eq!(checked.warnings(), 1, "{:#?}", checked.diagnostics);
    assert!(
        checked.diagnostics[0]
            .message
            .contains("KILN_SURELY_UNSET_VARIABLE")
    );
    assert!(checked.inventory.is_some());
}

#[test]
fn tls_settings() {
    let pin = format!("sha256:{}", ["0A"; 32].join(":"));
    let text = BASE.replace(
        "{username: admin,",
        &format!("{{tls: {{pin: \"{pin}\"}}, username: admin,"),
    );
    let inv = common::check(&text).inventory.unwrap();
    assert!(matches!(inv.nodes[0].bmc.tls, TlsPolicy::Pin(_)));
    let text = BASE.replace(
        "{username: admin,",
        "{tls: {pin: \"sha256:0A:0B\"}, username: admin,",
    );
    let (_, _, msg) = one_error(&text);
    assert!(msg.contains("is not a SHA-256 fingerprint"), "{msg}");
    let text = BASE.replace("{username: admin,", "{tls: insecure, username: admin,");
    assert_eq!(
        common::check(&text).inventory.unwrap().nodes[0].bmc.tls,
        TlsPolicy::Insecure
    );
    // Default: the fingerprint kiln records on first contact.
    assert_eq!(
        common::check(BASE).inventory.unwrap().nodes[0].bmc.tls,
        TlsPolicy::Recorded
    );
}

#[test]
fn labels_follow_kubernetes_syntax() {
    let text = BASE.replace(
        "  ssh: {user: ubuntu}",
        "  ssh: {user: ubuntu}\n  labels: {\"bad key!\": x, row: \"A B\"}",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].2.contains("not a valid label key"));
    assert!(errs[1].2.contains("not a valid label value"));
}

#[test]
fn limits_must_be_positive() {
    let text = BASE.replace(
        "racks:",
        "limits: {per_bmc: 0, power_on: {interval: 3 parsecs}}\nracks:",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[0].2, "`per_bmc` must be at least 1");
    assert!(errs[1].2.contains("parsecs"));
}

#[test]
fn missing_required_values() {
    let text = BASE.replace(
        "  bmc: {username: admin, password: {env: KILN_TEST_BMC_PASSWORD}}\n",
        "",
    );
    let errs = errors(&text);
    // Reported on each node, at its name.
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert_eq!(errs[0], (9, 16, "node r01-n01 has no BMC username".into()));
    assert_eq!(errs[1], (9, 16, "node r01-n01 has no BMC password".into()));
    let errs = errors("site: par1\n");
    assert_eq!(
        errs,
        [(1, 1, "inventory is missing the required key `racks`".into())]
    );
}

#[test]
fn wrong_types() {
    let text = BASE.replace("racks:", "limits: {concurrency: many}\nracks:");
    let (line, col, msg) = one_error(&text);
    assert_eq!(
        (line, col, msg.as_str()),
        (7, 23, "expected a whole number, found a string")
    );
    let errs = errors("site: par1\nracks: {r01: []}\n");
    assert_eq!(
        errs,
        [(2, 8, "`racks` must be a list, found a mapping".into())]
    );
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let text = std::fs::read_to_string(
        common::root().join("tests/fixtures/inventories/three-mistakes.yaml"),
    )
    .unwrap();
    let errs = errors(&text);
    let messages: Vec<&str> = errs.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(
        messages,
        [
            "unknown hardware profile `hgx-h100-80gb`",
            "unknown key `shh` in node",
            "duplicate node name `r01-n01`: already used by node r01-n01 (line 12)",
        ]
    );
}

#[test]
fn defaults_are_inherited_and_overridden() {
    let text = "\
site: par1
defaults:
  hardware: hgx-h100-80gb-8x
  image: ubuntu-24.04
  bmc: {username: admin, password: {env: KILN_TEST_BMC_PASSWORD}}
  ssh: {user: ubuntu, jump: \"ops@bastion.par1\"}
  labels: {site: par1, row: A}
racks:
  - name: r01
    hardware: hgx-h200-141gb-8x
    labels: {row: B}
    in_service: true
    nodes:
      - {name: r01-n01, bmc: 10.10.1.11, ssh: 10.20.1.11}
      - name: r01-n02
        hardware: hgx-b200-180gb-8x
        bmc: {address: \"https://10.10.1.12:8443\", system: \"1\", username: root}
        ssh: {address: \"10.20.1.12:2222\", user: admin}
        labels: {slot: 2}
        in_service: false
";
    let inv = common::check(text).inventory.unwrap();
    let (a, b) = (&inv.nodes[0], &inv.nodes[1]);
    assert_eq!(a.hardware, "hgx-h200-141gb-8x");
    assert_eq!(b.hardware, "hgx-b200-180gb-8x");
    assert_eq!(a.labels.get("row").map(String::as_str), Some("B"));
    assert_eq!(a.labels.get("site").map(String::as_str), Some("par1"));
    assert_eq!(b.labels.get("slot").map(String::as_str), Some("2"));
    assert!(a.in_service && !b.in_service);
    assert_eq!(a.bmc.username, "admin");
    assert_eq!(b.bmc.username, "root");
    assert_eq!(b.bmc.endpoint.url(), "https://10.10.1.12:8443");
    assert_eq!(b.bmc.system.as_deref(), Some("1"));
    assert_eq!(b.ssh.endpoint.to_string(), "10.20.1.12:2222");
    assert_eq!(b.ssh.user, "admin");
    assert_eq!(
        a.ssh.jump.as_ref().unwrap().to_string(),
        "ops@bastion.par1:22"
    );
}

#[test]
fn empty_and_odd_documents() {
    assert_eq!(
        errors(""),
        [(
            1,
            1,
            "the inventory is empty; it needs at least `site` and `racks`".into()
        )]
    );
    assert_eq!(errors("# only a comment\n").len(), 1);
    assert_eq!(
        errors("- a\n- b\n"),
        [(1, 1, "expected inventory (a mapping), found a list".into())]
    );
    let checked = common::check(&format!("{BASE}  - name: r02\n    nodes: []\n"));
    assert_eq!(checked.errors(), 0);
    let warnings: Vec<_> = checked
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert!(warnings.contains(&"rack r02 has no nodes"), "{warnings:#?}");
}

/// The resolved form of a node, written back as an inventory node entry,
/// reads back to the same node: the schema and its JSON/YAML form agree.
#[test]
fn resolved_nodes_round_trip_through_the_schema() {
    let pin = format!("sha256:{}", ["C3"; 32].join(":"));
    let text = format!(
        "\
site: par1
defaults:
  hardware: hgx-h100-80gb-8x
  image: rocky-9
  bmc: {{username: admin, password: {{file: /etc/kiln/bmc}}, tls: {{pin: \"{pin}\"}}}}
  ssh: {{user: ubuntu, key: /etc/kiln/id_ed25519, known_hosts: /etc/kiln/known_hosts, jump: \"ops@[fd00::1]:2200\"}}
  labels: {{row: A}}
racks:
  - name: r01
    nodes:
      - {{name: r01-n01, bmc: {{address: \"bmc01.par1\", system: \"Self\"}}, ssh: \"[fd00::11]:22\", mac: \"04:3f:72:00:00:01\"}}
      - {{name: r01-n02, bmc: {{address: 10.10.1.12, tls: insecure}}, ssh: 10.20.1.12, in_service: true}}
      - {{name: r01-n03, bmc: {{address: 10.10.1.13, tls: {{ca: /etc/kiln/ca.pem}}, password: {{env: KILN_X}}}}, ssh: 10.20.1.13}}
"
    );
    let first = common::check(&text).inventory.unwrap();
    let mut nodes = serde_json::to_value(&first.nodes).unwrap();
    for node in nodes.as_array_mut().unwrap() {
        node.as_object_mut().unwrap().remove("rack");
    }
    let doc = serde_json::json!({"site": "par1", "racks": [{"name": "r01", "nodes": nodes}]});
    // JSON is YAML: the serialized form is itself an inventory.
    let second = common::check(&serde_json::to_string_pretty(&doc).unwrap());
    assert_eq!(second.errors(), 0, "{:#?}", second.diagnostics);
    assert_eq!(second.inventory.unwrap().nodes, first.nodes);
}

#[test]
fn selections() {
    let text = kiln::inventory::generate::generate(&kiln::inventory::generate::SiteSpec {
        racks: 3,
        nodes_per_rack: 12,
        ..Default::default()
    })
    .unwrap();
    let inv = common::check(&text).inventory.unwrap();
    let pick = |expr: &str| -> Vec<String> {
        let sel: Selection = expr.parse().unwrap();
        inv.select(&sel)
            .map(|v| v.iter().map(|n| n.name.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(pick("r01-n[01-03]"), ["r01-n01", "r01-n02", "r01-n03"]);
    assert_eq!(pick("rack:r02").len(), 12);
    assert_eq!(pick("rack:r0[2-3]&!r0?-n[02-12]"), ["r02-n01", "r03-n01"]);
    assert_eq!(pick("r01-n01,r03-n12"), ["r01-n01", "r03-n12"]);
    assert_eq!(pick("*").len(), 36);
    let none: Selection = "r09-*".parse().unwrap();
    assert_eq!(
        inv.select(&none).unwrap_err().to_string(),
        "selection `r09-*` matches no node"
    );
}

#[test]
fn a_12500_node_site_checks_cleanly() {
    let text = kiln::inventory::generate::generate(&kiln::inventory::generate::SiteSpec {
        racks: 625,
        nodes_per_rack: 20,
        ..Default::default()
    })
    .unwrap();
    let checked = common::check(&text);
    assert_eq!(checked.errors(), 0);
    assert_eq!(checked.inventory.unwrap().nodes.len(), 12_500);
}
