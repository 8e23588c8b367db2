//! Which BMC this is, decided once from its service root and first
//! manager, and the quirks that follow. Everything vendor-specific in
//! kiln's Redfish handling is decided here, nowhere else.

use serde_json::Value;

/// BMC families kiln knows the quirks of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vendor {
    /// Dell iDRAC.
    Dell,
    /// HPE iLO (generation in [`Identity::generation`]).
    Hpe,
    /// Supermicro (ASPEED BMC).
    Supermicro,
    /// Lenovo XClarity Controller.
    Lenovo,
    /// AMI MegaRAC, as on NVIDIA DGX H100.
    Ami,
    /// OpenBMC (bmcweb), as on NVIDIA GB200/GH200.
    OpenBmc,
    /// Anything else: plain DMTF Redfish.
    Generic,
}

/// What a BMC says it is.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Identity {
    /// The family.
    pub vendor: Vendor,
    /// iLO generation (5, 6, 7) for HPE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// Manager model as reported (`iLO 6`, `15G Monolithic`, …).
    pub model: String,
    /// BMC firmware version.
    pub firmware: String,
}

/// The quirks that follow from an identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quirks {
    /// InsertMedia parameters to leave out (the BMC refuses them).
    pub omit_insert_params: &'static [&'static str],
    /// Virtual media is mounted by PATCHing `Image`/`Inserted` on the slot.
    pub media_by_patch: bool,
    /// PATCH needs `If-Match` with the resource's ETag.
    pub needs_if_match: bool,
    /// `ForceRestart` can hang: do ForceOff, wait, On instead.
    pub force_restart_hangs: bool,
    /// Boot once from virtual CD via `Oem.Hpe.BootOnNextServerReset` on the slot.
    pub boot_on_next_reset: bool,
    /// The BMC lists extra systems (HGX baseboards) next to the host.
    pub extra_systems: bool,
    /// The BMC lists the GPUs it sees (as processors or PCIe devices), so
    /// a GPU node whose BMC lists none has lost them; on other BMCs
    /// (plain DMTF Redfish, sushy-tools) an empty list proves nothing.
    pub lists_gpus: bool,
    /// The family's `$expand` is known to answer wrongly, so collections
    /// are read member by member even where the service root advertises
    /// it. No family kiln knows needs it yet: members an expand leaves as
    /// bare links are read one by one anyway
    /// ([`crate::bmc::discover::for_each_member`]).
    pub expand_broken: bool,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn has_oem(doc: &Value, key: &str) -> bool {
    doc.get("Oem").and_then(|o| o.get(key)).is_some()
}

/// Decides the identity from the service root and the first manager.
pub fn identify(root: &Value, manager: &Value) -> Identity {
    let vendor_field = text(&root["Vendor"]).to_ascii_lowercase();
    let product = text(&root["Product"]).to_ascii_lowercase();
    let model = text(&manager["Model"]);
    let firmware = text(&manager["FirmwareVersion"]);
    let model_lc = model.to_ascii_lowercase();
    let either = |key: &str| has_oem(root, key) || has_oem(manager, key);
    let vendor = if vendor_field == "dell" || either("Dell") {
        Vendor::Dell
    } else if vendor_field == "hpe" || either("Hpe") || either("Hp") {
        Vendor::Hpe
    } else if vendor_field == "lenovo" || either("Lenovo") || model_lc.contains("xclarity") {
        Vendor::Lenovo
    } else if either("Supermicro") || vendor_field == "supermicro" {
        Vendor::Supermicro
    } else if vendor_field == "ami" || either("Ami") || product.contains("ami redfish") {
        Vendor::Ami
    } else if either("OpenBmc") || model_lc == "openbmc" {
        Vendor::OpenBmc
    } else {
        Vendor::Generic
    };
    let generation = (vendor == Vendor::Hpe)
        .then(|| {
            model
                .split_whitespace()
                .skip_while(|w| !w.eq_ignore_ascii_case("ilo"))
                .nth(1)
                .and_then(|g| g.parse().ok())
        })
        .flatten();
    Identity {
        vendor,
        generation,
        model,
        firmware,
    }
}

impl Identity {
    /// The quirks of this BMC.
    pub fn quirks(&self) -> Quirks {
        let mut q = Quirks {
            omit_insert_params: &[],
            media_by_patch: false,
            needs_if_match: false,
            force_restart_hangs: false,
            boot_on_next_reset: false,
            extra_systems: false,
            lists_gpus: self.vendor != Vendor::Generic,
            expand_broken: false,
        };
        match self.vendor {
            Vendor::Dell => q.omit_insert_params = &["Inserted", "WriteProtected"],
            Vendor::Hpe => {
                q.omit_insert_params = &["TransferProtocolType", "TransferMethod"];
                q.boot_on_next_reset = true;
            }
            Vendor::Supermicro => q.needs_if_match = true,
            Vendor::Lenovo => {
                q.media_by_patch = true;
                q.force_restart_hangs = true;
            }
            Vendor::Ami => {
                q.needs_if_match = true;
                q.extra_systems = true;
            }
            Vendor::OpenBmc => q.extra_systems = true,
            Vendor::Generic => {}
        }
        q
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(dir: &str, path: &str) -> Value {
        let file = format!(
            "{}/redfish-mockups/{dir}{path}/index.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
    }

    fn identity_of(dir: &str) -> Identity {
        let root = load(dir, "/redfish/v1");
        let managers = load(dir, "/redfish/v1/Managers");
        let first = managers["Members"][0]["@odata.id"]
            .as_str()
            .unwrap()
            .trim_end_matches('/');
        identify(&root, &load(dir, first))
    }

    #[test]
    fn every_real_bmc_tree_is_recognised() {
        let cases = [
            ("dell-idrac9-poweredge-r750", Vendor::Dell, None),
            ("dmtf-public-rackmount1", Vendor::Generic, None),
            ("hpe-ilo5-proliant-dl385-gen10plus", Vendor::Hpe, Some(5)),
            ("hpe-ilo6-proliant-dl380a-gen11", Vendor::Hpe, Some(6)),
            ("hpe-ilo7-proliant-dl380a-gen12", Vendor::Hpe, Some(7)),
            ("lenovo-xcc-thinksystem-sr670v2", Vendor::Lenovo, None),
            ("nvidia-dgx-h100-ami", Vendor::Ami, None),
            ("nvidia-gb200-nvl-openbmc", Vendor::OpenBmc, None),
            ("nvidia-gh200-openbmc", Vendor::OpenBmc, None),
            ("supermicro-x13-sys-821ge-tnhr", Vendor::Supermicro, None),
        ];
        for (dir, vendor, generation) in cases {
            let id = identity_of(dir);
            assert_eq!(id.vendor, vendor, "{dir}");
            assert_eq!(id.generation, generation, "{dir}");
            assert!(!id.firmware.is_empty(), "{dir}");
        }
    }

    #[test]
    fn quirks_follow_the_vendor() {
        let lenovo = identity_of("lenovo-xcc-thinksystem-sr670v2").quirks();
        assert!(lenovo.media_by_patch && lenovo.force_restart_hangs);
        let dell = identity_of("dell-idrac9-poweredge-r750").quirks();
        assert!(dell.omit_insert_params.contains(&"Inserted"));
        assert!(
            identity_of("supermicro-x13-sys-821ge-tnhr")
                .quirks()
                .needs_if_match
        );
        assert!(
            identity_of("nvidia-gb200-nvl-openbmc")
                .quirks()
                .extra_systems
        );
        assert_eq!(
            identity_of("dmtf-public-rackmount1").quirks(),
            Identity {
                vendor: Vendor::Generic,
                generation: None,
                model: String::new(),
                firmware: String::new(),
            }
            .quirks()
        );
    }
}
