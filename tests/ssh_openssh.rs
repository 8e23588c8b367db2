//! kiln's SSH client against real OpenSSH (`sshd` from openssh-server,
//! started per test on its own loopback addresses in 127.60.0.0/16): every
//! key type, encrypted keys, the agent, hashed known_hosts, changed and
//! unknown host keys, a jump host, timeouts that kill, 100 MB of output in
//! bounded memory, sudo, copies.
//!
//! Skipped when sshd is missing, unless `KILN_REQUIRE_INTEROP` is set (CI
//! sets it), in which case a missing sshd fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sshd::{self, Sshd};
use common::{kiln, run};
use serde_json::Value;

const PORT: u16 = 2222;

/// One sshd on `127.60.NET.1..=n`, an inventory of nodes r01-n01… on
/// them using `key`, and a known_hosts trusting the server.
fn setup(net: u8, n: usize, ssh: &str) -> (Sshd, PathBuf, Vec<String>) {
    let ips: Vec<String> = (1..=n).map(|i| format!("127.60.{net}.{i}")).collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let server = Sshd::start(&refs, PORT, "");
    std::fs::write(
        server.dir.path().join("known_hosts"),
        server.known_hosts(&refs),
    )
    .unwrap();
    let names: Vec<String> = (1..=n).map(|i| format!("r01-n{i:02}")).collect();
    let nodes: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(refs.iter().copied())
        .collect();
    let inv = sshd::inventory(server.dir.path(), &nodes, PORT, ssh);
    (server, inv, names)
}

fn key_and_hosts(server: &Sshd, key: &Path) -> String {
    format!(
        ", key: {}, known_hosts: {}",
        key.display(),
        server.dir.path().join("known_hosts").display()
    )
}

fn exec_json(inv: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let mut cmd = kiln();
    cmd.arg("-i").arg(inv).args(["exec", "--json"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (code, out, err) = run(&mut cmd);
    let doc = serde_json::from_str(&out).unwrap_or(Value::Null);
    (code, doc, err)
}

#[test]
fn every_key_type_and_encrypted_keys() {
    if !sshd::available() {
        return;
    }
    let (server, _, _) = setup(1, 1, "");
    let dir = server.dir.path();
    for (key, env) in [
        (&server.keys.ed25519, None),
        (&server.keys.ecdsa, None),
        (&server.keys.rsa, None),
        (&server.keys.encrypted, Some(sshd::PASSPHRASE)),
    ] {
        let inv = sshd::inventory(
            dir,
            &[("r01-n01", "127.60.1.1")],
            PORT,
            &key_and_hosts(&server, key),
        );
        let env: Vec<(&str, &str)> = env
            .map(|p| ("KILN_SSH_PASSPHRASE", p))
            .into_iter()
            .collect();
        let (code, doc, err) = exec_json(&inv, &["--", "id -un; echo $LC_ALL"], &env);
        assert_eq!(code, 0, "{}: {err}\n{doc}", key.display());
        let node = &doc["nodes"][0];
        assert_eq!(node["stdout"], format!("{}\nC\n", sshd::user()), "{doc}");
        assert_eq!(node["exit_status"], 0);
    }
    // The encrypted key without its passphrase (no terminal to ask on),
    // and with a wrong one.
    let inv = sshd::inventory(
        dir,
        &[("r01-n01", "127.60.1.1")],
        PORT,
        &key_and_hosts(&server, &server.keys.encrypted),
    );
    let (code, doc, _) = exec_json(&inv, &["--", "true"], &[]);
    assert_eq!(code, 1);
    let error = doc["nodes"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("is encrypted: set KILN_SSH_PASSPHRASE"),
        "{error}"
    );
    let (code, doc, _) = exec_json(&inv, &["--", "true"], &[("KILN_SSH_PASSPHRASE", "wrong")]);
    assert_eq!(code, 1);
    assert!(
        doc["nodes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("wrong passphrase"),
        "{doc}"
    );
}

#[test]
fn ssh_agent_logs_in_without_a_key_file() {
    if !sshd::available() {
        return;
    }
    let (server, _, _) = setup(2, 1, "");
    let dir = server.dir.path();
    let sock = dir.join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "ssh-agent did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(&server.keys.rsa)
        .env("SSH_AUTH_SOCK", &sock)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    let hosts = format!(", known_hosts: {}", dir.join("known_hosts").display());
    let inv = sshd::inventory(dir, &[("r01-n01", "127.60.2.1")], PORT, &hosts);
    let (code, doc, err) = exec_json(
        &inv,
        &["--", "echo via-agent"],
        &[("SSH_AUTH_SOCK", sock.to_str().unwrap())],
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(code, 0, "{err}\n{doc}");
    assert_eq!(doc["nodes"][0]["stdout"], "via-agent\n");
}

#[test]
fn hashed_known_hosts_streaming_and_grouping() {
    if !sshd::available() {
        return;
    }
    let (server, _, _) = setup(3, 3, "");
    let dir = server.dir.path();
    let kh = dir.join("known_hosts");
    // OpenSSH hashes the file itself.
    assert!(
        Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&kh)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    assert!(std::fs::read_to_string(&kh).unwrap().starts_with("|1|"));
    let inv = sshd::inventory(
        dir,
        &[
            ("r01-n01", "127.60.3.1"),
            ("r01-n02", "127.60.3.2"),
            ("r01-n03", "127.60.3.3"),
        ],
        PORT,
        &key_and_hosts(&server, &server.keys.ed25519),
    );
    // One node differs: its output and its exit status.
    let script =
        "case $SSH_CONNECTION in *127.60.3.2*) echo odd; exit 3;; esac; echo same; echo warn >&2";
    let (code, out, err) = run(kiln().arg("-i").arg(&inv).args(["exec", "--", script]));
    assert_eq!(code, 1, "{out}\n{err}");
    for n in ["r01-n01", "r01-n03"] {
        assert!(out.contains(&format!("{n}: same\n")), "{out}");
        assert!(err.contains(&format!("{n}: warn\n")), "{err}");
    }
    assert!(out.contains("r01-n02: odd\n"), "{out}");
    assert!(out.contains("\nr01-n[01,03] (2)\n"), "{out}");
    assert!(out.contains("\nr01-n02 (1): exit status 3\n"), "{out}");
    assert!(
        err.contains("failed on 1 of 3 node(s): r01-n02\n  r01-n02 (exit status 3)"),
        "{err}"
    );
}

#[test]
fn changed_and_unknown_host_keys_are_refused() {
    if !sshd::available() {
        return;
    }
    let (server, _, _) = setup(4, 1, "");
    let dir = server.dir.path();
    let other = sshd::keygen(dir, "other_host", "ed25519", "");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_fp = {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(other.with_extension("pub"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, format!("[127.60.4.1]:{PORT} {other_pub}")).unwrap();
    let inv = sshd::inventory(
        dir,
        &[("r01-n01", "127.60.4.1")],
        PORT,
        &key_and_hosts(&server, &server.keys.ed25519),
    );
    let (code, _, err) = run(kiln().arg("-i").arg(&inv).args(["exec", "--", "true"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("r01-n01 (127.60.4.1:2222): HOST KEY CHANGED"),
        "{err}"
    );
    assert!(
        err.contains(&server.ed25519_fingerprint()) && err.contains(&other_fp),
        "{err}"
    );
    // Trust on first use does not override a changed key either.
    let (code, _, err) =
        run(kiln()
            .arg("-i")
            .arg(&inv)
            .args(["exec", "--accept-new-host-keys", "--", "true"]));
    assert_eq!(code, 1, "{err}");

    // Unknown: refused, until recorded explicitly with `kiln ssh trust`.
    std::fs::write(&kh, "").unwrap();
    let (code, _, err) = run(kiln().arg("-i").arg(&inv).args(["exec", "--", "true"]));
    assert_eq!(code, 1);
    assert!(err.contains("unknown host key SHA256:"), "{err}");
    assert!(err.contains("kiln ssh trust --select r01-n01"), "{err}");
    let (code, out, err) = run(kiln().arg("-i").arg(&inv).args(["ssh", "trust"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("recorded now"), "{out}");
    let store = std::fs::read_to_string(dir.join(".kiln/ssh_known_hosts")).unwrap();
    assert!(store.contains(&format!("[127.60.4.1]:{PORT} ")), "{store}");
    let (code, _, err) = run(kiln().arg("-i").arg(&inv).args(["exec", "--", "true"]));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn through_a_jump_host() {
    if !sshd::available() {
        return;
    }
    let (server, _, _) = setup(5, 2, "");
    let dir = server.dir.path();
    let ssh = format!(
        "{}, jump: \"{}@127.60.5.1:{PORT}\"",
        key_and_hosts(&server, &server.keys.ecdsa),
        sshd::user()
    );
    let inv = sshd::inventory(dir, &[("r01-n01", "127.60.5.2")], PORT, &ssh);
    let (code, doc, err) = exec_json(&inv, &["--", "echo behind the bastion"], &[]);
    assert_eq!(code, 0, "{err}\n{doc}");
    assert_eq!(doc["nodes"][0]["stdout"], "behind the bastion\n");
    // sshd on the bastion address forwarded the node's connection.
    let log = server.log();
    assert!(log.contains("target 127.60.5.2 port 2222"), "{log}");
}

/// Whether `pid` is still running (a zombie is not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn timeouts_kill_the_remote_process() {
    if !sshd::available() {
        return;
    }
    let (server, _, _) = setup(6, 1, "");
    let dir = server.dir.path();
    let inv = sshd::inventory(
        dir,
        &[("r01-n01", "127.60.6.1")],
        PORT,
        &key_and_hosts(&server, &server.keys.ed25519),
    );
    let pidfile = dir.join("child.pid");
    let script = format!(
        "sleep 300 & echo $! > {}; echo started; wait",
        pidfile.display()
    );
    let start = Instant::now();
    let (code, doc, err) = exec_json(&inv, &["--timeout", "1s", "--", &script], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    let node = &doc["nodes"][0];
    assert_eq!(node["timed_out"], true, "{doc}");
    assert_eq!(node["stdout"], "started\n");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let t = Instant::now();
    while alive(&pid) && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(&pid),
        "the remote command's child survived its timeout"
    );
}

#[test]
fn ctrl_c_stops_the_remote_commands() {
    if !sshd::available() {
        return;
    }
    // OpenSSH delivers signals only to sessions under privilege
    // separation, which it skips for root logins: log in as another user.
    let Some(user) = test_user() else {
        eprintln!("no test user (set KILN_TEST_SUDO_USER=1 as root): skipping");
        return;
    };
    let (server, _, _) = setup(10, 1, "");
    let dir = server.dir.path();
    let inv = sshd::inventory_as(
        dir,
        &[("r01-n01", "127.60.10.1")],
        PORT,
        user,
        &key_and_hosts(&server, &server.keys.ed25519),
    );
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let pidfile = shared.join("child.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("HOME", "/nonexistent-home")
        .env("KILN_BMC_PASSWORD", "x")
        .arg("-i")
        .arg(&inv)
        .args(["exec", "--", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let interrupted = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        interrupted.elapsed() < Duration::from_secs(5),
        "{:?}",
        interrupted.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("r01-n01 (interrupted)"), "{err}");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let t = Instant::now();
    while alive(&pid) && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    let signals: Vec<&str> = log.lines().filter(|l| l.contains("signal")).collect();
    assert!(
        !alive(&pid),
        "the remote command survived Ctrl-C; sshd: {signals:?}"
    );
}

/// Peak resident memory of a process, polled until it exits.
fn peak_rss_kib(child: &mut std::process::Child) -> u64 {
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            let rss = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            peak = peak.max(rss);
        }
        if child.try_wait().unwrap().is_some() {
            return peak;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_100_mb_output_streams_in_bounded_memory() {
    if !sshd::available() {
        return;
    }
    let (server, _, _) = setup(7, 1, "");
    let dir = server.dir.path();
    let inv = sshd::inventory(
        dir,
        &[("r01-n01", "127.60.7.1")],
        PORT,
        &key_and_hosts(&server, &server.keys.ed25519),
    );
    let out_file = dir.join("out.json");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("HOME", "/nonexistent-home")
        .env("KILN_BMC_PASSWORD", "x")
        .arg("-i")
        .arg(&inv)
        .args([
            "exec",
            "--json",
            "--",
            "yes 0123456789abcdef | head -c 100000000",
        ])
        .stdout(std::fs::File::create(&out_file).unwrap())
        .spawn()
        .unwrap();
    let peak = peak_rss_kib(&mut child);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let node = &doc["nodes"][0];
    assert_eq!(node["exit_status"], 0, "{}", node["error"]);
    assert_eq!(node["stdout_bytes"], 100_000_000u64);
    assert_eq!(node["stdout_truncated"], true);
    assert_eq!(node["stdout"].as_str().unwrap().len(), 1 << 20);
    eprintln!("kiln exec streamed 100 MB with a peak RSS of {peak} KiB");
    // 100 MB went through; kiln kept about 1 MiB of it.
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}

/// A user whose sudo asks for a password (`s3cret-pw`), made only where
/// the test may change the machine: CI (`KILN_REQUIRE_INTEROP`) or
/// `KILN_TEST_SUDO_USER=1`, running as root.
fn test_user() -> Option<&'static str> {
    if sshd::user() != "root"
        || (std::env::var_os("KILN_REQUIRE_INTEROP").is_none()
            && std::env::var_os("KILN_TEST_SUDO_USER").is_none())
    {
        return None;
    }
    let user = "kilnsudo";
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    if !quiet(Command::new("id").arg(user)) {
        // Two tests may get here at once: losing that race is fine.
        quiet(Command::new("useradd").args(["-m", "-s", "/bin/sh", user]));
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        chpasswd.stdin.as_mut().unwrap(),
        format!("{user}:s3cret-pw\n").as_bytes(),
    )
    .unwrap();
    assert!(chpasswd.wait().unwrap().success());
    std::fs::write("/etc/sudoers.d/kilnsudo", format!("{user} ALL=(ALL) ALL\n")).unwrap();
    Some(user)
}

#[test]
fn sudo() {
    if !sshd::available() {
        return;
    }
    if sshd::user() != "root" {
        eprintln!("not root: the sudo interop test needs a user it can make");
        return;
    }
    if Command::new("sudo")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_err()
        && common::skip_interop("sudo", Some("apt-get install sudo"))
    {
        return;
    }
    let (server, _, _) = setup(8, 1, "");
    let dir = server.dir.path();
    let ssh = key_and_hosts(&server, &server.keys.ed25519);
    let inv = sshd::inventory(dir, &[("r01-n01", "127.60.8.1")], PORT, &ssh);
    let (code, doc, err) = exec_json(
        &inv,
        &[
            "--sudo",
            "--",
            "id -u; cat /etc/shadow >/dev/null && echo can-read",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}\n{doc}");
    assert_eq!(doc["nodes"][0]["stdout"], "0\ncan-read\n");

    let Some(user) = test_user() else {
        return;
    };
    let inv = sshd::inventory_as(dir, &[("r01-n01", "127.60.8.1")], PORT, user, &ssh);
    let (code, doc, err) = exec_json(
        &inv,
        &["--sudo", "--", "id -u"],
        &[("KILN_SUDO_PASSWORD", "s3cret-pw")],
    );
    assert_eq!(code, 0, "{err}\n{doc}");
    assert_eq!(doc["nodes"][0]["stdout"], "0\n");
    let (code, doc, _) = exec_json(&inv, &["--sudo", "--", "id -u"], &[]);
    assert_eq!(code, 1);
    assert!(
        doc["nodes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("sudo asks for a password"),
        "{doc}"
    );
    let (code, doc, _) = exec_json(
        &inv,
        &["--sudo", "--", "id -u"],
        &[("KILN_SUDO_PASSWORD", "nope")],
    );
    assert_eq!(code, 1);
    assert!(
        doc["nodes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("sudo refused the password"),
        "{doc}"
    );
}

#[test]
fn copy_up_and_down() {
    if !sshd::available() {
        return;
    }
    let (server, _, _) = setup(9, 2, "");
    let dir = server.dir.path();
    let inv = sshd::inventory(
        dir,
        &[("r01-n01", "127.60.9.1"), ("r01-n02", "127.60.9.2")],
        PORT,
        &key_and_hosts(&server, &server.keys.ed25519),
    );
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = dir.join("payload.bin");
    std::fs::write(&local, &data).unwrap();
    std::fs::set_permissions(&local, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
    // A hostile remote name: spaces, a quote, a `$(…)`.
    let remote_dir = dir.join("remote $(touch pwned) dir");
    std::fs::create_dir(&remote_dir).unwrap();
    let remote = remote_dir.join("it's here.bin");
    let (code, out, err) = run(kiln()
        .arg("-i")
        .arg(&inv)
        .args(["copy", "-s", "r01-n01"])
        .arg(&local)
        .arg(&remote));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(std::fs::read(&remote).unwrap(), data);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&remote).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o750);
    assert!(!dir.join("pwned").exists() && !Path::new("pwned").exists());

    let down = dir.join("down");
    let (code, out, err) = run(kiln()
        .arg("-i")
        .arg(&inv)
        .args(["copy", "--json", "--download"])
        .arg(&remote)
        .arg(&down));
    assert_eq!(code, 0, "{out}\n{err}");
    for n in ["r01-n01", "r01-n02"] {
        assert_eq!(
            std::fs::read(down.join(n).join("it's here.bin")).unwrap(),
            data
        );
    }
    // A missing remote file fails that node, names it, and leaves no file.
    let (code, _, err) = run(kiln()
        .arg("-i")
        .arg(&inv)
        .args(["copy", "--download", "/nonexistent/x.log"])
        .arg(&down));
    assert_eq!(code, 1);
    assert!(
        err.contains("copy failed on 2 of 2 node(s): r01-n[01-02]"),
        "{err}"
    );
    assert!(!down.join("r01-n01/x.log").exists());
}
