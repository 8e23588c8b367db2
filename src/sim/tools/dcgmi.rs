//! `dcgmi diag -r N [-j] [-i GPUS]`, `dcgmi discovery -l`, `dcgmi nvlink -s`,
//! `dcgmi --version`. The table follows DCGM 3.3 (with the Metadata
//! section); `-j` follows DCGM 4 (`"DCGM Diagnostic"`, entity results) when
//! DCGM 4 is installed and DCGM 3 (`"DCGM GPU Diagnostic"`) otherwise.

use serde_json::{Map, Value, json};

use super::{ToolCtx, ToolRun};
use crate::sim::hw::{CudaProblem, Gpu};

const CONNECT_ERROR: &str = "Error: unable to establish a connection to the specified host: localhost\nError: Unable to connect to host engine. Host engine connection invalid/disconnected.\n";

/// Exit status of `dcgmi diag` when a test failed (DCGM_ST_NVVS_ERROR).
const DIAG_FAILED: i32 = 226;

pub(super) fn run(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    if args
        .first()
        .is_some_and(|a| *a == "--version" || *a == "-v")
    {
        let v = ctx.sw.dcgm.clone().unwrap_or_default();
        return ToolRun::ok(format!("\ndcgmi  version: {v}\n\n"));
    }
    if !ctx.sw.is_active("nvidia-dcgm") {
        return ToolRun::done(248, CONNECT_ERROR, "");
    }
    match args.first() {
        Some(&"diag") => diag(ctx, &args[1..]),
        Some(&"discovery") => discovery(ctx),
        Some(&"nvlink") => nvlink(ctx),
        _ => ToolRun::done(
            1,
            "",
            "ERROR: Invalid subsystem.\n\nUsage: dcgmi <subsystem>\n   subsystems: config, diag, discovery, group, health, introspect, modules, nvlink, policy, profile, stats, topo, fieldgroup, dmon, test, set, mig\n",
        ),
    }
}

/// Result of one test on one GPU.
#[derive(Clone, Debug, PartialEq)]
enum Res {
    Pass,
    Skip,
    Fail(String),
}

/// One test row: its table name, DCGM 4 JSON name, and per-GPU results
/// (`None` for tests without per-GPU results, such as the deployment ones).
struct Test {
    table: &'static str,
    json: &'static str,
    category: &'static str,
    results: Vec<(u32, Res)>,
    info: Vec<String>,
}

fn diag(ctx: &ToolCtx, args: &[&str]) -> ToolRun {
    let mut level: Option<u32> = None;
    let mut json_out = false;
    let mut only: Option<Vec<u32>> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (a, None),
        };
        let value = |i: &mut usize| -> Option<String> {
            inline.clone().or_else(|| {
                *i += 1;
                args.get(*i).map(|s| (*s).to_owned())
            })
        };
        match flag {
            "-r" | "--run" => {
                level = value(&mut i).and_then(|v| match v.as_str() {
                    "1" | "short" => Some(1),
                    "2" | "medium" => Some(2),
                    "3" | "long" => Some(3),
                    "4" | "xlong" => Some(4),
                    _ => None,
                });
                if level.is_none() {
                    return ToolRun::done(
                        1,
                        "",
                        "Error: Invalid value for --run. Run levels are 1, 2, 3 and 4 or test names.\n",
                    );
                }
            }
            "-j" | "--json" => json_out = true,
            "-i" | "--gpuList" => {
                only = value(&mut i).map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect());
            }
            "-g" | "--group" | "-p" | "--parameters" | "--host" | "-c" | "--configfile" => {
                let _ = value(&mut i);
            }
            "-v" | "--verbose" | "--fail-early" | "--throttle-mask" => {}
            _ => {
                return ToolRun::done(
                    1,
                    "",
                    format!(
                        "\nPARSE ERROR:\nArgument: {a}\n             Couldn't find match for argument\n"
                    ),
                );
            }
        }
        i += 1;
    }
    let Some(level) = level else {
        return ToolRun::done(
            1,
            "",
            "Error: Must specify a diagnostic level with -r, or a test list.\n",
        );
    };
    let gpus: Vec<(u32, &Gpu)> = ctx
        .hw
        .present_gpus()
        .enumerate()
        .map(|(i, g)| (i as u32, g))
        .filter(|(i, _)| only.as_ref().is_none_or(|o| o.contains(i)))
        .collect();
    let dcgm4 = ctx.sw.dcgm.as_deref().is_some_and(|v| v.starts_with('4'));
    let tests = plan(ctx, level, &gpus, dcgm4);
    let failed = tests
        .iter()
        .any(|t| t.results.iter().any(|(_, r)| matches!(r, Res::Fail(_))));

    let mut run = ToolRun::steps(if level >= 3 { 1.0 } else { 0.3 });
    for t in &tests {
        let secs = match t.json {
            "software" => 1.5,
            "pcie" => 60.0,
            "memory" => 90.0,
            "diagnostic" => 300.0,
            "targeted_stress" | "targeted_power" => 180.0,
            "memory_bandwidth" => 90.0,
            "pulse_test" => 600.0,
            "memtest" => 1800.0,
            _ => 5.0,
        };
        run.step(secs, "");
    }
    let out = if json_out {
        json_report(ctx, &tests, &gpus, dcgm4)
    } else {
        table(ctx, &tests, &gpus)
    };
    run.step(1.0, out);
    run.code = if failed { DIAG_FAILED } else { 0 };
    run
}

/// The tests of `level` and their results on `gpus`.
fn plan(ctx: &ToolCtx, level: u32, gpus: &[(u32, &Gpu)], dcgm4: bool) -> Vec<Test> {
    let all_pass = |gpus: &[(u32, &Gpu)]| -> Vec<(u32, Res)> {
        gpus.iter().map(|(i, _)| (*i, Res::Pass)).collect()
    };
    let per_gpu = |f: &dyn Fn(u32, &Gpu) -> Res| -> Vec<(u32, Res)> {
        gpus.iter().map(|(i, g)| (*i, f(*i, g))).collect()
    };
    let mut tests = Vec::new();
    let deployment: &[&str] = &[
        "Denylist",
        "NVML Library",
        "CUDA Main Library",
        "Permissions and OS Blocks",
        "Persistence Mode",
        "Environment Variables",
        "Page Retirement/Row Remap",
        "Graphics Processes",
        "Inforom",
    ];
    let persistence = ctx.sw.persistence_mode;
    for name in deployment {
        let mut info = Vec::new();
        let results = match *name {
            "Persistence Mode" if !persistence => {
                let msg = |i: u32| {
                    format!(
                        "Persistence mode for GPU {i} is disabled. Enable persistence mode by running \"nvidia-smi -i <gpuId> -pm 1 \" as root."
                    )
                };
                if dcgm4 {
                    per_gpu(&|i, _| Res::Fail(format!("Persistence Mode: {}", msg(i))))
                } else {
                    info.push(
                        gpus.iter()
                            .map(|(i, _)| msg(*i))
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                    all_pass(gpus)
                }
            }
            "Page Retirement/Row Remap" => per_gpu(&|i, g| {
                if g.remap_pending {
                    Res::Fail(format!(
                        "GPU {i} had uncorrectable memory errors and row remappings are pending. Drain the GPU and reset it or reboot the node to resolve this issue."
                    ))
                } else {
                    Res::Pass
                }
            }),
            _ => all_pass(gpus),
        };
        tests.push(Test {
            table: name,
            json: "software",
            category: "Deployment",
            results,
            info,
        });
    }
    if level < 2 {
        return tests;
    }
    let cuda = ctx.sw.cuda_problem(ctx.hw);
    let skip = |gpus: &[(u32, &Gpu)]| -> Vec<(u32, Res)> {
        gpus.iter().map(|(i, _)| (*i, Res::Skip)).collect()
    };
    if let Some(p) = &cuda {
        let why = match p {
            CudaProblem::FabricManagerDown => "system not yet initialized",
            _ => "no CUDA-capable device is detected",
        };
        tests.push(Test {
            table: "PCIe",
            json: "pcie",
            category: "Integration",
            results: skip(gpus),
            info: Vec::new(),
        });
        tests.push(Test {
            table: "GPU Memory",
            json: "memory",
            category: "Hardware",
            results: per_gpu(&|i, _| {
                Res::Fail(format!(
                    "GPU {i} Error using CUDA API cuInit Check DCGM and system logs for errors. Reset GPU. Restart DCGM. Rerun diagnostics. Unable to initialize CUDA library: '{why}'. . Please check if a CUDA sample program can be run successfully on this host. Refer to https://github.com/nvidia/cuda-samples"
                ))
            }),
            info: Vec::new(),
        });
        if level >= 3 {
            for (table, json) in [
                ("Memory Bandwidth", "memory_bandwidth"),
                ("EUD Test", "eud"),
            ] {
                tests.push(Test {
                    table,
                    json,
                    category: "Stress",
                    results: skip(gpus),
                    info: Vec::new(),
                });
            }
        }
        return tests;
    }
    let links = ctx.hw.profile.gpu.nvlink.links_per_gpu;
    tests.push(Test {
        table: "PCIe",
        json: "pcie",
        category: "Integration",
        results: per_gpu(
            &|i, g| match (0..links.min(32)).find(|l| g.nvlinks_down & (1 << l) != 0) {
                Some(l) => Res::Fail(format!(
                    "GPU {i} NvLink link {l} is currently down Run a field diagnostic on the GPU."
                )),
                None => Res::Pass,
            },
        ),
        info: Vec::new(),
    });
    let xids = ctx.hw.xids.clone();
    tests.push(Test {
        table: "GPU Memory",
        json: "memory",
        category: "Hardware",
        results: per_gpu(&|i, g| {
            if g.ecc_uncorrectable > 0 {
                Res::Fail(format!(
                    "GPU {i} Detected {} volatile double-bit ECC error(s) in GPU {i}. Drain the GPU and reset it or reboot the node.",
                    g.ecc_uncorrectable
                ))
            } else if let Some(x) = xids.iter().find(|x| x.gpu == g.index) {
                Res::Fail(format!(
                    "GPU {i} Detected XID {} for GPU {i} Please check the DCGM and system logs for errors."
                , x.code))
            } else {
                Res::Pass
            }
        }),
        info: Vec::new(),
    });
    if level < 3 {
        return tests;
    }
    let spec = ctx.hw.spec();
    let threshold = spec.dcgm_gflops * 0.9;
    tests.push(Test {
        table: "Diagnostic",
        json: "diagnostic",
        category: "Hardware",
        results: per_gpu(&|i, g| {
            let gf = spec.dcgm_gflops * g.perf * g.slow_factor;
            if gf < threshold {
                Res::Fail(format!(
                    "GPU {i} Detected {gf:.2} GFLOPs for GPU {i} which is below the threshold {threshold:.2} Please verify your user-specified variance tolerance is set appropriately; if so, and if errors are persistent, please run a field diagnostic."
                ))
            } else {
                Res::Pass
            }
        }),
        info: Vec::new(),
    });
    if level >= 4 {
        tests.push(Test {
            table: "Pulse Test",
            json: "pulse_test",
            category: "Hardware",
            results: all_pass(gpus),
            info: Vec::new(),
        });
    }
    let thermal = |i: u32, g: &Gpu| -> Res {
        match g.hot_temp_c {
            Some(t) if t >= spec.max_operating_c => Res::Fail(format!(
                "GPU {i} Thermal violations totaling 41.5 seconds started at 12.0 seconds into the test for GPU {i} Verify that the cooling on this machine is functional, including external, thermal material interface, fans, and any other components."
            )),
            _ => Res::Pass,
        }
    };
    for (table, json) in [
        ("Targeted Stress", "targeted_stress"),
        ("Targeted Power", "targeted_power"),
    ] {
        tests.push(Test {
            table,
            json,
            category: "Stress",
            results: per_gpu(&thermal),
            info: Vec::new(),
        });
    }
    tests.push(Test {
        table: "Memory Bandwidth",
        json: "memory_bandwidth",
        category: "Stress",
        results: all_pass(gpus),
        info: Vec::new(),
    });
    if level >= 4 {
        tests.push(Test {
            table: "Memtest",
            json: "memtest",
            category: "Stress",
            results: per_gpu(&|i, g| {
                if g.ecc_uncorrectable > 0 {
                    Res::Fail(format!(
                        "GPU {i} Memtest failed: {} errors found",
                        g.ecc_uncorrectable * 64
                    ))
                } else {
                    Res::Pass
                }
            }),
            info: Vec::new(),
        });
    }
    tests
}

// ---------------------------------------------------------------------------
// Table
// ---------------------------------------------------------------------------

/// Splits `text` into DCGM's 45-character cell lines.
fn wrap45(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars.chunks(45).map(|c| c.iter().collect()).collect()
}

fn row(out: &mut String, name: &str, value: &str) {
    for (k, line) in wrap45(value).iter().enumerate() {
        let n = if k == 0 { name } else { "" };
        out.push_str(&format!("| {n:<25} | {line:<46} |\n"));
    }
}

fn section(out: &mut String, name: &str, first: bool) {
    let head = format!("-----  {name}  ");
    let edge = if first { '|' } else { '+' };
    out.push_str(&format!("{edge}{head:-<27}+{}{edge}\n", "-".repeat(48)));
}

fn summary(results: &[(u32, Res)]) -> Vec<String> {
    let pick = |f: &dyn Fn(&Res) -> bool| -> Vec<u32> {
        results
            .iter()
            .filter(|(_, r)| f(r))
            .map(|(i, _)| *i)
            .collect()
    };
    let pass = pick(&|r| *r == Res::Pass);
    let skip = pick(&|r| *r == Res::Skip);
    let fail = pick(&|r| matches!(r, Res::Fail(_)));
    let n = results.len();
    let fmt = |word: &str, ids: &[u32]| -> String {
        if ids.len() == n {
            format!("{word} - All")
        } else {
            let list: Vec<String> = ids.iter().map(u32::to_string).collect();
            let label = if ids.len() == 1 { "GPU" } else { "GPUs" };
            format!("{word} - {label}: {}", list.join(", "))
        }
    };
    let mut out = Vec::new();
    for (word, ids) in [("Pass", &pass), ("Skip", &skip), ("Fail", &fail)] {
        if !ids.is_empty() {
            out.push(fmt(word, ids));
        }
    }
    out
}

fn table(ctx: &ToolCtx, tests: &[Test], gpus: &[(u32, &Gpu)]) -> String {
    let spec = ctx.hw.spec();
    let mut o = String::from("Successfully ran diagnostic for group.\n");
    let rule = format!("+{}+{}+\n", "-".repeat(27), "-".repeat(48));
    o.push_str(&rule);
    o.push_str("| Diagnostic                | Result                                         |\n");
    o.push_str(&format!("+{}+{}+\n", "=".repeat(27), "=".repeat(48)));
    section(&mut o, "Metadata", true);
    row(
        &mut o,
        "DCGM Version",
        ctx.sw.dcgm.as_deref().unwrap_or_default(),
    );
    row(
        &mut o,
        "Driver Version Detected",
        ctx.sw.loaded_driver.as_deref().unwrap_or_default(),
    );
    let ids: Vec<String> = gpus
        .iter()
        .map(|_| format!("{:04x}", spec.device_id))
        .collect();
    row(&mut o, "GPU Device IDs Detected", &ids.join(","));
    let mut category = "";
    for t in tests {
        if t.category != category {
            category = t.category;
            section(&mut o, category, category == "Deployment");
        }
        if t.category == "Deployment" {
            let fail: Vec<&String> = t
                .results
                .iter()
                .filter_map(|(_, r)| match r {
                    Res::Fail(w) => Some(w),
                    _ => None,
                })
                .collect();
            row(
                &mut o,
                t.table,
                if fail.is_empty() { "Pass" } else { "Fail" },
            );
            for w in fail {
                row(&mut o, "Warning", w);
            }
        } else {
            for (k, line) in summary(&t.results).iter().enumerate() {
                row(&mut o, if k == 0 { t.table } else { "" }, line);
            }
            for (_, r) in &t.results {
                if let Res::Fail(w) = r {
                    row(&mut o, "Warning", w);
                }
            }
        }
        for info in &t.info {
            let text: String = info.chars().take(466).collect();
            row(&mut o, "Info", &text);
        }
    }
    o.push_str(&rule);
    o
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// jsoncpp `StyledWriter` layout with tabs, as dcgmi prints.
fn styled(v: &Value, depth: usize, out: &mut String) {
    let ind = |d: usize| "\t".repeat(d);
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push_str("{\n");
            let n = m.len();
            for (k, (key, val)) in m.iter().enumerate() {
                out.push_str(&format!(
                    "{}{} :",
                    ind(depth + 1),
                    Value::String(key.clone())
                ));
                if matches!(val, Value::Object(o) if !o.is_empty())
                    || matches!(val, Value::Array(a) if multiline(a))
                {
                    out.push_str(&format!("\n{}", ind(depth + 1)));
                } else {
                    out.push(' ');
                }
                styled(val, depth + 1, out);
                if k + 1 < n {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&format!("{}}}", ind(depth)));
        }
        Value::Array(a) if !a.is_empty() => {
            if multiline(a) {
                out.push_str("[\n");
                for (k, val) in a.iter().enumerate() {
                    out.push_str(&ind(depth + 1));
                    styled(val, depth + 1, out);
                    if k + 1 < a.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                out.push_str(&format!("{}]", ind(depth)));
            } else {
                let items: Vec<String> = a.iter().map(Value::to_string).collect();
                out.push_str(&format!("[ {} ]", items.join(", ")));
            }
        }
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
        other => out.push_str(&other.to_string()),
    }
}

/// jsoncpp puts an array on several lines when it holds containers or is
/// longer than its right margin.
fn multiline(a: &[Value]) -> bool {
    a.iter().any(|v| v.is_object() || v.is_array())
        || a.len() * 3 + a.iter().map(|v| v.to_string().len()).sum::<usize>() > 74
}

fn status_word(results: &[(u32, Res)]) -> &'static str {
    if results.iter().any(|(_, r)| matches!(r, Res::Fail(_))) {
        "Fail"
    } else if results.iter().all(|(_, r)| *r == Res::Skip) {
        "Skip"
    } else {
        "Pass"
    }
}

fn json_report(ctx: &ToolCtx, tests: &[Test], gpus: &[(u32, &Gpu)], dcgm4: bool) -> String {
    let spec = ctx.hw.spec();
    let driver = ctx.sw.loaded_driver.clone().unwrap_or_default();
    let version = ctx.sw.dcgm.clone().unwrap_or_default();
    let warning = |w: &str, id: u32| json!({"error_category": 2, "error_id": id, "error_severity": 4, "warning": w});
    let mut categories: Vec<(String, Vec<Value>)> = Vec::new();
    // DCGM 4 folds the deployment checks into one "software" test.
    let mut software: Vec<(u32, Res)> = gpus.iter().map(|(i, _)| (*i, Res::Pass)).collect();
    for t in tests {
        let cat = match categories.iter_mut().find(|(c, _)| c == t.category) {
            Some(c) => c,
            None => {
                categories.push((t.category.to_owned(), Vec::new()));
                let last = categories.len() - 1;
                &mut categories[last]
            }
        };
        if dcgm4 && t.json == "software" {
            for (k, (_, r)) in t.results.iter().enumerate() {
                if matches!(r, Res::Fail(_)) && software[k].1 == Res::Pass {
                    software[k].1 = r.clone();
                }
            }
            continue;
        }
        let results: Vec<Value> = t
            .results
            .iter()
            .map(|(i, r)| {
                let mut m = Map::new();
                if dcgm4 {
                    m.insert("entity_group".into(), json!("GPU"));
                    m.insert("entity_group_id".into(), json!(1));
                    m.insert("entity_id".into(), json!(i));
                } else if t.category != "Deployment" {
                    m.insert("gpu_id".into(), json!(i.to_string()));
                }
                let word = match r {
                    Res::Pass => "Pass",
                    Res::Skip => "Skip",
                    Res::Fail(_) => "Fail",
                };
                m.insert("status".into(), json!(word));
                if t.json == "diagnostic" && *r == Res::Pass {
                    let g = gpus.iter().find(|(k, _)| k == i).map(|(_, g)| *g);
                    let gf = spec.dcgm_gflops * g.map_or(1.0, |g| g.perf * g.slow_factor);
                    m.insert(
                        "info".into(),
                        json!([
                            "Allocated space for 138 output matricies from 76077622886 bytes available.",
                            "Running with precisions: FP64 1, FP32 1, FP16 1",
                            format!("GPU {i} calculated at approximately {gf:.2} gigaflops during this test"),
                        ]),
                    );
                }
                if let Res::Fail(w) = r {
                    let id = match t.json {
                        "diagnostic" => 110,
                        "memory" | "memtest" => 21,
                        "pcie" => 57,
                        "targeted_stress" | "targeted_power" => 43,
                        _ => 29,
                    };
                    m.insert("warnings".into(), json!([warning(w, id)]));
                }
                Value::Object(m)
            })
            .collect();
        let results = if dcgm4 || t.category != "Deployment" {
            results
        } else {
            vec![json!({"status": status_word(&t.results)})]
        };
        cat.1.push(json!({
            "name": if dcgm4 { t.json } else { t.table },
            "results": results,
            "test_summary": {"status": status_word(&t.results)},
        }));
    }
    if dcgm4 {
        let results: Vec<Value> = software
            .iter()
            .map(|(i, r)| {
                let mut v = json!({"entity_group": "GPU", "entity_group_id": 1, "entity_id": i,
                    "status": if matches!(r, Res::Fail(_)) { "Fail" } else { "Pass" }});
                if let (Res::Fail(w), Some(m)) = (r, v.as_object_mut()) {
                    m.insert("warnings".into(), json!([{"error_category": 8, "error_id": 29, "error_severity": 5, "warning": w}]));
                }
                v
            })
            .collect();
        if let Some(dep) = categories.iter_mut().find(|(c, _)| c == "Deployment") {
            dep.1.insert(
                0,
                json!({"name": "software", "results": results,
                    "test_summary": {"status": status_word(&software)}}),
            );
        }
    }
    let cats: Vec<Value> = categories
        .into_iter()
        .map(|(c, t)| json!({"category": c, "tests": t}))
        .collect();
    let doc = if dcgm4 {
        let entities: Vec<Value> = gpus
            .iter()
            .map(|(i, g)| {
                json!({"device_id": format!("{:04x}", spec.device_id), "entity_id": i,
                    "serial_num": g.serial.to_string()})
            })
            .collect();
        json!({
            "DCGM Diagnostic": {"test_categories": cats},
            "entity_groups": [{"entities": entities, "entity_group": "GPU", "entity_group_id": 1}],
            "metadata": {"Driver Version Detected": driver, "version": version},
        })
    } else {
        let ids: Vec<String> = gpus
            .iter()
            .map(|_| format!("{:04x}", spec.device_id))
            .collect();
        json!({
            "DCGM GPU Diagnostic": {"test_categories": cats},
            "Driver Version Detected": driver,
            "GPU Device IDs": ids,
            "version": version,
        })
    };
    let mut out = String::new();
    styled(&doc, 0, &mut out);
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------
// discovery, nvlink
// ---------------------------------------------------------------------------

fn discovery(ctx: &ToolCtx) -> ToolRun {
    let rule = format!("+--------+{}+\n", "-".repeat(70));
    let gpus: Vec<&Gpu> = ctx.hw.present_gpus().collect();
    let mut o = format!("{} GPUs found.\n{rule}", gpus.len());
    o.push_str(&format!(
        "| GPU ID | {:<68} |\n{rule}",
        "Device Information"
    ));
    for (i, g) in gpus.iter().enumerate() {
        o.push_str(&format!(
            "| {i:<6} | {:<68} |\n",
            format!("Name: {}", ctx.hw.profile.gpu.model)
        ));
        o.push_str(&format!(
            "| {:<6} | {:<68} |\n",
            "",
            format!("PCI Bus ID: {}", g.pci_bus_id())
        ));
        o.push_str(&format!(
            "| {:<6} | {:<68} |\n{rule}",
            "",
            format!("Device UUID: {}", g.uuid_string())
        ));
    }
    o.push_str("0 NvSwitches found.\n+-----------+\n| Switch ID |\n+-----------+\n+-----------+\n");
    ToolRun::ok(o)
}

fn nvlink(ctx: &ToolCtx) -> ToolRun {
    let links = ctx.hw.profile.gpu.nvlink.links_per_gpu;
    let mut o = String::from(
        "+----------------------+\n|  NvLink Link Status  |\n+----------------------+\nGPUs:\n",
    );
    for (i, g) in ctx.hw.present_gpus().enumerate() {
        let states: Vec<&str> = (0..links)
            .map(|l| {
                if l < 32 && g.nvlinks_down & (1 << l) != 0 {
                    "D"
                } else {
                    "U"
                }
            })
            .collect();
        o.push_str(&format!("    gpuId {i}:\n        {}\n", states.join(" ")));
    }
    o.push_str(
        "NvSwitches:\n    No NvSwitches found.\n\nKey: Up=U, Down=D, Disabled=X, Not Supported=_\n",
    );
    ToolRun::ok(o)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Bench;
    use crate::sim::hw::HwFault;

    #[test]
    fn healthy_level_3_passes() {
        let mut b = Bench::ready("node001");
        let r = b.run("dcgmi diag -r 3");
        assert_eq!(r.code, 0, "{}", r.stdout());
        assert_eq!(r.load, 1.0);
        let out = r.stdout();
        assert!(out.starts_with("Successfully ran diagnostic for group.\n"));
        for line in out.lines().skip(1) {
            assert_eq!(line.chars().count(), 78, "{line:?}");
        }
        assert!(out.contains(
            "| Targeted Power            | Pass - All                                     |"
        ));
        assert!(out.contains(
            "|-----  Deployment  --------+------------------------------------------------|"
        ));
        assert!(out.contains(
            "+-----  Stress  ------------+------------------------------------------------+"
        ));
        assert!(!out.contains("Fail"));
        assert!(r.duration().as_secs() > 600);
    }

    #[test]
    fn fabric_manager_down_looks_like_the_capture() {
        let mut b = Bench::ready("node001");
        b.run("systemctl stop nvidia-fabricmanager");
        let r = b.run("dcgmi diag -r 3");
        assert_eq!(r.code, super::DIAG_FAILED);
        let out = r.stdout();
        assert!(out.contains("| GPU Memory                | Fail - All                                     |\n| Warning                   | GPU 0 Error using CUDA API cuInit Check DCGM   |\n|                           | and system logs for errors. Reset GPU. Restar  |"), "{out}");
        assert!(out.contains(
            "| PCIe                      | Skip - All                                     |"
        ));
        assert!(out.contains("ze CUDA library: 'system not yet initialized'  |"));
    }

    #[test]
    fn faults_fail_the_matching_test() {
        let mut b = Bench::ready("node001");
        b.hw.apply(&HwFault::SlowGpu {
            gpu: 5,
            factor: 0.35,
        })
        .unwrap();
        b.hw.apply(&HwFault::HotGpu { gpu: 1, temp_c: 95 }).unwrap();
        b.hw.apply(&HwFault::EccUncorrectable { gpu: 2 }).unwrap();
        b.hw.apply(&HwFault::RowRemapPending { gpu: 3 }).unwrap();
        let out = b.run("dcgmi diag -r 3").stdout();
        assert!(out.contains("| Diagnostic                | Pass - GPUs: 0, 1, 2, 3, 4, 6, 7               |\n|                           | Fail - GPU: 5                                  |"), "{out}");
        assert!(out.contains("GPU 5 Detected 5"));
        assert!(out.contains("| Warning                   | GPU 1 Thermal violations totaling"));
        assert!(
            out.contains(
                "| Warning                   | GPU 2 Detected 2 volatile double-bit ECC erro"
            ),
            "{out}"
        );
        assert!(out.contains("| Page Retirement/Row Remap | Fail"));
        // Level 1 sees only the deployment checks.
        let r = b.run("dcgmi diag -r 1");
        assert!(!r.stdout().contains("Thermal"));
    }

    #[test]
    fn json_is_valid_and_matches_the_version() {
        let mut b = Bench::ready("node001");
        b.hw.apply(&HwFault::SlowGpu {
            gpu: 5,
            factor: 0.3,
        })
        .unwrap();
        let r = b.run("dcgmi diag -r 3 -j");
        let out = r.stdout();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["metadata"]["version"], "4.2.3");
        let cats = v["DCGM Diagnostic"]["test_categories"].as_array().unwrap();
        let hw = cats.iter().find(|c| c["category"] == "Hardware").unwrap();
        let diag = hw["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "diagnostic")
            .unwrap();
        assert_eq!(diag["test_summary"]["status"], "Fail");
        assert_eq!(diag["results"][5]["warnings"][0]["error_id"], 110);
        assert!(out.contains("\t\"DCGM Diagnostic\" :\n\t{\n"), "{out}");
        // DCGM 3 layout.
        let mut b = Bench::ready("node002");
        b.run("apt-get remove -y datacenter-gpu-manager-4-cuda12");
        b.run("apt-get install -y datacenter-gpu-manager");
        b.run("systemctl enable --now nvidia-dcgm");
        let out = b.run("dcgmi diag -r 2 -j").stdout();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["version"], "3.3.9");
        assert!(v["DCGM GPU Diagnostic"]["test_categories"].is_array());
    }

    #[test]
    fn hostengine_must_run() {
        let mut b = Bench::ready("n");
        b.run("systemctl stop nvidia-dcgm");
        let r = b.run("dcgmi diag -r 1");
        assert_eq!(r.code, 248);
        assert!(r.stdout().contains("Unable to connect to host engine"));
    }

    #[test]
    fn discovery_and_nvlink() {
        let mut b = Bench::ready("n");
        b.hw.apply(&HwFault::NvlinkDown { gpu: 0, link: 1 })
            .unwrap();
        let d = b.run("dcgmi discovery -l").stdout();
        assert!(d.starts_with("8 GPUs found.\n"));
        let n = b.run("dcgmi nvlink -s").stdout();
        assert!(n.contains("    gpuId 0:\n        U D U"));
        let out = b.run("dcgmi diag -r 2").stdout();
        assert!(out.contains("GPU 0 NvLink link 1 is currently down"));
    }
}
