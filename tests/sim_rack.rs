//! The virtual rack, judged through real protocols: curl for Redfish over
//! HTTPS, OpenSSH for the nodes, Python's http.server as the boot server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::simrack::{FileServer, Rack, RackSpec};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// How long a poll for a state the rack reaches quickly may take.
const POLL_LIMIT: Duration = Duration::from_secs(20);

fn reset(rack: &Rack, i: usize, kind: &str) -> u16 {
    let target = format!("{}/Actions/ComputerSystem.Reset", rack.system(i));
    rack.curl(
        i,
        "POST",
        &target,
        Some(&format!("{{\"ResetType\":\"{kind}\"}}")),
    )
    .0
}

fn power_state(rack: &Rack, i: usize) -> String {
    rack.get(i, &rack.system(i))["PowerState"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn redfish_needs_credentials_except_for_the_service_root() {
    let rack = Rack::start(RackSpec {
        net: 201,
        ..RackSpec::default()
    });
    let (code, _) = rack.curl_with(0, "GET", "/redfish/v1", None, &[]);
    assert_eq!(code, 200);
    let (code, body) = rack.curl_with(0, "GET", "/redfish/v1/Systems", None, &[]);
    assert_eq!(code, 401, "{body}");
    let (code, _) = rack.curl_with(
        0,
        "GET",
        "/redfish/v1/Systems",
        None,
        &["-u", "admin:wrong"],
    );
    assert_eq!(code, 401);
    // A session: token in, token works, deleted, token refused.
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "-i",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-d", r#"{"UserName":"admin","Password":"test"}"#])
        .arg(format!(
            "{}/redfish/v1/SessionService/Sessions",
            rack.bmc(0)
        ))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(": ")?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap()
    };
    let token = header("x-auth-token");
    let location = header("location");
    let auth = format!("X-Auth-Token: {token}");
    let (code, _) = rack.curl_with(0, "GET", "/redfish/v1/Systems", None, &["-H", &auth]);
    assert_eq!(code, 200);
    let (code, _) = rack.curl_with(0, "DELETE", &location, None, &["-H", &auth]);
    assert_eq!(code, 204);
    let (code, _) = rack.curl_with(0, "GET", "/redfish/v1/Systems", None, &["-H", &auth]);
    assert_eq!(code, 401);
}

#[test]
fn the_certificate_is_the_one_announced_and_tls12_and_13_both_work() {
    let rack = Rack::start(RackSpec {
        net: 202,
        ..RackSpec::default()
    });
    let announced = rack.nodes[0]["bmc_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    for version in ["--tlsv1.2", "--tlsv1.3"] {
        let max = if version == "--tlsv1.2" { "1.2" } else { "1.3" };
        let (code, _) = rack.curl_with(0, "GET", "/redfish/v1", None, &[version, "--tls-max", max]);
        assert_eq!(code, 200, "{version}");
    }
    let addr = rack.bmc(0).trim_start_matches("https://").to_owned();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains('=') {
        assert_eq!(text.trim().rsplit('=').next().unwrap(), announced);
    }
}

#[test]
fn power_off_drops_ssh_and_power_on_boots_the_installed_os() {
    let rack = Rack::start(RackSpec {
        net: 203,
        ..RackSpec::default()
    });
    let (code, out, err) = rack.ssh(0, "echo up; hostname 2>/dev/null; echo $HOME");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("up\n"));
    // A long command is cut off by a power loss.
    let node = rack.nodes[0]["ssh"].as_str().unwrap().to_owned();
    let long = std::thread::spawn({
        let key = rack.key();
        let known = rack.dir.path().join("known_hosts");
        move || {
            let (ip, port) = node.rsplit_once(':').unwrap();
            let start = Instant::now();
            let status = std::process::Command::new("ssh")
                .arg("-i")
                .arg(key)
                .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o"])
                .arg(format!("UserKnownHostsFile={}", known.display()))
                .args([
                    "-p",
                    port,
                    &format!("kiln@{ip}"),
                    "touch long-started; sleep 30",
                ])
                .status()
                .unwrap();
            (status.code(), start.elapsed())
        }
    });
    rack.wait_until("the long command to start", POLL_LIMIT, || {
        rack.ssh(0, "test -e long-started").0 == 0
    });
    assert_eq!(reset(&rack, 0, "ForceOff"), 204);
    let (code, took) = long.join().unwrap();
    assert_ne!(code, Some(0));
    assert!(
        took < Duration::from_secs(20),
        "the session outlived the power: {took:?}"
    );
    rack.wait_until("power state Off", POLL_LIMIT, || {
        power_state(&rack, 0) == "Off"
    });
    assert_eq!(power_state(&rack, 0), "Off");
    let (code, _, _) = rack.ssh(0, "true");
    assert_eq!(code, 255, "SSH answers on a powered-off node");
    assert_eq!(reset(&rack, 0, "On"), 204);
    rack.wait_until("SSH after power on", WAIT, || rack.ssh(0, "true").0 == 0);
}

#[test]
fn reset_types_are_checked_against_the_flavour() {
    let rack = Rack::start(RackSpec {
        net: 204,
        flavour: "hpe",
        ..RackSpec::default()
    });
    // iLO has no PowerCycle; the error names the allowed values.
    let target = format!("{}/Actions/ComputerSystem.Reset", rack.system(0));
    let (code, body) = rack.curl(0, "POST", &target, Some(r#"{"ResetType":"PowerCycle"}"#));
    assert_eq!(code, 400);
    assert!(
        body.contains("ActionParameterValueNotInList") && body.contains("GracefulRestart"),
        "{body}"
    );
}

#[test]
fn boot_override_accepts_only_allowed_values() {
    let rack = Rack::start(RackSpec {
        net: 205,
        flavour: "lenovo",
        ..RackSpec::default()
    });
    let system = rack.system(0);
    // XCC knows only Once and Disabled, and no UEFI HTTP boot.
    let (code, _) = rack.curl(
        0,
        "PATCH",
        &system,
        Some(r#"{"Boot":{"BootSourceOverrideEnabled":"Continuous"}}"#),
    );
    assert_eq!(code, 400);
    let (code, _) = rack.curl(
        0,
        "PATCH",
        &system,
        Some(r#"{"Boot":{"BootSourceOverrideTarget":"UefiHttp"}}"#),
    );
    assert_eq!(code, 400);
    let (code, _) = rack.curl(
        0,
        "PATCH",
        &system,
        Some(r#"{"Boot":{"BootSourceOverrideTarget":"Cd","BootSourceOverrideEnabled":"Once"}}"#),
    );
    assert_eq!(code, 204);
    let boot = &rack.get(0, &system)["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Cd");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Once");
    let (code, _) = rack.curl(0, "PATCH", &system, Some(r#"{"PowerState":"Off"}"#));
    assert_eq!(code, 400);
}

#[test]
fn supermicro_wants_if_match_on_patch() {
    let rack = Rack::start(RackSpec {
        net: 206,
        flavour: "supermicro",
        ..RackSpec::default()
    });
    let system = rack.system(0);
    let body = r#"{"Boot":{"BootSourceOverrideTarget":"Hdd"}}"#;
    let (code, _) = rack.curl(0, "PATCH", &system, Some(body));
    assert_eq!(code, 428);
    let (code, _) = rack.curl_with(
        0,
        "PATCH",
        &system,
        Some(body),
        &["-u", "admin:test", "-H", "If-Match: W/\"stale\""],
    );
    assert_eq!(code, 412);
    let (code, _) = rack.curl_with(
        0,
        "PATCH",
        &system,
        Some(body),
        &["-u", "admin:test", "-H", "If-Match: *"],
    );
    assert_eq!(code, 204);
}

/// Writes a fake installer ISO whose boot menu passes a NoCloud seed, and
/// the seed itself, as kiln's boot server would serve them.
fn boot_files(dir: &std::path::Path, seed_url: &str, pubkey: &str, host_key: Option<(&str, &str)>) {
    let mut iso = vec![0u8; 64 * 1024];
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    iso.extend_from_slice(
        format!("menuentry 'Install' {{\n  linux /casper/vmlinuz autoinstall ds=nocloud\\;s={seed_url} ---\n}}\n").as_bytes(),
    );
    iso.extend(vec![0u8; 4096]);
    std::fs::write(dir.join("installer.iso"), iso).unwrap();
    std::fs::write(dir.join("blank.iso"), vec![0u8; 70_000]).unwrap();
    let seed = dir.join("seed/t-n01");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(
        seed.join("meta-data"),
        "instance-id: t-n01\nlocal-hostname: t-n01\n",
    )
    .unwrap();
    let mut user = format!("#cloud-config\nssh_authorized_keys:\n  - {pubkey}\n");
    if let Some((private, public)) = host_key {
        user.push_str("ssh_keys:\n  ed25519_private: |\n");
        for line in private.lines() {
            user.push_str(&format!("    {line}\n"));
        }
        user.push_str(&format!("  ed25519_public: {public}\n"));
    }
    std::fs::write(seed.join("user-data"), user).unwrap();
}

fn host_key(dir: &std::path::Path) -> (String, String) {
    let path = dir.join("host_ed25519");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success());
    (
        std::fs::read_to_string(&path).unwrap(),
        std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned(),
    )
}

/// Inserts media the flavour's way; returns the HTTP status.
fn insert(rack: &Rack, slot: &str, image: &str, by_patch: bool) -> u16 {
    if by_patch {
        let body = format!(r#"{{"Image":"{image}","Inserted":true}}"#);
        return rack.curl(0, "PATCH", slot, Some(&body)).0;
    }
    let body = format!(r#"{{"Image":"{image}"}}"#);
    let (code, reply) = rack.curl(
        0,
        "POST",
        &format!("{slot}/Actions/VirtualMedia.InsertMedia"),
        Some(&body),
    );
    if code != 202 {
        return code;
    }
    // A task: poll its monitor until it is done.
    let task: Value = serde_json::from_str(&reply).unwrap();
    let monitor = task["TaskMonitor"].as_str().unwrap().to_owned();
    let start = Instant::now();
    loop {
        let (code, _) = rack.curl(0, "GET", &monitor, None);
        if code != 202 || start.elapsed() > WAIT {
            return code;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cd_slot(rack: &Rack) -> String {
    for owner in ["/redfish/v1/Managers", "/redfish/v1/Systems"] {
        let first = rack.get(0, owner)["Members"][0]["@odata.id"]
            .as_str()
            .unwrap()
            .trim_end_matches('/')
            .to_owned();
        let (code, body) = rack.curl(0, "GET", &format!("{first}/VirtualMedia"), None);
        if code != 200 {
            continue;
        }
        let members: Value = serde_json::from_str(&body).unwrap();
        for m in members["Members"].as_array().unwrap() {
            let path = m["@odata.id"]
                .as_str()
                .unwrap()
                .trim_end_matches('/')
                .to_owned();
            let slot = rack.get(0, &path);
            if slot["MediaTypes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "CD" || t == "DVD")
            {
                return path;
            }
        }
    }
    panic!("no CD slot");
}

fn install_over_virtual_media(flavour: &str, net: u8, by_patch: bool) {
    let rack = Rack::start(RackSpec {
        net,
        flavour,
        imaged: false,
        ..RackSpec::default()
    });
    let files = tempfile::tempdir().unwrap();
    let server_ip = format!("127.{net}.9.1");
    let pubkey = std::fs::read_to_string(rack.key().with_extension("pub")).unwrap();
    let (private, public) = host_key(files.path());
    let seed_url = format!("http://{server_ip}:8080/seed/t-n01/");
    boot_files(
        files.path(),
        &seed_url,
        pubkey.trim(),
        Some((&private, &public)),
    );
    let server = FileServer::start(files.path(), &server_ip);

    // A blank node powered on finds nothing to boot and never answers SSH.
    assert_eq!(power_state(&rack, 0), "Off");
    let slot = cd_slot(&rack);
    // An image the BMC cannot fetch is refused.
    let missing = insert(
        &rack,
        &slot,
        &format!("{}/missing.iso", server.url),
        by_patch,
    );
    assert!(missing >= 400, "inserting a missing image gave {missing}");
    assert_eq!(rack.get(0, &slot)["Inserted"], false);

    assert!(matches!(
        insert(
            &rack,
            &slot,
            &format!("{}/installer.iso", server.url),
            by_patch
        ),
        200 | 204
    ));
    let media = rack.get(0, &slot);
    assert_eq!(media["Inserted"], true, "{media}");
    let system = rack.system(0);
    let (code, body) = rack.curl(
        0,
        "PATCH",
        &system,
        Some(r#"{"Boot":{"BootSourceOverrideTarget":"Cd","BootSourceOverrideEnabled":"Once"}}"#),
    );
    assert!(matches!(code, 200 | 204), "{code} {body}");
    assert_eq!(reset(&rack, 0, "On"), 204);

    // Verify the host key the seed gave, not one the simulator made up.
    let known = files.path().join("known_hosts");
    let addr = rack.nodes[0]["ssh"].as_str().unwrap();
    let (ip, port) = addr.rsplit_once(':').unwrap();
    std::fs::write(&known, format!("[{ip}]:{port} {public}\n")).unwrap();
    rack.wait_until("SSH after install", WAIT, || {
        rack.ssh_known(0, "true", &known).0 == 0
    });
    // The one-time override was used up.
    assert_eq!(
        rack.get(0, &system)["Boot"]["BootSourceOverrideEnabled"],
        "Disabled"
    );
}

#[test]
fn generic_bmc_installs_from_virtual_media_inserted_by_action_with_a_task() {
    install_over_virtual_media("generic", 207, false);
}

#[test]
fn lenovo_bmc_installs_from_virtual_media_inserted_by_patch() {
    install_over_virtual_media("lenovo", 208, true);
}

#[test]
fn dell_refuses_optional_insert_parameters() {
    let rack = Rack::start(RackSpec {
        net: 209,
        flavour: "dell",
        ..RackSpec::default()
    });
    let slot = cd_slot(&rack);
    let (code, body) = rack.curl(
        0,
        "POST",
        &format!("{slot}/Actions/VirtualMedia.InsertMedia"),
        Some(r#"{"Image":"http://127.209.9.1:8080/x.iso","Inserted":true,"WriteProtected":true}"#),
    );
    assert_eq!(code, 400);
    assert!(body.contains("ActionParameterNotSupported"), "{body}");
}

#[test]
fn a_blank_node_without_boot_media_never_answers_ssh() {
    let rack = Rack::start(RackSpec {
        net: 210,
        imaged: false,
        ..RackSpec::default()
    });
    assert_eq!(reset(&rack, 0, "On"), 204);
    // POST plus OS boot take 210 simulated seconds, 0.35 s at this scale:
    // SSH must stay silent well past that.
    rack.wait_until("power state On", POLL_LIMIT, || {
        power_state(&rack, 0) == "On"
    });
    rack.holds_for("no SSH on a blank node", Duration::from_secs(2), || {
        rack.ssh(0, "true").0 == 255
    });
    assert_eq!(power_state(&rack, 0), "On");
}

#[test]
fn bmc_faults_show_as_a_real_bmc_shows_them() {
    let faults = "faults:\n  - nodes: t-n01\n    bmc_503_rate: 0.5\n    bmc_retry_after: 3s\n  - nodes: t-n02\n    bmc_hang: true\n  - nodes: t-n03\n    bmc_latency: 300ms\n  - nodes: t-n04\n    media_insert_failures: 2\n";
    let rack = Rack::start(RackSpec {
        net: 211,
        nodes: 4,
        faults: Some(faults),
        ..RackSpec::default()
    });
    // Half the requests of n01 get 503 with Retry-After.
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(rack.curl(0, "GET", "/redfish/v1/Systems", None).0);
    }
    assert_eq!(codes.iter().filter(|c| **c == 503).count(), 5, "{codes:?}");
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-D", "-", "-u", "admin:test"])
        .arg(format!("{}/redfish/v1/Systems", rack.bmc(0)))
        .output()
        .unwrap();
    let mut saw_retry_after = String::from_utf8_lossy(&out.stdout)
        .to_lowercase()
        .contains("retry-after: 3");
    if !saw_retry_after {
        let again = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-D", "-", "-u", "admin:test"])
            .arg(format!("{}/redfish/v1/Systems", rack.bmc(0)))
            .output()
            .unwrap();
        saw_retry_after = String::from_utf8_lossy(&again.stdout)
            .to_lowercase()
            .contains("retry-after: 3");
    }
    assert!(saw_retry_after);
    // n02 accepts the connection and never answers.
    let start = Instant::now();
    let (code, _) = rack.curl_with(1, "GET", "/redfish/v1", None, &["--max-time", "1"]);
    assert_eq!(code, 0);
    assert!(start.elapsed() >= Duration::from_millis(900));
    // n03 is slow.
    let start = Instant::now();
    assert_eq!(rack.curl(2, "GET", "/redfish/v1", None).0, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
    // n04 fails two inserts, then mounts.
    let slot_of_n04 = {
        let systems = rack.get(3, "/redfish/v1/Systems");
        let system = systems["Members"][0]["@odata.id"]
            .as_str()
            .unwrap()
            .to_owned();
        format!("{system}/VirtualMedia/CD1")
    };
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("x.iso"), b"not an installer").unwrap();
    let server = FileServer::start(files.path(), "127.211.9.1");
    let body = format!(r#"{{"Image":"{}/x.iso"}}"#, server.url);
    let target = format!("{slot_of_n04}/Actions/VirtualMedia.InsertMedia");
    assert_eq!(rack.curl(3, "POST", &target, Some(&body)).0, 500);
    assert_eq!(rack.curl(3, "POST", &target, Some(&body)).0, 500);
    assert_eq!(rack.curl(3, "POST", &target, Some(&body)).0, 202);
}

#[test]
fn host_faults_boot_hang_and_ssh_drop() {
    let faults = "faults:\n  - nodes: t-n01\n    ssh_drop_after: 60s\n  - nodes: t-n02\n    boot_hang: true\n";
    let rack = Rack::start(RackSpec {
        net: 212,
        nodes: 2,
        faults: Some(faults),
        time_scale: 60,
        ..RackSpec::default()
    });
    // 60 simulated seconds is one real second: a 5 s command is cut.
    let start = Instant::now();
    let (code, _, _) = rack.ssh(0, "sleep 5; echo done");
    assert_eq!(code, 255);
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_eq!(rack.ssh(0, "echo quick").0, 0);
    // n02 is running now (imaged), but hangs when it boots again.
    assert_eq!(rack.ssh(1, "true").0, 0);
    assert_eq!(reset(&rack, 1, "ForceRestart"), 204);
    rack.wait_until("power state On", POLL_LIMIT, || {
        power_state(&rack, 1) == "On"
    });
    rack.holds_for("n02 to stay hung", Duration::from_secs(5), || {
        rack.ssh(1, "true").0 == 255
    });
    assert_eq!(power_state(&rack, 1), "On");
}

#[test]
fn lenovo_force_restart_hangs_until_force_off_and_on() {
    let rack = Rack::start(RackSpec {
        net: 213,
        flavour: "lenovo",
        ..RackSpec::default()
    });
    assert_eq!(reset(&rack, 0, "ForceRestart"), 204);
    rack.holds_for(
        "the node to hang after ForceRestart",
        Duration::from_secs(2),
        || rack.ssh(0, "true").0 == 255,
    );
    assert_eq!(reset(&rack, 0, "ForceOff"), 204);
    assert_eq!(reset(&rack, 0, "On"), 204);
    rack.wait_until("SSH after ForceOff + On", WAIT, || {
        rack.ssh(0, "true").0 == 0
    });
}

#[test]
fn commands_run_in_a_real_shell_in_the_sandbox() {
    let rack = Rack::start(RackSpec {
        net: 214,
        ..RackSpec::default()
    });
    let (code, out, _) = rack.ssh(
        0,
        "cd && echo hi > f && cat f && printf '%s' \"$KILN_SIM_NODE\" && exit 3",
    );
    assert_eq!(code, 3);
    assert_eq!(out, "hi\nt-n01");
    // stdin reaches the command.
    let addr = rack.nodes[0]["ssh"].as_str().unwrap();
    let (ip, port) = addr.rsplit_once(':').unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'a\\nb\\n' | ssh -i {} -o BatchMode=yes -o LogLevel=ERROR -o UserKnownHostsFile={} -p {port} kiln@{ip} 'wc -l'",
            rack.key().display(),
            rack.dir.path().join("known_hosts").display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    // A wrong key is refused.
    let other = rack.dir.path().join("other");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    let status = std::process::Command::new("ssh")
        .arg("-i")
        .arg(&other)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
        ])
        .arg(format!(
            "UserKnownHostsFile={}",
            rack.dir.path().join("known_hosts").display()
        ))
        .args(["-p", port, &format!("kiln@{ip}"), "true"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(255));
}

#[test]
fn bench_sim_reaches_every_bmc_and_ssh_host() {
    let mut cmd = common::kiln();
    cmd.args([
        "--json",
        "bench",
        "sim",
        "--nodes",
        "40",
        "--ssh",
        "--concurrency",
        "8",
    ]);
    let (code, out, err) = common::run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["nodes"], 40);
    assert_eq!(report["failures"], 0, "{report}");
}
