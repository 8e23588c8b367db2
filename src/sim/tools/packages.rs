//! Package managers: `apt-get`/`apt` (install, update, remove, purge),
//! `dpkg-query -W`, `dpkg -s`/`-l`, `dnf`/`yum` (install, module install,
//! remove, list installed, makecache), `rpm -q`/`-qa`.

use super::{ToolCtx, ToolRun};
use crate::profiles::image::OsFamily;
use crate::sim::hw::{PkgKind, SoftwareState, classify, fnv1a};

/// Package names a stock mirror (plus NVIDIA's CUDA repo) knows.
fn known(name: &str) -> bool {
    if classify(name) != PkgKind::Other {
        return true;
    }
    const PREFIXES: &[&str] = &[
        "nvidia-driver",
        "nvidia-open",
        "nvidia-utils-",
        "nvidia-compute-utils-",
        "nvidia-kernel-",
        "nvidia-firmware-",
        "nvidia-headless-",
        "nvidia-dkms-",
        "nvidia-container-",
        "nvidia-persistenced",
        "nvidia-modprobe",
        "nvidia-settings",
        "nvidia-imex",
        "nvidia-peermem",
        "nvidia-fabric",
        "nvidia-xconfig",
        "nvidia-prime",
        "libnvidia-",
        "cuda",
        "libcuda",
        "libcublas",
        "libcudnn",
        "libnccl",
        "linux-",
        "kernel",
        "python3",
        "lib",
        "build-essential",
        "dkms",
        "git",
        "make",
        "gcc",
        "g++",
        "curl",
        "wget",
        "jq",
        "ipmitool",
        "pciutils",
        "numactl",
        "hwloc",
        "infiniband-diags",
        "ibverbs",
        "rdma",
        "mlnx",
        "doca",
        "tmux",
        "vim",
        "htop",
        "nvme-cli",
        "ethtool",
        "chrony",
        "net-tools",
        "iproute",
        "kmod",
        "dmidecode",
        "lshw",
        "ca-certificates",
        "gnupg",
        "software-properties-common",
        "apt-transport-https",
        "docker",
        "containerd",
        "epel-release",
        "dnf-plugins-core",
        "yum-utils",
        "elfutils",
        "pkgconf",
        "perl",
        "openssh",
        "sysstat",
        "stress",
        "fio",
        "unzip",
        "zip",
        "tar",
        "rsync",
        "ucx",
        "hpcx",
        "datacenter-gpu-manager",
        "nsight",
        "gdrcopy",
        "gdrdrv",
        "fabricmanager",
        "slurm",
        "munge",
        "ansible",
        "cmake",
        "autoconf",
        "automake",
        "libtool",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Packages a package pulls in (Ubuntu names; RHEL reuses a few).
fn deps(sw: &SoftwareState, name: &str) -> Vec<String> {
    match classify(name) {
        PkgKind::Driver(b) => {
            let branch = b
                .or_else(|| sw.driver.as_deref().and_then(crate::sim::hw::branch_of))
                .unwrap_or(580);
            match sw.family {
                OsFamily::Ubuntu | OsFamily::Debian => {
                    let flavour = if name.contains("-server") {
                        "-server"
                    } else {
                        ""
                    };
                    let open = if name.contains("open") { "-open" } else { "" };
                    vec![
                        format!("libnvidia-compute-{branch}{flavour}"),
                        format!("nvidia-compute-utils-{branch}{flavour}"),
                        format!("nvidia-utils-{branch}{flavour}"),
                        format!("nvidia-kernel-common-{branch}{flavour}"),
                        format!("nvidia-firmware-{branch}{flavour}"),
                        format!("linux-modules-nvidia-{branch}{flavour}{open}-generic"),
                    ]
                }
                OsFamily::Rhel => vec![
                    "nvidia-driver-cuda".to_owned(),
                    "nvidia-driver-libs".to_owned(),
                    "nvidia-persistenced".to_owned(),
                    "kmod-nvidia-open-dkms".to_owned(),
                ],
            }
        }
        PkgKind::Dcgm(4) if name != "datacenter-gpu-manager-4-core" => {
            vec!["datacenter-gpu-manager-4-core".to_owned()]
        }
        PkgKind::Perftest => vec![
            "libibverbs1".to_owned(),
            "librdmacm1t64".to_owned(),
            "ibverbs-providers".to_owned(),
        ],
        PkgKind::Mpi if name == "openmpi-bin" => vec![
            "libopenmpi3t64".to_owned(),
            "openmpi-common".to_owned(),
            "libhwloc15".to_owned(),
        ],
        _ => Vec::new(),
    }
}

/// Download size of a package, kB.
fn size_kb(name: &str) -> u64 {
    let h = fnv1a(name.as_bytes());
    match classify(name) {
        PkgKind::Driver(_) => 480 + h % 100,
        _ if name.starts_with("libnvidia-compute") => 48_000 + h % 9000,
        _ if name.starts_with("linux-modules-nvidia") => 9_800 + h % 900,
        _ if name.starts_with("nvidia-firmware") => 71_000 + h % 5000,
        PkgKind::Dcgm(_) => 180_000 + h % 90_000,
        PkgKind::Nccl => 190_000 + h % 20_000,
        PkgKind::FabricManager(_) => 6_100 + h % 900,
        _ => 40 + h % 2_500,
    }
}

fn human_kb(kb: u64) -> String {
    if kb >= 1024 {
        format!("{:.1} MB", kb as f64 / 1000.0)
    } else {
        format!("{kb} kB")
    }
}

/// (name, pinned version) from `pkg` or `pkg=VERSION`.
fn split_pin(arg: &str) -> (String, Option<String>) {
    match arg.split_once('=') {
        Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
        None => (arg.to_owned(), None),
    }
}

/// Debian source/section of a package, for `Get:` lines.
fn section(name: &str) -> &'static str {
    match classify(name) {
        PkgKind::Driver(_) | PkgKind::FabricManager(_) => "noble-updates/restricted",
        _ if name.starts_with("nvidia")
            || name.starts_with("libnvidia")
            || name.starts_with("linux-modules-nvidia") =>
        {
            "noble-updates/restricted"
        }
        _ => "noble/main",
    }
}

pub(super) fn apt(ctx: &mut ToolCtx, tool: &str, args: &[&str]) -> ToolRun {
    let mut yes = false;
    let mut cmd: Option<&str> = None;
    let mut pkgs: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        match a {
            "-y" | "--yes" | "--assume-yes" | "-qq" | "-q=2" => {
                if a != "-q" {
                    yes = true;
                }
            }
            "-o" | "-c" | "-t" => i += 1,
            a if a.starts_with('-') => {}
            a if cmd.is_none() => cmd = Some(a),
            a => pkgs.push(a),
        }
        i += 1;
    }
    let warn = if tool == "apt" {
        "\nWARNING: apt does not have a stable CLI interface. Use with caution in scripts.\n\n"
    } else {
        ""
    };
    let head =
        "Reading package lists...\nBuilding dependency tree...\nReading state information...\n";
    let mut run = match cmd {
        Some("update") => {
            let mut r = ToolRun::steps(0.0);
            r.step(
                0.4,
                "Hit:1 http://archive.ubuntu.com/ubuntu noble InRelease\n",
            );
            r.step(0.8, "Get:2 http://archive.ubuntu.com/ubuntu noble-updates InRelease [126 kB]\nGet:3 http://security.ubuntu.com/ubuntu noble-security InRelease [126 kB]\n");
            r.step(1.6, "Hit:4 https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64  InRelease\nFetched 252 kB in 2s (126 kB/s)\n");
            r.step(1.2, "Reading package lists...\n");
            r
        }
        Some("install" | "reinstall") => apt_install(ctx, &pkgs, yes, head),
        Some("remove" | "purge" | "autoremove") => {
            let mut out = String::from(head);
            let mut removed = Vec::new();
            for p in &pkgs {
                let (name, _) = split_pin(p);
                if ctx.sw.is_installed(&name) {
                    removed.push(name);
                } else {
                    out.push_str(&format!(
                        "Package '{name}' is not installed, so not removed\n"
                    ));
                }
            }
            if !removed.is_empty() {
                out.push_str(&format!(
                    "The following packages will be REMOVED:\n  {}\n0 upgraded, 0 newly installed, {} to remove and 0 not upgraded.\n",
                    removed.join(" "),
                    removed.len()
                ));
                if !yes {
                    out.push_str("Do you want to continue? [Y/n] Abort.\n");
                    return ToolRun::done(1, out, warn);
                }
                out.push_str(
                    "(Reading database ... 117522 files and directories currently installed.)\n",
                );
                for name in &removed {
                    let v = ctx.sw.packages.get(name).cloned().unwrap_or_default();
                    out.push_str(&format!("Removing {name} ({v}) ...\n"));
                    ctx.sw.remove(name);
                }
            } else {
                out.push_str("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n");
            }
            let mut r = ToolRun::steps(0.0);
            r.step(2.0, out);
            r
        }
        Some("upgrade" | "dist-upgrade" | "full-upgrade") => {
            let mut r = ToolRun::steps(0.0);
            r.step(2.0, format!("{head}Calculating upgrade...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n"));
            r
        }
        Some(other) => return ToolRun::err(100, format!("{warn}E: Invalid operation {other}\n")),
        None => {
            return ToolRun::ok("apt 2.7.14 (amd64)\nUsage: apt-get [options] command\n");
        }
    };
    run.stderr.insert_str(0, warn);
    run
}

fn apt_install(ctx: &mut ToolCtx, pkgs: &[&str], yes: bool, head: &str) -> ToolRun {
    let mut run = ToolRun::steps(0.0);
    let mut out = String::from(head);
    for p in pkgs {
        let (name, _) = split_pin(p);
        if !known(&name) {
            run.step(1.5, out);
            run.stderr
                .push_str(&format!("E: Unable to locate package {name}\n"));
            run.code = 100;
            return run;
        }
    }
    // (name, version) to install, requested ones first.
    let mut new: Vec<(String, String)> = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    for p in pkgs {
        let (name, pin) = split_pin(p);
        let version = ctx.sw.package_version(&name, pin.as_deref());
        if ctx.sw.packages.get(&name) == Some(&version) {
            out.push_str(&format!(
                "{name} is already the newest version ({version}).\n"
            ));
            continue;
        }
        for d in deps(ctx.sw, &name) {
            if !ctx.sw.is_installed(&d) && !extra.contains(&d) && !pkgs.contains(&d.as_str()) {
                extra.push(d);
            }
        }
        new.push((name, version));
    }
    let dep_version = |sw: &SoftwareState, d: &str, new: &[(String, String)]| -> String {
        // Driver pieces carry the driver's version.
        new.iter()
            .find(|(n, _)| matches!(classify(n), PkgKind::Driver(_)))
            .filter(|_| d.contains("nvidia"))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| sw.package_version(d, None))
    };
    let all: Vec<(String, String)> = extra
        .iter()
        .map(|d| (d.clone(), dep_version(ctx.sw, d, &new)))
        .chain(new.iter().cloned())
        .collect();
    if all.is_empty() {
        out.push_str("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n");
        run.step(1.5, out);
        return run;
    }
    if !extra.is_empty() {
        out.push_str(&format!(
            "The following additional packages will be installed:\n  {}\n",
            extra.join(" ")
        ));
    }
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    out.push_str(&format!(
        "The following NEW packages will be installed:\n  {}\n0 upgraded, {} newly installed, 0 to remove and 0 not upgraded.\n",
        names.join(" "),
        all.len()
    ));
    let total_kb: u64 = all.iter().map(|(n, _)| size_kb(n)).sum();
    out.push_str(&format!(
        "Need to get {} of archives.\nAfter this operation, {} of additional disk space will be used.\n",
        human_kb(total_kb),
        human_kb(total_kb * 3)
    ));
    if !yes && !extra.is_empty() {
        out.push_str("Do you want to continue? [Y/n] Abort.\n");
        run.step(1.5, out);
        run.code = 1;
        return run;
    }
    run.step(1.5, out);
    if ctx.faults.package_install_failures > 0 {
        ctx.faults.package_install_failures -= 1;
        let (name, version) = &all[0];
        let src = if name.starts_with("nvidia") {
            "n/nvidia-graphics-drivers-570-server"
        } else {
            "main"
        };
        run.step(
            30.0,
            format!(
                "Err:1 http://archive.ubuntu.com/ubuntu {} amd64 {name} amd64 {version}\n  Could not connect to archive.ubuntu.com:80 (185.125.190.81), connection timed out\n",
                section(name)
            ),
        );
        run.stderr.push_str(&format!(
            "E: Failed to fetch http://archive.ubuntu.com/ubuntu/pool/restricted/{src}/{name}_{version}_amd64.deb  Could not connect to archive.ubuntu.com:80 (185.125.190.81), connection timed out\nE: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?\n"
        ));
        run.code = 100;
        return run;
    }
    for (k, (name, version)) in all.iter().enumerate() {
        let kb = size_kb(name);
        run.step(
            0.3 + kb as f64 / 60_000.0,
            format!(
                "Get:{} http://archive.ubuntu.com/ubuntu {} amd64 {name} amd64 {version} [{}]\n",
                k + 1,
                section(name),
                human_kb(kb)
            ),
        );
    }
    run.step(
        0.2,
        format!(
            "Fetched {} in {}s (60.2 MB/s)\n",
            human_kb(total_kb),
            (total_kb / 60_000).max(1)
        ),
    );
    let mut db = 117_522u64;
    for (name, version) in &all {
        run.step(
            0.6,
            format!(
                "Selecting previously unselected package {name}.\n(Reading database ... {db} files and directories currently installed.)\nPreparing to unpack .../{name}_{version}_amd64.deb ...\nUnpacking {name} ({version}) ...\n"
            ),
        );
        db += 40 + size_kb(name) / 800;
    }
    for (name, version) in &all {
        let slow = matches!(classify(name), PkgKind::Driver(_) | PkgKind::Dcgm(_));
        let mut text = format!("Setting up {name} ({version}) ...\n");
        if name.starts_with("nvidia-compute-utils") {
            text.push_str("Created symlink /etc/systemd/system/multi-user.target.wants/nvidia-persistenced.service → /usr/lib/systemd/system/nvidia-persistenced.service.\n");
        }
        run.step(if slow { 4.0 } else { 0.8 }, text);
        ctx.sw.install(name, Some(version));
    }
    let mut tail = String::from(
        "Processing triggers for man-db (2.12.0-4build2) ...\nProcessing triggers for libc-bin (2.39-0ubuntu8.4) ...\n",
    );
    if all
        .iter()
        .any(|(n, _)| matches!(classify(n), PkgKind::Driver(_)))
    {
        tail.push_str("Processing triggers for initramfs-tools (0.142ubuntu25.5) ...\nupdate-initramfs: Generating /boot/initrd.img-6.8.0-60-generic\n");
    }
    run.step(3.0, tail);
    run
}

/// `*` globs as dpkg-query matches them.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (k, part) in parts.iter().enumerate() {
        if k == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if k == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn render_format(fmt: &str, name: &str, version: &str) -> String {
    fmt.replace("${binary:Package}", name)
        .replace("${Package}", name)
        .replace("${Version}", version)
        .replace("${Status}", "install ok installed")
        .replace("${db:Status-Abbrev}", "ii ")
        .replace("${db:Status-Status}", "installed")
        .replace("${Architecture}", "amd64")
        .replace("\\n", "\n")
        .replace("\\t", "\t")
}

pub(super) fn dpkg_query(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    let mut fmt = "${Package}\t${Version}\n".to_owned();
    let mut show = false;
    let mut status = false;
    let mut list = false;
    let mut pats: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if let Some(f) = a
            .strip_prefix("-f=")
            .or_else(|| a.strip_prefix("--showformat="))
        {
            fmt = f.to_owned();
        } else if a == "-f" || a == "--showformat" {
            i += 1;
            fmt = args.get(i).copied().unwrap_or_default().to_owned();
        } else if a == "-W" || a == "--show" {
            show = true;
        } else if a == "-s" || a == "--status" {
            status = true;
        } else if a == "-l" || a == "--list" {
            list = true;
        } else {
            pats.push(a);
        }
        i += 1;
    }
    if status {
        return dpkg_status(ctx.sw, &pats);
    }
    if list {
        return dpkg_list(ctx.sw, &pats);
    }
    if !show {
        return ToolRun::err(
            2,
            "dpkg-query: error: need an action option\n\nType dpkg-query --help for help about querying packages.\n",
        );
    }
    let mut out = String::new();
    let mut err = String::new();
    let pats: Vec<&str> = if pats.is_empty() { vec!["*"] } else { pats };
    for p in &pats {
        let hits: Vec<(&String, &String)> =
            ctx.sw.packages.iter().filter(|(n, _)| glob(p, n)).collect();
        if hits.is_empty() {
            err.push_str(&format!("dpkg-query: no packages found matching {p}\n"));
        }
        for (n, v) in hits {
            out.push_str(&render_format(&fmt, n, v));
        }
    }
    ToolRun::done(i32::from(!err.is_empty()), out, err)
}

fn dpkg_status(sw: &SoftwareState, pkgs: &[&str]) -> ToolRun {
    let mut out = String::new();
    let mut err = String::new();
    for (k, p) in pkgs.iter().enumerate() {
        match sw.packages.get(*p) {
            Some(v) => {
                if k > 0 {
                    out.push('\n');
                }
                out.push_str(&format!(
                    "Package: {p}\nStatus: install ok installed\nPriority: optional\nSection: {}\nInstalled-Size: {}\nMaintainer: Ubuntu Core Developers <ubuntu-devel-discuss@lists.ubuntu.com>\nArchitecture: amd64\nVersion: {v}\nDescription: {p}\n",
                    if p.contains("nvidia") { "restricted/libs" } else { "utils" },
                    size_kb(p) * 3
                ));
            }
            None => err.push_str(&format!(
                "dpkg-query: package '{p}' is not installed and no information is available\n"
            )),
        }
    }
    if !err.is_empty() {
        err.push_str("Use dpkg --info (= dpkg-deb --info) to examine archive files.\n");
    }
    ToolRun::done(i32::from(!err.is_empty()), out, err)
}

fn dpkg_list(sw: &SoftwareState, pats: &[&str]) -> ToolRun {
    let hits: Vec<(&String, &String)> = sw
        .packages
        .iter()
        .filter(|(n, _)| pats.is_empty() || pats.iter().any(|p| glob(p, n)))
        .collect();
    if hits.is_empty() {
        let p = pats.first().copied().unwrap_or("*");
        return ToolRun::err(1, format!("dpkg-query: no packages found matching {p}\n"));
    }
    let mut out = String::from(
        "Desired=Unknown/Install/Remove/Purge/Hold\n| Status=Not/Inst/Conf-files/Unpacked/halF-conf/Half-inst/trig-aWait/Trig-pend\n|/ Err?=(none)/Reinst-required (Status,Err: uppercase=bad)\n",
    );
    out.push_str(&format!(
        "||/ {:<35} {:<32} {:<12} {}\n+++-{}-{}-{}-{}\n",
        "Name",
        "Version",
        "Architecture",
        "Description",
        "=".repeat(35),
        "=".repeat(32),
        "=".repeat(12),
        "=".repeat(47)
    ));
    for (n, v) in hits {
        out.push_str(&format!("ii  {n:<35} {v:<32} {:<12} {n}\n", "amd64"));
    }
    ToolRun::ok(out)
}

/// `dpkg -i FILE.deb…`: installs local package files. The package's name
/// and version come from the file name (`NAME_VERSION_ARCH.deb`, as
/// `dpkg-name` lays them out); the file must be a Debian archive (`ar`).
fn dpkg_install(ctx: &mut ToolCtx, files: &[&str]) -> ToolRun {
    if files.is_empty() {
        return ToolRun::err(
            2,
            "dpkg: error: --install needs at least one package archive file argument\n",
        );
    }
    let mut run = ToolRun::steps(0.0);
    let mut out = String::new();
    let mut parsed = Vec::new();
    for f in files {
        let Some(head) = (ctx.file_head)(f) else {
            run.stderr =
                format!("dpkg: error: cannot access archive '{f}': No such file or directory\n");
            run.code = 2;
            return run;
        };
        let base = f.rsplit('/').next().unwrap_or(f);
        let parts: Vec<&str> = base.trim_end_matches(".deb").split('_').collect();
        if !head.starts_with(b"!<arch>\n") || parts.len() != 3 {
            run.stderr = format!(
                "dpkg-deb: error: '{f}' is not a Debian format archive\ndpkg: error processing archive {f} (--install):\n dpkg-deb --control subprocess returned error exit status 2\nErrors were encountered while processing:\n {f}\n"
            );
            run.code = 1;
            return run;
        }
        parsed.push((parts[0].to_owned(), parts[1].to_owned(), base.to_owned()));
    }
    for (name, version, base) in &parsed {
        out.push_str(&format!(
            "Selecting previously unselected package {name}.\n(Reading database ... 117522 files and directories currently installed.)\nPreparing to unpack .../{base} ...\nUnpacking {name} ({version}) ...\n"
        ));
    }
    for (name, version, _) in &parsed {
        out.push_str(&format!("Setting up {name} ({version}) ...\n"));
        ctx.sw.install(name, Some(version));
    }
    run.step(1.0, out);
    run
}

/// `apt-cache madison PKG…` (the versions the repositories offer, one
/// line each) and `apt-cache policy PKG…`.
pub(super) fn apt_cache(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    let words: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .copied()
        .collect();
    let Some((&verb, pkgs)) = words.split_first() else {
        return ToolRun::err(100, "E: No operation specified\n");
    };
    let origin = |name: &str| -> String {
        match classify(name) {
            PkgKind::Dcgm(_) | PkgKind::Nccl => {
                "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64  Packages".to_owned()
            }
            _ if name.starts_with("cuda") => {
                "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64  Packages".to_owned()
            }
            _ => format!("http://archive.ubuntu.com/ubuntu {} amd64 Packages", section(name)),
        }
    };
    match verb {
        "madison" => {
            let mut out = String::new();
            for p in pkgs {
                if known(p) {
                    let v = ctx.sw.package_version(p, None);
                    out.push_str(&format!("{p:>10} | {v} | {}\n", origin(p)));
                }
            }
            let code = if out.is_empty() && !pkgs.is_empty() {
                100
            } else {
                0
            };
            let err = if code == 0 {
                String::new()
            } else {
                format!("N: Unable to locate package {}\n", pkgs.join(" "))
            };
            ToolRun::done(code, out, err)
        }
        "policy" => {
            let mut out = String::new();
            for p in pkgs.iter().filter(|p| known(p)) {
                let cand = ctx.sw.package_version(p, None);
                let inst = ctx
                    .sw
                    .packages
                    .get(*p)
                    .cloned()
                    .unwrap_or_else(|| "(none)".into());
                out.push_str(&format!(
                    "{p}:\n  Installed: {inst}\n  Candidate: {cand}\n  Version table:\n     {cand} 500\n        500 {}\n",
                    origin(p)
                ));
            }
            ToolRun::ok(out)
        }
        other => ToolRun::err(100, format!("E: Invalid operation {other}\n")),
    }
}

pub(super) fn dpkg(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    match args.first() {
        Some(&"-i") | Some(&"--install") => dpkg_install(ctx, &args[1..]),
        Some(&"-s") | Some(&"--status") => dpkg_status(ctx.sw, &args[1..]),
        Some(&"-l") | Some(&"--list") => dpkg_list(ctx.sw, &args[1..]),
        Some(&"-W") | Some(&"--show") => dpkg_query(ctx, args),
        _ => ToolRun::err(
            2,
            "dpkg: error: need an action option\n\nType dpkg --help for help about installing and deinstalling packages [*];\nUse 'apt' or 'aptitude' for user-friendly package management;\n",
        ),
    }
}

/// The RPM name-version string (`nvidia-driver-3:570.133.20-1.el9.x86_64`
/// drops the epoch).
fn nevra(name: &str, version: &str) -> String {
    let v = version.rsplit_once(':').map_or(version, |(_, v)| v);
    format!("{name}-{v}.x86_64")
}

pub(super) fn dnf(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    let mut yes = false;
    let mut words: Vec<&str> = Vec::new();
    for a in args {
        match *a {
            "-y" | "--assumeyes" => yes = true,
            a if a.starts_with('-') => {}
            a => words.push(a),
        }
    }
    let meta = "Last metadata expiration check: 0:12:41 ago on Fri 08 Nov 2024 01:58:45 AM UTC.\n";
    match words.as_slice() {
        ["install", pkgs @ ..] => dnf_install(ctx, pkgs, yes, meta),
        ["module", "install", streams @ ..] => {
            // `nvidia-driver:570-open` installs the driver of that branch.
            let mut pkgs: Vec<String> = Vec::new();
            for s in streams {
                let (module, stream) = s.split_once(':').unwrap_or((s, ""));
                if module != "nvidia-driver" {
                    return ToolRun::err(
                        1,
                        format!(
                            "{meta}Error: Problems in request:\nmissing groups or modules: {s}\n"
                        ),
                    );
                }
                let branch = stream.split('-').next().unwrap_or("").parse::<u32>().ok();
                let version = format!(
                    "3:{}-1.el9",
                    crate::sim::hw::driver_version_of(branch.unwrap_or(580))
                );
                pkgs.push(format!("nvidia-driver={version}"));
            }
            let refs: Vec<&str> = pkgs.iter().map(String::as_str).collect();
            dnf_install(ctx, &refs, yes, meta)
        }
        ["remove" | "erase", pkgs @ ..] => {
            let mut out = String::from("Dependencies resolved.\n");
            let mut gone = Vec::new();
            for p in pkgs {
                if ctx.sw.remove(p) {
                    gone.push(*p);
                }
            }
            if gone.is_empty() {
                return ToolRun::done(
                    0,
                    format!(
                        "No match for argument: {}\nNo packages marked for removal.\nDependencies resolved.\nNothing to do.\nComplete!\n",
                        pkgs.join(" ")
                    ),
                    "",
                );
            }
            out.push_str(&format!("Removed:\n  {}\n\nComplete!\n", gone.join(" ")));
            ToolRun::ok(out)
        }
        ["list", "installed", pats @ ..] => {
            let mut out = String::from("Installed Packages\n");
            for (n, v) in &ctx.sw.packages {
                if pats.is_empty() || pats.iter().any(|p| glob(p, n)) {
                    out.push_str(&format!(
                        "{:<40} {:<30} @cuda-rhel9-x86_64\n",
                        format!("{n}.x86_64"),
                        v
                    ));
                }
            }
            ToolRun::ok(out)
        }
        ["makecache" | "check-update" | "update" | "upgrade", ..] => {
            let mut r = ToolRun::steps(0.0);
            r.step(
                3.0,
                format!("{meta}Dependencies resolved.\nNothing to do.\nComplete!\n"),
            );
            r
        }
        ["config-manager", ..] => ToolRun::ok(
            "Adding repo from: https://developer.download.nvidia.com/compute/cuda/repos/rhel9/x86_64/cuda-rhel9.repo\n",
        ),
        _ => ToolRun::err(1, "usage: dnf [options] COMMAND\n"),
    }
}

fn dnf_install(ctx: &mut ToolCtx, pkgs: &[&str], yes: bool, meta: &str) -> ToolRun {
    let mut run = ToolRun::steps(0.0);
    let mut out = String::from(meta);
    let mut missing = Vec::new();
    for p in pkgs {
        let (name, _) = split_pin(p);
        if !known(&name) {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        for m in &missing {
            out.push_str(&format!("No match for argument: {m}\n"));
        }
        run.step(2.0, out);
        run.stderr = format!("Error: Unable to find a match: {}\n", missing.join(" "));
        run.code = 1;
        return run;
    }
    let mut new: Vec<(String, String)> = Vec::new();
    for p in pkgs {
        let (name, pin) = split_pin(p);
        let version = ctx.sw.package_version(&name, pin.as_deref());
        if ctx.sw.packages.get(&name) == Some(&version) {
            out.push_str(&format!(
                "Package {} is already installed.\n",
                nevra(&name, &version)
            ));
            continue;
        }
        let driver_version = matches!(classify(&name), PkgKind::Driver(_)).then(|| version.clone());
        for d in deps(ctx.sw, &name) {
            if !ctx.sw.is_installed(&d) && !new.iter().any(|(n, _)| *n == d) {
                let v = driver_version
                    .clone()
                    .unwrap_or_else(|| ctx.sw.package_version(&d, None));
                new.push((d, v));
            }
        }
        new.push((name, version));
    }
    if new.is_empty() {
        out.push_str("Dependencies resolved.\nNothing to do.\nComplete!\n");
        run.step(2.0, out);
        return run;
    }
    let rule = "=".repeat(80);
    out.push_str(&format!(
        "Dependencies resolved.\n{rule}\n {:<40} {:<8} {:<22} {:<12} {:>5}\n{rule}\nInstalling:\n",
        "Package", "Arch", "Version", "Repository", "Size"
    ));
    for (n, v) in &new {
        out.push_str(&format!(
            " {n:<40} {:<8} {v:<22} {:<12} {:>5}\n",
            "x86_64",
            "cuda-rhel9",
            human_kb(size_kb(n))
                .replace(" MB", " M")
                .replace(" kB", " k")
        ));
    }
    let total: u64 = new.iter().map(|(n, _)| size_kb(n)).sum();
    out.push_str(&format!(
        "\nTransaction Summary\n{rule}\nInstall  {} Packages\n\nTotal download size: {}\nInstalled size: {}\n",
        new.len(),
        human_kb(total).replace(" MB", " M"),
        human_kb(total * 3).replace(" MB", " M")
    ));
    if !yes {
        out.push_str("Is this ok [y/N]: Operation aborted.\n");
        run.step(2.0, out);
        run.code = 1;
        return run;
    }
    out.push_str("Downloading Packages:\n");
    run.step(2.0, out);
    if ctx.faults.package_install_failures > 0 {
        ctx.faults.package_install_failures -= 1;
        let (n, v) = &new[0];
        run.step(30.0, "");
        run.stderr = format!(
            "Error: Error downloading packages:\n  Curl error (28): Timeout was reached for https://developer.download.nvidia.com/compute/cuda/repos/rhel9/x86_64/{}.rpm [Operation too slow. Less than 1000 bytes/sec transferred the last 30 seconds]\n",
            nevra(n, v)
        );
        run.code = 1;
        return run;
    }
    for (k, (n, v)) in new.iter().enumerate() {
        let kb = size_kb(n);
        run.step(
            0.3 + kb as f64 / 60_000.0,
            format!(
                "({}/{}): {:<56} 58 MB/s | {:>6}     00:0{}\n",
                k + 1,
                new.len(),
                format!("{}.rpm", nevra(n, v)),
                human_kb(kb),
                (kb / 60_000).min(9)
            ),
        );
    }
    run.step(
        1.0,
        format!(
            "{}\nTotal                                            58 MB/s | {}     00:0{}\nRunning transaction check\nTransaction check succeeded.\nRunning transaction test\nTransaction test succeeded.\nRunning transaction\n  Preparing        :                                                        1/1\n",
            "-".repeat(80),
            human_kb(total),
            (total / 58_000).min(9)
        ),
    );
    let count = new.len();
    for (k, (n, v)) in new.iter().enumerate() {
        let slow = matches!(classify(n), PkgKind::Driver(_)) || n.starts_with("kmod");
        run.step(
            if slow { 6.0 } else { 0.8 },
            format!(
                "  Installing       : {:<54}{:>3}/{count}\n",
                nevra(n, v),
                k + 1
            ),
        );
        ctx.sw.install(n, Some(v));
    }
    let mut tail = String::new();
    for (k, (n, v)) in new.iter().enumerate() {
        tail.push_str(&format!(
            "  Verifying        : {:<54}{:>3}/{count}\n",
            nevra(n, v),
            k + 1
        ));
    }
    tail.push_str("\nInstalled:\n");
    for (n, v) in &new {
        tail.push_str(&format!("  {}\n", nevra(n, v)));
    }
    tail.push_str("\nComplete!\n");
    run.step(1.0, tail);
    run
}

pub(super) fn rpm(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    if let Some((&"--import", files)) = args.split_first() {
        return rpm_import(ctx, files);
    }
    let all = args
        .iter()
        .any(|a| *a == "-qa" || *a == "-aq" || *a == "--all");
    let query = all || args.iter().any(|a| a.starts_with("-q"));
    if !query {
        return ToolRun::err(1, "rpm: no operation specified\n");
    }
    let names: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .copied()
        .collect();
    if all {
        let out: String = ctx
            .sw
            .packages
            .iter()
            .filter(|(n, _)| names.is_empty() || names.iter().any(|p| glob(p, n)))
            .map(|(n, v)| format!("{}\n", nevra(n, v)))
            .collect();
        return ToolRun::ok(out);
    }
    let mut out = String::new();
    let mut missing = 0;
    for n in names {
        match ctx.sw.packages.get(n) {
            Some(v) => out.push_str(&format!("{}\n", nevra(n, v))),
            None => {
                missing += 1;
                out.push_str(&format!("package {n} is not installed\n"));
            }
        }
    }
    ToolRun::done(missing, out, "")
}

/// `rpm --import KEY…`: each file must be an ASCII-armoured OpenPGP
/// public key, as rpm accepts; the keys change nothing the simulator models.
fn rpm_import(ctx: &mut ToolCtx, files: &[&str]) -> ToolRun {
    if files.is_empty() {
        return ToolRun::err(1, "rpm: no arguments given for import\n");
    }
    for f in files {
        match (ctx.file_head)(f) {
            None => return ToolRun::err(1, format!("error: {f}: import read failed(2).\n")),
            Some(head) if !head.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----") => {
                return ToolRun::err(1, format!("error: {f}: key 1 import failed.\n"));
            }
            Some(_) => {}
        }
    }
    ToolRun::ok("")
}

#[cfg(test)]
mod tests {
    use super::super::tests::Bench;
    use crate::profiles::image::OsFamily;
    use crate::sim::hw::SoftwareState;
    use crate::sim::hw::tests::h100;

    #[test]
    fn apt_install_needs_yes_for_dependencies() {
        let mut b = Bench::bare("n", &h100());
        let r = b.run("apt-get install nvidia-driver-570-server-open");
        assert_eq!(r.code, 1);
        assert!(
            r.stdout()
                .ends_with("Do you want to continue? [Y/n] Abort.\n")
        );
        assert!(b.sw.driver.is_none());
        let r = b.run("apt-get install -y nvidia-driver-570-server-open");
        assert_eq!(r.code, 0);
        assert!(r.steps.len() > 10, "progress in steps");
        assert!(r.duration().as_secs() >= 10);
        let out = r.stdout();
        assert!(out.contains(
            "Setting up nvidia-driver-570-server-open (570.133.20-0ubuntu0.24.04.1) ..."
        ));
        let r = b.run("dpkg-query -W -f=${Version} nvidia-driver-570-server-open");
        assert_eq!(r.stdout(), "570.133.20-0ubuntu0.24.04.1");
        let r = b.run("dpkg-query -W nvidia-utils-*");
        assert_eq!(
            r.stdout(),
            "nvidia-utils-570-server\t570.133.20-0ubuntu0.24.04.1\n"
        );
        let r = b.run("apt-get install -y nvidia-driver-570-server-open");
        assert!(r.stdout().contains("is already the newest version"));
    }

    #[test]
    fn unknown_package_and_injected_failure() {
        let mut b = Bench::bare("n", &h100());
        let r = b.run("apt-get install -y nvidia-drvier-570");
        assert_eq!(r.code, 100);
        assert!(
            r.stderr
                .contains("E: Unable to locate package nvidia-drvier-570")
        );
        b.faults.package_install_failures = 1;
        let r = b.run("apt-get install -y libnccl2");
        assert_eq!(r.code, 100);
        assert!(r.stderr.contains("E: Unable to fetch some archives"));
        assert!(b.sw.nccl.is_none());
        assert_eq!(b.faults.package_install_failures, 0);
        assert_eq!(b.run("apt-get install -y libnccl2").code, 0);
        assert!(b.sw.nccl.is_some());
    }

    #[test]
    fn dpkg_reports_missing_packages() {
        let mut b = Bench::bare("n", &h100());
        let r = b.run("dpkg -s nvidia-fabricmanager-570");
        assert_eq!(r.code, 1);
        assert!(
            r.stderr
                .contains("is not installed and no information is available")
        );
        let r = b.run("dpkg-query -W foo");
        assert_eq!(r.stderr, "dpkg-query: no packages found matching foo\n");
    }

    #[test]
    fn dnf_and_rpm_on_rhel() {
        let mut b = Bench::bare("n", &h100());
        b.sw = SoftwareState::new(OsFamily::Rhel);
        assert_eq!(b.run("apt-get install -y x").code, 127);
        let r = b.run("dnf module install -y nvidia-driver:570-open");
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(b.sw.driver.as_deref(), Some("570.133.20"));
        assert!(r.stdout().ends_with("Complete!\n"));
        let r = b.run("dnf install -y nvidia-fabric-manager");
        assert_eq!(r.code, 0);
        assert_eq!(b.sw.fabricmanager.as_deref(), Some("570.133.20"));
        assert_eq!(
            b.run("rpm -q nvidia-driver").stdout(),
            "nvidia-driver-570.133.20-1.el9.x86_64\n"
        );
        let r = b.run("rpm -q foo");
        assert_eq!(
            (r.code, r.stdout().as_str()),
            (1, "package foo is not installed\n")
        );
        let r = b.run("dnf install nvidia-persistenced-x");
        assert_eq!(r.code, 1);
        let r = b.run("rpm --import /etc/pki/rpm-gpg/missing");
        assert_eq!(
            (r.code, r.stderr.as_str()),
            (
                1,
                "error: /etc/pki/rpm-gpg/missing: import read failed(2).\n"
            )
        );
    }
}
