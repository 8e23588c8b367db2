//! The boot server's listener limits: stalled request heads are cut off,
//! connections past the cap wait, an unspecified bind needs
//! `--advertise`, a weak boot-server secret is refused. Addresses:
//! 127.233.0.x.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kiln::imaging::server::BootServer;
use kiln::listen::Limits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Reads until the server closes; `None` if it has not within `wait`.
async fn until_closed(tcp: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    match tokio::time::timeout(wait, tcp.read_to_end(&mut got)).await {
        Ok(_) => Some(got), // EOF or reset: closed either way.
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_heads_and_idle_keep_alive_are_closed() {
    let limits = Limits {
        header_read: Duration::from_secs(1),
        ..Limits::default()
    };
    let server = BootServer::start_with("127.233.0.1:0".parse().unwrap(), None, limits)
        .await
        .unwrap();
    let mut half_open = Vec::new();
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        tcp.write_all(b"GET /iso/x HTTP/1.1\r\nHost: kiln\r\n")
            .await
            .unwrap();
        half_open.push(tcp);
    }
    // One finished request, then nothing: the kept-alive connection waits
    // for its next head under the same timeout.
    let mut kept = TcpStream::connect(server.addr()).await.unwrap();
    kept.write_all(b"GET /nope HTTP/1.1\r\nHost: kiln\r\n\r\n")
        .await
        .unwrap();
    // Generous: the point is that they close at all (without a timer they
    // never did), not how fast.
    for tcp in &mut half_open {
        assert!(
            until_closed(tcp, Duration::from_secs(20)).await.is_some(),
            "a half-open connection is still open"
        );
    }
    let answer = until_closed(&mut kept, Duration::from_secs(20))
        .await
        .expect("an idle kept-alive connection is still open");
    assert!(answer.starts_with(b"HTTP/1.1 404"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_a_slot() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = BootServer::start_with("127.233.0.2:0".parse().unwrap(), None, limits)
        .await
        .unwrap();
    let first = TcpStream::connect(server.addr()).await.unwrap();
    let _second = TcpStream::connect(server.addr()).await.unwrap();
    let mut third = TcpStream::connect(server.addr()).await.unwrap();
    third
        .write_all(b"GET /nope HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte))
            .await
            .is_err(),
        "a third connection was served while two held the cap"
    );
    drop(first);
    let answer = until_closed(&mut third, Duration::from_secs(20))
        .await
        .expect("the waiting connection was never served");
    assert!(answer.starts_with(b"HTTP/1.1 404"), "{answer:?}");
}

#[test]
fn serve_on_every_address_needs_advertise() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("KILN_INVENTORY")
        .args(["serve", "--bind", "0.0.0.0:0", "--duration", "1s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("every address") && err.contains("--advertise"),
        "{err}"
    );
}

#[test]
fn weak_boot_server_secret_is_refused() {
    use kiln::imaging::hostkeys;
    let dir = tempfile::tempdir().unwrap();
    let key = hostkeys::load_or_create(dir.path(), "n1").unwrap();
    // The one kiln makes passes, and is kept.
    let token = hostkeys::node_token(dir.path(), "n1", &key).unwrap();
    assert_eq!(hostkeys::node_token(dir.path(), "n1", &key).unwrap(), token);
    let file = dir.path().join("bootserver.secret");
    for weak in ["", "\n", "0123456789abcdef"] {
        std::fs::write(&file, weak).unwrap();
        let e = hostkeys::node_token(dir.path(), "n1", &key).unwrap_err();
        assert!(e.to_string().contains("too short"), "{e}");
    }
}
