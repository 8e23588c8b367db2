//! The `nccl` stage: nccl-tests inside each node, then across nodes.
//!
//! In a node ([`nccl_node`]), first the two point tests that name a part
//! rather than a whole (as Azure's node health checks run them before
//! NCCL, azurehpc-health-checks `customTests/azure_gpu_bandwidth.nhc` and
//! `azure_ib_write_bw_gdr.nhc`):
//!
//! - `nvbandwidth`: `nvbandwidth -t host_to_device_memcpy_ce
//!   device_to_host_memcpy_ce device_to_device_memcpy_read_ce` (the last
//!   only with NVLink), every GPU's and every pair's cell against the
//!   profile's floors: a slow host link or NVLink names its GPU.
//! - `ib_write_bw`: each compute HCA in loopback with GPUDirect RDMA,
//!   all at once: a server (`ib_write_bw -d HCA -p PORT … --use_cuda=GPU`)
//!   and, once it listens, a client to `localhost`, HCA *i* paired with
//!   GPU *i* as on rail-optimised HGX boards, 8 MiB messages, `-F
//!   --report_gbits --perform_warm_up`, judged against the profile's
//!   `ib_write_bw.min_gbps`. This is Azure's `check_ib_bw_gdr`: one node
//!   at a time, no peer needed, so a bad HCA, a GPU-to-HCA PCIe path or
//!   GPUDirect fault is blamed on exactly its node before any multi-node
//!   run. A loopback can stay inside the HCA, so a bad cable or switch
//!   port is left to the cross-node runs below and their bisection.
//!
//! Then each collective the profile names, one step
//! each (`all_reduce`, `all_gather`, …), over all of the node's GPUs
//! (`-g N`), from `min_bytes` to the profile's `max_bytes`. The profile's
//! in-node floor applies to `all_reduce` (the floors are all_reduce busbw);
//! other collectives are judged for integrity (crashes, `#wrong`).
//!
//! Across nodes ([`run_multi_node`]): how nccl-tests documents it, one MPI
//! rank per GPU (`mpirun -np NODES*GPUS -H a:GPUS,b:GPUS … all_reduce_perf
//! -g 1`), launched from the first node of the group, with
//! `NCCL_ALGO=RING` (`-x`) so busbw measures the network rather than
//! NVLink SHARP or tree shortcuts. On a real cluster the launcher must
//! reach its peers by these names over SSH without a password (Open MPI
//! starts its daemons with ssh) and every node needs the same nccl-tests
//! path. The virtual rack runs the same command line: the simulated
//! `mpirun` on the launcher reads the hardware models of the nodes named in
//! `-H`, so the rack's busbw is held down by its slowest node's links, as a
//! ring's is.
//!
//! [`nccl_pairs`] runs disjoint pairs, [`nccl_rack`] the whole rack; when a
//! run fails its floor, [`bisect`] splits the group until it finds the node
//! (or, when every part passes alone, the link between parts) at fault.

use std::time::Duration;

use serde_json::{Value, json};

use super::{NodeCtx, artifact_path, capture, judgement_metrics, limits};
use crate::bmc::discover::strings;
use crate::judge::{Judgement, NcclMetrics, Verdict, judge_nccl, judge_nvbandwidth};
use crate::pipeline::step::{Outcome, Steps, Stop};
use crate::profiles::HardwareProfile;
use crate::ssh::quote::quote;

const STAGE: &str = "nccl";

/// How the nccl-tests runs are made beyond what the profile says.
#[derive(Clone, Debug)]
pub struct NcclOptions {
    /// Smallest message size, bytes (`-b`).
    pub min_bytes: u64,
    /// Largest message size, bytes (`-e`); the profile's by default.
    pub max_bytes: u64,
    /// Where the nccl-tests binaries are (`""`: on PATH; else a folder,
    /// e.g. `/opt/nccl-tests/build/`). Operator configuration: not quoted.
    pub tests_dir: String,
    /// Extra `mpirun` arguments (e.g. `--allow-run-as-root --mca btl
    /// tcp,self -x LD_LIBRARY_PATH`). Operator configuration: not quoted.
    pub mpirun_args: String,
    /// Deadline of one nccl-tests run (and of each point test).
    pub deadline: Duration,
    /// The nvbandwidth command (e.g. `/opt/nvbandwidth/nvbandwidth`);
    /// empty skips the step. Operator configuration: not quoted.
    pub nvbandwidth: String,
    /// The ib_write_bw command; empty skips the step. Operator
    /// configuration: not quoted.
    pub ib_write_bw: String,
    /// The compute HCAs, HCA *i* tested with GPU *i*; empty: `mlx5_0` to
    /// `mlx5_{N-1}` for the profile's N NICs. DGX H100, for one, numbers
    /// its compute HCAs around its storage ones (`mlx5_0,3,4,5,6,9,10,11`):
    /// name them here.
    pub ib_devices: Vec<String>,
    /// How long each ib_write_bw server gets to listen before its client
    /// connects (Azure NHC waits 5 s).
    pub ib_server_wait: Duration,
}

impl NcclOptions {
    /// 8 bytes to the profile's largest size, binaries on PATH, 20 minutes
    /// a run, nvbandwidth and ib_write_bw on `mlx5_0` onwards.
    pub fn for_profile(profile: &HardwareProfile) -> NcclOptions {
        NcclOptions {
            min_bytes: 8,
            max_bytes: profile.nccl.max_bytes,
            tests_dir: String::new(),
            mpirun_args: "--bind-to none".to_owned(),
            deadline: Duration::from_secs(20 * 60),
            nvbandwidth: "nvbandwidth".to_owned(),
            ib_write_bw: "ib_write_bw".to_owned(),
            ib_devices: Vec::new(),
            ib_server_wait: Duration::from_secs(5),
        }
    }
}

/// The step name and nccl-tests binary of a collective named in a profile.
fn collective(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "all_reduce" => ("all_reduce", "all_reduce_perf"),
        "all_gather" => ("all_gather", "all_gather_perf"),
        "reduce_scatter" => ("reduce_scatter", "reduce_scatter_perf"),
        "alltoall" => ("alltoall", "alltoall_perf"),
        "broadcast" => ("broadcast", "broadcast_perf"),
        "reduce" => ("reduce", "reduce_perf"),
        "sendrecv" => ("sendrecv", "sendrecv_perf"),
        _ => return None,
    })
}

/// The step metrics of an nccl run: the nccl-tests judge's metrics (see
/// [`crate::pipeline::record::metrics`]) with the judgement beside them.
fn nccl_metrics(j: &Judgement<NcclMetrics>) -> Value {
    let mut m = serde_json::to_value(&j.metrics).unwrap_or_default();
    if let Value::Object(map) = &mut m {
        map.insert(
            "judgement".into(),
            judgement_metrics(j)["judgement"].clone(),
        );
    }
    m
}

/// Runs nvbandwidth, the ib_write_bw loopback and then the profile's
/// collectives inside one node, one step each; stops at the first that
/// fails.
pub async fn nccl_node(
    ctx: &NodeCtx,
    steps: &mut Steps,
    profile: &HardwareProfile,
    opts: &NcclOptions,
) -> Result<Vec<Outcome>, Stop> {
    let node = ctx.node().to_owned();
    let mut outcomes = Vec::new();
    if !opts.nvbandwidth.is_empty() {
        let o = steps
            .run("nvbandwidth", opts.deadline, || {
                nvbandwidth(ctx, profile, opts)
            })
            .await?;
        outcomes.push(o);
    }
    if !opts.ib_write_bw.is_empty() && profile.infiniband.nics > 0 {
        let o = steps
            .run("ib_write_bw", opts.deadline, || {
                ib_loopback(ctx, profile, opts)
            })
            .await?;
        outcomes.push(o);
    }
    for name in &profile.nccl.collectives {
        let Some((step, binary)) = collective(name) else {
            // Not a step name kiln knows: recorded once under a fixed name.
            let o = steps
                .run("collective", opts.deadline, || async {
                    Ok(Outcome::failed(format!(
                        "the profile names collective `{name}`, which nccl-tests does not have"
                    )))
                })
                .await?;
            outcomes.push(o);
            continue;
        };
        let floor = (step == "all_reduce").then_some(profile.nccl.in_node_busbw_gbps);
        let o = steps
            .run(step, opts.deadline, || async {
                let rel = artifact_path(&node, STAGE, &format!("{binary}.log"));
                let script = format!(
                    "{}{binary} -b {} -e {} -f 2 -g {}",
                    opts.tests_dir, opts.min_bytes, opts.max_bytes, profile.gpu.count
                );
                let c = capture(ctx, &rel, script, false, opts.deadline).await?;
                Ok(judged(&c.text, &c.output, floor, binary).with_artifact(rel))
            })
            .await?;
        outcomes.push(o);
    }
    Ok(outcomes)
}

/// The `nvbandwidth` step: host-to-device, device-to-host and (with
/// NVLink) device-to-device read over copy engines, the tests and floors
/// Azure's `check_gpu_bw` uses.
async fn nvbandwidth(
    ctx: &NodeCtx,
    profile: &HardwareProfile,
    opts: &NcclOptions,
) -> anyhow::Result<Outcome> {
    let rel = artifact_path(ctx.node(), STAGE, "nvbandwidth.txt");
    let mut tests = "host_to_device_memcpy_ce device_to_host_memcpy_ce".to_owned();
    if profile.gpu.nvlink.links_per_gpu > 0 {
        tests.push_str(" device_to_device_memcpy_read_ce");
    }
    let script = format!("{} -t {tests}", opts.nvbandwidth);
    let c = capture(ctx, &rel, script, false, opts.deadline).await?;
    let j = match judge_nvbandwidth(&c.text, &limits::nvbandwidth(Some(profile))) {
        Ok(j) => j,
        Err(e) => {
            return Ok(Outcome::unverified(format!(
                "nvbandwidth {}: cannot judge its output: {e}",
                c.output.outcome()
            ))
            .with_artifact(rel));
        }
    };
    let mins: Vec<String> = j
        .metrics
        .tests
        .iter()
        .filter_map(|t| {
            let short = t.test.split("_memcpy").next().unwrap_or(&t.test);
            Some(format!("{short} min {:.1}", t.min?))
        })
        .collect();
    let mut o = super::outcome_of(&j, format!("nvbandwidth: {} GB/s", mins.join(", ")));
    if j.verdict == Verdict::Pass && !c.output.success() {
        o = Outcome::unverified(format!("nvbandwidth {}", c.output.outcome()))
            .with_metrics(o.metrics);
    }
    Ok(o.with_artifact(rel))
}

/// First TCP port of the ib_write_bw servers, one per HCA (Azure NHC uses
/// 18510-18517; perftest's default is 18515).
const IB_FIRST_PORT: u32 = 18510;
/// ib_write_bw message size: 8 MiB, as Azure's `check_ib_bw_gdr` (large
/// enough that the link, not per-message overhead, sets the rate).
const IB_MESSAGE_BYTES: u64 = 8 << 20;
/// The line that starts each HCA's part of the kept output.
const IB_SECTION: &str = "### kiln ib_write_bw loopback";

/// The HCAs to test, with the GPU each is paired with.
fn ib_devices(profile: &HardwareProfile, opts: &NcclOptions) -> Vec<(String, u32)> {
    if opts.ib_devices.is_empty() {
        (0..profile.infiniband.nics)
            .map(|i| (format!("mlx5_{i}"), i))
            .collect()
    } else {
        opts.ib_devices
            .iter()
            .zip(0..)
            .map(|(d, i)| (d.clone(), i))
            .collect()
    }
}

/// The `ib_write_bw` step: every HCA's loopback at once (see the module
/// docs), each HCA's client and server output kept under a marker line,
/// each judged on its own so a reason names its HCA.
async fn ib_loopback(
    ctx: &NodeCtx,
    profile: &HardwareProfile,
    opts: &NcclOptions,
) -> anyhow::Result<Outcome> {
    let rel = artifact_path(ctx.node(), STAGE, "ib_write_bw.txt");
    let devices = ib_devices(profile, opts);
    let wait = opts.ib_server_wait.as_secs_f64();
    // Each side gets the step's deadline less the server's head start, so
    // a server whose client never came is killed and the step still ends.
    let limit = opts
        .deadline
        .as_secs()
        .saturating_sub(opts.ib_server_wait.as_secs() + 5)
        .max(10);
    let args = format!("-s {IB_MESSAGE_BYTES} -x 0 -F --report_gbits --perform_warm_up");
    let mut script = String::from(
        "t=$(mktemp -d) || exit 1
",
    );
    for (k, (dev, gpu)) in devices.iter().enumerate() {
        let port = IB_FIRST_PORT + k as u32;
        let cmd = format!(
            "timeout {limit} {} -d {} -p {port} {args} --use_cuda={gpu}",
            opts.ib_write_bw,
            quote(dev)
        );
        script.push_str(&format!(
            "( {cmd} >\"$t/{k}.server\" 2>&1 & s=$!; sleep {wait}; \
             {cmd} localhost >\"$t/{k}.client\" 2>&1; echo \"exit status $?\" >>\"$t/{k}.client\"; \
             wait $s; echo \"exit status $?\" >>\"$t/{k}.server\" ) &\n"
        ));
    }
    script.push_str(
        "wait
",
    );
    for (k, (dev, gpu)) in devices.iter().enumerate() {
        for side in ["client", "server"] {
            script.push_str(&format!(
                "echo {}; cat \"$t/{k}.{side}\"\n",
                quote(&format!("{IB_SECTION} {dev} GPU {gpu} {side}"))
            ));
        }
    }
    script.push_str("rm -rf \"$t\"\n");
    let c = capture(ctx, &rel, script, false, opts.deadline).await?;
    Ok(judge_ib_sections(&c.text, &devices, profile.ib_write_bw.min_gbps).with_artifact(rel))
}

/// Judges each HCA's part of the loopback output.
fn judge_ib_sections(text: &str, devices: &[(String, u32)], floor: f64) -> Outcome {
    let mut failures = Vec::new();
    let mut inconclusive = Vec::new();
    let mut per_hca = Vec::new();
    let mut lowest: Option<f64> = None;
    for (dev, gpu) in devices {
        let mut part = String::new();
        let mut status: Vec<i64> = Vec::new();
        for side in ["client", "server"] {
            let head = format!("{IB_SECTION} {dev} GPU {gpu} {side}");
            let body = text
                .split_once(&head)
                .map(|(_, rest)| rest.split(IB_SECTION).next().unwrap_or(""))
                .unwrap_or("");
            for line in body.lines() {
                if let Some(code) = line.strip_prefix("exit status ") {
                    status.extend(code.trim().parse::<i64>().ok());
                } else {
                    part.push_str(line);
                    part.push('\n');
                }
            }
        }
        let label = format!("{dev} (GPU {gpu}) loopback");
        // The judge names the port itself; both sides of one loopback
        // often say the same thing: one reason each.
        let named = |r: &String| {
            let r = r.strip_prefix(&format!("{dev}: ")).unwrap_or(r);
            format!("{label}: {r}")
        };
        let add = |to: &mut Vec<String>, r: String| {
            if !to.contains(&r) {
                to.push(r);
            }
        };
        match crate::judge::judge_ib_write_bw(&part, Some(floor)) {
            Ok(j) => {
                let avg = j
                    .metrics
                    .results
                    .iter()
                    .map(|r| r.bw_avg_gbps)
                    .reduce(f64::min);
                if let Some(a) = avg {
                    lowest = Some(lowest.map_or(a, |l: f64| l.min(a)));
                }
                match j.verdict {
                    Verdict::Fail => j.reasons.iter().for_each(|r| add(&mut failures, named(r))),
                    Verdict::Unknown => {
                        j.reasons
                            .iter()
                            .for_each(|r| add(&mut inconclusive, named(r)));
                    }
                    Verdict::Pass if status.iter().any(|s| *s != 0) => failures.push(format!(
                        "{label}: ib_write_bw exited with status {}",
                        status.iter().find(|s| **s != 0).copied().unwrap_or(0)
                    )),
                    Verdict::Pass => {}
                }
                per_hca.push(
                    json!({"device": dev, "gpu": gpu, "bw_avg_gbps": avg, "verdict": j.verdict}),
                );
            }
            Err(e) => {
                let first = part
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("no output");
                // No result table: a run that broke off says why on its
                // first line ("Port number 1 state is Down", "Couldn't
                // connect to …").
                match status.iter().find(|s| **s != 0) {
                    Some(code) => failures.push(format!(
                        "{label}: ib_write_bw exited with status {code}: {first}"
                    )),
                    None => inconclusive
                        .push(format!("{label}: cannot judge ib_write_bw ({first}): {e}")),
                }
                per_hca.push(
                    json!({"device": dev, "gpu": gpu, "bw_avg_gbps": null, "verdict": "unknown"}),
                );
            }
        }
    }
    let metrics = json!({"hcas": per_hca, "floor_gbps": floor, "lowest_gbps": lowest});
    let mut o = if let Some(first) = failures.first() {
        let mut o = Outcome::failed(first.clone());
        o.reasons = failures;
        o
    } else if let Some(first) = inconclusive.first() {
        let mut o = Outcome::unverified(first.clone());
        o.reasons = inconclusive;
        o
    } else {
        Outcome::done(format!(
            "{} HCAs in GPUDirect loopback, lowest {:.1} Gb/s",
            devices.len(),
            lowest.unwrap_or(0.0)
        ))
    };
    o.metrics = metrics;
    o
}

/// An nccl-tests output judged as a step outcome.
fn judged(text: &str, output: &crate::ssh::Output, floor: Option<f64>, what: &str) -> Outcome {
    match judge_nccl(text, floor) {
        Ok(j) => {
            let busbw = j.metrics.busbw_at_largest.unwrap_or(0.0);
            let mut o = super::outcome_of(&j, format!("{what}: busbw {busbw:.1} GB/s"));
            o.metrics = nccl_metrics(&j);
            o
        }
        Err(e) => Outcome::unverified(format!(
            "{what} {}: cannot judge its output: {e}",
            output.outcome()
        )),
    }
}

/// One multi-node run's result.
#[derive(Clone, Debug)]
pub struct MultiNodeRun {
    /// The hosts, launcher first.
    pub hosts: Vec<String>,
    /// Whether it met the cross-node floor with a clean output.
    pub passed: bool,
    /// Why not (empty when passed).
    pub reasons: Vec<String>,
    /// busbw at the largest size, GB/s, when the output had one.
    pub busbw: Option<f64>,
    /// The raw output, relative to the run folder.
    pub artifact: String,
}

/// Runs `all_reduce_perf` across `hosts` (one rank per GPU, `NCCL_ALGO=RING`)
/// from `launcher`, which must be the first of them, keeping the output as
/// `rel` and judging it against the profile's cross-node floor.
pub async fn run_multi_node(
    launcher: &NodeCtx,
    hosts: &[String],
    profile: &HardwareProfile,
    opts: &NcclOptions,
    rel: &str,
) -> anyhow::Result<MultiNodeRun> {
    let g = profile.gpu.count;
    let list: Vec<String> = hosts.iter().map(|h| format!("{h}:{g}")).collect();
    let np = hosts.len() as u64 * u64::from(g);
    let script = format!(
        "mpirun -np {np} -H {} -x NCCL_ALGO=RING {} {}all_reduce_perf -b {} -e {} -f 2 -g 1",
        quote(&list.join(",")),
        opts.mpirun_args,
        opts.tests_dir,
        opts.min_bytes,
        opts.max_bytes
    );
    let c = capture(launcher, rel, script, false, opts.deadline).await?;
    let floor = profile.nccl.cross_node_busbw_gbps;
    let (passed, reasons, busbw) = match judge_nccl(&c.text, Some(floor)) {
        Ok(j) => (
            j.verdict == Verdict::Pass,
            j.reasons.clone(),
            j.metrics.busbw_at_largest,
        ),
        Err(e) => (
            false,
            vec![format!("mpirun {}: {e}", c.output.outcome())],
            None,
        ),
    };
    Ok(MultiNodeRun {
        hosts: hosts.to_vec(),
        passed,
        reasons,
        busbw,
        artifact: c.artifact,
    })
}

/// What a bisection found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bisection {
    /// Nodes that fail even beside a known-good node, with the reason.
    pub bad: Vec<(String, String)>,
    /// Groups that pass alone but fail together: the fault is in the
    /// links or switches between them, not in a node.
    pub between: Vec<(Vec<String>, Vec<String>)>,
    /// Nodes that could not be told apart (no known-good node to pair
    /// them with).
    pub unresolved: Vec<String>,
    /// Runs made.
    pub probes: usize,
}

/// One probe's answer: whether the group met its floor, and why not.
pub type Probe = (bool, String);

/// Finds what holds back `failed`, a group (of two or more nodes) whose
/// run failed: splits it in halves, runs each half of two or more nodes,
/// and goes on into the halves that fail; a lone node is run beside a node
/// already seen to pass (`good`, or one found on the way). When both halves
/// pass alone, the fault lies between them. One bad node among 16 takes
/// eight runs.
pub async fn bisect<F>(
    failed: &[String],
    good: Option<String>,
    mut probe: F,
) -> anyhow::Result<Bisection>
where
    F: AsyncFnMut(&[String]) -> anyhow::Result<Probe>,
{
    struct Split {
        halves: [Vec<String>; 2],
        failed: [Option<bool>; 2],
        reason: [String; 2],
    }
    let mut out = Bisection::default();
    let mut good = good;
    let mut splits: Vec<Split> = Vec::new();
    let mut queue: std::collections::VecDeque<Vec<String>> = [failed.to_vec()].into();
    while let Some(set) = queue.pop_front() {
        if set.len() < 2 {
            out.unresolved.extend(set);
            continue;
        }
        let (a, b) = set.split_at(set.len() / 2);
        let mut split = Split {
            halves: [a.to_vec(), b.to_vec()],
            failed: [None, None],
            reason: [String::new(), String::new()],
        };
        for i in 0..2 {
            if split.halves[i].len() >= 2 {
                let (pass, why) = probe(&split.halves[i]).await?;
                out.probes += 1;
                split.failed[i] = Some(!pass);
                split.reason[i] = why;
                if pass {
                    good.get_or_insert_with(|| split.halves[i][0].clone());
                } else {
                    queue.push_back(split.halves[i].clone());
                }
            }
        }
        splits.push(split);
    }
    // Lone nodes, beside a node known to pass.
    for split in &mut splits {
        for i in 0..2 {
            if split.failed[i].is_some() {
                continue;
            }
            let node = split.halves[i][0].clone();
            let Some(g) = good.clone() else {
                out.unresolved.push(node);
                continue;
            };
            let (pass, why) = probe(&[node.clone(), g.clone()]).await?;
            out.probes += 1;
            split.failed[i] = Some(!pass);
            if pass {
                continue;
            }
            out.bad
                .push((node, format!("{why} (in a run with {g}, which passes)")));
        }
        if split.failed == [Some(false), Some(false)] {
            out.between
                .push((split.halves[0].clone(), split.halves[1].clone()));
        }
    }
    Ok(out)
}

/// A cross-node stage's result, read from its step's outcome (so a resumed
/// run gets it back from the journal).
#[derive(Clone, Debug, PartialEq)]
pub struct RackNccl {
    /// The step's outcome.
    pub outcome: Outcome,
    /// Nodes at fault, with the reason (fail these nodes).
    pub bad: Vec<(String, String)>,
    /// Faults between groups of nodes (fabric, not a node).
    pub between: Vec<String>,
    /// Nodes that could not be cleared or blamed.
    pub unresolved: Vec<String>,
}

impl RackNccl {
    fn from_outcome(outcome: Outcome) -> RackNccl {
        let bad = outcome.metrics["bad_nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| {
                        Some((
                            b["node"].as_str()?.to_owned(),
                            b["reason"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        RackNccl {
            between: strings(&outcome.metrics["between"]),
            unresolved: strings(&outcome.metrics["unresolved"]),
            bad,
            outcome,
        }
    }
}

/// Runs `all_reduce_perf` over the whole rack (`nodes`, launched from the
/// first) as step `rack`; when it fails its floor, bisects to find the
/// node or link at fault. The step fails when the rack does; the nodes to
/// fail are in [`RackNccl::bad`]. `steps` belongs to the rack (e.g.
/// `Steps::new(RACK, "nccl", …)`); only an interrupt is an `Err`.
pub async fn nccl_rack(
    nodes: &[NodeCtx],
    steps: &mut Steps,
    profile: &HardwareProfile,
    opts: &NcclOptions,
) -> Result<RackNccl, Stop> {
    rack_step(steps, "rack", nodes.len(), opts, || {
        rack_work(nodes, profile, opts)
    })
    .await
}

/// The host names of `nodes`, the folder name of a group's runs.
fn group_dir(nodes: &[NodeCtx]) -> String {
    match (nodes.first(), nodes.last()) {
        (Some(a), Some(b)) => format!("{}..{}", a.node(), b.node()),
        _ => "empty".into(),
    }
}

async fn rack_work(
    nodes: &[NodeCtx],
    profile: &HardwareProfile,
    opts: &NcclOptions,
) -> anyhow::Result<Outcome> {
    if nodes.len() < 2 {
        return Ok(Outcome::skipped("fewer than two nodes: no cross-node run"));
    }
    let dir = format!("rack-{}", group_dir(nodes));
    let mut runs: Vec<Value> = Vec::new();
    let mut artifacts = Vec::new();
    let names: Vec<String> = nodes.iter().map(|n| n.node().to_owned()).collect();
    let run = |hosts: Vec<String>, k: usize| {
        let dir = dir.clone();
        async move {
            let Some(launcher) = nodes
                .iter()
                .find(|n| Some(n.node()) == hosts.first().map(String::as_str))
            else {
                anyhow::bail!("no node {:?} to launch from", hosts.first());
            };
            let rel = format!("{dir}/{STAGE}/run-{k:02}-{}n-{}.log", hosts.len(), hosts[0]);
            run_multi_node(launcher, &hosts, profile, opts, &rel).await
        }
    };
    let first = run(names.clone(), 0).await?;
    artifacts.push(first.artifact.clone());
    runs.push(run_json(&first));
    if first.passed {
        let busbw = first.busbw.unwrap_or(0.0);
        let mut o = Outcome::done(format!("{} nodes, ring busbw {busbw:.1} GB/s", names.len()))
            .with_metrics(json!({"runs": runs, "bad_nodes": [], "between": [], "unresolved": []}));
        o.artifacts = artifacts;
        return Ok(o);
    }
    let mut k = 0;
    let found = bisect(&names, None, async |hosts: &[String]| {
        k += 1;
        let r = run(hosts.to_vec(), k).await?;
        artifacts.push(r.artifact.clone());
        runs.push(run_json(&r));
        Ok((r.passed, r.reasons.first().cloned().unwrap_or_default()))
    })
    .await?;
    Ok(rack_outcome(&first, found, runs, artifacts))
}

fn run_json(r: &MultiNodeRun) -> Value {
    json!({"hosts": r.hosts, "passed": r.passed, "busbw": r.busbw, "reasons": r.reasons, "artifact": r.artifact})
}

fn rack_outcome(
    first: &MultiNodeRun,
    found: Bisection,
    runs: Vec<Value>,
    artifacts: Vec<String>,
) -> Outcome {
    let mut reasons: Vec<String> = found
        .bad
        .iter()
        .map(|(n, why)| format!("{n}: {why}"))
        .collect();
    let between: Vec<String> = found
        .between
        .iter()
        .map(|(a, b)| {
            format!(
                "[{}] and [{}] pass alone but not together: check the links and switches between them",
                a.join(","),
                b.join(",")
            )
        })
        .collect();
    reasons.extend(between.iter().cloned());
    if !found.unresolved.is_empty() {
        reasons.push(format!(
            "could not tell apart {}: no node passed to compare with",
            found.unresolved.join(", ")
        ));
    }
    if reasons.is_empty() {
        // Every part passed when run again: the first failure did not
        // reproduce.
        reasons.push(format!(
            "the run over {} nodes failed ({}) but no part of it did when run again: a flaky link?",
            first.hosts.len(),
            first.reasons.first().cloned().unwrap_or_default()
        ));
    }
    let mut o = Outcome::failed(format!(
        "{} nodes: {}",
        first.hosts.len(),
        first.reasons.first().cloned().unwrap_or_default()
    ));
    o.reasons = reasons;
    o.metrics = json!({
        "runs": runs,
        "probes": found.probes,
        "bad_nodes": found.bad.iter().map(|(n, r)| json!({"node": n, "reason": r})).collect::<Vec<_>>(),
        "between": between,
        "unresolved": found.unresolved,
    });
    o.artifacts = artifacts;
    o
}

/// Runs `work` over `n` nodes as `step`, with time for a first run and two
/// per node to bisect or re-pair; a failed step still yields its result.
async fn rack_step<F, Fut>(
    steps: &mut Steps,
    step: &'static str,
    n: usize,
    opts: &NcclOptions,
    work: F,
) -> Result<RackNccl, Stop>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Outcome>>,
{
    let deadline = opts.deadline * (2 * n as u32 + 1);
    match steps.run(step, deadline, work).await {
        Ok(o) => Ok(RackNccl::from_outcome(o)),
        Err(Stop::Failed { outcome, .. }) => Ok(RackNccl::from_outcome(*outcome)),
        Err(e @ Stop::Interrupted(_)) => Err(e),
    }
}

/// Runs disjoint pairs of `nodes` (first with second, third with fourth,
/// …; an odd last node with the first) as step `pairs`; a failing pair's
/// two nodes are each run again beside a node from a passing pair. Same
/// result shape as [`nccl_rack`].
pub async fn nccl_pairs(
    nodes: &[NodeCtx],
    steps: &mut Steps,
    profile: &HardwareProfile,
    opts: &NcclOptions,
) -> Result<RackNccl, Stop> {
    rack_step(steps, "pairs", nodes.len(), opts, || {
        pairs_work(nodes, profile, opts)
    })
    .await
}

async fn pairs_work(
    nodes: &[NodeCtx],
    profile: &HardwareProfile,
    opts: &NcclOptions,
) -> anyhow::Result<Outcome> {
    if nodes.len() < 2 {
        return Ok(Outcome::skipped("fewer than two nodes: no pairs"));
    }
    let dir = format!("rack-{}", group_dir(nodes));
    let names: Vec<String> = nodes.iter().map(|n| n.node().to_owned()).collect();
    let mut pairs: Vec<Vec<String>> = names.chunks(2).map(<[String]>::to_vec).collect();
    if let Some(last) = pairs.last_mut()
        && last.len() == 1
    {
        last.push(names[0].clone());
    }
    let mut runs = Vec::new();
    let mut artifacts = Vec::new();
    let mut failed = Vec::new();
    let mut good = None;
    let mut k = 0;
    let mut run = async |hosts: &[String], runs: &mut Vec<Value>, artifacts: &mut Vec<String>| {
        k += 1;
        let launcher = nodes
            .iter()
            .find(|n| n.node() == hosts[0])
            .ok_or_else(|| anyhow::anyhow!("no node {} to launch from", hosts[0]))?;
        let rel = format!("{dir}/{STAGE}/pair-{k:02}-{}-{}.log", hosts[0], hosts[1]);
        let r = run_multi_node(launcher, hosts, profile, opts, &rel).await?;
        artifacts.push(r.artifact.clone());
        runs.push(run_json(&r));
        anyhow::Ok(r)
    };
    for pair in &pairs {
        let r = run(pair, &mut runs, &mut artifacts).await?;
        if r.passed {
            good.get_or_insert_with(|| pair[0].clone());
        } else {
            failed.push((pair.clone(), r.reasons.first().cloned().unwrap_or_default()));
        }
    }
    if failed.is_empty() {
        let mut o = Outcome::done(format!("{} pairs pass", pairs.len()))
            .with_metrics(json!({"runs": runs, "bad_nodes": [], "between": [], "unresolved": []}));
        o.artifacts = artifacts;
        return Ok(o);
    }
    let mut found = Bisection::default();
    for (pair, why) in &failed {
        let Some(g) = good.clone() else {
            found.unresolved.extend(pair.iter().cloned());
            continue;
        };
        let mut blamed = false;
        for node in pair {
            let r = run(&[node.clone(), g.clone()], &mut runs, &mut artifacts).await?;
            found.probes += 1;
            if !r.passed {
                blamed = true;
                found.bad.push((
                    node.clone(),
                    format!(
                        "{} (in a run with {g}, which passes)",
                        r.reasons.first().cloned().unwrap_or_default()
                    ),
                ));
            }
        }
        if !blamed {
            found
                .between
                .push((vec![pair[0].clone()], vec![format!("{} ({why})", pair[1])]));
        }
    }
    let first = MultiNodeRun {
        hosts: names,
        passed: false,
        reasons: vec![format!("{} of {} pairs failed", failed.len(), pairs.len())],
        busbw: None,
        artifact: String::new(),
    };
    Ok(rack_outcome(&first, found, runs, artifacts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i:02}")).collect()
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A captured loopback (server and client in one file, HDR at
    /// ~202 Gb/s) on one HCA, and a port that is down on another, in the
    /// layout the step keeps.
    fn loopback_output() -> String {
        let real = include_str!(
            "../../tests/fixtures/judge/ib_write_bw/ib_write_bw_loopback_8MB_HDR_MBps.txt"
        );
        format!(
            "{IB_SECTION} ib0 GPU 0 client\n{real}exit status 0\n\
             {IB_SECTION} ib0 GPU 0 server\nexit status 0\n\
             {IB_SECTION} ib1 GPU 1 client\n Port number 1 state is Down\n \
             Couldn't set the link layer\nexit status 1\n\
             {IB_SECTION} ib1 GPU 1 server\nexit status 124\n"
        )
    }

    #[test]
    fn each_hca_of_the_loopback_is_judged_on_its_own() {
        let devices = [("ib0".to_owned(), 0), ("ib1".to_owned(), 1)];
        let text = loopback_output();
        let o = judge_ib_sections(&text, &devices[..1], 190.0);
        assert!(o.passed(), "{o:?}");
        assert!(
            o.detail
                .starts_with("1 HCAs in GPUDirect loopback, lowest 201.8 Gb/s")
        );
        // Both sides report the same shortfall: one reason, naming the HCA
        // once.
        let o = judge_ib_sections(&text, &devices[..1], 375.0);
        assert_eq!(o.reasons.len(), 1, "{o:?}");
        assert!(
            o.reasons[0].starts_with("ib0 (GPU 0) loopback: BW average 201.8 Gb/s < 375 Gb/s"),
            "{o:?}"
        );
        let o = judge_ib_sections(&text, &devices, 190.0);
        assert!(!o.passed());
        assert_eq!(
            o.reasons,
            ["ib1 (GPU 1) loopback: ib_write_bw exited with status 1: Port number 1 state is Down"]
        );
        assert_eq!(
            o.metrics["hcas"][0]["bw_avg_gbps"].as_f64().map(f64::round),
            Some(202.0)
        );
    }

    #[test]
    fn one_bad_node_among_16_in_eight_runs() {
        let all = names(16);
        let found = run(bisect(&all, None, async |hosts: &[String]| {
            let bad = hosts.iter().any(|h| h == "n11");
            Ok((
                !bad,
                if bad {
                    "busbw 150 < 350".to_owned()
                } else {
                    String::new()
                },
            ))
        }))
        .unwrap();
        assert_eq!(found.bad.len(), 1, "{found:?}");
        assert_eq!(found.bad[0].0, "n11");
        assert!(
            found.bad[0]
                .1
                .starts_with("busbw 150 < 350 (in a run with n01"),
            "{found:?}"
        );
        assert!(found.between.is_empty() && found.unresolved.is_empty());
        assert_eq!(found.probes, 8);
    }

    #[test]
    fn a_link_between_halves_and_two_unresolved() {
        let all = names(4);
        // n01..n02 and n03..n04 each pass; together they fail.
        let found = run(bisect(&all, None, async |hosts: &[String]| {
            Ok((hosts.len() < 4, String::new()))
        }))
        .unwrap();
        assert_eq!(found.between.len(), 1);
        assert!(found.bad.is_empty());
        // Two nodes and no reference: cannot say which.
        let found = run(bisect(&names(2), None, async |_: &[String]| {
            Ok((false, String::new()))
        }))
        .unwrap();
        assert_eq!(found.unresolved, ["n01", "n02"]);
    }
}
