//! Discovery against the real Redfish trees of ten BMCs (Dell, HPE iLO 5/6/7,
//! Lenovo, Supermicro, NVIDIA DGX H100 (AMI), GB200 and GH200 (OpenBMC), and
//! DMTF's reference), each served by `tests/interop/serve_mockup.py` — a
//! static HTTPS server independent of kiln's simulator. The expected values
//! were read from the JSON files themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kiln::bmc::client::BmcClient;
use kiln::bmc::discover::{InsertMethod, discover, gpus};
use kiln::bmc::transport::{Transport, TransportOptions};
use kiln::bmc::vendor::Vendor;
use kiln::secret::Secret;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &str) -> Server {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new("python3")
        .arg(format!("{root}/tests/interop/serve_mockup.py"))
        .arg(format!("{root}/redfish-mockups/{dir}"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs serve_mockup.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("serve_mockup.py said {line:?}"));
    Server { child, port }
}

async fn client(dir: &str, server: &Server) -> BmcClient {
    // Trust on first contact, as `kiln bmc trust` does, then pin.
    let fp = kiln::bmc::trust::fetch_fingerprint("127.0.0.1", server.port, Duration::from_secs(10))
        .await
        .unwrap();
    let tls = kiln::bmc::tls::pinned(fp).unwrap();
    let options = TransportOptions {
        request_timeout: Duration::from_secs(10),
        ..TransportOptions::default()
    };
    let transport = Transport::new("127.0.0.1", server.port, tls, options);
    BmcClient::new(dir, transport, "root", Secret::new("mockup"))
}

struct Expect {
    dir: &'static str,
    vendor: Vendor,
    system: &'static str,
    extra_systems: usize,
    /// (slot path suffix, inserted by action?)
    cd_slot: Option<(&'static str, bool)>,
    gpus: usize,
    boot_has: &'static [&'static str],
    reset_has: &'static [&'static str],
}

const CASES: &[Expect] = &[
    Expect {
        dir: "dell-idrac9-poweredge-r750",
        vendor: Vendor::Dell,
        system: "/redfish/v1/Systems/System.Embedded.1",
        extra_systems: 0,
        cd_slot: Some(("/Systems/System.Embedded.1/VirtualMedia/1", true)),
        gpus: 1,
        boot_has: &["Cd", "Pxe", "UefiHttp", "Hdd", "BiosSetup"],
        reset_has: &["On", "ForceOff", "ForceRestart", "PowerCycle"],
    },
    Expect {
        dir: "dmtf-public-rackmount1",
        vendor: Vendor::Generic,
        system: "/redfish/v1/Systems/437XR1138R2",
        extra_systems: 0,
        cd_slot: Some(("/VirtualMedia/CD1", false)),
        gpus: 0,
        boot_has: &["Cd", "Pxe", "Hdd"],
        reset_has: &["On", "ForceOff", "ForceRestart"],
    },
    Expect {
        dir: "hpe-ilo5-proliant-dl385-gen10plus",
        vendor: Vendor::Hpe,
        system: "/redfish/v1/Systems/1",
        extra_systems: 0,
        cd_slot: Some(("/Managers/1/VirtualMedia/2", true)),
        gpus: 0,
        boot_has: &["Cd", "Pxe", "UefiHttp"],
        reset_has: &["On", "ForceOff", "ForceRestart"],
    },
    Expect {
        dir: "hpe-ilo6-proliant-dl380a-gen11",
        vendor: Vendor::Hpe,
        system: "/redfish/v1/Systems/1",
        extra_systems: 0,
        cd_slot: Some(("/Managers/1/VirtualMedia/2", true)),
        gpus: 2,
        boot_has: &["Cd", "Pxe", "UefiHttp"],
        reset_has: &["On", "ForceOff", "ForceRestart"],
    },
    Expect {
        dir: "hpe-ilo7-proliant-dl380a-gen12",
        vendor: Vendor::Hpe,
        system: "/redfish/v1/Systems/1",
        extra_systems: 0,
        cd_slot: Some(("/Managers/1/VirtualMedia/2", true)),
        gpus: 4,
        boot_has: &["Cd", "Pxe", "UefiHttp"],
        reset_has: &["On", "ForceOff", "ForceRestart"],
    },
    Expect {
        dir: "lenovo-xcc-thinksystem-sr670v2",
        vendor: Vendor::Lenovo,
        system: "/redfish/v1/Systems/1",
        extra_systems: 0,
        cd_slot: Some(("/Systems/1/VirtualMedia/EXT1", false)),
        gpus: 8,
        boot_has: &["Cd", "Pxe", "Hdd"],
        reset_has: &["On", "ForceOff", "ForceRestart"],
    },
    Expect {
        dir: "nvidia-dgx-h100-ami",
        vendor: Vendor::Ami,
        system: "/redfish/v1/Systems/DGX",
        extra_systems: 1,
        cd_slot: None,
        gpus: 8,
        boot_has: &[],
        reset_has: &[],
    },
    Expect {
        dir: "nvidia-gb200-nvl-openbmc",
        vendor: Vendor::OpenBmc,
        system: "/redfish/v1/Systems/System_0",
        extra_systems: 1,
        cd_slot: Some(("/Managers/BMC_0/VirtualMedia/USB2", true)),
        gpus: 4,
        boot_has: &["Cd", "Pxe", "Hdd"],
        reset_has: &[],
    },
    Expect {
        dir: "nvidia-gh200-openbmc",
        vendor: Vendor::OpenBmc,
        system: "/redfish/v1/Systems/System_0",
        extra_systems: 1,
        cd_slot: Some(("/Managers/BMC_0/VirtualMedia/USB2", true)),
        gpus: 2,
        boot_has: &["Cd", "Pxe", "Hdd"],
        reset_has: &[],
    },
    Expect {
        dir: "supermicro-x13-sys-821ge-tnhr",
        vendor: Vendor::Supermicro,
        system: "/redfish/v1/Systems/1",
        extra_systems: 0,
        cd_slot: Some(("/Managers/1/VirtualMedia/VirtualMedia1", true)),
        gpus: 8,
        boot_has: &["Cd", "Pxe", "UefiHttp"],
        reset_has: &[],
    },
];

#[tokio::test]
async fn every_vendor_tree_is_discovered() {
    let mut report = String::new();
    let mut failures = Vec::new();
    for case in CASES {
        let server = serve(case.dir);
        let c = client(case.dir, &server).await;
        let layout = discover(&c, None)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.dir));
        let found = gpus(&c, &layout).await.unwrap();
        // The crawls dropped Power and Thermal: links that lead nowhere
        // read as absent, and the sensors say what they lack.
        let sensors = kiln::bmc::facts::sensors(&c, &layout)
            .await
            .unwrap_or_else(|e| panic!("{}: sensors: {e}", case.dir));
        let cd = layout.cd_slot();
        report.push_str(&format!(
            "{}: {:?} system={} extra={} cd={:?} gpus={} boot={:?} reset={:?}\n",
            case.dir,
            layout.identity.vendor,
            layout.system,
            layout.extra_systems.len(),
            cd.map(|s| (&s.path, &s.insert)),
            found.len(),
            layout.boot_targets,
            layout.reset_types
        ));
        let mut check = |ok: bool, what: &str| {
            if !ok {
                failures.push(format!("{}: {what}", case.dir));
            }
        };
        check(layout.identity.vendor == case.vendor, "vendor");
        check(layout.system == case.system, "host system");
        check(
            layout.extra_systems.len() == case.extra_systems,
            "extra systems",
        );
        match (case.cd_slot, cd) {
            (None, None) => {}
            (Some((suffix, by_action)), Some(slot)) => {
                check(slot.path.ends_with(suffix), "cd slot path");
                check(
                    matches!(slot.insert, InsertMethod::Action { .. }) == by_action,
                    "insert method",
                );
            }
            _ => check(false, "cd slot presence"),
        }
        check(found.len() == case.gpus, "gpu count");
        check(
            layout.chassis.is_some() && !sensors.notes.is_empty(),
            "chassis found, missing readings said",
        );
        check(
            layout.other_hosts.is_empty() && layout.baseboards.len() == case.extra_systems,
            "the host's own baseboards",
        );
        check(!layout.identity.firmware.is_empty(), "BMC firmware");
        // AMI hides its slots until an OEM action enables remote media.
        check(
            layout.media_enable.is_some() == (case.vendor == Vendor::Ami),
            "media enable action",
        );
        if case.gpus > 0 {
            check(found.iter().all(|g| !g.model.is_empty()), "gpu models");
        }
        for t in case.boot_has {
            check(
                layout.boot_targets.iter().any(|b| b == t),
                &format!("boot target {t}"),
            );
        }
        for t in case.reset_has {
            check(
                layout.reset_types.iter().any(|r| r == t),
                &format!("reset type {t}"),
            );
        }
    }
    assert!(failures.is_empty(), "{}\n{report}", failures.join("\n"));
}
