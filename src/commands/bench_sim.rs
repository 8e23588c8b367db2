//! The simulator and generated site the benches share: `kiln sim up` runs
//! as a child process, so kiln and the simulated BMCs do not compete for
//! one process's threads and the bench measures kiln alone.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::Context as _;
use serde_json::Value;

use crate::bmc::trust::TrustStore;
use crate::inventory::generate::{SiteSpec, generate};

/// A running `kiln sim up`, killed when dropped, however the bench ends.
pub struct SimChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Drop for SimChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SimChild {
    /// Starts `kiln sim up --json --no-ssh -i SITE ARGS…` and reads the
    /// endpoints it lists once every BMC listens. With `counted`, the
    /// child answers [`SimChild::requests`] (`--requests-on-stdin`).
    pub fn start(site: &Path, args: &[&str], counted: bool) -> anyhow::Result<(Self, Vec<Value>)> {
        let exe = std::env::current_exe().context("cannot find the kiln executable")?;
        let mut command = Command::new(exe);
        command
            .args(["sim", "up", "--json", "--no-ssh", "-i"])
            .arg(site)
            .args(args);
        if counted {
            command.arg("--requests-on-stdin");
        }
        let mut child = command
            .env_remove("RUST_LOG")
            .stdin(if counted {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the simulator")?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no simulator output"))?;
        let mut sim = SimChild {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        // One JSON document, then the simulator keeps running: read exactly
        // that document from the stream (re-parsing a growing text after
        // each line is quadratic, minutes at 12,500 nodes).
        let doc: Value = serde_json::Deserializer::from_reader(&mut sim.stdout)
            .into_iter::<Value>()
            .next()
            .ok_or_else(|| anyhow::anyhow!("the simulator stopped before listing its endpoints"))?
            .context("the simulator's endpoint list is not JSON")?;
        let endpoints = doc["nodes"].as_array().cloned().unwrap_or_default();
        Ok((sim, endpoints))
    }

    /// The simulator's process id (for its CPU time).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// BMC requests the simulator has served so far, per node.
    pub fn requests(&mut self) -> anyhow::Result<serde_json::Map<String, Value>> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the simulator was started without counting"))?;
        stdin.write_all(b"requests\n")?;
        stdin.flush()?;
        let mut line = String::new();
        // The endpoint document may end with a newline of its own.
        while line.trim().is_empty() {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                anyhow::bail!("the simulator stopped");
            }
        }
        let doc: Value =
            serde_json::from_str(&line).context("the simulator's count is not JSON")?;
        Ok(doc["requests"].as_object().cloned().unwrap_or_default())
    }
}

/// A generated site on loopback from `spec` (BMC port 8443, SSH port
/// 2222), the BMC password in a file, and `limits` (YAML lines under `limits:`) ahead of the racks.
/// `edit` adjusts the text last. Returns the site file.
pub fn write_site(
    dir: &Path,
    spec: SiteSpec,
    limits: &str,
    edit: impl FnOnce(String) -> String,
) -> anyhow::Result<PathBuf> {
    let spec = SiteSpec {
        bmc_port: Some(8443),
        ssh_port: Some(2222),
        ..spec
    };
    let text = generate(&spec)?;
    let password_line = format!("password: {{env: {}}}", spec.password_env);
    let text = text
        .replace(&password_line, "password: {file: bmc-password}")
        .replacen("racks:\n", &format!("limits:\n{limits}racks:\n"), 1);
    let site = dir.join("site.yaml");
    std::fs::write(&site, edit(text))?;
    std::fs::write(dir.join("bmc-password"), "bench-password\n")?;
    Ok(site)
}

/// Pins each BMC's certificate as `kiln bmc trust` would have.
pub fn pin(
    state: &Path,
    inventory: &crate::inventory::Inventory,
    endpoints: &[Value],
) -> anyhow::Result<()> {
    let mut store = TrustStore::load(&TrustStore::path_in(state))?;
    for e in endpoints {
        let name = e["name"].as_str().unwrap_or_default();
        let Some(node) = inventory.node(name) else {
            continue;
        };
        let fp = e["bmc_fingerprint"]
            .as_str()
            .unwrap_or_default()
            .replace(':', "")
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        store.set(name, &node.bmc.endpoint.to_string(), &fp);
    }
    store.save()
}
