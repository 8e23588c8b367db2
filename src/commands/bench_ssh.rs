//! `kiln bench ssh`: `kiln exec -- true` on many hosts against pdsh and
//! ClusterShell's clush doing the same, in the same run, against one real
//! OpenSSH server listening on a loopback address per host.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::Ctx;
use crate::exit::{BadInput, ExitStatus};

/// Third octet… the hosts are 127.60.100.1 upwards (127.60/16 is the SSH
/// tests' range).
const NET: &str = "127.60.100";
const PORT: u16 = 2222;

/// A running sshd, killed on drop.
struct Sshd(std::process::Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch folder, removed on drop.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sshd_path() -> Option<&'static str> {
    ["/usr/sbin/sshd", "/usr/bin/sshd", "/usr/local/sbin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .context("running ssh-keygen")?
        .success();
    anyhow::ensure!(ok, "ssh-keygen failed");
    Ok(())
}

fn public(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path.with_extension("pub"))?;
    Ok(text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

/// Times one tool: its wall time, or why it failed.
fn time(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "{:?} failed ({}): {}",
        cmd.get_program(),
        out.status,
        stderr.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    Ok(took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `kiln bench ssh`.
pub fn run(
    ctx: &Ctx,
    hosts: u32,
    fanout: u32,
    runs: u32,
    user: Option<String>,
) -> anyhow::Result<ExitStatus> {
    if !(1..=254).contains(&hosts) || fanout == 0 || runs == 0 {
        return Err(
            BadInput("--hosts must be 1 to 254; --fanout and --runs at least 1".into()).into(),
        );
    }
    let sshd = sshd_path()
        .ok_or_else(|| BadInput("sshd not found: apt-get install openssh-server".into()))?;
    let peers: Vec<&str> = ["pdsh", "clush"].into_iter().filter(|t| have(t)).collect();
    let dir = Scratch(std::env::temp_dir().join(format!("kiln-bench-ssh-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).context("creating a scratch folder")?;
    let d = dir.0.as_path();
    // sshd reads the authorized keys as the user; keep the folder readable.
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    keygen(&d.join("host"))?;
    keygen(&d.join("id"))?;
    std::fs::copy(d.join("id.pub"), d.join("authorized_keys"))?;
    let ips: Vec<String> = (1..=hosts).map(|i| format!("{NET}.{i}")).collect();
    let config = format!(
        "HostKey {d}/host\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
         UsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nLogLevel ERROR\n\
         # The default MaxStartups (10:30:100) would drop most of 64 concurrent connects.\n\
         MaxStartups 1000:30:1000\nPerSourceMaxStartups none\nMaxSessions 1000\n",
        d = d.display()
    );
    let host_key = public(&d.join("host"))?;
    let mut known = String::new();
    for ip in &ips {
        known.push_str(&format!("[{ip}]:{PORT} {host_key}\n"));
    }
    std::fs::write(d.join("known_hosts"), known)?;
    let _ = std::fs::create_dir_all("/run/sshd");
    // OpenSSH's sshd listens on at most 16 sockets (MAX_LISTEN_SOCKS): one
    // sshd per 16 addresses, all with the same settings and host key.
    let mut servers = Vec::new();
    for (n, chunk) in ips.chunks(16).enumerate() {
        let mut text = config.clone();
        for ip in chunk {
            text.push_str(&format!("ListenAddress {ip}:{PORT}\n"));
        }
        text = text.replace("sshd.pid", &format!("sshd{n}.pid"));
        let path = d.join(format!("sshd_config{n}"));
        std::fs::write(&path, text)?;
        let log = std::fs::File::create(d.join(format!("sshd{n}.log")))?;
        servers.push(Sshd(
            Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting sshd")?,
        ));
    }
    let start = Instant::now();
    for ip in &ips {
        while std::net::TcpStream::connect((ip.as_str(), PORT)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                let log = std::fs::read_to_string(d.join("sshd0.log")).unwrap_or_default();
                anyhow::bail!("sshd did not start on {ip}: {log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let user = user
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into());
    // OpenSSH client settings for pdsh and clush: same key, same checks.
    std::fs::write(
        d.join("ssh_config"),
        format!(
            "Host *\n  Port {PORT}\n  User {user}\n  IdentityFile {d}/id\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n",
            d = d.display()
        ),
    )?;
    let mut inventory = format!(
        "site: bench\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: ubuntu-24.04\n  bmc:\n    username: admin\n    password: {{env: KILN_BENCH_UNUSED}}\n  ssh: {{user: {user}, key: {d}/id, known_hosts: {d}/known_hosts}}\nracks:\n  - name: r01\n    nodes:\n",
        d = d.display()
    );
    for (i, ip) in ips.iter().enumerate() {
        inventory.push_str(&format!(
            "      - {{name: n{:03}, bmc: \"127.61.100.{}:8443\", ssh: \"{ip}:{PORT}\"}}\n",
            i + 1,
            i + 1
        ));
    }
    std::fs::write(d.join("site.yaml"), inventory)?;
    let exe = std::env::current_exe().context("finding the kiln binary")?;
    let list = format!("{NET}.[1-{hosts}]");
    let ssh_config = d.join("ssh_config");
    let command = |tool: &str| -> Command {
        match tool {
            "kiln" => {
                let mut c = Command::new(&exe);
                c.env("KILN_BENCH_UNUSED", "x")
                    .args(["-q", "-i"])
                    .arg(d.join("site.yaml"))
                    .args(["exec", "--fanout", &fanout.to_string(), "--", "true"]);
                c
            }
            "pdsh" => {
                let mut c = Command::new("pdsh");
                c.env(
                    "PDSH_SSH_ARGS_APPEND",
                    format!("-F {}", ssh_config.display()),
                )
                .args([
                    "-R",
                    "ssh",
                    "-f",
                    &fanout.to_string(),
                    "-w",
                    &list,
                    "true",
                ]);
                c
            }
            _ => {
                let mut c = Command::new("clush");
                c.args(["-f", &fanout.to_string(), "-w", &list, "-o"])
                    .arg(format!("-F {}", ssh_config.display()))
                    .arg("true");
                c
            }
        }
    };
    let tools: Vec<&str> = std::iter::once("kiln")
        .chain(peers.iter().copied())
        .collect();
    ctx.printer.info(&format!(
        "`true` on {hosts} hosts, fan-out {fanout}, {runs} run(s) each after a warm-up: {}",
        tools.join(", ")
    ));
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); tools.len()];
    for round in 0..=runs {
        // Interleaved, so drift on a noisy machine hits every tool alike.
        for (i, tool) in tools.iter().enumerate() {
            let took = time(&mut command(tool))?;
            if round > 0 {
                samples[i].push(took);
            }
        }
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let kiln = medians[0];
    let rows: Vec<Vec<String>> = tools
        .iter()
        .zip(&medians)
        .map(|(tool, m)| {
            vec![
                (*tool).to_owned(),
                format!("{:.3} s", m.as_secs_f64()),
                format!("{:.2}", kiln.as_secs_f64() / m.as_secs_f64()),
            ]
        })
        .collect();
    if ctx.printer.json {
        let tools_json: Vec<_> = tools
            .iter()
            .zip(&medians)
            .map(|(t, m)| json!({"tool": t, "median_s": m.as_secs_f64(), "kiln_ratio": kiln.as_secs_f64() / m.as_secs_f64()}))
            .collect();
        ctx.printer.json_data(&json!({
            "hosts": hosts, "fanout": fanout, "runs": runs, "tools": tools_json,
        }))?;
    } else {
        ctx.printer.data(&crate::output::table(
            &["TOOL", "MEDIAN", "KILN/TOOL"],
            &rows,
        ));
    }
    for missing in ["pdsh", "clush"].iter().filter(|t| !peers.contains(t)) {
        ctx.printer
            .info(&format!("{missing} is not installed: not compared"));
    }
    Ok(ExitStatus::Success)
}
