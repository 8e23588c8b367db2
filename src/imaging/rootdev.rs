//! Choosing the disk an image is written to, from the disks the deploy
//! environment reports (`scripts/deploy-env/PROTOCOL.md`, `hello`) and the
//! image profile's root-device hints, as Ironic's hints work: every hint
//! given must match; among the disks that match, the smallest wins (ties
//! by name), so a data disk larger than the boot drive is never picked by
//! accident. Without hints: the smallest disk of at least 4 GiB.

use serde::Serialize;

use crate::profiles::image::RootDeviceHints;

/// Disks smaller than this are never chosen without a hint (Ironic's
/// default: USB sticks, BMC virtual devices).
const MIN_DEFAULT_BYTES: u64 = 4 << 30;

/// One block device the deploy environment found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// The name in `/dev` (`vda`, `nvme0n1`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Spinning.
    pub rotational: bool,
    /// The model string.
    pub model: String,
    /// The serial number.
    pub serial: String,
    /// The World Wide Name.
    pub wwn: String,
    /// The udev by-path name.
    pub by_path: String,
    /// The vendor string.
    pub vendor: String,
}

impl std::fmt::Display for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:.1} GiB",
            self.name,
            self.size as f64 / (1u64 << 30) as f64
        )?;
        for (k, v) in [
            ("model", &self.model),
            ("serial", &self.serial),
            ("wwn", &self.wwn),
            ("by_path", &self.by_path),
        ] {
            if !v.is_empty() {
                write!(f, " {k}={v}")?;
            }
        }
        if self.rotational {
            write!(f, " rotational")?;
        }
        Ok(())
    }
}

/// The most disks read from one report (a node with more is refused).
const MAX_DISKS: usize = 256;

/// Reads the `disk` lines of a `hello` body (TAB-separated: name, size,
/// rotational, model, serial, wwn, by-path, vendor). Other lines are
/// skipped; a malformed disk line is an error naming it.
pub fn parse_disks(body: &str) -> Result<Vec<Disk>, String> {
    let mut disks = Vec::new();
    for line in body.lines() {
        let mut f = line.split('\t');
        if f.next() != Some("disk") {
            continue;
        }
        let mut next = || f.next().unwrap_or_default().trim().to_owned();
        let name = next();
        let size = next();
        let rotational = next();
        let disk = Disk {
            size: size
                .parse()
                .map_err(|_| format!("disk {name:?}: size {size:?} is not a number"))?,
            rotational: rotational == "1",
            model: next(),
            serial: next(),
            wwn: next(),
            by_path: next(),
            vendor: next(),
            name,
        };
        if disk.name.is_empty()
            || !disk
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        {
            return Err(format!("disk name {:?} is not a /dev name", disk.name));
        }
        if disks.len() == MAX_DISKS {
            return Err(format!("more than {MAX_DISKS} disks reported"));
        }
        disks.push(disk);
    }
    Ok(disks)
}

/// The disk `hints` choose among `disks`, or why none fits.
pub fn choose<'d>(disks: &'d [Disk], hints: &RootDeviceHints) -> Result<&'d Disk, String> {
    let fits = |d: &Disk| -> bool {
        let text = |hint: &Option<String>, have: &str| {
            hint.as_deref()
                .is_none_or(|h| h.trim().eq_ignore_ascii_case(have.trim()))
        };
        text(&hints.name, &d.name)
            && hints.size.is_none_or(|s| s.accepts(d.size))
            && text(&hints.model, &d.model)
            && text(&hints.vendor, &d.vendor)
            && text(&hints.serial, &d.serial)
            && text(&hints.wwn, &d.wwn)
            && text(&hints.by_path, &d.by_path)
            && hints.rotational.is_none_or(|r| r == d.rotational)
            && (!hints.is_empty() || d.size >= MIN_DEFAULT_BYTES)
    };
    let chosen = disks
        .iter()
        .filter(|d| fits(d))
        .min_by(|a, b| a.size.cmp(&b.size).then_with(|| a.name.cmp(&b.name)));
    chosen.ok_or_else(|| {
        let wanted = if hints.is_empty() {
            "no disk of at least 4 GiB".to_owned()
        } else {
            format!(
                "no disk matches the root-device hints ({})",
                describe(hints)
            )
        };
        if disks.is_empty() {
            format!("{wanted}: the deploy environment found no disk at all")
        } else {
            format!(
                "{wanted}; disks found: {}",
                disks
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    })
}

/// The hints as a technician reads them: `serial no-such-disk, size >= 4 GiB`.
pub fn describe(hints: &RootDeviceHints) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("name", &hints.name),
        ("model", &hints.model),
        ("vendor", &hints.vendor),
        ("serial", &hints.serial),
        ("wwn", &hints.wwn),
        ("by_path", &hints.by_path),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k} {v}"));
        }
    }
    if let Some(size) = hints.size {
        parts.push(format!("size {size}"));
    }
    if let Some(r) = hints.rotational {
        parts.push(if r { "rotational" } else { "solid-state" }.to_owned());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::image::SizeHint;

    const REPORT: &str = "agent=1\n\
        disk\tvda\t5368709120\t0\t\tkiln-n1\t\tpci-0000:00:03.0\t0x1af4\n\
        disk\tnvme0n1\t960197124096\t0\tSAMSUNG MZ1L2960HCJR-00A07 \tS665NE0R1\teui.0025\tpci-0000:01:00.0-nvme-1\t\n\
        disk\tsda\t4000787030016\t1\tST4000NM000A\tWS1\t\tpci-0000:00:17.0-ata-1\tATA\n\
        mac=52:54:00:6b:00:01\n";

    #[test]
    fn parses_the_agents_report() {
        let disks = parse_disks(REPORT).unwrap();
        assert_eq!(disks.len(), 3);
        assert_eq!(disks[0].name, "vda");
        assert_eq!(disks[0].serial, "kiln-n1");
        assert_eq!(disks[1].model, "SAMSUNG MZ1L2960HCJR-00A07");
        assert!(disks[2].rotational);
        assert!(parse_disks("disk\tvda\tbig\t0").is_err());
        assert!(parse_disks("disk\t../x\t1\t0").is_err());
    }

    #[test]
    fn hints_pick_the_disk_or_say_why_not() {
        let disks = parse_disks(REPORT).unwrap();
        let none = RootDeviceHints::default();
        assert_eq!(choose(&disks, &none).unwrap().name, "vda");
        let ssd = RootDeviceHints {
            size: Some(SizeHint::Ge(100)),
            rotational: Some(false),
            ..Default::default()
        };
        assert_eq!(choose(&disks, &ssd).unwrap().name, "nvme0n1");
        let model = RootDeviceHints {
            model: Some("samsung mz1l2960hcjr-00a07".into()),
            ..Default::default()
        };
        assert_eq!(choose(&disks, &model).unwrap().name, "nvme0n1");
        let serial = RootDeviceHints {
            serial: Some("nope".into()),
            ..Default::default()
        };
        let why = choose(&disks, &serial).unwrap_err();
        assert!(
            why.contains("hints (serial nope)") && why.contains("vda 5.0 GiB"),
            "{why}"
        );
        let small = parse_disks("disk\tsdb\t1073741824\t0\tUSB\t\t\t\t").unwrap();
        assert!(
            choose(&small, &none)
                .unwrap_err()
                .contains("at least 4 GiB")
        );
        assert!(choose(&[], &none).unwrap_err().contains("no disk at all"));
    }
}
