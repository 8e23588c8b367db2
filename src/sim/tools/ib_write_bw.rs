//! `ib_write_bw [-d mlx5_N] [-s SIZE] [-n ITERS] [-q QPS] [-D SECS] [-F]
//! [--report_gbits] [--use_cuda=N] [HOST]` (perftest). With a host it is the
//! client; without one the server, which here reports as if a client
//! connected.

use super::{ToolCtx, ToolRun, cuda_error, fake_pid};
use crate::sim::hw::{IbPort, NodeHardware, mix};

const RULE: &str =
    "---------------------------------------------------------------------------------------\n";

fn find_port<'a>(hw: &'a NodeHardware, dev: &str) -> Option<&'a IbPort> {
    let n: u32 = dev
        .strip_prefix("mlx5_ib")
        .or_else(|| dev.strip_prefix("mlx5_"))?
        .parse()
        .ok()?;
    hw.ib_ports.get(n as usize)
}

pub(super) fn run(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    let mut dev: Option<String> = None;
    let mut size: u64 = 65_536;
    let mut iters: u64 = 5000;
    let mut qps: u32 = 1;
    let mut duration: Option<u64> = None;
    let mut gbits = false;
    let mut cuda: Option<usize> = None;
    let mut host: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (a, None),
        };
        let value = |i: &mut usize| -> Option<String> {
            inline.clone().or_else(|| {
                *i += 1;
                args.get(*i).map(|s| (*s).to_owned())
            })
        };
        match flag {
            "-d" | "--ib-dev" => dev = value(&mut i),
            "-s" | "--size" => size = value(&mut i).and_then(|v| v.parse().ok()).unwrap_or(size),
            "-n" | "--iters" => iters = value(&mut i).and_then(|v| v.parse().ok()).unwrap_or(iters),
            "-q" | "--qp" => qps = value(&mut i).and_then(|v| v.parse().ok()).unwrap_or(1),
            "-D" | "--duration" => duration = value(&mut i).and_then(|v| v.parse().ok()),
            "--use_cuda" => cuda = value(&mut i).and_then(|v| v.parse().ok()),
            "-i" | "--ib-port" | "-x" | "--gid-index" | "-p" | "--port" | "-m" | "--mtu" | "-t"
            | "--tx-depth" | "-S" | "--sl" | "--mr_per_qp" | "--tclass" => {
                let _ = value(&mut i);
            }
            "--report_gbits" => gbits = true,
            "-F" | "--CPU-freq" | "--perform_warm_up" | "-R" | "--rdma_cm" | "-b"
            | "--bidirectional" | "-a" | "--all" | "--use_cuda_dmabuf" | "--report-both" | "-z"
            | "--com_rdma_cm" => {}
            f if f.starts_with('-') => {
                return ToolRun::err(
                    1,
                    format!(
                        " Invalid Command or flag.\n Please check command line and run again.\n\n unrecognized option '{f}'\n"
                    ),
                );
            }
            _ => host = Some(a.to_owned()),
        }
        i += 1;
    }
    let dev = dev.unwrap_or_else(|| "mlx5_0".to_owned());
    let Some(local) = find_port(ctx.hw, &dev) else {
        return ToolRun::err(
            1,
            format!(" IB device {dev} not found\n Unable to find the Infiniband/RoCE device\n"),
        );
    };
    if !local.up {
        return ToolRun::err(
            1,
            " Port number 1 state is Down\n Couldn't set the link layer\n Couldn't get context for the device\n",
        );
    }
    let mut out = String::new();
    if let Some(c) = cuda {
        if let Some(p) = ctx.sw.cuda_problem(ctx.hw) {
            let (_, msg) = cuda_error(&p);
            return ToolRun::done(
                1,
                "initializing CUDA\n",
                format!("cuInit(0) returned {msg}\nCouldn't init GPU context\n"),
            );
        }
        let gpus: Vec<_> = ctx.hw.present_gpus().collect();
        let Some(g) = gpus.get(c) else {
            return ToolRun::done(1, "initializing CUDA\n", format!("No CUDA device {c}\n"));
        };
        out.push_str("initializing CUDA\nListing all CUDA devices in system:\n");
        for (k, g) in gpus.iter().enumerate() {
            out.push_str(&format!(
                "CUDA device {k}: PCIe address is {:02X}:00\n",
                g.pci_bus
            ));
        }
        out.push_str(&format!(
            "\nPicking device No. {c}\n[pid = {}, dev = {c}] device name = [{}]\ncreating CUDA Ctx\nmaking it the current CUDA Ctx\nCUDA device integrated: 0\ncuMemAlloc() of a {} bytes GPU buffer\nallocated GPU buffer address at 00007f3dfa600000 pointer=0x7f3dfa600000\n",
            fake_pid(ctx.hw, 0x900, ctx.now_unix),
            ctx.hw.profile.gpu.model,
            size * 2 * u64::from(qps)
        ));
        let _ = g;
    }
    // The remote side: a peer's port of the same name, or ourselves.
    let remote_rate = match &host {
        None => local.rate_gbps,
        Some(h) if *h == ctx.hw.node || h == "localhost" || h == "127.0.0.1" => local.rate_gbps,
        Some(h) => match (ctx.peers)(h) {
            None => {
                return ToolRun::done(
                    1,
                    out,
                    format!(
                        "Couldn't connect to {h}:18515\nUnable to open file descriptor for socket connection Unable to init the socket connection\n"
                    ),
                );
            }
            Some(peer) => match find_port(&peer.hw, &dev) {
                Some(p) if p.up => p.rate_gbps,
                _ => {
                    return ToolRun::done(
                        1,
                        out,
                        " Failed to modify QP 0x0128 to RTR\n Unable to Connect the HCA's through the link\n",
                    );
                }
            },
        },
    };
    let rate = f64::from(local.rate_gbps.min(remote_rate));
    let seed = mix(ctx.hw.seed, 0x1b00 + u64::from(local.index));
    let avg_gbps = rate * 0.982 * (1.0 + crate::sim::hw::signed_unit(seed, 1) * 0.0004);
    let peak_gbps = if duration.is_some() || qps > 1 {
        0.0
    } else {
        avg_gbps * 1.0002
    };
    let secs = match duration {
        Some(d) => d as f64,
        None => (size * iters) as f64 * 8.0 / (avg_gbps * 1e9),
    };
    if duration.is_some() {
        iters = (avg_gbps * 1e9 / 8.0 * secs / size as f64) as u64;
    }
    if host.is_none() {
        out.push_str("\n************************************\n* Waiting for client to connect... *\n************************************\n");
    }
    if duration.is_some() || qps > 1 {
        out.insert_str(0, " WARNING: BW peak won't be measured in this run.\n");
    }
    out.push_str(RULE);
    out.push_str("                    RDMA_Write BW Test\n");
    out.push_str(&format!(
        " Dual-port       : OFF\t\tDevice         : {dev}\n"
    ));
    out.push_str(&format!(
        " Number of qps   : {qps}\t\tTransport type : IB\n"
    ));
    out.push_str(" Connection type : RC\t\tUsing SRQ      : OFF\n");
    out.push_str(" PCIe relax order: ON\t\tLock-free      : OFF\n");
    out.push_str(" ibv_wr* API     : ON\t\tUsing DDP      : OFF\n");
    if host.is_some() {
        out.push_str(" TX depth        : 128\n");
    }
    out.push_str(" CQ Moderation   : 1\n Mtu             : 4096[B]\n Link type       : IB\n Max inline data : 0[B]\n rdma_cm QPs\t : OFF\n Data ex. method : Ethernet\n");
    out.push_str(RULE);
    let peer_lid = match &host {
        Some(h) => mix(crate::sim::hw::fnv1a(h.as_bytes()), 2) % 0xbfff + 1,
        None => u64::from(local.lid),
    };
    for q in 0..u64::from(qps) {
        out.push_str(&format!(
            " local address: LID {:#06x} QPN {:#06x} PSN {:#08x} RKey {:#08x} VAddr 0x007f9fc479c000\n",
            local.lid,
            0x128 + q,
            mix(seed, 10 + q) & 0xff_ffff,
            mix(seed, 20 + q) & 0xff_ffff
        ));
    }
    for q in 0..u64::from(qps) {
        out.push_str(&format!(
            " remote address: LID {:#06x} QPN {:#06x} PSN {:#08x} RKey {:#08x} VAddr 0x007fe62504b000\n",
            peer_lid,
            0x129 + q,
            mix(seed, 30 + q) & 0xff_ffff,
            mix(seed, 40 + q) & 0xff_ffff
        ));
    }
    out.push_str(RULE);
    let unit = if gbits { "Gb/sec" } else { "MB/sec" };
    let conv = |gbps: f64| {
        if gbits {
            gbps
        } else {
            gbps * 1e9 / 8.0 / 1_048_576.0
        }
    };
    let mut run = ToolRun::steps(0.0);
    run.step(0.5, out);
    let msg_rate = avg_gbps * 1e9 / 8.0 / size as f64 / 1e6;
    let row = format!(
        " #bytes     #iterations    BW peak[{unit}]    BW average[{unit}]   MsgRate[Mpps]\n {size:<7}    {iters:<10}       {:<7.2}            {:<7.2} \t\t     {msg_rate:.6}\n{RULE}",
        conv(peak_gbps),
        conv(avg_gbps)
    );
    let mut tail = row;
    if cuda.is_some() {
        tail.push_str("deallocating GPU buffer 00007f3dfa600000\ndestroying current CUDA Ctx\n");
    }
    run.step(secs.max(0.1) + 0.5, tail);
    run
}

#[cfg(test)]
mod tests {
    use super::super::tests::Bench;
    use crate::sim::hw::HwFault;

    /// The BW average column of the result row.
    fn avg(out: &str) -> f64 {
        let row = out
            .lines()
            .skip_while(|l| !l.contains("#bytes"))
            .nth(1)
            .unwrap();
        row.split_whitespace().nth(3).unwrap().parse().unwrap()
    }

    fn pair(fault: Option<HwFault>, local: Option<HwFault>) -> (i32, String, String) {
        let mut a = Bench::ready("node001");
        let mut b = Bench::ready("node002");
        if let Some(f) = fault {
            b.hw.apply(&f).unwrap();
        }
        if let Some(f) = local {
            a.hw.apply(&f).unwrap();
        }
        a.peers.push(b.as_peer());
        let r = a.run("ib_write_bw -d mlx5_3 -F --report_gbits -s 65536 -D 10 node002");
        (r.code, r.stdout(), r.stderr)
    }

    #[test]
    fn healthy_port_reads_near_line_rate() {
        let (code, out, _) = pair(None, None);
        assert_eq!(code, 0);
        let bw = avg(&out);
        assert!((390.0..395.0).contains(&bw), "{bw}");
        assert!(out.contains("BW average[Gb/sec]"));
        assert!(out.contains("Device         : mlx5_3"));
    }

    #[test]
    fn degraded_and_down_ports() {
        let (_, out, _) = pair(
            Some(HwFault::IbDegraded {
                port: 3,
                rate_gbps: 200,
            }),
            None,
        );
        assert!(avg(&out) < 200.0);
        let (code, _, err) = pair(Some(HwFault::IbPortDown { port: 3 }), None);
        assert_eq!(code, 1);
        assert!(err.contains("Unable to Connect"));
        let (code, _, err) = pair(None, Some(HwFault::IbPortDown { port: 3 }));
        assert_eq!(code, 1);
        assert!(err.contains("Port number 1 state is Down"));
        // Other ports are unaffected.
        let mut a = Bench::ready("node001");
        a.hw.apply(&HwFault::IbPortDown { port: 3 }).unwrap();
        assert_eq!(a.run("ib_write_bw -d mlx5_2 --report_gbits").code, 0);
    }

    #[test]
    fn megabytes_by_default() {
        let mut a = Bench::ready("node001");
        let out = a.run("ib_write_bw -d mlx5_0").stdout();
        assert!(out.contains("BW average[MB/sec]"));
        assert!(avg(&out) > 46_000.0);
        assert!(out.contains("Waiting for client to connect"));
    }
}
