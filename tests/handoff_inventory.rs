//! The inventory's `handoff:` targets: site defaults, a rack's list that
//! replaces them, and each mistake reported at its `file:line:col`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kiln::diag::Severity;
use kiln::inventory::handoff::{HandoffTarget, SlurmVia};

const BASE: &str = "\
site: par1
defaults:
  hardware: hgx-h100-80gb-8x
  image: ubuntu-24.04
  bmc: {username: admin, password: {env: KILN_TEST_BMC_PASSWORD}}
  ssh: {user: ubuntu}
  handoff:
    - webhook: {url: \"https://intake.example/nodes\", token: {env: KILN_TEST_HOOK}, failed: true}
    - slurm: {scontrol: ops@slurmctl:22}
racks:
  - name: r01
    nodes:
      - {name: r01-n01, bmc: 10.10.1.11, ssh: 10.20.1.11}
  - name: r02
    handoff:
      - kubernetes: {api: \"https://k8s:6443\", token: {file: k8s.token}, labels: {pool: h100}, taints: [\"kiln/new=true:NoSchedule\"]}
    nodes:
      - {name: r02-n01, bmc: 10.10.2.11, ssh: 10.20.2.11}
";

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

#[test]
fn racks_inherit_or_replace_the_sites_targets() {
    let checked = common::check(BASE);
    let inv = checked.inventory.expect("valid");
    let r01 = inv.handoff.for_rack("r01");
    assert_eq!(r01.len(), 2);
    match &r01[0] {
        HandoffTarget::Webhook(w) => {
            assert!(w.failed && w.attempts == 3);
            assert_eq!(w.url.host, "intake.example");
        }
        other => panic!("{other:?}"),
    }
    match &r01[1] {
        HandoffTarget::Slurm(s) => match &s.via {
            SlurmVia::Scontrol {
                controller: Some(c),
            } => assert_eq!(c.to_string(), "ops@slurmctl:22"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let r02 = inv.handoff.for_rack("r02");
    assert_eq!(r02.len(), 1);
    assert_eq!(r02[0].kind(), "kubernetes");
    // Secrets not set now are warnings, with the place they are written.
    let warned: Vec<_> = checked
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.message.clone())
        .collect();
    assert!(
        warned.iter().any(|w| w.contains("env:KILN_TEST_HOOK")),
        "{warned:?}"
    );
}

#[test]
fn mistakes_are_reported_where_they_are() {
    let plaintext = BASE.replace("token: {env: KILN_TEST_HOOK}", "token: hunter2");
    let e = errors(&plaintext);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].0, e[0].2.as_str()),
        (8, "plaintext secrets are refused")
    );

    let bad_url = BASE.replace("https://intake.example/nodes", "ftp://x");
    let e = errors(&bad_url);
    assert!(
        e[0].2.contains("not an http:// or https:// URL") && e[0].0 == 8,
        "{e:?}"
    );

    let creds = BASE.replace("https://intake.example/nodes", "https://u:p@x/");
    assert!(errors(&creds)[0].2.contains("carries credentials"));

    let typo = BASE.replace("failed: true", "faild: true");
    let e = errors(&typo);
    assert!(e[0].2.contains("unknown key `faild`"), "{e:?}");

    let taint = BASE.replace("kiln/new=true:NoSchedule", "kiln/new=true:Never");
    let e = errors(&taint);
    assert!(
        e[0].2.contains("taint effect `Never`") && e[0].0 == 16,
        "{e:?}"
    );

    let both = BASE.replace(
        "scontrol: ops@slurmctl:22",
        "scontrol: local, restd: \"http://c:6820\", token: {env: X}",
    );
    assert!(errors(&both)[0].2.contains("not both"));

    let none = BASE.replace("- slurm: {scontrol: ops@slurmctl:22}", "- {}");
    assert!(
        errors(&none)[0]
            .2
            .contains("needs one of `webhook`, `slurm`, `kubernetes`")
    );

    let on_node = BASE.replace(
        "{name: r01-n01, bmc: 10.10.1.11, ssh: 10.20.1.11}",
        "{name: r01-n01, bmc: 10.10.1.11, ssh: 10.20.1.11, handoff: []}",
    );
    let e = errors(&on_node);
    assert!(e[0].2.contains("not a node"), "{e:?}");
}

#[test]
fn a_token_over_plain_http_needs_an_explicit_opt_in() {
    let plain = BASE.replace(
        "https://intake.example/nodes",
        "http://intake.example/nodes",
    );
    assert_ne!(plain, BASE);
    let e = errors(&plain);
    assert!(
        e.iter()
            .any(|(line, _, m)| *line == 8 && m.contains("sent in clear over http://")),
        "{e:?}"
    );
    let allowed = plain.replace("failed: true}", "failed: true, insecure_http: true}");
    let checked = common::check(&allowed);
    assert!(checked.inventory.is_some(), "{:?}", errors(&allowed));
    assert!(
        checked
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning
                && d.message.contains("sent in clear")
                && d.message.contains("insecure_http")),
        "{:?}",
        checked.diagnostics
    );
    // A webhook without a token may use http:// freely.
    let tokenless = plain.replace(", token: {env: KILN_TEST_HOOK}", "");
    assert!(errors(&tokenless).is_empty(), "{:?}", errors(&tokenless));
}
