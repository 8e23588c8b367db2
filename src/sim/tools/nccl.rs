//! nccl-tests (`all_reduce_perf` and friends, the 2.1x table with `#wrong`)
//! run on one node, and `mpirun -np N -H host:slots,... <test> ...` across
//! nodes of the rack.

use super::{NCCL_TESTS, Peer, ToolCtx, ToolRun, cuda_error, fake_pid, parse_size};
use crate::sim::hw::{CudaProblem, NodeHardware, SoftwareState, mix, signed_unit};

/// Options of an nccl-tests binary.
#[derive(Clone, Debug)]
struct Opts {
    min: u64,
    max: u64,
    step_bytes: u64,
    factor: Option<u64>,
    ngpus: usize,
    nthreads: usize,
    iters: u64,
    warmup: u64,
    agg: u64,
    check: bool,
    graph: u64,
    op: String,
    dtype: &'static str,
    dsize: u64,
    root: i64,
}

const USAGE: &str = "USAGE: all_reduce_perf \n\t[-t,--nthreads <num threads>] \n\t[-g,--ngpus <gpus per thread>] \n\t[-b,--minbytes <min size in bytes>] \n\t[-e,--maxbytes <max size in bytes>] \n\t[-i,--stepbytes <increment size>] \n\t[-f,--stepfactor <increment factor>] \n\t[-n,--iters <iteration count>] \n\t[-m,--agg_iters <aggregated iteration count>] \n\t[-w,--warmup_iters <warmup iteration count>] \n\t[-N,--run_cycles <cycle count> run & print each cycle (default: 1; 0=infinite)] \n\t[-p,--parallel_init <0/1>] \n\t[-c,--check <check iteration count>] \n\t[-o,--op <sum/prod/min/max/avg/mulsum/all>] \n\t[-d,--datatype <nccltype/all>] \n\t[-r,--root <root>] \n\t[-z,--blocking <0/1>] \n\t[-y,--stream_null <0/1>] \n\t[-T,--timeout <time in seconds>] \n\t[-G,--cudagraph <num graph launches>] \n\t[-C,--report_cputime <0/1>] \n\t[-a,--average <0/1/2/3> report average iteration time <0=RANK0/1=AVG/2=MIN/3=MAX>] \n\t[-R,--local_register <1/0> enable local buffer registration on send/recv buffers (default: disable)] \n\t[-h,--help]\n";

fn parse_opts(test: &str, args: &[&str]) -> Result<Opts, ToolRun> {
    let rooted = test == "broadcast_perf";
    let mut o = Opts {
        min: 32 << 20,
        max: 32 << 20,
        step_bytes: 1 << 20,
        factor: None,
        ngpus: 1,
        nthreads: 1,
        iters: 20,
        warmup: 5,
        agg: 1,
        check: true,
        graph: 0,
        op: if matches!(test, "all_reduce_perf" | "reduce_scatter_perf") {
            "sum".into()
        } else {
            "none".into()
        },
        dtype: "float",
        dsize: 4,
        root: if rooted { 0 } else { -1 },
    };
    let long = [
        ("--nthreads", "-t"),
        ("--ngpus", "-g"),
        ("--minbytes", "-b"),
        ("--maxbytes", "-e"),
        ("--stepbytes", "-i"),
        ("--stepfactor", "-f"),
        ("--iters", "-n"),
        ("--agg_iters", "-m"),
        ("--warmup_iters", "-w"),
        ("--run_cycles", "-N"),
        ("--parallel_init", "-p"),
        ("--check", "-c"),
        ("--op", "-o"),
        ("--datatype", "-d"),
        ("--root", "-r"),
        ("--blocking", "-z"),
        ("--stream_null", "-y"),
        ("--timeout", "-T"),
        ("--cudagraph", "-G"),
        ("--report_cputime", "-C"),
        ("--average", "-a"),
        ("--local_register", "-R"),
    ];
    let bad = |what: &str| ToolRun::done(1, format!("invalid {what}\n{USAGE}"), "");
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if a == "-h" || a == "--help" {
            return Err(ToolRun::ok(USAGE));
        }
        let (flag, inline): (String, Option<String>) = if let Some(l) = a.strip_prefix("--") {
            let (name, v) = match l.split_once('=') {
                Some((n, v)) => (format!("--{n}"), Some(v.to_owned())),
                None => (a.to_owned(), None),
            };
            match long.iter().find(|(ln, _)| *ln == name) {
                Some((_, short)) => ((*short).to_owned(), v),
                None => return Err(ToolRun::done(1, format!("invalid option {a}\n{USAGE}"), "")),
            }
        } else if a.starts_with('-') && a.len() >= 2 {
            let (f, rest) = a.split_at(2);
            (f.to_owned(), (!rest.is_empty()).then(|| rest.to_owned()))
        } else {
            return Err(ToolRun::done(
                1,
                format!("invalid argument {a}\n{USAGE}"),
                "",
            ));
        };
        let v = match inline {
            Some(v) => v,
            None => {
                i += 1;
                match args.get(i) {
                    Some(v) => (*v).to_owned(),
                    None => return Err(bad(&format!("option {flag}: missing value"))),
                }
            }
        };
        let num = |v: &str| v.parse::<u64>().map_err(|_| bad(&format!("value {v}")));
        match flag.as_str() {
            "-b" => o.min = parse_size(&v).ok_or_else(|| bad("size"))?,
            "-e" => o.max = parse_size(&v).ok_or_else(|| bad("size"))?,
            "-i" => o.step_bytes = parse_size(&v).ok_or_else(|| bad("size"))?,
            "-f" => o.factor = Some(num(&v)?),
            "-g" => o.ngpus = num(&v)?.max(1) as usize,
            "-t" => o.nthreads = num(&v)?.max(1) as usize,
            "-n" => o.iters = num(&v)?.max(1),
            "-w" => o.warmup = num(&v)?,
            "-m" => o.agg = num(&v)?.max(1),
            "-c" => o.check = num(&v)? != 0,
            "-G" => o.graph = num(&v)?,
            "-r" => o.root = num(&v)? as i64,
            "-o" => {
                if !["sum", "prod", "min", "max", "avg", "mulsum", "all"].contains(&v.as_str()) {
                    return Err(bad("reduction op"));
                }
                if o.op != "none" {
                    o.op = v;
                }
            }
            "-d" => {
                let (name, size) = match v.as_str() {
                    "int8" | "char" => ("int8", 1),
                    "uint8" => ("uint8", 1),
                    "int32" | "int" => ("int32", 4),
                    "uint32" => ("uint32", 4),
                    "int64" => ("int64", 8),
                    "uint64" => ("uint64", 8),
                    "half" | "float16" => ("half", 2),
                    "bfloat16" => ("bfloat16", 2),
                    "float" | "float32" => ("float", 4),
                    "double" | "float64" => ("double", 8),
                    _ => return Err(bad("type")),
                };
                o.dtype = name;
                o.dsize = size;
            }
            "-N" | "-p" | "-z" | "-y" | "-T" | "-C" | "-a" | "-R" => {}
            _ => return Err(ToolRun::done(1, format!("invalid option {a}\n{USAGE}"), "")),
        }
        i += 1;
    }
    if o.max < o.min {
        o.max = o.min;
    }
    Ok(o)
}

/// One rank of a run.
struct Rank {
    host: String,
    pid: u32,
    dev: usize,
    bus: Option<u8>,
}

/// A node taking part: its model and software.
struct Member<'a> {
    host: String,
    hw: &'a NodeHardware,
    sw: &'a SoftwareState,
    procs: usize,
}

fn time_str(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{us:7.0}")
    } else if us >= 100.0 {
        format!("{us:7.1}")
    } else {
        format!("{us:7.2}")
    }
}

/// Bus-bandwidth factor of a collective over `n` ranks.
fn bus_factor(test: &str, n: f64) -> f64 {
    match test {
        "all_reduce_perf" => 2.0 * (n - 1.0) / n,
        "all_gather_perf" | "reduce_scatter_perf" | "alltoall_perf" => (n - 1.0) / n,
        _ => 1.0,
    }
}

/// The sizes the test sweeps.
fn sizes(o: &Opts) -> Vec<u64> {
    let mut out = Vec::new();
    let mut s = o.min;
    loop {
        out.push(s);
        let next = match o.factor {
            Some(f) if f > 1 => s.saturating_mul(f),
            _ => s.saturating_add(o.step_bytes.max(1)),
        };
        if next > o.max || next == s || out.len() > 64 {
            break;
        }
        s = next;
    }
    out
}

/// The failure a member's processes hit, if any: (message, exit code).
fn member_failure(test: &str, m: &Member, o: &Opts) -> Option<(String, i32, bool)> {
    if m.sw.nccl.is_none() {
        return Some((
            format!(
                "{test}: error while loading shared libraries: libnccl.so.2: cannot open shared object file: No such file or directory"
            ),
            127,
            true,
        ));
    }
    if let Some(p) = m.sw.cuda_problem(m.hw) {
        let (_, msg) = cuda_error(&p);
        let line = if p == CudaProblem::FabricManagerDown {
            941
        } else {
            926
        };
        return Some((
            format!("Test CUDA failure common.cu:{line} '{msg}'"),
            2,
            false,
        ));
    }
    let present = m.hw.present_gpus().count();
    if m.procs * o.ngpus * o.nthreads > present {
        return Some((
            "Test CUDA failure common.cu:1038 'invalid device ordinal'".to_owned(),
            2,
            false,
        ));
    }
    None
}

/// Runs `test` over `members` (one node for a local run) and renders the
/// output as rank 0 prints it.
fn run_test(
    ctx: &ToolCtx,
    test: &str,
    o: &Opts,
    members: &[Member],
    tag: bool,
    via_mpirun: bool,
) -> ToolRun {
    let mut ranks: Vec<Rank> = Vec::new();
    for m in members {
        let gpus: Vec<u8> = m.hw.present_gpus().map(|g| g.pci_bus).collect();
        for p in 0..m.procs {
            let pid = fake_pid(m.hw, 0x700 + p as u64, ctx.now_unix);
            for t in 0..o.nthreads {
                for g in 0..o.ngpus {
                    let dev = (p * o.nthreads + t) * o.ngpus + g;
                    ranks.push(Rank {
                        host: m.host.clone(),
                        pid: if via_mpirun {
                            pid
                        } else {
                            fake_pid(m.hw, 0x700, ctx.now_unix)
                        },
                        dev,
                        bus: gpus.get(dev).copied(),
                    });
                }
            }
        }
    }
    let nranks = ranks.len();
    let prefix = |rank: usize| -> String {
        if tag {
            format!("[1,{rank}]<stdout>:")
        } else {
            String::new()
        }
    };
    let p0 = prefix(0);
    let mut run = ToolRun::steps(0.6);
    let step = match o.factor {
        Some(f) if f > 1 => format!("{f}(factor)"),
        _ => format!("{}(bytes)", o.step_bytes),
    };
    let mut head = format!(
        "{p0}# nThread {} nGpus {} minBytes {} maxBytes {} step: {step} warmup iters: {} iters: {} agg iters: {} validation: {} graph: {}\n{p0}#\n{p0}# Using devices\n",
        o.nthreads,
        o.ngpus,
        o.min,
        o.max,
        o.warmup,
        o.iters,
        o.agg,
        u8::from(o.check),
        o.graph
    );

    // Failures: the first member that cannot run.
    if let Some((m, (msg, code, loader))) = members
        .iter()
        .find_map(|m| member_failure(test, m, o).map(|f| (m, f)))
    {
        let pid = fake_pid(m.hw, 0x700, ctx.now_unix);
        let rank = ranks.iter().position(|r| r.host == m.host).unwrap_or(0);
        if loader {
            if !via_mpirun {
                return ToolRun::err(127, format!("{msg}\n"));
            }
            run.step(1.0, "");
            run.stderr = format!("{msg}\n{}", mpi_abort(rank, code));
            run.code = code;
            return run;
        }
        let pr = prefix(rank);
        head.push_str(&format!(
            "{pr}{}: {msg}\n{pr} .. {} pid {pid}: Test failure common.cu:891\n",
            m.host, m.host
        ));
        run.step(2.0, head);
        run.code = code;
        if via_mpirun {
            run.stderr = mpi_abort(rank, code);
        }
        return run;
    }

    let model = &ctx.hw.profile.gpu.model;
    for (i, r) in ranks.iter().enumerate() {
        let bus = r
            .bus
            .map_or_else(|| "0x00".to_owned(), |b| format!("0x{b:02x}"));
        head.push_str(&format!(
            "{p0}#  Rank {i:2} Group  0 Pid {:6} on {:>10} device {:2} [{bus}] {model}\n",
            r.pid, r.host, r.dev
        ));
    }
    head.push_str(&format!(
        "{p0}#\n{p0}#                                                              out-of-place                       in-place\n{p0}#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong\n{p0}#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)\n"
    ));
    // NCCL init and connection setup take a few seconds.
    run.step(2.0 + 0.5 * members.len() as f64, head);

    let cross = members.len() > 1;
    let peak = if cross {
        members
            .iter()
            .map(|m| m.hw.nccl_cross_node_peak_gbps())
            .fold(f64::INFINITY, f64::min)
    } else {
        members[0].hw.nccl_in_node_peak_gbps()
    };
    let ecc = members
        .iter()
        .find(|m| m.hw.present_gpus().any(|g| g.ecc_uncorrectable > 0));
    let n = nranks as f64;
    let factor = bus_factor(test, n);
    // One rank moves nothing over the links: a local copy at HBM speed.
    let algbw_peak = if factor > 0.0 { peak / factor } else { 1_200.0 };
    let (t0, ramp) = if cross { (45.0, 300.0) } else { (25.0, 90.0) };
    let per_rank = matches!(
        test,
        "all_gather_perf" | "reduce_scatter_perf" | "alltoall_perf"
    );
    let unit = o.dsize * if per_rank { nranks as u64 } else { 1 };
    let seed = members.iter().fold(0u64, |a, m| a ^ m.hw.seed);
    let mut sum_bw = 0.0;
    let mut rows = 0usize;
    for size in sizes(o) {
        let size = size / unit * unit;
        let count = size / unit;
        if let Some(m) = ecc
            && size >= 1 << 20
        {
            let pid = fake_pid(m.hw, 0x700, ctx.now_unix);
            run.step(
                1.0,
                format!(
                    "{p0}{}: Test CUDA failure common.cu:1145 'uncorrectable ECC error encountered'\n{p0} .. {} pid {pid}: Test failure common.cu:891\n",
                    m.host, m.host
                ),
            );
            run.code = 2;
            if via_mpirun {
                run.stderr = mpi_abort(0, 2);
            }
            return run;
        }
        let s = size as f64;
        let mut halves = Vec::new();
        let mut secs = 0.0;
        for half in 0..2u64 {
            let jitter = 1.0 + signed_unit(seed, mix(size, half)) * 0.004;
            let us = (t0 + s / (algbw_peak * 1e3) + ramp * s / (s + 16.0 * 1_048_576.0)) * jitter;
            let algbw = s / us / 1e3;
            let busbw = algbw * factor;
            sum_bw += busbw;
            secs += us * (o.iters * o.agg + o.warmup) as f64 / 1e6;
            let wrong = if o.check { "0" } else { "N/A" };
            halves.push(format!(
                "  {}  {algbw:6.2}  {busbw:6.2}  {wrong:>5}",
                time_str(us)
            ));
        }
        rows += 1;
        run.step(
            secs + 0.05,
            format!(
                "{p0}{size:12}  {count:12}  {:>8}  {:>6}  {:>6}{}{}\n",
                o.dtype, o.op, o.root, halves[0], halves[1]
            ),
        );
    }
    let avg = if rows > 0 {
        sum_bw / (2 * rows) as f64
    } else {
        0.0
    };
    run.step(
        0.2,
        format!(
            "{p0}# Out of bounds values : 0 OK\n{p0}# Avg bus bandwidth    : {avg:.3}\n{p0}#\n"
        ),
    );
    run
}

/// What OpenMPI prints when a rank exits non-zero.
fn mpi_abort(rank: usize, code: i32) -> String {
    format!(
        "--------------------------------------------------------------------------\nPrimary job  terminated normally, but 1 process returned\na non-zero exit code. Per user-direction, the job has been aborted.\n--------------------------------------------------------------------------\n--------------------------------------------------------------------------\nmpirun detected that one or more processes exited with non-zero status, thus causing\nthe job to be terminated. The first process to do so was:\n\n  Process name: [[41237,1],{rank}]\n  Exit code:    {code}\n--------------------------------------------------------------------------\n"
    )
}

/// An nccl-tests binary run directly on this node.
pub(super) fn run_local(ctx: &mut ToolCtx, test: &str, args: &[&str]) -> ToolRun {
    let o = match parse_opts(test, args) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let member = Member {
        host: ctx.hw.node.clone(),
        hw: ctx.hw,
        sw: ctx.sw,
        procs: 1,
    };
    run_test(ctx, test, &o, &[member], false, false)
}

/// `mpirun [options] PROGRAM [args]`: nccl-tests across the hosts of `-H`.
pub(super) fn mpirun(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    const WITH_VALUE: &[&str] = &[
        "-np",
        "-n",
        "--np",
        "-c",
        "-H",
        "--host",
        "-host",
        "-x",
        "--map-by",
        "-map-by",
        "--bind-to",
        "-bind-to",
        "--rank-by",
        "-rank-by",
        "-N",
        "--npernode",
        "-npernode",
        "--prefix",
        "-prefix",
        "-wdir",
        "--wdir",
        "--cpus-per-proc",
        "--cpus-per-rank",
        "--output-filename",
        "--hostfile",
        "-hostfile",
        "--machinefile",
        "-machinefile",
        "--mca-param-file",
        "--launch-agent",
    ];
    let mut np: Option<usize> = None;
    let mut per_node: Option<usize> = None;
    let mut hosts: Vec<(String, usize)> = Vec::new();
    let mut tag = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if !a.starts_with('-') {
            break;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (a, None),
        };
        if flag == "--mca" || flag == "-mca" || flag == "--gmca" {
            i += 3;
            continue;
        }
        if WITH_VALUE.contains(&flag) {
            let v = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    match args.get(i) {
                        Some(v) => v,
                        None => {
                            return ToolRun::err(
                                1,
                                format!(
                                    "mpirun: Error: option \"{flag}\" did not have enough parameters (1)\n"
                                ),
                            );
                        }
                    }
                }
            };
            match flag {
                "-np" | "-n" | "--np" | "-c" => np = v.parse().ok(),
                "-N" | "--npernode" | "-npernode" => per_node = v.parse().ok(),
                "-H" | "--host" | "-host" => {
                    for h in v.split(',').filter(|h| !h.is_empty()) {
                        let (name, slots) = match h.rsplit_once(':') {
                            Some((n, s)) => (n, s.parse().unwrap_or(1)),
                            None => (h, 1),
                        };
                        hosts.push((name.to_owned(), slots));
                    }
                }
                "--hostfile" | "-hostfile" | "--machinefile" | "-machinefile" => {
                    return ToolRun::err(
                        1,
                        format!(
                            "mpirun (simulated): hostfiles are not read; pass the hosts with -H instead of {flag} {v}\n"
                        ),
                    );
                }
                _ => {}
            }
        } else if matches!(flag, "--tag-output" | "-tag-output") {
            tag = true;
        }
        i += 1;
    }
    let Some(program) = args.get(i) else {
        return ToolRun::err(
            1,
            "--------------------------------------------------------------------------\nmpirun could not find anything to do.\n\nIt is possible that you forgot to specify how many processes to run\nvia the \"-np\" argument.\n--------------------------------------------------------------------------\n",
        );
    };
    let test = program.rsplit('/').next().unwrap_or(program);
    if !NCCL_TESTS.contains(&test) {
        return ToolRun::err(
            1,
            format!(
                "mpirun (simulated): only nccl-tests binaries run under mpirun here, not {program}\n"
            ),
        );
    }
    let o = match parse_opts(test, &args[i + 1..]) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if hosts.is_empty() {
        hosts.push((ctx.hw.node.clone(), ctx.hw.present_gpus().count().max(1)));
    }
    if let Some(n) = per_node {
        for h in &mut hosts {
            h.1 = n;
        }
    }
    let slots: usize = hosts.iter().map(|h| h.1).sum();
    let np = np.unwrap_or(slots);
    if np > slots {
        return ToolRun::err(
            1,
            format!(
                "--------------------------------------------------------------------------\nThere are not enough slots available in the system to satisfy the {np}\nslots that were requested by the application:\n\n  {program}\n\nEither request fewer slots for your application, or make more slots\navailable for use.\n--------------------------------------------------------------------------\n"
            ),
        );
    }
    // Fill hosts slot by slot, in order.
    let mut left = np;
    let mut plan: Vec<(String, usize)> = Vec::new();
    for (h, s) in &hosts {
        if left == 0 {
            break;
        }
        let take = (*s).min(left);
        left -= take;
        plan.push((h.clone(), take));
    }
    let mut peers: Vec<(String, Peer)> = Vec::new();
    for (h, _) in &plan {
        if h == &ctx.hw.node || h == "localhost" || h == "127.0.0.1" {
            continue;
        }
        match (ctx.peers)(h) {
            Some(p) => peers.push((h.clone(), p)),
            None => {
                return ToolRun::err(
                    1,
                    format!(
                        "ssh: Could not resolve hostname {h}: Name or service not known\n--------------------------------------------------------------------------\nORTE was unable to reliably start one or more daemons.\nThis usually is caused by:\n\n* not finding the required libraries and/or binaries on\n  one or more nodes. Please check your PATH and LD_LIBRARY_PATH\n  settings, or configure OMPI with --enable-orterun-prefix-by-default\n\n* lack of authority to execute on one or more specified nodes.\n  Please verify your allocation and authorities.\n\n* the inability to write startup files into /tmp (--tmpdir/orte_tmpdir_base).\n  Please check with your sys admin to determine the correct location to use.\n--------------------------------------------------------------------------\n"
                    ),
                );
            }
        }
    }
    let members: Vec<Member> = plan
        .iter()
        .map(|(h, procs)| match peers.iter().find(|(n, _)| n == h) {
            Some((_, p)) => Member {
                host: h.clone(),
                hw: &p.hw,
                sw: &p.sw,
                procs: *procs,
            },
            None => Member {
                host: if h == "localhost" || h == "127.0.0.1" {
                    ctx.hw.node.clone()
                } else {
                    h.clone()
                },
                hw: ctx.hw,
                sw: ctx.sw,
                procs: *procs,
            },
        })
        .collect();
    run_test(ctx, test, &o, &members, tag, true)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Bench;
    use crate::judge::{Verdict, judge_nccl};
    use crate::sim::hw::HwFault;
    use crate::sim::hw::tests::h100;

    const SWEEP: &str = "all_reduce_perf -b 8 -e 16G -f 2 -g 8";

    fn text(r: &super::ToolRun) -> String {
        format!("{}{}", r.stdout(), r.stderr)
    }

    #[test]
    fn healthy_node_passes_its_floor() {
        let mut b = Bench::ready("node001");
        let floor = b.hw.profile.nccl.in_node_busbw_gbps;
        let r = b.run(SWEEP);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let j = judge_nccl(&text(&r), Some(floor)).unwrap().into_json();
        assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
        let bw = j.metrics["busbw_at_largest"].as_f64().unwrap();
        assert!(bw > floor * 1.05 && bw < floor * 1.12, "{bw}");
        assert_eq!(j.metrics["gpus"], 8);
        assert_eq!(j.metrics["largest_size"], 17_179_869_184u64);
        // The row layout of nccl-tests 2.1x.
        let out = r.stdout();
        let row = out.lines().find(|l| l.contains(" 134217728 ")).unwrap();
        assert!(
            row.starts_with("   134217728      33554432     float     sum      -1  "),
            "{row}"
        );
    }

    #[test]
    fn every_collective_parses() {
        let mut b = Bench::ready("node001");
        for t in super::NCCL_TESTS {
            let r = b.run(&format!("{t} -b 1M -e 1G -f 4 -g 8"));
            let j = judge_nccl(&text(&r), None).unwrap();
            assert_eq!(j.verdict, Verdict::Pass, "{t}: {:?}", j.reasons);
        }
    }

    #[test]
    fn nvlink_down_falls_below_the_floor() {
        let mut b = Bench::ready("node001");
        b.hw.apply(&HwFault::NvlinkDown { gpu: 3, link: 7 })
            .unwrap();
        let floor = b.hw.profile.nccl.in_node_busbw_gbps;
        let j = judge_nccl(&text(&b.run(SWEEP)), Some(floor))
            .unwrap()
            .into_json();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[0].contains("busbw"), "{:?}", j.reasons);
        assert!(j.metrics["busbw_at_largest"].as_f64().unwrap() < floor * 0.5);
    }

    #[test]
    fn fabric_manager_down_crashes_like_issue_264() {
        let mut b = Bench::ready("test");
        b.run("systemctl stop nvidia-fabricmanager");
        let r = b.run("all_reduce_perf -b 8 -e 128M -f 2 -g 8");
        assert_eq!(r.code, 2);
        let out = r.stdout();
        assert!(out.contains("# Using devices\ntest: Test CUDA failure common.cu:941 'system not yet initialized'\n .. test pid "), "{out}");
        let j = judge_nccl(&out, None).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[0].contains("fabricmanager"), "{:?}", j.reasons);
    }

    #[test]
    fn missing_library_and_gpu() {
        let mut b = Bench::bare("n", &h100());
        let r = b.run(SWEEP);
        assert_eq!(r.code, 127);
        assert!(r.stderr.contains("libnccl.so.2"));
        let mut b = Bench::ready("n");
        b.hw.apply(&HwFault::GpuMissing { gpu: 6 }).unwrap();
        let j = judge_nccl(&text(&b.run(SWEEP)), None).unwrap();
        assert!(
            j.reasons[0].contains("invalid device ordinal"),
            "{:?}",
            j.reasons
        );
    }

    fn pair(fault: Option<HwFault>) -> (Bench, String) {
        let mut a = Bench::ready("node001");
        let mut peer = Bench::ready("node002");
        if let Some(f) = fault {
            peer.hw.apply(&f).unwrap();
        }
        a.peers.push(peer.as_peer());
        let r = a.run("mpirun -np 16 -H node001:8,node002:8 --allow-run-as-root -x NCCL_DEBUG=WARN --mca btl tcp,self all_reduce_perf -b 1G -e 16G -f 2 -g 1");
        assert!(r.stderr.is_empty() || r.code != 0, "{}", r.stderr);
        let t = text(&r);
        (a, t)
    }

    #[test]
    fn cross_node_healthy_and_degraded() {
        let (a, out) = pair(None);
        let floor = a.hw.profile.nccl.cross_node_busbw_gbps;
        let j = judge_nccl(&out, Some(floor)).unwrap().into_json();
        assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
        assert_eq!(j.metrics["gpus"], 16);
        assert_eq!(j.metrics["hosts"].as_array().unwrap().len(), 2);
        let bw = j.metrics["busbw_at_largest"].as_f64().unwrap();
        assert!(bw > floor * 1.04 && bw < 400.0, "{bw}");

        let (_, out) = pair(Some(HwFault::IbPortDown { port: 2 }));
        let j = judge_nccl(&out, Some(floor)).unwrap().into_json();
        assert_eq!(j.verdict, Verdict::Fail);
        let bw = j.metrics["busbw_at_largest"].as_f64().unwrap();
        assert!((140.0..170.0).contains(&bw), "{bw}");

        let (_, out) = pair(Some(HwFault::IbDegraded {
            port: 0,
            rate_gbps: 200,
        }));
        let j = judge_nccl(&out, Some(floor)).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
    }

    #[test]
    fn cross_node_with_unready_peer_crashes() {
        let mut a = Bench::ready("node001");
        let mut peer = Bench::ready("node002");
        peer.run("systemctl stop nvidia-fabricmanager");
        a.peers.push(peer.as_peer());
        let r = a.run(
            "mpirun -np 16 -H node001:8,node002:8 --tag-output all_reduce_perf -b 8 -e 1G -f 2",
        );
        assert_eq!(r.code, 2);
        let j = judge_nccl(&text(&r), None).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[0].contains("node002"), "{:?}", j.reasons);
        let r = a.run("mpirun -np 16 -H node001:8,node009:8 all_reduce_perf");
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("Could not resolve hostname node009"));
    }
}
