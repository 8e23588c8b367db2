//! `nvbandwidth [-t TESTCASE...] [-l]` (v0.4 text layout).

use super::gpu_burn::missing_libcuda;
use super::{ToolCtx, ToolRun, cuda_error};
use crate::sim::hw::{CudaProblem, Gpu, cuda_version_of, mix, signed_unit};

/// Direction of a test's matrix.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// One CPU row, a column per GPU.
    Host,
    /// GPU rows and columns.
    Peer,
}

/// (name, engine, arrow, shape, bidirectional)
const TESTS: &[(&str, &str, &str, Shape, bool)] = &[
    ("host_to_device_memcpy_ce", "CE", "->", Shape::Host, false),
    ("device_to_host_memcpy_ce", "CE", "<-", Shape::Host, false),
    (
        "host_to_device_bidirectional_memcpy_ce",
        "CE",
        "<->",
        Shape::Host,
        true,
    ),
    (
        "device_to_host_bidirectional_memcpy_ce",
        "CE",
        "<->",
        Shape::Host,
        true,
    ),
    (
        "device_to_device_memcpy_read_ce",
        "CE",
        "->",
        Shape::Peer,
        false,
    ),
    (
        "device_to_device_memcpy_write_ce",
        "CE",
        "<-",
        Shape::Peer,
        false,
    ),
    (
        "device_to_device_bidirectional_memcpy_read_ce",
        "CE",
        "<->",
        Shape::Peer,
        true,
    ),
    (
        "device_to_device_bidirectional_memcpy_write_ce",
        "CE",
        "<->",
        Shape::Peer,
        true,
    ),
    ("all_to_host_memcpy_ce", "CE", "<-", Shape::Host, false),
    ("host_to_all_memcpy_ce", "CE", "->", Shape::Host, false),
    ("host_to_device_memcpy_sm", "SM", "->", Shape::Host, false),
    ("device_to_host_memcpy_sm", "SM", "<-", Shape::Host, false),
    (
        "device_to_device_memcpy_read_sm",
        "SM",
        "->",
        Shape::Peer,
        false,
    ),
    (
        "device_to_device_memcpy_write_sm",
        "SM",
        "<-",
        Shape::Peer,
        false,
    ),
];

pub(super) fn run(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    let mut wanted: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        match a.split('=').next().unwrap_or(a) {
            "-t" | "--testcase" => {
                if let Some((_, v)) = a.split_once('=') {
                    wanted.push(v.to_owned());
                }
                while let Some(v) = args.get(i + 1).filter(|v| !v.starts_with('-')) {
                    wanted.push((*v).to_owned());
                    i += 1;
                }
            }
            "-l" | "--list" => {
                let mut o = header_version();
                o.push_str("Index, Name:\n\tDescription\n=======================\n");
                for (k, t) in TESTS.iter().enumerate() {
                    o.push_str(&format!("{k}, {}:\n\t{}\n\n", t.0, t.0.replace('_', " ")));
                }
                return ToolRun::ok(o);
            }
            "-h" | "--help" => {
                return ToolRun::ok(
                    "nvbandwidth CLI:\n  -h [ --help ]                  Produce help message\n  -b [ --bufferSize ] arg (=512) Memcpy buffer size in MiB\n  -l [ --list ]                  List available testcases\n  -t [ --testcase ] arg          Testcase(s) to run (by name or index)\n  -v [ --verbose ]               Verbose output\n",
                );
            }
            "-b" | "--bufferSize" | "-i" | "--testSamples" => i += 1,
            "-v" | "--verbose" | "-s" | "--skipVerification" | "-d" | "--disableAffinity"
            | "-m" | "--useMean" | "-j" | "--json" => {}
            _ => {
                return ToolRun::done(
                    1,
                    format!(
                        "{}ERROR: Invalid Arguments \nnvbandwidth {} \n",
                        header_version(),
                        args.join(" ")
                    ),
                    "",
                );
            }
        }
        i += 1;
    }
    let problem = ctx.sw.cuda_problem(ctx.hw);
    if problem == Some(CudaProblem::NoDriver) {
        return missing_libcuda("./nvbandwidth");
    }
    let mut out = header_version();
    if let Some(p) = problem {
        let (name, msg) = cuda_error(&p);
        return ToolRun::done(
            1,
            out,
            format!("[{name}] {msg} in expression cuInit(0) in nvbandwidth.cpp:213\n"),
        );
    }
    let driver = ctx.sw.loaded_driver.clone().unwrap_or_default();
    let (major, minor) = cuda_version_of(&driver)
        .split_once('.')
        .map(|(a, b)| {
            (
                a.parse::<u32>().unwrap_or(12),
                b.parse::<u32>().unwrap_or(0),
            )
        })
        .unwrap_or((12, 0));
    out.push_str(&format!(
        "CUDA Runtime Version: 12020\nCUDA Driver Version: {}\nDriver Version: {driver}\n\n",
        major * 1000 + minor * 10
    ));
    let gpus: Vec<&Gpu> = ctx.hw.present_gpus().collect();
    for (k, _) in gpus.iter().enumerate() {
        out.push_str(&format!("Device {k}: {}\n", ctx.hw.profile.gpu.model));
    }
    out.push('\n');
    let mut run = ToolRun::steps(0.3);
    run.step(1.0, out);
    let selected: Vec<String> = if wanted.is_empty() {
        TESTS.iter().map(|t| t.0.to_owned()).collect()
    } else {
        wanted
    };
    for name in selected {
        let found = name
            .parse::<usize>()
            .ok()
            .and_then(|k| TESTS.get(k))
            .or_else(|| TESTS.iter().find(|t| t.0 == name));
        let Some(&(name, engine, arrow, shape, bidir)) = found else {
            run.step(0.0, format!("ERROR: Testcase {name} not found!\n\n"));
            continue;
        };
        run.step(
            if shape == Shape::Peer { 12.0 } else { 4.0 },
            matrix(ctx, &gpus, name, engine, arrow, shape, bidir),
        );
    }
    run
}

fn header_version() -> String {
    "nvbandwidth Version: v0.4\nBuilt from Git version: v0.4.2-12-g8857188\n\nNOTE: This tool reports current measured bandwidth on your system.\nAdditional system-specific tuning may be required to achieve maximal peak bandwidth.\n\n".to_owned()
}

fn matrix(
    ctx: &ToolCtx,
    gpus: &[&Gpu],
    name: &str,
    engine: &str,
    arrow: &str,
    shape: Shape,
    bidir: bool,
) -> String {
    let spec = ctx.hw.spec();
    let seed = mix(ctx.hw.seed, crate::sim::hw::fnv1a(name.as_bytes()));
    let mut o = format!("Running {name}.\n");
    let (row_kind, col_kind) = match shape {
        Shape::Host => ("CPU", "GPU"),
        Shape::Peer => ("GPU", "GPU"),
    };
    o.push_str(&format!(
        "memcpy {engine} {row_kind}(row) {arrow} {col_kind}(column) bandwidth (GB/s)\n"
    ));
    let rows = if shape == Shape::Host { 1 } else { gpus.len() };
    let w = rows.saturating_sub(1).to_string().len();
    o.push_str(&" ".repeat(w));
    for k in 0..gpus.len() {
        o.push_str(&format!("{k:>10}"));
    }
    o.push('\n');
    let sm = if engine == "SM" { 0.97 } else { 1.0 };
    let mut sum = 0.0;
    for r in 0..rows {
        o.push_str(&format!("{r:<w$}"));
        for (c, g) in gpus.iter().enumerate() {
            if shape == Shape::Peer && r == c {
                o.push_str(&format!("{:>10}", "N/A"));
                continue;
            }
            let jitter = 1.0 + signed_unit(seed, (r * 64 + c) as u64) * 0.003;
            let mut v = match shape {
                Shape::Host => spec.h2d_gbps * if bidir { 0.72 } else { 1.0 },
                Shape::Peer => spec.d2d_gbps * if bidir { 0.94 } else { 1.0 },
            } * sm
                * jitter;
            if shape == Shape::Peer && (g.nvlink_degraded() || gpus[r].nvlink_degraded()) {
                v *= 0.45;
            }
            if shape == Shape::Host {
                v *= g.pcie_factor;
            }
            sum += v;
            o.push_str(&format!("{v:>10.2}"));
        }
        o.push('\n');
    }
    o.push_str(&format!("\nSUM {name} {sum:.2}\n\n"));
    o
}

#[cfg(test)]
mod tests {
    use super::super::tests::Bench;
    use crate::sim::hw::HwFault;

    /// The values of a matrix, row by row, `None` for N/A.
    fn cells(out: &str) -> Vec<Vec<Option<f64>>> {
        out.lines()
            .skip_while(|l| !l.starts_with("memcpy"))
            .skip(2)
            .take_while(|l| !l.is_empty())
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map(|v| v.parse().ok())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn healthy_d2d_is_above_the_floor_and_nvlink_down_is_not() {
        let mut b = Bench::ready("node001");
        let floor = b.hw.profile.nvbandwidth.d2d_gbps;
        let out = b
            .run("nvbandwidth -t device_to_device_memcpy_read_ce")
            .stdout();
        assert!(
            out.contains(
                "memcpy CE GPU(row) -> GPU(column) bandwidth (GB/s)\n          0         1"
            ),
            "{out}"
        );
        assert!(out.contains("Driver Version: 570.133.20"));
        let m = cells(&out);
        assert_eq!(m.len(), 8);
        assert!(m.iter().flatten().flatten().all(|v| *v > floor));
        b.hw.apply(&HwFault::NvlinkDown { gpu: 1, link: 0 })
            .unwrap();
        let m = cells(
            &b.run("nvbandwidth -t device_to_device_memcpy_read_ce")
                .stdout(),
        );
        assert!(m[1].iter().flatten().all(|v| *v < floor));
        assert!(m[2][3].unwrap() > floor);
        let h2d = cells(&b.run("nvbandwidth -t host_to_device_memcpy_ce").stdout());
        assert!(
            h2d[0]
                .iter()
                .flatten()
                .all(|v| *v > b.hw.profile.nvbandwidth.h2d_gbps)
        );
    }

    #[test]
    fn a_slow_host_link_shows_in_both_directions_and_nowhere_else() {
        let mut b = Bench::ready("node001");
        b.hw.apply(&HwFault::PcieSlow {
            gpu: 6,
            factor: 0.5,
        })
        .unwrap();
        let floor = b.hw.profile.nvbandwidth.h2d_gbps;
        for test in ["host_to_device_memcpy_ce", "device_to_host_memcpy_ce"] {
            let m = cells(&b.run(&format!("nvbandwidth -t {test}")).stdout());
            for (c, v) in m[0].iter().enumerate() {
                assert_eq!(v.unwrap() < floor, c == 6, "{test} GPU {c}: {v:?}");
            }
        }
        let d2d = cells(
            &b.run("nvbandwidth -t device_to_device_memcpy_read_ce")
                .stdout(),
        );
        let d2d_floor = b.hw.profile.nvbandwidth.d2d_gbps;
        assert!(d2d.iter().flatten().flatten().all(|v| *v > d2d_floor));
    }

    #[test]
    fn fails_without_fabric_manager() {
        let mut b = Bench::ready("n");
        b.run("systemctl stop nvidia-fabricmanager");
        let r = b.run("nvbandwidth");
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("system not yet initialized"));
    }
}
