//! `kiln bench bootserver`: one file served to many concurrent clients by
//! kiln's boot server and by nginx (Debian's, with its own configuration
//! in a scratch folder), in the same run, interleaved. The clients are
//! curl processes writing to /dev/null, the same for both servers; the
//! result is kiln's throughput as a ratio of nginx's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::Ctx;
use crate::exit::{BadInput, ExitStatus};
use crate::imaging::server::{BootServer, ServedFile};

/// kiln's server and nginx listen on two addresses of 127.74/16.
const KILN_ADDR: &str = "127.74.0.1:0";
const NGINX_HOST: &str = "127.74.0.2";

/// A scratch folder, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running nginx, stopped on drop.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_path() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
}

fn free_port(host: &str) -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind((host, 0)).with_context(|| format!("binding {host}"))?;
    Ok(l.local_addr()?.port())
}

/// Starts nginx as Debian ships it would serve a file (sendfile, tcp_nopush,
/// one worker per core), with every path in `dir`.
fn start_nginx(bin: &str, dir: &Path, port: u16) -> anyhow::Result<Nginx> {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    // As root, nginx's workers would drop to `nobody`: keep the user that
    // started it so the scratch folder stays readable either way.
    let user = if std::env::var("USER").as_deref() == Ok("root") || is_root() {
        "user root;\n"
    } else {
        ""
    };
    std::fs::write(
        &conf,
        format!(
            "{user}worker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_timeout 65;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  types {{ application/octet-stream iso bin; }}\n  server {{\n    listen {NGINX_HOST}:{port};\n    root {d}/www;\n  }}\n}}\n"
        ),
    )?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting nginx")?;
    let nginx = Nginx(child);
    let start = Instant::now();
    while std::net::TcpStream::connect((NGINX_HOST, port)).is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not start listening within 10 s (see {d}/error.log)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(nginx)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Fetches `url` with `clients` curl processes at once; the wall time
/// until the last finishes. Every client must get `size` bytes.
fn round(url: &str, clients: u32, size: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..clients {
        children.push(
            Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{size_download}",
                    url,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("running curl")?,
        );
    }
    for c in children {
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            text.trim() == format!("200 {size}"),
            "{url}: a client got `{text}`, not 200 and {size} bytes"
        );
    }
    Ok(start.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn write_file(path: &Path, size: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    // Not zeros: nothing on the way may take a short cut for them.
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Runs the bench.
pub fn run(ctx: &Ctx, size: u64, clients: u32, runs: u32) -> anyhow::Result<ExitStatus> {
    if clients == 0 || runs == 0 {
        return Err(BadInput("--clients and --runs must be at least 1".into()).into());
    }
    anyhow::ensure!(
        Command::new("curl").arg("--version").output().is_ok(),
        "curl is needed as the benchmark's client"
    );
    let dir = std::env::temp_dir().join(format!("kiln-bench-bootserver-{}", std::process::id()));
    let _scratch = Scratch(dir.clone());
    std::fs::create_dir_all(dir.join("www"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for d in [&dir, &dir.join("www")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let file = dir.join("www").join("bench.iso");
    ctx.printer
        .info(&format!("writing a {} MiB file", size >> 20));
    write_file(&file, size)?;

    let runtime = crate::commands::runtime()?;
    let server = runtime.block_on(BootServer::start(
        KILN_ADDR.parse().context("bench address")?,
        None,
    ))?;
    let server = Arc::new(server);
    let kiln_url = server.add_iso("bench.iso", ServedFile::plain(&file)?);

    let nginx = match nginx_path() {
        Some(bin) => {
            let port = free_port(NGINX_HOST)?;
            Some((
                start_nginx(bin, &dir, port)?,
                format!("http://{NGINX_HOST}:{port}/bench.iso"),
            ))
        }
        None => {
            ctx.printer.info(
                "nginx is not installed (apt-get install nginx): measuring kiln alone, no ratio",
            );
            None
        }
    };
    ctx.printer.info(&format!(
        "{clients} clients × {} MiB, {runs} round(s) per server, interleaved",
        size >> 20
    ));
    // A warm-up round each, so both read from the page cache.
    round(&kiln_url, clients.min(4), size)?;
    if let Some((_, url)) = &nginx {
        round(url, clients.min(4), size)?;
    }
    let mut kiln_t = Vec::new();
    let mut nginx_t = Vec::new();
    for _ in 0..runs {
        kiln_t.push(round(&kiln_url, clients, size)?);
        if let Some((_, url)) = &nginx {
            nginx_t.push(round(url, clients, size)?);
        }
    }
    drop(nginx);
    let total = size as f64 * f64::from(clients);
    let gbps = |d: Duration| total * 8.0 / d.as_secs_f64() / 1e9;
    let kiln_m = median(kiln_t);
    let nginx_m = (!nginx_t.is_empty()).then(|| median(nginx_t));
    let ratio = nginx_m.map(|n| n.as_secs_f64() / kiln_m.as_secs_f64());
    if ctx.printer.json {
        ctx.printer.json_data(&json!({
            "size_bytes": size, "clients": clients, "runs": runs,
            "kiln": {"median_s": kiln_m.as_secs_f64(), "gbit_s": gbps(kiln_m)},
            "nginx": nginx_m.map(|n| json!({"median_s": n.as_secs_f64(), "gbit_s": gbps(n)})),
            "kiln_to_nginx_throughput": ratio,
        }))?;
    } else {
        let mut rows = vec![vec![
            "kiln".to_owned(),
            format!("{:.2}", kiln_m.as_secs_f64()),
            format!("{:.1}", gbps(kiln_m)),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
        ]];
        if let Some(n) = nginx_m {
            rows.push(vec![
                "nginx".into(),
                format!("{:.2}", n.as_secs_f64()),
                format!("{:.1}", gbps(n)),
                "1.00".into(),
            ]);
        }
        ctx.printer.data(&crate::output::table(
            &["SERVER", "MEDIAN S", "GBIT/S", "THROUGHPUT VS NGINX"],
            &rows,
        ));
    }
    drop(server);
    Ok(ExitStatus::Success)
}
