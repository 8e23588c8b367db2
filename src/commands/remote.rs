//! `kiln exec`, `kiln copy` and `kiln ssh trust|wait`: fan a remote action
//! out over the selected nodes, stream what comes back, then summarise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Ctx;
use crate::cli::{CopyArgs, ExecArgs, RemoteArgs, SshCommand};
use crate::exit::{BadInput, ExitStatus};
use crate::output::Printer;
use crate::secret::Secret;
use crate::ssh::auth::Credentials;
use crate::ssh::exec::{Captured, Exit, SUDO_PASSWORD_ENV};
use crate::ssh::hostkeys::Trust;
use crate::ssh::{
    ClientOptions, ExecError, ExecOptions, Input, Output, Pool, Remote, RemoteCommand, Sink,
    Stream, Target,
};

/// The nodes to act on, and the pool behind them.
struct Fleet {
    remotes: Vec<Remote>,
    pool: Option<Arc<Pool>>,
    fanout: usize,
}

fn fleet(ctx: &Ctx, args: &RemoteArgs, accept_new: bool) -> anyhow::Result<Fleet> {
    if args.fanout == 0 {
        return Err(BadInput("--fanout must be at least 1".into()).into());
    }
    if args.local {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        return Ok(Fleet {
            remotes: vec![Remote::Local { name }],
            pool: None,
            fanout: 1,
        });
    }
    let inventory = ctx.load_inventory()?;
    let nodes = crate::commands::select(&inventory, &args.select)?;
    let dir = ctx
        .inventory_path()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let pool = crate::ssh::site::pool(
        &dir,
        Arc::new(Credentials::new()),
        accept_new || args.accept_new_host_keys,
        ClientOptions {
            connect_timeout: args.connect_timeout,
            ..ClientOptions::default()
        },
    );
    let remotes = nodes
        .iter()
        .map(|n| Remote::Ssh {
            pool: Arc::clone(&pool),
            target: Target::from_node(n),
        })
        .collect();
    Ok(Fleet {
        remotes,
        pool: Some(pool),
        fanout: args.fanout,
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    crate::commands::runtime()
}

/// Runs `work` on every remote, at most `fanout` at once; results in
/// node order.
async fn fan_out<T, F, Fut>(fleet: &Fleet, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Remote) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(fleet.fanout));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, remote) in fleet.remotes.iter().enumerate() {
        let limit = Arc::clone(&limit);
        let fut = work(remote.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, fut.await)
        });
    }
    let mut out: Vec<Option<T>> = (0..fleet.remotes.len()).map(|_| None).collect();
    while let Some(r) = tasks.join_next().await {
        if let Ok((i, v)) = r {
            out[i] = Some(v);
        }
    }
    out.into_iter().flatten().collect()
}

/// Prints each complete line as `node: line` the moment it arrives (stdout
/// to stdout, stderr to stderr), as pdsh does. A line longer than 64 KiB is
/// cut, so a stream without newlines cannot fill memory.
struct Prefixer {
    node: String,
    printer: Option<Printer>,
    partial: [Vec<u8>; 2],
}

const MAX_LINE: usize = 64 << 10;

impl Prefixer {
    fn emit(&self, stream: Stream, line: &[u8]) {
        let Some(p) = &self.printer else { return };
        let text = format!("{}: {}\n", self.node, String::from_utf8_lossy(line));
        match stream {
            Stream::Stdout => p.data(&text),
            Stream::Stderr => p.data_stderr(&text),
        }
    }

    fn finish(&mut self) {
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            let rest = std::mem::take(&mut self.partial[i]);
            if !rest.is_empty() {
                self.emit(stream, &rest);
            }
        }
    }
}

impl Sink for Prefixer {
    fn output(&mut self, stream: Stream, data: &[u8]) {
        if self.printer.is_none() {
            return;
        }
        let i = usize::from(stream == Stream::Stderr);
        let mut buf = std::mem::take(&mut self.partial[i]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            self.emit(stream, &buf[start..start + nl]);
            start += nl + 1;
        }
        buf.drain(..start);
        while buf.len() >= MAX_LINE {
            let rest = buf.split_off(MAX_LINE);
            self.emit(stream, &buf);
            buf = rest;
        }
        self.partial[i] = buf;
    }
}

/// One node's result.
struct NodeResult {
    node: String,
    addr: String,
    result: Result<Output, ExecError>,
}

fn sudo_password() -> Option<Secret> {
    std::env::var(SUDO_PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .map(Secret::new)
}

/// Runs `kiln exec`.
pub fn exec(ctx: &Ctx, args: &ExecArgs) -> anyhow::Result<ExitStatus> {
    let fleet = fleet(ctx, &args.remote, false)?;
    let script = args.command.join(" ");
    let cmd = RemoteCommand::shell(script.clone())
        .sudo(args.sudo)
        .timeout(args.timeout);
    let (head, tail) = capture_budget(fleet.remotes.len());
    let (cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let opts = ExecOptions {
        sudo_password: sudo_password(),
        head,
        tail,
        cancel: Some(cancel.clone()),
    };
    let stream = !ctx.printer.json;
    let printer = ctx.printer.clone();
    let start = Instant::now();
    let runtime = runtime()?;
    let interrupts = printer.clone();
    // Ctrl-C stops the remote commands (TERM to each command's process
    // group, KILL 2 s later) instead of leaving them running; a second
    // Ctrl-C quits at once.
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupts.info("interrupted: stopping the remote commands (Ctrl-C again to quit now)");
            let _ = cancel_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let results = runtime.block_on(fan_out(&fleet, |remote| {
        let cmd = cmd.clone();
        let opts = opts.clone();
        let printer = stream.then(|| printer.clone());
        let cancel = cancel.clone();
        async move {
            let mut sink = Prefixer {
                node: remote.node().to_owned(),
                printer,
                partial: [Vec::new(), Vec::new()],
            };
            let result = if *cancel.borrow() {
                Err(ExecError::Interrupted {
                    node: remote.node().to_owned(),
                })
            } else {
                remote.run(&cmd, Input::None, &mut sink, &opts).await
            };
            remote.close().await;
            sink.finish();
            NodeResult {
                node: remote.node().to_owned(),
                addr: remote.addr(),
                result,
            }
        }
    }));
    drop(fleet);
    let failed: Vec<&NodeResult> = results
        .iter()
        .filter(|r| !r.result.as_ref().is_ok_and(Output::success))
        .collect();
    if ctx.printer.json {
        let nodes: Vec<Value> = results.iter().map(record).collect();
        ctx.printer.json_data(&json!({
            "command": script,
            "ok": failed.is_empty(),
            "duration_s": start.elapsed().as_secs_f64(),
            "failed": failed.iter().map(|r| r.node.as_str()).collect::<Vec<_>>(),
            "nodes": nodes,
        }))?;
    } else {
        if results.len() > 1 {
            ctx.printer.data(&grouped(&results));
        }
        report_failures(&ctx.printer, &failed, results.len(), start.elapsed());
    }
    Ok(if failed.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::NodeFailed
    })
}

/// How much of each stream to keep per node: 1 MiB of head and 64 KiB of
/// tail, shrunk on large fleets so the whole run stays under about 768 MiB
/// even if every node prints without end (12,500 nodes: 42 KiB + 10 KiB).
fn capture_budget(nodes: usize) -> (usize, usize) {
    let n = nodes.max(1);
    let head = ((512usize << 20) / n).clamp(16 << 10, 1 << 20);
    let tail = ((128usize << 20) / n).clamp(4 << 10, 64 << 10);
    (head, tail)
}

fn captured_json(c: &Captured) -> (String, bool, u64) {
    (c.text(), c.truncated(), c.total)
}

/// One `--json` record. Output is kept up to 1 MiB per stream (less on
/// large fleets, see [`capture_budget`])
/// (`stdout_truncated` says when more was printed; `stdout_bytes` is the
/// full size).
fn record(r: &NodeResult) -> Value {
    match &r.result {
        Ok(out) => {
            let (stdout, st, sb) = captured_json(&out.stdout);
            let (stderr, et, eb) = captured_json(&out.stderr);
            let (code, signal) = match &out.exit {
                Exit::Code(c) => (Some(*c), None),
                Exit::Signal(s) => (None, Some(s.clone())),
                Exit::Unknown => (None, None),
            };
            json!({
                "node": r.node,
                "address": r.addr,
                "ok": out.success(),
                "exit_status": code,
                "signal": signal,
                "timed_out": out.timed_out,
                "interrupted": out.interrupted,
                "duration_s": out.duration.as_secs_f64(),
                "stdout": stdout,
                "stdout_bytes": sb,
                "stdout_truncated": st,
                "stderr": stderr,
                "stderr_bytes": eb,
                "stderr_truncated": et,
                "error": Value::Null,
            })
        }
        Err(e) => json!({
            "node": r.node,
            "address": r.addr,
            "ok": false,
            "exit_status": Value::Null,
            "signal": Value::Null,
            "timed_out": false,
            "interrupted": matches!(e, ExecError::Interrupted { .. }),
            "duration_s": Value::Null,
            "stdout": "",
            "stdout_bytes": 0,
            "stdout_truncated": false,
            "stderr": "",
            "stderr_bytes": 0,
            "stderr_truncated": false,
            "error": error_text(e),
        }),
    }
}

fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Groups nodes whose stdout and outcome are identical, as `dshbak -c`
/// does, each group headed by its folded node list.
fn grouped(results: &[NodeResult]) -> String {
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in results {
        let Ok(out) = &r.result else { continue };
        let mut text = out.stdout.text();
        if out.stdout.truncated() {
            text.push_str(&format!(
                "\n[… {} more bytes not shown]\n",
                out.stdout.total - out.stdout.bytes().len() as u64
            ));
        }
        let outcome = if out.success() {
            String::new()
        } else {
            out.outcome()
        };
        groups
            .entry((text, outcome))
            .or_default()
            .push(r.node.clone());
    }
    let mut ordered: Vec<_> = groups.into_iter().collect();
    // Largest group first: the odd ones out come last, where eyes land.
    ordered.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
    let mut out = String::new();
    for ((text, outcome), nodes) in ordered {
        let mut header = format!("{} ({})", fold(&nodes), nodes.len());
        if !outcome.is_empty() {
            header.push_str(&format!(": {outcome}"));
        }
        let rule = "-".repeat(header.chars().count().clamp(16, 78));
        out.push_str(&format!("{rule}\n{header}\n{rule}\n{text}"));
        if !text.is_empty() && !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Folds node names into pdsh ranges: `r01-n01 r01-n02 r01-n03 r01-n05`
/// becomes `r01-n[01-03,05]`, on the last number in each name.
pub fn fold(names: &[String]) -> String {
    // (prefix, digits, suffix) around the last number in each name.
    let mut split = Vec::new();
    let mut plain = Vec::new();
    for name in names {
        let bytes = name.as_bytes();
        let Some(end) = bytes.iter().rposition(u8::is_ascii_digit).map(|i| i + 1) else {
            plain.push(name.clone());
            continue;
        };
        let start = bytes[..end]
            .iter()
            .rposition(|b| !b.is_ascii_digit())
            .map_or(0, |i| i + 1);
        match name[start..end].parse::<u64>() {
            Ok(n) => split.push((&name[..start], n, end - start, &name[end..])),
            Err(_) => plain.push(name.clone()),
        }
    }
    // Zero-padded numbers fix their group's width; an unpadded number of
    // that many digits (n100 beside n001) belongs to the same group.
    let padded: std::collections::BTreeSet<(&str, usize, &str)> = split
        .iter()
        .filter(|(_, n, len, _)| *len > 1 && n.to_string().len() < *len)
        .map(|(p, _, len, s)| (*p, *len, *s))
        .collect();
    let mut groups: BTreeMap<(String, String, usize), Vec<u64>> = BTreeMap::new();
    for (prefix, n, len, suffix) in split {
        let width = if padded.contains(&(prefix, len, suffix)) {
            len
        } else {
            0
        };
        groups
            .entry((prefix.to_owned(), suffix.to_owned(), width))
            .or_default()
            .push(n);
    }
    let mut parts = plain;
    for ((prefix, suffix, width), mut nums) in groups {
        nums.sort_unstable();
        nums.dedup();
        if nums.len() == 1 {
            parts.push(format!("{prefix}{:0width$}{suffix}", nums[0]));
            continue;
        }
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < nums.len() {
            let mut j = i;
            while j + 1 < nums.len() && nums[j + 1] == nums[j] + 1 {
                j += 1;
            }
            ranges.push(if i == j {
                format!("{:0width$}", nums[i])
            } else {
                format!("{:0width$}-{:0width$}", nums[i], nums[j])
            });
            i = j + 1;
        }
        parts.push(format!("{prefix}[{}]{suffix}", ranges.join(",")));
    }
    parts.join(",")
}

fn report_failures(printer: &Printer, failed: &[&NodeResult], total: usize, took: Duration) {
    if failed.is_empty() {
        printer.info(&format!(
            "ok on all {total} node(s) in {:.1}s",
            took.as_secs_f64()
        ));
        return;
    }
    let names: Vec<String> = failed.iter().map(|r| r.node.clone()).collect();
    let mut text = format!(
        "failed on {} of {total} node(s): {}",
        failed.len(),
        fold(&names)
    );
    for r in failed {
        let why = match &r.result {
            Ok(out) => format!("{} ({})", r.node, out.outcome()),
            Err(e) => error_text(e),
        };
        text.push_str(&format!("\n  {why}"));
    }
    // Failures are kiln's report, not node output: shown even with -q.
    printer.data_stderr(&format!("{text}\n"));
}

/// A node's copy: name, address, and bytes copied with the command's
/// output, or why not.
type CopyResult = (String, String, Result<(u64, Output), String>);

/// Runs `kiln copy`.
pub fn copy(ctx: &Ctx, args: &CopyArgs) -> anyhow::Result<ExitStatus> {
    let fleet = fleet(ctx, &args.remote, false)?;
    let opts = ExecOptions {
        sudo_password: sudo_password(),
        ..ExecOptions::default()
    };
    let (sudo, timeout) = (args.sudo, args.timeout);
    let start = Instant::now();
    let results: Vec<CopyResult> = if args.download {
        let dest = PathBuf::from(&args.dest);
        let file_name = Path::new(&args.source)
            .file_name()
            .map(|f| f.to_owned())
            .ok_or_else(|| BadInput(format!("{} names no file", args.source)))?;
        let source = args.source.clone();
        runtime()?.block_on(fan_out(&fleet, |remote| {
            let local = dest.join(remote.node()).join(&file_name);
            let (source, opts) = (source.clone(), opts.clone());
            async move {
                let r = crate::ssh::copy::download(&remote, &source, &local, sudo, timeout, &opts)
                    .await;
                remote.close().await;
                let r = match r {
                    Ok(out) => {
                        let size = std::fs::metadata(&local).map(|m| m.len()).unwrap_or(0);
                        Ok((size, out))
                    }
                    Err(e) => Err(error_text(&e)),
                };
                (remote.node().to_owned(), remote.addr(), r)
            }
        }))
    } else {
        let local = PathBuf::from(&args.source);
        let size = std::fs::metadata(&local)
            .map_err(|e| BadInput(format!("cannot read {}: {e}", local.display())))?
            .len();
        if !local.is_file() {
            return Err(BadInput(format!("{} is not a file", local.display())).into());
        }
        let dest = args.dest.clone();
        runtime()?.block_on(fan_out(&fleet, |remote| {
            let (local, dest, opts) = (local.clone(), dest.clone(), opts.clone());
            async move {
                let r =
                    crate::ssh::copy::upload(&remote, &local, &dest, sudo, timeout, &opts).await;
                remote.close().await;
                let r = r.map(|out| (size, out)).map_err(|e| error_text(&e));
                (remote.node().to_owned(), remote.addr(), r)
            }
        }))
    };
    let mut failed = Vec::new();
    let mut records = Vec::new();
    for (node, addr, r) in &results {
        let (ok, bytes, error) = match r {
            Ok((bytes, out)) if out.success() => (true, *bytes, None),
            Ok((_, out)) => (
                false,
                0,
                Some(format!(
                    "{} {}",
                    out.outcome(),
                    out.stderr.tail_text().trim_end()
                )),
            ),
            Err(e) => (false, 0, Some(e.clone())),
        };
        if !ok {
            failed.push((node.clone(), error.clone().unwrap_or_default()));
        }
        records
            .push(json!({"node": node, "address": addr, "ok": ok, "bytes": bytes, "error": error}));
    }
    if ctx.printer.json {
        ctx.printer.json_data(&json!({
            "direction": if args.download { "download" } else { "upload" },
            "source": args.source,
            "dest": args.dest,
            "ok": failed.is_empty(),
            "nodes": records,
        }))?;
    } else if failed.is_empty() {
        ctx.printer.info(&format!(
            "copied to/from {} node(s) in {:.1}s",
            results.len(),
            start.elapsed().as_secs_f64()
        ));
    } else {
        let names: Vec<String> = failed.iter().map(|f| f.0.clone()).collect();
        let mut text = format!(
            "copy failed on {} of {} node(s): {}",
            failed.len(),
            results.len(),
            fold(&names)
        );
        for (node, why) in &failed {
            text.push_str(&format!("\n  {node}: {why}"));
        }
        ctx.printer.data_stderr(&format!("{text}\n"));
    }
    Ok(if failed.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::NodeFailed
    })
}

/// Runs `kiln ssh …`.
pub fn ssh(ctx: &Ctx, cmd: SshCommand) -> anyhow::Result<ExitStatus> {
    let (args, within, trust) = match &cmd {
        SshCommand::Trust(args) => (args, None, true),
        SshCommand::Wait { remote, within } => (remote, Some(*within), false),
    };
    if args.local {
        return Err(BadInput("`kiln ssh` needs nodes, not --local".into()).into());
    }
    let fleet = fleet(ctx, args, trust)?;
    let pool = fleet
        .pool
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no SSH pool"))?;
    let start = Instant::now();
    let results = runtime()?.block_on(fan_out(&fleet, |remote| {
        let pool = Arc::clone(&pool);
        async move {
            let Remote::Ssh { target, .. } = &remote else {
                return (
                    remote.node().to_owned(),
                    remote.addr(),
                    Err("not SSH".into()),
                );
            };
            let t0 = Instant::now();
            let r = match within {
                Some(w) => pool.wait_for_ssh(target, w).await,
                None => pool.session(target).await,
            };
            let r = r
                .map(|s| (s.host_key().clone(), t0.elapsed()))
                .map_err(|e| error_text(&e));
            pool.close(&target.node).await;
            (target.node.clone(), target.addr(), r)
        }
    }));
    let mut rows = Vec::new();
    let mut records = Vec::new();
    let mut failed = Vec::new();
    for (node, addr, r) in &results {
        match r {
            Ok(((fp, how), took)) => {
                let how = match how {
                    Trust::Known(at) => format!("known ({at})"),
                    Trust::FirstUse => "recorded now".into(),
                };
                rows.push(vec![node.clone(), addr.clone(), fp.clone(), how.clone()]);
                records.push(json!({"node": node, "address": addr, "ok": true, "fingerprint": fp, "trust": how, "after_s": took.as_secs_f64()}));
            }
            Err(e) => {
                failed.push(format!("{node}: {e}"));
                records.push(json!({"node": node, "address": addr, "ok": false, "error": e}));
            }
        }
    }
    if ctx.printer.json {
        ctx.printer
            .json_data(&json!({"ok": failed.is_empty(), "nodes": records}))?;
    } else {
        ctx.printer.data(&crate::output::table(
            &["NODE", "ADDRESS", "HOST KEY", "TRUST"],
            &rows,
        ));
        ctx.printer.info(&format!(
            "{} of {} node(s) up in {:.1}s",
            rows.len(),
            results.len(),
            start.elapsed().as_secs_f64()
        ));
        if !failed.is_empty() {
            ctx.printer
                .data_stderr(&format!("failed:\n  {}\n", failed.join("\n  ")));
        }
    }
    Ok(if failed.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::NodeFailed
    })
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn folds_like_pdsh() {
        let names: Vec<String> = [
            "r01-n01", "r01-n02", "r01-n03", "r01-n05", "r02-n01", "bastion",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(fold(&names), "bastion,r01-n[01-03,05],r02-n01");
        assert_eq!(fold(&["n9".into(), "n10".into()]), "n[9-10]");
        let many: Vec<String> = (1..=200).map(|i| format!("n{i:03}")).collect();
        assert_eq!(fold(&many), "n[001-200]");
    }
}
