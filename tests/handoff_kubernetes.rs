//! The Kubernetes target against a recorded exchange: no API server can be
//! installed from the package registries here, so an in-test HTTP server
//! (hyper, not kiln's client) replays `tests/fixtures/handoff/
//! k8s-exchange.json` and checks each request kiln makes — method, path,
//! bearer token, content type and the JSON body — against the recording.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kiln::handoff::http::Url;
use kiln::handoff::kubernetes::{Action, deliver};
use kiln::inventory::handoff::KubernetesTarget;
use kiln::pipeline::record::StepStatus;
use kiln::secret::SecretRef;
use serde_json::Value;

struct Replay {
    exchanges: Vec<Value>,
    next: usize,
    problems: Vec<String>,
}

async fn serve(replay: Arc<Mutex<Replay>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.88.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let replay = Arc::clone(&replay);
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let replay = Arc::clone(&replay);
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().to_string();
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let kind = req
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut r = replay.lock().unwrap();
                        let Some(ex) = r.exchanges.get(r.next).cloned() else {
                            r.problems.push(format!("unexpected {method} {path}"));
                            return Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(500)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            );
                        };
                        r.next += 1;
                        let want = &ex["request"];
                        let mut check = |what: &str, got: Option<&str>, want: Option<&str>| {
                            if got != want {
                                r.problems.push(format!(
                                    "{method} {path}: {what} {got:?}, recorded {want:?}"
                                ));
                            }
                        };
                        check("method", Some(&method), want["method"].as_str());
                        check("path", Some(&path), want["path"].as_str());
                        check("authorization", auth.as_deref(), Some("Bearer kube-token"));
                        check(
                            "content-type",
                            kind.as_deref(),
                            want["content_type"].as_str(),
                        );
                        if let Some(expected) = want.get("body") {
                            let got: Value = serde_json::from_slice(&body).unwrap_or_default();
                            if &got != expected {
                                r.problems.push(format!(
                                    "{method} {path}: body {got}, recorded {expected}"
                                ));
                            }
                        }
                        let resp = &ex["response"];
                        Ok(hyper::Response::builder()
                            .status(resp["status"].as_u64().unwrap() as u16)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(resp["body"].to_string())))
                            .unwrap())
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn api_calls_match_the_recorded_exchange() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/handoff/k8s-exchange.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let replay = Arc::new(Mutex::new(Replay {
        exchanges: fixture["exchanges"].as_array().unwrap().clone(),
        next: 0,
        problems: Vec::new(),
    }));
    let addr = serve(Arc::clone(&replay)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "kube-token\n").unwrap();
    let target = KubernetesTarget {
        api: Url::parse(&format!("http://{addr}")).unwrap(),
        token: SecretRef::File(token),
        ca: None,
        labels: BTreeMap::from([("pool".into(), "h100".into())]),
        taints: vec!["kiln/burnin=done:NoSchedule".parse().unwrap()],
        join: None,
        insecure_http: true,
    };
    let run = "20261125-030000-ab12";
    let mut labels = BTreeMap::from([("site".to_owned(), "simtest".to_owned())]);
    labels.extend(target.labels.clone());

    // Accepted: labelled, tainted, uncordoned, annotated.
    let o = deliver(
        &target,
        "t-n01",
        run,
        Action::Accept {
            labels: &labels,
            remote: None,
        },
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert_eq!(o.status, StepStatus::Done, "{o:?}");
    assert!(o.detail.contains("uncordoned"), "{}", o.detail);

    // Failed: stays cordoned, with the reason.
    let reason = "kiln: nccl busbw 310 < 440 GB/s";
    let o = deliver(
        &target,
        "t-n02",
        run,
        Action::Reject {
            verdict: "failed",
            reason,
        },
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert_eq!(o.status, StepStatus::Done, "{o:?}");

    // A node the cluster does not know: nothing to give back.
    let o = deliver(
        &target,
        "t-n04",
        run,
        Action::Reject {
            verdict: "failed",
            reason,
        },
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert_eq!(o.status, StepStatus::Skipped, "{o:?}");

    let r = replay.lock().unwrap();
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    assert_eq!(r.next, r.exchanges.len(), "every recorded request was made");
}

#[tokio::test]
async fn an_absent_node_without_a_join_is_an_error_naming_it() {
    let replay = Arc::new(Mutex::new(Replay {
        exchanges: vec![serde_json::json!({
            "request": {"method": "GET", "path": "/api/v1/nodes/t-n05"},
            "response": {"status": 404, "body": {"kind": "Status", "code": 404}}
        })],
        next: 0,
        problems: Vec::new(),
    }));
    let addr = serve(Arc::clone(&replay)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "kube-token").unwrap();
    let target = KubernetesTarget {
        api: Url::parse(&format!("http://{addr}")).unwrap(),
        token: SecretRef::File(token),
        ca: None,
        labels: BTreeMap::new(),
        taints: Vec::new(),
        join: None,
        insecure_http: true,
    };
    let e = deliver(
        &target,
        "t-n05",
        "run",
        Action::Accept {
            labels: &BTreeMap::new(),
            remote: None,
        },
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(format!("{e:#}").contains("t-n05 is not a member"), "{e:#}");
}

/// The join's bootstrap token must reach nothing but the node's stdin: not
/// the error the step records (journal, reports, terminal), even when the
/// SSH connection dies mid-join and the error names the command.
#[test]
fn a_failed_join_never_shows_its_token() {
    use common::simrack::{Rack, RackSpec};
    let rack = Rack::start(RackSpec {
        net: 87,
        nodes: 1,
        time_scale: 1,
        faults: Some("faults:\n  - nodes: \"t-n01\"\n    ssh_drop_after: 0s\n"),
        ..RackSpec::default()
    });
    let secret = "abcdef.0123456789abcdef";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let replay = Arc::new(Mutex::new(Replay {
            exchanges: vec![serde_json::json!({
                "request": {"method": "GET", "path": "/api/v1/nodes/t-n01"},
                "response": {"status": 404, "body": {"kind": "Status", "code": 404}}
            })],
            next: 0,
            problems: Vec::new(),
        }));
        let addr = serve(Arc::clone(&replay)).await;
        let dir = tempfile::tempdir().unwrap();
        let api_token = dir.path().join("token");
        std::fs::write(&api_token, "kube-token").unwrap();
        let join_token = dir.path().join("join-token");
        std::fs::write(&join_token, secret).unwrap();
        let target = KubernetesTarget {
            api: Url::parse(&format!("http://{addr}")).unwrap(),
            token: SecretRef::File(api_token),
            ca: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            join: Some(kiln::inventory::handoff::JoinSpec {
                endpoint: "10.0.0.1:6443".into(),
                token: SecretRef::File(join_token),
                ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
            }),
            insecure_http: true,
        };
        let addr = rack.nodes[0]["ssh"].as_str().unwrap();
        let (host, port) = addr.rsplit_once(':').unwrap();
        let node = kiln::ssh::Target {
            node: "t-n01".into(),
            host: host.to_owned(),
            port: port.parse().unwrap(),
            user: "kiln".into(),
            key: Some(rack.key()),
            known_hosts: Some(rack.dir.path().join("known_hosts")),
            jump: None,
        };
        let pool = kiln::ssh::Pool::new(kiln::ssh::Client::new(
            Arc::new(kiln::ssh::hostkeys::Verifier::new(Vec::new(), None, false)),
            Arc::new(kiln::ssh::auth::Credentials::new()),
            kiln::ssh::ClientOptions::default(),
        ));
        pool.wait_for_ssh(&node, Duration::from_secs(20))
            .await
            .unwrap();
        let remote = kiln::ssh::Remote::Ssh {
            pool: Arc::new(pool),
            target: node,
        };
        let e = deliver(
            &target,
            "t-n01",
            "run",
            Action::Accept {
                labels: &BTreeMap::new(),
                remote: Some(&remote),
            },
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        // What the step records in the journal and every report shows.
        let recorded = kiln::pipeline::step::error_text(&e);
        assert!(
            recorded.contains("connection lost while running"),
            "{recorded}"
        );
        for shown in [recorded, format!("{e:#}"), format!("{e:?}")] {
            assert!(!shown.contains(secret), "the token leaked: {shown}");
        }
    });
}
