//! The simulated hardware tools of the virtual rack.
//!
//! When a command in a node's sandbox calls `nvidia-smi`, `gpu_burn`,
//! `all_reduce_perf`, `apt-get` and the rest, the simulator calls [`run`]
//! with the node's hardware model, its software state and the argv, and
//! prints what comes back. Outputs follow the real tools' formats (the
//! captures in the shared fixtures); faults in the model show up as the
//! real tools show them.
//!
//! Everything here is pure: no I/O, no sleeping, no clock. Long tools return
//! several [`Step`]s, each with the simulated time since the previous one;
//! the caller scales and sleeps. Time stamps come from [`ToolCtx::now_unix`].

mod dcgmi;
mod dmesg;
mod gpu_burn;
mod ib_write_bw;
mod nccl;
mod nvbandwidth;
mod nvidia_smi;
mod packages;
mod system;

use std::time::Duration;

use crate::sim::hw::{CudaProblem, NodeHardware, PkgKind, SoftwareState};

/// Another node of the rack, as `mpirun` and `ib_write_bw` see it.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its hardware.
    pub hw: NodeHardware,
    /// Its software (driver loaded, fabric manager running, NCCL...).
    pub sw: SoftwareState,
}

/// Failures injected into the tools rather than the hardware.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolFaults {
    /// The next N package installs fail like apt/dnf do when a mirror
    /// drops the connection (apt: exit 100 with `E:` lines; dnf: exit 1).
    pub package_install_failures: u32,
}

/// What a tool call sees.
pub struct ToolCtx<'a> {
    /// This node's hardware.
    pub hw: &'a NodeHardware,
    /// This node's software; package managers, `systemctl`, `modprobe` and
    /// `nvidia-smi -pm` change it.
    pub sw: &'a mut SoftwareState,
    /// Tool-level faults (consumed as they fire).
    pub faults: &'a mut ToolFaults,
    /// Other nodes by host name, for `mpirun -H` and `ib_write_bw HOST`.
    pub peers: &'a dyn Fn(&str) -> Option<Peer>,
    /// Simulated wall-clock time, seconds since the Unix epoch (time stamps
    /// in outputs; dmesg counts from [`SoftwareState::booted_at_unix`]).
    pub now_unix: u64,
    /// GPU load (0..1) from other tools running on the node right now, so
    /// that `nvidia-smi` during a burn shows a busy, warm GPU.
    pub load: f64,
    /// The first KiB of a file on the node (`dpkg -i FILE`), or `None`
    /// when there is no such file. The caller does the reading, so tools
    /// stay free of I/O.
    pub file_head: &'a dyn Fn(&str) -> Option<Vec<u8>>,
}

/// Output printed after some simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Simulated time since the previous step (or since the start), before
    /// the caller's time scaling.
    pub after: Duration,
    /// What the tool prints to stdout at that point.
    pub stdout: String,
}

/// A side effect on the node the caller must carry out after the tool ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The node reboots: drop SSH, go through the power cycle, then call
    /// [`SoftwareState::boot`] when it is back.
    Reboot,
    /// The node powers off (Redfish shows it Off); [`SoftwareState::boot`]
    /// on the next power-on.
    PowerOff,
}

/// The result of one tool call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRun {
    /// Stdout in steps, in order.
    pub steps: Vec<Step>,
    /// Everything the tool printed to stderr.
    pub stderr: String,
    /// Exit status.
    pub code: i32,
    /// GPU load (0..1) while the tool runs.
    pub load: f64,
    /// What happens to the node afterwards.
    pub effect: Option<Effect>,
}

impl ToolRun {
    /// Exits `code` at once with `stdout` and `stderr`.
    pub(crate) fn done(code: i32, stdout: impl Into<String>, stderr: impl Into<String>) -> Self {
        let stdout = stdout.into();
        ToolRun {
            steps: if stdout.is_empty() {
                Vec::new()
            } else {
                vec![Step {
                    after: Duration::ZERO,
                    stdout,
                }]
            },
            stderr: stderr.into(),
            code,
            load: 0.0,
            effect: None,
        }
    }

    /// Exits 0 at once printing `stdout`.
    pub(crate) fn ok(stdout: impl Into<String>) -> Self {
        Self::done(0, stdout, "")
    }

    /// Exits `code` at once printing `stderr`.
    pub(crate) fn err(code: i32, stderr: impl Into<String>) -> Self {
        Self::done(code, "", stderr)
    }

    /// The shell's answer for a tool that is not installed.
    pub(crate) fn not_found(name: &str) -> Self {
        Self::err(127, format!("bash: {name}: command not found\n"))
    }

    /// A run that starts empty; push steps with [`ToolRun::step`].
    pub(crate) fn steps(load: f64) -> Self {
        ToolRun {
            steps: Vec::new(),
            stderr: String::new(),
            code: 0,
            load,
            effect: None,
        }
    }

    /// Appends `stdout` after `secs` simulated seconds.
    pub(crate) fn step(&mut self, secs: f64, stdout: impl Into<String>) {
        self.steps.push(Step {
            after: Duration::from_secs_f64(secs.max(0.0)),
            stdout: stdout.into(),
        });
    }

    /// Everything printed to stdout, joined (tests, logs).
    pub fn stdout(&self) -> String {
        self.steps.iter().map(|s| s.stdout.as_str()).collect()
    }

    /// Total simulated duration.
    pub fn duration(&self) -> Duration {
        self.steps.iter().map(|s| s.after).sum()
    }
}

/// The NCCL test binaries (nccl-tests) the simulator knows.
pub const NCCL_TESTS: &[&str] = &[
    "all_reduce_perf",
    "all_gather_perf",
    "reduce_scatter_perf",
    "alltoall_perf",
    "broadcast_perf",
    "sendrecv_perf",
];

/// The tools the simulator puts on PATH besides the NCCL tests.
const OTHER_TOOLS: &[&str] = &[
    "nvidia-smi",
    "dcgmi",
    "gpu_burn",
    "gpu-burn",
    "mpirun",
    "mpiexec",
    "nvbandwidth",
    "ib_write_bw",
    "dmesg",
    "apt-get",
    "apt",
    "dpkg-query",
    "dpkg",
    "dnf",
    "yum",
    "rpm",
    "systemctl",
    "modprobe",
    "lsmod",
    "update-initramfs",
    "dracut",
    "apt-cache",
    "hostnamectl",
    "reboot",
    "shutdown",
    "poweroff",
    "halt",
];

/// Every tool name the simulator puts on PATH.
pub fn simulated() -> impl Iterator<Item = &'static str> {
    OTHER_TOOLS.iter().chain(NCCL_TESTS).copied()
}

/// Whether the simulator handles the tool `name` (a basename).
pub fn is_simulated(name: &str) -> bool {
    simulated().any(|t| t == name)
}

/// Whether `name` exists on a node with software `sw` (the package that
/// ships it is installed). Tools that are not installed answer like the
/// shell does (`command not found`, exit 127) when run anyway.
pub fn is_available(sw: &SoftwareState, name: &str) -> bool {
    use crate::profiles::image::OsFamily;
    match name {
        "dcgmi" => sw.dcgm.is_some(),
        "ib_write_bw" => sw.has_kind(|k| k == PkgKind::Perftest),
        "mpirun" | "mpiexec" => sw.has_kind(|k| k == PkgKind::Mpi),
        "apt-get" | "apt" | "apt-cache" | "dpkg-query" | "dpkg" | "update-initramfs" => {
            matches!(sw.family, OsFamily::Ubuntu | OsFamily::Debian)
        }
        "dnf" | "yum" | "rpm" | "dracut" => sw.family == OsFamily::Rhel,
        _ => is_simulated(name),
    }
}

/// Runs the simulated tool `argv[0]` (a basename or path) with its
/// arguments.
pub fn run(ctx: &mut ToolCtx, argv: &[String]) -> ToolRun {
    let Some(first) = argv.first() else {
        return ToolRun::err(127, "bash: : command not found\n");
    };
    let name = first.rsplit('/').next().unwrap_or(first);
    let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    if !is_available(ctx.sw, name) {
        return ToolRun::not_found(name);
    }
    match name {
        "nvidia-smi" => nvidia_smi::run(ctx, &args),
        "dcgmi" => dcgmi::run(ctx, &args),
        "gpu_burn" | "gpu-burn" => gpu_burn::run(ctx, &args),
        "mpirun" | "mpiexec" => nccl::mpirun(ctx, &args),
        n if NCCL_TESTS.contains(&n) => nccl::run_local(ctx, n, &args),
        "nvbandwidth" => nvbandwidth::run(ctx, &args),
        "ib_write_bw" => ib_write_bw::run(ctx, &args),
        "dmesg" => dmesg::run(ctx, &args),
        "apt-get" | "apt" => packages::apt(ctx, name, &args),
        "dpkg-query" => packages::dpkg_query(ctx, &args),
        "dpkg" => packages::dpkg(ctx, &args),
        "dnf" | "yum" => packages::dnf(ctx, &args),
        "rpm" => packages::rpm(ctx, &args),
        "systemctl" => system::systemctl(ctx, &args),
        "modprobe" => system::modprobe(ctx, &args),
        "lsmod" => system::lsmod(ctx),
        "update-initramfs" | "dracut" => system::initramfs(ctx, name, &args),
        "apt-cache" => packages::apt_cache(ctx, &args),
        "hostnamectl" => system::hostnamectl(ctx),
        "reboot" | "shutdown" | "poweroff" | "halt" => system::power(name, &args),
        _ => ToolRun::not_found(name),
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the tools
// ---------------------------------------------------------------------------

/// The CUDA error a runtime call reports for `problem`: (enum name, the
/// message `cudaGetErrorString` returns).
pub(crate) fn cuda_error(problem: &CudaProblem) -> (&'static str, &'static str) {
    match problem {
        CudaProblem::NoDriver => (
            "CUDA_ERROR_NO_DEVICE",
            "CUDA driver version is insufficient for CUDA runtime version",
        ),
        CudaProblem::NotLoaded => ("CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"),
        CudaProblem::Mismatch { .. } => (
            "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
            "system has unsupported display driver / cuda driver combination",
        ),
        CudaProblem::FabricManagerDown => {
            ("CUDA_ERROR_SYSTEM_NOT_READY", "system not yet initialized")
        }
    }
}

/// Days since 1970-01-01 -> (year, month 1-12, day 1-31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tm {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub wday: usize,
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Tm {
    /// UTC time of `unix`.
    pub(crate) fn utc(unix: u64) -> Tm {
        let days = (unix / 86_400) as i64;
        let secs = (unix % 86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Tm {
            year,
            month,
            day,
            hour: secs / 3600,
            min: secs / 60 % 60,
            sec: secs % 60,
            wday: (days + 4).rem_euclid(7) as usize,
        }
    }

    /// `Fri Nov  8 02:11:26 2024` (C `asctime`, as nvidia-smi prints).
    pub(crate) fn asctime(&self) -> String {
        self.with_zone("")
    }

    /// `Thu Mar 10 19:21:17 UTC 2022` (`date`).
    pub(crate) fn date(&self) -> String {
        self.with_zone("UTC ")
    }

    /// The `asctime` layout with `zone` (empty, or a name and a space)
    /// before the year.
    fn with_zone(&self, zone: &str) -> String {
        format!(
            "{} {} {:>2} {:02}:{:02}:{:02} {zone}{}",
            WEEKDAYS[self.wday],
            MONTHS[(self.month - 1) as usize],
            self.day,
            self.hour,
            self.min,
            self.sec,
            self.year
        )
    }

    /// `2024/06/20 21:24:53` (nvidia-smi CSV time stamps, without ms).
    pub(crate) fn slashed(&self) -> String {
        format!(
            "{}/{:02}/{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.min, self.sec
        )
    }
}

/// Parses a size such as `8`, `64K`, `128M`, `16G` (powers of 1024).
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// A pseudo process id for a tool run, stable for one node and tool.
pub(crate) fn fake_pid(hw: &NodeHardware, salt: u64, now: u64) -> u32 {
    let h = crate::sim::hw::mix(hw.seed ^ now, salt);
    10_000 + (h % 3_000_000) as u32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profiles::hardware::HardwareProfile;
    use crate::profiles::image::OsFamily;
    use crate::sim::hw::tests::h100;

    /// A node with hardware, software, faults, and peers built from a
    /// profile, for driving tools in tests.
    pub(crate) struct Bench {
        pub hw: NodeHardware,
        pub sw: SoftwareState,
        pub faults: ToolFaults,
        pub peers: Vec<Peer>,
        pub now: u64,
        pub load: f64,
    }

    /// 2024-11-08 02:11:26 UTC.
    pub(crate) const NOW: u64 = 1_731_031_886;

    impl Bench {
        /// A node of `profile` with nothing NVIDIA installed.
        pub(crate) fn bare(node: &str, profile: &HardwareProfile) -> Bench {
            let mut sw = SoftwareState::new(OsFamily::Ubuntu);
            sw.boot(NOW - 3600);
            Bench {
                hw: NodeHardware::new(node, profile),
                sw,
                faults: ToolFaults::default(),
                peers: Vec::new(),
                now: NOW,
                load: 0.0,
            }
        }

        /// An H100 node with the whole stack installed, enabled and booted.
        pub(crate) fn ready(node: &str) -> Bench {
            Self::ready_with(node, &h100())
        }

        /// A node of `profile` with the whole stack installed and booted.
        pub(crate) fn ready_with(node: &str, profile: &HardwareProfile) -> Bench {
            let mut b = Self::bare(node, profile);
            for cmd in [
                "apt-get install -y nvidia-driver-570-server-open nvidia-fabricmanager-570 datacenter-gpu-manager-4-cuda12 libnccl2 perftest openmpi-bin",
                "systemctl enable nvidia-fabricmanager",
                "systemctl enable nvidia-dcgm",
            ] {
                let r = b.run(cmd);
                assert_eq!(r.code, 0, "{cmd}: {}", r.stderr);
            }
            b.sw.boot(NOW - 600);
            b
        }

        /// Runs a command line (split on whitespace).
        pub(crate) fn run(&mut self, line: &str) -> ToolRun {
            let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            self.run_argv(&argv)
        }

        pub(crate) fn run_argv(&mut self, argv: &[String]) -> ToolRun {
            let peers = self.peers.clone();
            let lookup = move |name: &str| peers.iter().find(|p| p.hw.node == name).cloned();
            let mut ctx = ToolCtx {
                hw: &self.hw,
                sw: &mut self.sw,
                faults: &mut self.faults,
                peers: &lookup,
                now_unix: self.now,
                load: self.load,
                file_head: &|_| None,
            };
            run(&mut ctx, argv)
        }

        /// This node as a peer of others.
        pub(crate) fn as_peer(&self) -> Peer {
            Peer {
                hw: self.hw.clone(),
                sw: self.sw.clone(),
            }
        }
    }

    #[test]
    fn dates_format_like_c() {
        let tm = Tm::utc(NOW);
        assert_eq!(tm.asctime(), "Fri Nov  8 02:11:26 2024");
        assert_eq!(tm.date(), "Fri Nov  8 02:11:26 UTC 2024");
        assert_eq!(Tm::utc(0).asctime(), "Thu Jan  1 00:00:00 1970");
        assert_eq!(Tm::utc(951_782_400).slashed(), "2000/02/29 00:00:00");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("8"), Some(8));
        assert_eq!(parse_size("128M"), Some(128 << 20));
        assert_eq!(parse_size("16G"), Some(16 << 30));
        assert_eq!(parse_size("x"), None);
    }

    /// Every built-in profile: a healthy node passes every check kiln
    /// makes against that profile's floors.
    #[test]
    fn healthy_nodes_of_every_profile_pass_their_floors() {
        use crate::judge::{Verdict, judge_gpu_burn, judge_nccl};
        use crate::sim::hw::tests::profile;
        for name in ["hgx-h100-80gb-8x", "hgx-h200-141gb-8x", "hgx-b200-180gb-8x"] {
            let p = profile(name);
            let mut b = Bench::ready_with("node100", &p);
            let r = b.run("gpu_burn -tc 60");
            let text = format!("{}{}", r.stdout(), r.stderr);
            let j = judge_gpu_burn(&text).unwrap();
            assert_eq!(j.verdict, Verdict::Pass, "{name}: {:?}", j.reasons);
            let r = b.run("all_reduce_perf -b 1G -e 16G -f 2 -g 8");
            let j = judge_nccl(&r.stdout(), Some(p.nccl.in_node_busbw_gbps)).unwrap();
            assert_eq!(j.verdict, Verdict::Pass, "{name}: {:?}", j.reasons);
            let r = b.run("dcgmi diag -r 3");
            assert_eq!(r.code, 0, "{name}: {}", r.stdout());
            let r = b.run("nvidia-smi --query-gpu=name,memory.total,power.limit --format=csv,noheader,nounits");
            let want = format!(
                "{}, {}, {}.00",
                p.gpu.model, p.gpu.memory_mib, p.gpu.power_limit_w
            );
            assert!(
                r.stdout().lines().all(|l| l == want),
                "{name}: {}",
                r.stdout()
            );
            let r = b.run("ib_write_bw -d mlx5_5 --report_gbits");
            let bw: f64 = r
                .stdout()
                .lines()
                .skip_while(|l| !l.contains("#bytes"))
                .nth(1)
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
                .unwrap();
            assert!(bw > p.ib_write_bw.min_gbps, "{name}: {bw}");
            let out = b
                .run("nvbandwidth -t device_to_device_memcpy_read_ce")
                .stdout();
            let sum: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix("SUM device_to_device_memcpy_read_ce "))
                .and_then(|v| v.parse().ok())
                .unwrap();
            assert!(sum / 56.0 > p.nvbandwidth.d2d_gbps, "{name}: {sum}");
        }
    }

    #[test]
    fn tools_that_are_not_installed_are_not_found() {
        let mut b = Bench::bare("n1", &h100());
        let r = b.run("dcgmi diag -r 1");
        assert_eq!(r.code, 127);
        assert!(r.stderr.contains("dcgmi: command not found"));
        let r = b.run("dnf install -y foo");
        assert_eq!(r.code, 127);
        assert!(is_simulated("nvidia-smi"));
        assert!(!is_simulated("ls"));
    }
}
