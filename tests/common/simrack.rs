//! A virtual rack started as `kiln sim up --json` in a child process, and
//! independent clients for it: `curl` for Redfish, OpenSSH `ssh` for the
//! nodes. Nothing here uses kiln's own client code.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `kiln sim up`.
pub struct Rack {
    child: Child,
    /// Scratch folder: inventory, keys, known_hosts.
    pub dir: tempfile::TempDir,
    /// The endpoints document's `nodes`.
    pub nodes: Vec<Value>,
}

/// How to start a rack.
pub struct RackSpec<'a> {
    /// Second octet of every address, unique per test so tests run in parallel.
    pub net: u8,
    /// Nodes in each rack.
    pub nodes: usize,
    /// Racks `r01`, `r02`, …; rack `r` (from 1) names its nodes `t-rNN-nNN`
    /// when there is more than one, and uses third octets `r*10+1`/`r*10+2`.
    pub racks: usize,
    /// Per-rack `hardware` overrides (index 0 is `r01`).
    pub rack_hardware: &'a [&'a str],
    /// Extra profiles written to the inventory's `profiles/` (hardware) or
    /// `profiles/images/` (images): (path without `.yaml`, YAML text).
    pub profiles: &'a [(&'a str, &'a str)],
    /// `--flavour`.
    pub flavour: &'a str,
    /// Start installed and running, trusting the test key.
    pub imaged: bool,
    /// Faults file text.
    pub faults: Option<&'a str>,
    /// `--time-scale`.
    pub time_scale: u32,
    /// The site's image profile.
    pub image: &'a str,
}

impl Default for RackSpec<'_> {
    fn default() -> Self {
        RackSpec {
            net: 200,
            nodes: 1,
            racks: 1,
            rack_hardware: &[],
            profiles: &[],
            flavour: "generic",
            imaged: true,
            faults: None,
            time_scale: 600,
            image: "ubuntu-24.04",
        }
    }
}

impl Rack {
    /// Starts a rack and waits for its endpoints.
    pub fn start(spec: RackSpec) -> Rack {
        let dir = tempfile::tempdir().unwrap();
        let net = spec.net;
        let mut racks = String::new();
        for r in 1..=spec.racks {
            racks.push_str(&format!("  - name: r{r:02}\n"));
            if let Some(hw) = spec.rack_hardware.get(r - 1) {
                racks.push_str(&format!("    hardware: {hw}\n"));
            }
            racks.push_str("    nodes:\n");
            // One rack keeps the names and addresses existing tests expect.
            let (prefix, bmc, ssh) = if spec.racks == 1 {
                ("t-n".to_owned(), 1, 2)
            } else {
                (format!("t-r{r:02}-n"), r * 10 + 1, r * 10 + 2)
            };
            for n in 1..=spec.nodes {
                racks.push_str(&format!(
                    "      - {{name: {prefix}{n:02}, bmc: \"127.{net}.{bmc}.{n}:8443\", ssh: \"127.{net}.{ssh}.{n}:2222\"}}\n"
                ));
            }
        }
        if !spec.profiles.is_empty() {
            let profiles = dir.path().join("profiles");
            std::fs::create_dir_all(&profiles).unwrap();
            for (name, yaml) in spec.profiles {
                let file = profiles.join(format!("{name}.yaml"));
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, yaml).unwrap();
            }
        }
        let inventory = format!(
            "site: simtest\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: {image}\n  bmc:\n    username: admin\n    password: {{env: KILN_TEST_BMC_PASSWORD}}\n  ssh:\n    user: kiln\nracks:\n{racks}",
            image = spec.image
        );
        std::fs::write(dir.path().join("site.yaml"), inventory).unwrap();
        let key = dir.path().join("id_ed25519");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(status.success());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.env("KILN_TEST_BMC_PASSWORD", "test")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .args(["sim", "up", "--json", "-i"])
            .arg(dir.path().join("site.yaml"))
            .args([
                "--flavour",
                spec.flavour,
                "--time-scale",
                &spec.time_scale.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if spec.imaged {
            cmd.arg("--imaged").arg(key.with_extension("pub"));
        }
        if let Some(faults) = spec.faults {
            let path = dir.path().join("faults.yaml");
            std::fs::write(&path, faults).unwrap();
            cmd.arg("--faults").arg(path);
        }
        let mut child = cmd.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut text = String::new();
        let doc: Value = loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("kiln sim up ended early: {text}\n{err}");
            }
            text.push_str(&line);
            if let Ok(v) = serde_json::from_str(&text) {
                break v;
            }
        };
        let nodes = doc["nodes"].as_array().unwrap().clone();
        // Trust exactly the host keys the rack announced.
        let mut known = String::new();
        for n in &nodes {
            if let Some(k) = n["ssh_host_key"].as_str() {
                let addr: &str = n["ssh"].as_str().unwrap();
                let (ip, port) = addr.rsplit_once(':').unwrap();
                known.push_str(&format!("[{ip}]:{port} {k}\n"));
            }
        }
        std::fs::write(dir.path().join("known_hosts"), known).unwrap();
        Rack { child, dir, nodes }
    }

    /// The test's private key.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// Node `i`'s BMC base URL.
    pub fn bmc(&self, i: usize) -> String {
        self.nodes[i]["bmc_url"].as_str().unwrap().to_owned()
    }

    /// A Redfish request with curl and basic auth: (status, body).
    pub fn curl(&self, i: usize, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.curl_with(i, method, path, body, &["-u", "admin:test"])
    }

    /// A Redfish request with curl and the given extra arguments.
    pub fn curl_with(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
        extra: &[&str],
    ) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sk",
            "--max-time",
            "20",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .args(extra)
        .arg(format!("{}{path}", self.bmc(i)));
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "-d", b]);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// GET as JSON, asserting 200.
    pub fn get(&self, i: usize, path: &str) -> Value {
        let (code, body) = self.curl(i, "GET", path, None);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Runs `command` on node `i` with OpenSSH, verifying its host key
    /// against `known_hosts`: (exit code, stdout, stderr).
    pub fn ssh(&self, i: usize, command: &str) -> (i32, String, String) {
        self.ssh_known(i, command, &self.dir.path().join("known_hosts"))
    }

    /// Like [`Rack::ssh`] with another known_hosts file.
    pub fn ssh_known(&self, i: usize, command: &str, known_hosts: &Path) -> (i32, String, String) {
        let addr = self.nodes[i]["ssh"].as_str().unwrap();
        let (ip, port) = addr.rsplit_once(':').unwrap();
        let out = Command::new("ssh")
            .arg("-i")
            .arg(self.key())
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-p", port, &format!("kiln@{ip}"), command])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Waits until `check` holds, polling; panics with `what` after `limit`.
    pub fn wait_until(&self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }

    /// Checks `check` every ~50 ms for `window` and panics the first time
    /// it is false: for what must *not* happen (a node that must not
    /// answer), where waiting for a condition proves nothing.
    pub fn holds_for(&self, what: &str, window: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            assert!(check(), "not held after {:?}: {what}", start.elapsed());
            if start.elapsed() >= window {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The system resource path of node `i`.
    pub fn system(&self, i: usize) -> String {
        let systems = self.get(i, "/redfish/v1/Systems");
        systems["Members"][0]["@odata.id"]
            .as_str()
            .unwrap()
            .trim_end_matches('/')
            .to_owned()
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A static HTTP file server (Python's) on a loopback address, serving `dir`.
pub struct FileServer {
    child: Child,
    /// `http://IP:PORT`.
    pub url: String,
}

impl FileServer {
    /// Serves `dir` on `ip`, port 8080.
    pub fn start(dir: &Path, ip: &str) -> FileServer {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", ip, "8080", "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://{ip}:8080");
        let start = Instant::now();
        while std::net::TcpStream::connect(format!("{ip}:8080")).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "python http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        FileServer { child, url }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
