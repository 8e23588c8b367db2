//! kiln's Redfish client against the virtual rack (started in-process):
//! sessions, certificate pinning, retries on 503 with Retry-After, timeouts
//! on a hung BMC, the circuit breaker, and task monitors; and against a
//! scripted hostile BMC on loopback (`evil_bmc`): overflowing chunk sizes,
//! replies ended by a close without TLS close_notify, requests counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use kiln::bmc::client::{BmcClient, BmcError};
use kiln::bmc::transport::{Transport, TransportError, TransportOptions};
use kiln::secret::Secret;
use kiln::sim::{SimOptions, SimRack};

async fn rack(net: u8, nodes: usize, faults: &str) -> (SimRack, kiln::inventory::Inventory) {
    let mut list = String::new();
    for n in 1..=nodes {
        list.push_str(&format!(
            "      - {{name: c-n{n:02}, bmc: \"127.{net}.1.{n}:8443\", ssh: \"127.{net}.2.{n}:2222\"}}\n"
        ));
    }
    let text = format!(
        "site: client\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: ubuntu-24.04\n  bmc:\n    username: admin\n    password: {{env: KILN_TEST_BMC_PASSWORD}}\n  ssh:\n    user: kiln\nracks:\n  - name: r01\n    nodes:\n{list}"
    );
    let inventory = common::check(&text).inventory.expect("valid inventory");
    let options = SimOptions {
        faults: kiln::sim::faults::FaultPlan::parse("faults.yaml", faults).unwrap(),
        ssh: false,
        time_scale: 600.0,
        ..SimOptions::default()
    };
    let nodes: Vec<_> = inventory.nodes.iter().collect();
    let rack = kiln::sim::start(&inventory, &nodes, options).await.unwrap();
    (rack, inventory)
}

fn client(rack: &SimRack, i: usize, options: TransportOptions) -> BmcClient {
    let e = &rack.endpoints[i];
    let pin = e.bmc_fingerprint.replace(':', "").parse().unwrap();
    let tls = kiln::bmc::tls::pinned(pin).unwrap();
    let addr = e.bmc_url.trim_start_matches("https://");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let transport = Transport::new(host, port.parse().unwrap(), tls, options);
    BmcClient::new(
        &e.name,
        transport,
        &e.username,
        Secret::new(e.password.clone()),
    )
}

fn quick() -> TransportOptions {
    TransportOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(800),
        backoff: Duration::from_millis(20),
        ..TransportOptions::default()
    }
}

#[tokio::test]
async fn a_session_is_made_once_reused_and_deleted() {
    let (rack, _inv) = rack(250, 1, "").await;
    let c = client(&rack, 0, quick());
    let root = c.get("/redfish/v1").await.unwrap();
    assert!(root["Systems"]["@odata.id"].is_string());
    let sessions = c.get("/redfish/v1/SessionService/Sessions").await.unwrap();
    assert_eq!(sessions["Members"].as_array().unwrap().len(), 1);
    c.logout().await;
    // An independent look (basic auth from a fresh client) finds none left.
    let other = client(&rack, 0, quick());
    let sessions = other
        .get("/redfish/v1/SessionService/Sessions")
        .await
        .unwrap();
    assert_eq!(
        sessions["Members"].as_array().unwrap().len(),
        1,
        "only the checker's own session"
    );
    other.logout().await;
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_without_the_password() {
    let (rack, _inv) = rack(251, 1, "").await;
    let e = &rack.endpoints[0];
    let pin = e.bmc_fingerprint.replace(':', "").parse().unwrap();
    let addr = e.bmc_url.trim_start_matches("https://");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let t = Transport::new(
        host,
        port.parse().unwrap(),
        kiln::bmc::tls::pinned(pin).unwrap(),
        quick(),
    );
    let c = BmcClient::new(&e.name, t, "admin", Secret::new("hunter2-wrong"));
    let err = c.get("/redfish/v1/Systems").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("c-n01") && text.contains("refused"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn another_certificate_is_refused() {
    let (rack, _inv) = rack(252, 2, "").await;
    // Node 1's pin used for node 0's BMC.
    let e = &rack.endpoints[0];
    let wrong = rack.endpoints[1]
        .bmc_fingerprint
        .replace(':', "")
        .parse()
        .unwrap();
    let addr = e.bmc_url.trim_start_matches("https://");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let t = Transport::new(
        host,
        port.parse().unwrap(),
        kiln::bmc::tls::pinned(wrong).unwrap(),
        quick(),
    );
    let c = BmcClient::new(&e.name, t, "admin", Secret::new(e.password.clone()));
    let err = c.get("/redfish/v1").await.unwrap_err();
    assert!(
        matches!(
            &err,
            BmcError::Transport {
                source: TransportError::Untrusted { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("does not match the pinned"),
        "{err}"
    );
}

#[tokio::test]
async fn a_503_storm_is_ridden_out_honouring_retry_after() {
    let faults = "faults:\n  - nodes: c-n01\n    bmc_503_rate: 0.5\n    bmc_retry_after: 1s\n";
    let (rack, _inv) = rack(253, 1, faults).await;
    let c = client(&rack, 0, quick());
    let start = Instant::now();
    for _ in 0..4 {
        c.get("/redfish/v1/Systems").await.unwrap();
    }
    // Half the requests were refused; each retry waited the second asked for.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_hung_bmc_times_out_then_the_circuit_opens() {
    let faults = "faults:\n  - nodes: c-n01\n    bmc_hang: true\n";
    let (rack, _inv) = rack(254, 1, faults).await;
    let options = TransportOptions {
        attempts: 1,
        breaker_threshold: 2,
        ..quick()
    };
    let c = client(&rack, 0, options);
    for _ in 0..2 {
        let err = c.get("/redfish/v1").await.unwrap_err();
        assert!(err.to_string().contains("c-n01"), "{err}");
    }
    let start = Instant::now();
    let err = c.get("/redfish/v1").await.unwrap_err();
    assert!(
        matches!(
            &err,
            BmcError::Transport {
                source: TransportError::CircuitOpen { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn actions_that_answer_202_are_followed_to_the_end_of_their_task() {
    let (rack, _inv) = rack(255, 1, "").await;
    let c = client(&rack, 0, quick());
    let system = c.get("/redfish/v1/Systems").await.unwrap()["Members"][0]["@odata.id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Nothing serves this image: the BMC's insert task fails, and the
    // client reports the task's failure.
    let slot = format!("{system}/VirtualMedia/CD1");
    let err = c
        .action(
            &format!("{slot}/Actions/VirtualMedia.InsertMedia"),
            &serde_json::json!({"Image": "http://127.255.9.9:8080/none.iso"}),
            Duration::from_secs(20),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unable to mount"), "{err}");
    c.logout().await;
}

/// What the scripted BMC does with each request.
#[derive(Clone, Copy)]
enum Evil {
    /// Writes these bytes, then closes TCP without TLS close_notify.
    ReplyAndDrop(&'static [u8]),
    /// Writes these bytes, then up to 64 MiB more and holds the connection.
    ReplyAndFlood(&'static [u8]),
    /// Reads the request and never answers.
    Hang,
}

/// A BMC on 127.0.0.1 with a self-signed certificate that reads each
/// request whole (head and `Content-Length` body), logs its request line,
/// and behaves as told. It shares no code with kiln's client.
async fn evil_bmc(behaviour: Evil) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let tls = kiln::sim::tls::self_signed("evil", ip).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: the head, then its body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    seen.lock()
                        .unwrap()
                        .push(head.lines().next().unwrap_or_default().to_owned());
                    match behaviour {
                        Evil::ReplyAndDrop(bytes) => {
                            let _ = tls.write_all(bytes).await;
                            let _ = tls.flush().await;
                            // Dropped without `shutdown`: no close_notify.
                            return;
                        }
                        Evil::ReplyAndFlood(bytes) => {
                            let _ = tls.write_all(bytes).await;
                            let junk = vec![b'b'; 1 << 20];
                            for _ in 0..64 {
                                if tls.write_all(&junk).await.is_err() {
                                    return;
                                }
                            }
                            std::future::pending::<()>().await;
                        }
                        Evil::Hang => std::future::pending::<()>().await,
                    }
                }
            });
        }
    });
    (port, log)
}

/// A client for the scripted BMC, trusting any certificate as `kiln bmc
/// trust` does while it records one.
fn evil_client(port: u16, options: TransportOptions) -> BmcClient {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let tls = kiln::bmc::tls::recording(seen).unwrap();
    let t = Transport::new("127.0.0.1", port, tls, options);
    BmcClient::new("evil-n01", t, "admin", Secret::new("pw"))
}

#[tokio::test]
async fn an_overflowing_chunk_size_is_refused_not_buffered() {
    let (port, _) = evil_bmc(Evil::ReplyAndFlood(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n",
    ))
    .await;
    let c = evil_client(port, quick());
    let start = Instant::now();
    let err = c.get("/redfish/v1").await.unwrap_err();
    assert!(
        matches!(
            &err,
            BmcError::Transport {
                source: TransportError::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_error_without_length_or_close_notify_is_read_as_an_answer() {
    // A BMC's 404 for an optional resource: no length, the body ended by
    // closing TCP without TLS close_notify, as curl accepts it.
    let (port, log) = evil_bmc(Evil::ReplyAndDrop(
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n\
          {\"error\":{\"message\":\"PCIeDevices not found\"}}",
    ))
    .await;
    let c = evil_client(port, quick());
    let err = c
        .get("/redfish/v1/Chassis/1/PCIeDevices")
        .await
        .unwrap_err();
    assert!(err.is_absent(), "{err}");
    assert!(err.to_string().contains("PCIeDevices not found"), "{err}");
    let log = log.lock().unwrap();
    let gets = log.iter().filter(|l| l.starts_with("GET ")).count();
    assert_eq!(gets, 1, "answered once, not retried: {log:?}");
}

#[tokio::test]
async fn a_post_that_may_have_arrived_is_not_sent_again() {
    let (port, log) = evil_bmc(Evil::Hang).await;
    let options = TransportOptions {
        request_timeout: Duration::from_millis(300),
        attempts: 5,
        ..quick()
    };
    let c = evil_client(port, options);
    // The first request is the session POST.
    let err = c.get("/redfish/v1/Systems").await.unwrap_err();
    assert!(
        matches!(
            &err,
            BmcError::Transport {
                source: TransportError::Timeout { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.maybe_acted(), "{err}");
    let posts = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("POST "))
        .count();
    assert_eq!(posts, 1, "one session POST, not one per attempt");
}
