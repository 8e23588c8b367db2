//! `systemctl`, `modprobe`, and the power commands (`reboot`,
//! `shutdown -r|-h`, `poweroff`, `halt`).

use super::{Effect, Tm, ToolCtx, ToolRun, fake_pid};

/// The description and binary of the units the simulator knows well.
fn unit_info(unit: &str) -> (&'static str, &'static str) {
    match unit {
        "nvidia-fabricmanager" => (
            "NVIDIA fabric manager service",
            "/usr/bin/nv-fabricmanager -c /usr/share/nvidia/nvswitch/fabricmanager.cfg",
        ),
        "nvidia-dcgm" => (
            "NVIDIA DCGM service",
            "/usr/bin/nv-hostengine -n --service-account nvidia-dcgm",
        ),
        "nvidia-persistenced" => (
            "NVIDIA Persistence Daemon",
            "/usr/bin/nvidia-persistenced --user nvidia-persistenced --no-persistence-mode --verbose",
        ),
        _ => ("System service", "/usr/sbin/daemon"),
    }
}

pub(super) fn systemctl(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    let mut now = false;
    let mut words: Vec<&str> = Vec::new();
    for a in args {
        match *a {
            "--now" => now = true,
            a if a.starts_with('-') => {}
            a => words.push(a),
        }
    }
    let Some((&verb, units)) = words.split_first() else {
        return ToolRun::ok("  UNIT                      LOAD   ACTIVE SUB     DESCRIPTION\n");
    };
    let units: Vec<String> = units
        .iter()
        .map(|u| u.strip_suffix(".service").unwrap_or(u).to_owned())
        .collect();
    let mut out = String::new();
    let mut err = String::new();
    let mut code = 0;
    match verb {
        "daemon-reload" | "reset-failed" => {}
        "start" | "restart" | "reload-or-restart" | "try-restart" => {
            for u in &units {
                if verb != "start" {
                    ctx.sw.stop(u);
                }
                match ctx.sw.start(u) {
                    Ok(()) => {}
                    Err(None) => {
                        err.push_str(&format!(
                            "Failed to start {u}.service: Unit {u}.service not found.\n"
                        ));
                        code = 5;
                    }
                    Err(Some(_)) => {
                        err.push_str(&format!("Job for {u}.service failed because the control process exited with error code.\nSee \"systemctl status {u}.service\" and \"journalctl -xeu {u}.service\" for details.\n"));
                        code = 1;
                    }
                }
            }
        }
        "stop" => {
            for u in &units {
                if !ctx.sw.stop(u) {
                    err.push_str(&format!(
                        "Failed to stop {u}.service: Unit {u}.service not loaded.\n"
                    ));
                    code = 5;
                }
            }
        }
        "enable" | "disable" => {
            let on = verb == "enable";
            for u in &units {
                let Some(s) = ctx.sw.services.get_mut(u.as_str()) else {
                    err.push_str(&format!(
                        "Failed to {verb} unit: Unit file {u}.service does not exist.\n"
                    ));
                    code = 1;
                    continue;
                };
                if s.enabled != on {
                    s.enabled = on;
                    if on {
                        err.push_str(&format!("Created symlink /etc/systemd/system/multi-user.target.wants/{u}.service → /usr/lib/systemd/system/{u}.service.\n"));
                    } else {
                        err.push_str(&format!(
                            "Removed \"/etc/systemd/system/multi-user.target.wants/{u}.service\".\n"
                        ));
                    }
                }
                if now {
                    if on {
                        if let Err(why) = ctx.sw.start(u) {
                            if why.is_some() {
                                err.push_str(&format!("Job for {u}.service failed because the control process exited with error code.\nSee \"systemctl status {u}.service\" and \"journalctl -xeu {u}.service\" for details.\n"));
                            }
                            code = 1;
                        }
                    } else {
                        ctx.sw.stop(u);
                    }
                }
            }
        }
        "is-active" => {
            for u in &units {
                let state = match ctx.sw.services.get(u.as_str()) {
                    Some(s) if s.active => "active",
                    Some(s) if s.failed => "failed",
                    _ => "inactive",
                };
                if state != "active" {
                    code = 3;
                }
                out.push_str(&format!("{state}\n"));
            }
        }
        "is-enabled" => {
            for u in &units {
                match ctx.sw.services.get(u.as_str()) {
                    Some(s) => {
                        out.push_str(if s.enabled { "enabled\n" } else { "disabled\n" });
                        if !s.enabled {
                            code = 1;
                        }
                    }
                    None => {
                        err.push_str(&format!("Failed to get unit file state for {u}.service: No such file or directory\n"));
                        code = 1;
                    }
                }
            }
        }
        "is-failed" => {
            for u in &units {
                let failed = ctx.sw.services.get(u.as_str()).is_some_and(|s| s.failed);
                out.push_str(if failed { "failed\n" } else { "active\n" });
                if !failed {
                    code = 1;
                }
            }
        }
        "status" => {
            for u in &units {
                let Some(s) = ctx.sw.services.get(u.as_str()).copied() else {
                    err.push_str(&format!("Unit {u}.service could not be found.\n"));
                    code = 4;
                    continue;
                };
                let (desc, bin) = unit_info(u);
                let since = Tm::utc(ctx.sw.booted_at_unix + 20);
                let since = format!(
                    "{} {}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                    ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][since.wday],
                    since.year,
                    since.month,
                    since.day,
                    since.hour,
                    since.min,
                    since.sec
                );
                let dot = if s.active {
                    "●"
                } else if s.failed {
                    "×"
                } else {
                    "○"
                };
                let enabled = if s.enabled { "enabled" } else { "disabled" };
                out.push_str(&format!(
                    "{dot} {u}.service - {desc}\n     Loaded: loaded (/usr/lib/systemd/system/{u}.service; {enabled}; preset: enabled)\n"
                ));
                let pid = fake_pid(
                    ctx.hw,
                    crate::sim::hw::fnv1a(u.as_bytes()),
                    ctx.sw.booted_at_unix,
                );
                let exe = bin
                    .split(' ')
                    .next()
                    .unwrap_or(bin)
                    .rsplit('/')
                    .next()
                    .unwrap_or(bin);
                if s.active {
                    out.push_str(&format!(
                        "     Active: active (running) since {since}\n   Main PID: {pid} ({})\n      Tasks: 18 (limit: 629145)\n     Memory: 14.2M (peak: 15.0M)\n        CPU: 1.234s\n     CGroup: /system.slice/{u}.service\n             └─{pid} {bin}\n",
                        &exe[..exe.len().min(15)]
                    ));
                } else if s.failed {
                    out.push_str(&format!(
                        "     Active: failed (Result: exit-code) since {since}\n    Process: {pid} ExecStart={bin} (code=exited, status=1/FAILURE)\n        CPU: 12ms\n"
                    ));
                    code = 3;
                } else {
                    out.push_str("     Active: inactive (dead)\n");
                    code = 3;
                }
            }
        }
        _ => {
            return ToolRun::err(1, format!("Unknown command verb '{verb}'.\n"));
        }
    }
    ToolRun::done(code, out, err)
}

/// `hostnamectl` (status): the lines kiln's imaging reads, in systemd's
/// layout.
pub(super) fn hostnamectl(ctx: &mut ToolCtx) -> ToolRun {
    ToolRun::ok(format!(
        " Static hostname: {host}\n       Icon name: computer-server\n         Chassis: server\nOperating System: {os}\n          Kernel: Linux {kernel}\n    Architecture: x86-64\n",
        host = ctx.hw.node,
        os = ctx.sw.os_name,
        kernel = ctx.sw.kernel,
    ))
}

pub(super) fn modprobe(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    let remove = args.iter().any(|a| *a == "-r" || *a == "--remove");
    let modules: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .copied()
        .collect();
    for m in modules {
        let nvidia = m == "nvidia" || m.starts_with("nvidia_") || m.starts_with("nvidia-");
        if !nvidia {
            continue;
        }
        if remove {
            if m.replace('-', "_") == "nvidia_peermem" {
                ctx.sw.peermem_loaded = false;
                continue;
            }
            if ctx.sw.is_active("nvidia-fabricmanager")
                || ctx.sw.is_active("nvidia-persistenced")
                || ctx.sw.is_active("nvidia-dcgm")
                || ctx.sw.peermem_loaded
            {
                return ToolRun::err(1, format!("modprobe: FATAL: Module {m} is in use.\n"));
            }
            if m == "nvidia" {
                ctx.sw.loaded_driver = None;
                ctx.sw.persistence_mode = false;
            }
            continue;
        }
        if let Err(e) = ctx.sw.load_module(m, !ctx.hw.ib_ports.is_empty()) {
            return ToolRun::err(1, format!("{e}\n"));
        }
    }
    ToolRun::ok("")
}

/// `lsmod`: the modules the model has loaded, in the kernel's layout
/// (newest first, as `/proc/modules` lists them).
pub(super) fn lsmod(ctx: &mut ToolCtx) -> ToolRun {
    let mut rows: Vec<(&str, u64, String)> = Vec::new();
    if ctx.sw.loaded_driver.is_some() {
        if ctx.sw.peermem_loaded {
            rows.push(("nvidia_peermem", 16_384, "0".into()));
        }
        rows.push(("nvidia_uvm", 4_956_160, "0".into()));
        rows.push(("nvidia_drm", 122_880, "0".into()));
        rows.push(("nvidia_modeset", 1_355_776, "1 nvidia_drm".into()));
        let mut users = vec!["nvidia_uvm", "nvidia_modeset"];
        if ctx.sw.peermem_loaded {
            users.insert(1, "nvidia_peermem");
        }
        rows.push((
            "nvidia",
            54_386_688,
            format!("{} {}", users.len(), users.join(",")),
        ));
    }
    if !ctx.hw.ib_ports.is_empty() {
        rows.push(("mlx5_ib", 479_232, "0".into()));
        let users = if ctx.sw.peermem_loaded {
            "3 nvidia_peermem,mlx5_ib,ib_uverbs"
        } else {
            "2 mlx5_ib,ib_uverbs"
        };
        rows.push(("ib_uverbs", 200_704, "1 mlx5_ib".into()));
        rows.push(("ib_core", 471_040, users.into()));
        rows.push(("mlx5_core", 2_473_984, "1 mlx5_ib".into()));
    }
    rows.push(("overlay", 212_992, "0".into()));
    rows.push(("nls_iso8859_1", 12_288, "1".into()));
    let mut out = String::from("Module                  Size  Used by\n");
    for (name, size, used) in rows {
        out.push_str(&format!("{name:<19} {size:>9}  {used}\n"));
    }
    ToolRun::ok(out)
}

/// `update-initramfs -u|-c|-k` (Ubuntu) and `dracut -f` (RHEL): the
/// initramfs is rebuilt (counted in the model).
pub(super) fn initramfs(ctx: &mut ToolCtx, tool: &str, args: &[&str]) -> ToolRun {
    let kernel = ctx.sw.kernel.clone();
    if tool == "dracut" {
        if !args
            .iter()
            .any(|a| *a == "-f" || *a == "--force" || *a == "--regenerate-all")
        {
            return ToolRun::err(
                1,
                format!(
                    "dracut: Will not override existing initramfs (/boot/initramfs-{kernel}.img) without --force\n"
                ),
            );
        }
        ctx.sw.initramfs_builds += 1;
        let mut r = ToolRun::steps(0.0);
        r.step(12.0, "");
        return r;
    }
    if !args.iter().any(|a| matches!(*a, "-u" | "-c" | "-d")) {
        return ToolRun::err(
            1,
            "Usage: update-initramfs {-c|-d|-u} [-k version] [-v] [-b directory]\n",
        );
    }
    ctx.sw.initramfs_builds += 1;
    let mut r = ToolRun::steps(0.0);
    r.step(
        9.0,
        format!("update-initramfs: Generating /boot/initrd.img-{kernel}\n"),
    );
    r
}

pub(super) fn power(name: &str, args: &[&str]) -> ToolRun {
    let effect = match name {
        "reboot" => Effect::Reboot,
        "poweroff" | "halt" => Effect::PowerOff,
        _ => {
            if args.iter().any(|a| *a == "-r" || *a == "--reboot") {
                Effect::Reboot
            } else if args
                .iter()
                .any(|a| matches!(*a, "-h" | "-P" | "--poweroff" | "-H" | "--halt"))
            {
                Effect::PowerOff
            } else if args.contains(&"-c") {
                return ToolRun::ok("");
            } else {
                Effect::PowerOff
            }
        }
    };
    let mut run = ToolRun::done(0, "", "");
    run.effect = Some(effect);
    run
}

#[cfg(test)]
mod tests {
    use super::super::Effect;
    use super::super::tests::Bench;
    use crate::sim::hw::tests::h100;

    #[test]
    fn fabric_manager_needs_the_driver_loaded() {
        let mut b = Bench::bare("n", &h100());
        b.run("apt-get install -y nvidia-driver-570-server-open nvidia-fabricmanager-570");
        let r = b.run("systemctl start nvidia-fabricmanager");
        assert_eq!(r.code, 1);
        assert!(
            r.stderr
                .starts_with("Job for nvidia-fabricmanager.service failed")
        );
        assert_eq!(
            b.run("systemctl is-active nvidia-fabricmanager").stdout(),
            "failed\n"
        );
        assert_eq!(b.run("modprobe nvidia").code, 0);
        let r = b.run("systemctl enable --now nvidia-fabricmanager.service");
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stderr.contains("Created symlink"));
        let r = b.run("systemctl status nvidia-fabricmanager");
        assert_eq!(r.code, 0);
        assert!(r.stdout().contains("Active: active (running)"));
        assert_eq!(b.run("modprobe -r nvidia").code, 1);
        assert_eq!(b.run("systemctl start nope").code, 5);
        assert_eq!(b.run("systemctl status nope").code, 4);
    }

    #[test]
    fn power_commands() {
        let mut b = Bench::bare("n", &h100());
        assert_eq!(b.run("reboot").effect, Some(Effect::Reboot));
        assert_eq!(b.run("shutdown -r now").effect, Some(Effect::Reboot));
        assert_eq!(b.run("shutdown -h now").effect, Some(Effect::PowerOff));
        assert_eq!(b.run("poweroff").effect, Some(Effect::PowerOff));
    }
}
