//! Hardware and image profiles: the built-in ones compiled into kiln, plus
//! any `*.yaml` in a `profiles/` folder next to the inventory (a site's own
//! models, or a built-in with different floors under the same name).

pub mod firmware;
pub mod hardware;
pub mod image;

use std::collections::BTreeMap;
use std::path::Path;

pub use hardware::HardwareProfile;
pub use image::ImageProfile;

use crate::diag::{Diagnostic, Source};
use crate::yaml::decode::{Cx, FromNode};

/// A built-in profile's file name and text.
struct Builtin {
    file: &'static str,
    text: &'static str,
}

/// A [`Builtin`] for `file`, a path from the repository root, embedded at
/// build time so the name shown and the text read cannot drift apart.
macro_rules! builtin {
    ($file:literal) => {
        Builtin {
            file: $file,
            text: include_str!(concat!("../../", $file)),
        }
    };
}

const HARDWARE: &[Builtin] = &[
    builtin!("inventories/profiles/hgx-h100-80gb-8x.yaml"),
    builtin!("inventories/profiles/hgx-h200-141gb-8x.yaml"),
    builtin!("inventories/profiles/hgx-b200-180gb-8x.yaml"),
];

const IMAGES: &[Builtin] = &[
    builtin!("images/ubuntu-24.04.yaml"),
    builtin!("images/ubuntu-22.04.yaml"),
    builtin!("images/rocky-9.yaml"),
    builtin!("images/debian-12.yaml"),
];

/// A profile together with the file it came from (shown by `profile show`).
#[derive(Clone, Debug)]
pub struct Entry<T> {
    /// The profile.
    pub profile: T,
    /// Where it was read from.
    pub file: String,
    /// The file's text, comments and all.
    pub text: String,
}

/// All profiles known to one run.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Hardware profiles by name.
    pub hardware: BTreeMap<String, Entry<HardwareProfile>>,
    /// Image profiles by name.
    pub images: BTreeMap<String, Entry<ImageProfile>>,
}

/// Parses one profile file; its `name` must match the file name.
fn parse_profile<T: FromNode + Named>(
    file: &str,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<(String, Entry<T>)> {
    let source = Source::new(file, text);
    let mut cx = Cx::new(source.clone());
    let profile = match crate::yaml::parse(text) {
        Ok(node) => T::from_node(&mut cx, &node),
        Err(e) => {
            cx.push(crate::diag::Severity::Error, e.pos, e.message, None);
            None
        }
    };
    diags.append(&mut cx.diags);
    let profile = profile?;
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if profile.name() != stem {
        let mut cx = Cx::new(source);
        cx.push(
            crate::diag::Severity::Error,
            None,
            format!(
                "profile name `{}` does not match its file name `{stem}.yaml`",
                profile.name()
            ),
            None,
        );
        diags.append(&mut cx.diags);
        return None;
    }
    Some((
        profile.name().to_owned(),
        Entry {
            profile,
            file: file.to_owned(),
            text: text.to_owned(),
        },
    ))
}

/// Profiles have names.
pub trait Named {
    /// The profile's name.
    fn name(&self) -> &str;
}

impl Named for HardwareProfile {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for ImageProfile {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Catalog {
    /// The profiles compiled into kiln.
    ///
    /// Their files are tested, so an error here is a bug in kiln.
    pub fn builtin() -> Result<Catalog, Vec<Diagnostic>> {
        let mut diags = Vec::new();
        let mut catalog = Catalog::default();
        for b in HARDWARE {
            if let Some((name, entry)) = parse_profile(b.file, b.text, &mut diags) {
                catalog.hardware.insert(name, entry);
            }
        }
        for b in IMAGES {
            if let Some((name, entry)) = parse_profile(b.file, b.text, &mut diags) {
                catalog.images.insert(name, entry);
            }
        }
        if diags.is_empty() {
            Ok(catalog)
        } else {
            Err(diags)
        }
    }

    /// Adds every `*.yaml` profile in `dir` (if it exists), replacing
    /// built-ins of the same name: hardware profiles in `dir` itself,
    /// image profiles in `dir/images/`. Problems go to `diags`.
    pub fn add_hardware_dir(&mut self, dir: &Path, diags: &mut Vec<Diagnostic>) {
        for (name, entry) in read_dir_profiles(dir, diags) {
            self.hardware.insert(name, entry);
        }
        for (name, entry) in read_dir_profiles(&dir.join("images"), diags) {
            self.images.insert(name, entry);
        }
    }
}

/// Every `*.yaml` profile of one kind in `dir`, in file-name order.
fn read_dir_profiles<T: FromNode + Named>(
    dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, Entry<T>)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let name = path.display().to_string();
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() as u64 <= crate::yaml::MAX_FILE_BYTES => {
                let text = String::from_utf8_lossy(&bytes);
                out.extend(parse_profile(&name, &text, diags));
            }
            Ok(_) => diags.push(Diagnostic {
                severity: crate::diag::Severity::Error,
                source: Source::new(name, ""),
                pos: None,
                message: "profile file is too large".into(),
                help: None,
                unsafe_setting: false,
            }),
            Err(e) => diags.push(Diagnostic {
                severity: crate::diag::Severity::Error,
                source: Source::new(name, ""),
                pos: None,
                message: format!("cannot read profile: {e}"),
                help: None,
                unsafe_setting: false,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse() {
        let catalog = match Catalog::builtin() {
            Ok(c) => c,
            Err(diags) => panic!(
                "{}",
                diags.iter().map(|d| d.render(false)).collect::<String>()
            ),
        };
        assert_eq!(catalog.hardware.len(), 3);
        assert_eq!(catalog.images.len(), 4);
        for entry in catalog.hardware.values() {
            let p = &entry.profile;
            assert_eq!(p.gpu.count, 8, "{}", p.name);
            assert!(
                p.nccl.in_node_busbw_gbps > p.nccl.cross_node_busbw_gbps,
                "{}",
                p.name
            );
            assert!(!p.xid.fail.is_empty(), "{}", p.name);
        }
    }

    const H100: &str = include_str!("../../inventories/profiles/hgx-h100-80gb-8x.yaml");
    const NVIDIA_KEY: &str = "EB69 3B30 35CD 5710 E231  E123 A4B4 6996 3BF8 63CC";

    fn parse_h100(text: &str) -> (Option<HardwareProfile>, String) {
        let mut diags = Vec::new();
        let entry = parse_profile::<HardwareProfile>("p/hgx-h100-80gb-8x.yaml", text, &mut diags);
        let rendered = diags.iter().map(|d| d.render(false)).collect::<String>();
        (entry.map(|(_, e)| e.profile), rendered)
    }

    #[test]
    fn builtin_profiles_pin_nvidias_repository_key_and_no_tool_digests() {
        let catalog = Catalog::builtin().unwrap_or_else(|_| panic!("built-ins parse"));
        for entry in catalog.hardware.values() {
            let d = &entry.profile.drivers;
            assert_eq!(
                d.repo_key.as_deref(),
                Some("EB693B3035CD5710E231E123A4B469963BF863CC"),
                "{}",
                entry.profile.name
            );
            assert_eq!(d.rpm_repo_key, None);
            assert_eq!(d.tools, hardware::ToolSources::default());
        }
    }

    #[test]
    fn pins_are_normalised() {
        let text = H100.replace(
            &format!("repo_key: \"{NVIDIA_KEY}\""),
            "repo_key: \"eb69 3b30 35cd 5710 e231 e123 a4b4 6996 3bf8 63cc\"\n  \
             rpm_repo_key: 0123456789ABCDEF0123456789ABCDEF01234567\n  \
             tools:\n    gpu_burn:\n      url: https://mirror.example.net/gpu-burn-abc.tar.gz\n      \
             sha256: \"ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789\"\n    \
             nccl_tests: {sha256: null}",
        );
        let (profile, diags) = parse_h100(&text);
        let d = profile.unwrap_or_else(|| panic!("{diags}")).drivers;
        assert_eq!(
            d.repo_key.as_deref(),
            Some("EB693B3035CD5710E231E123A4B469963BF863CC")
        );
        assert_eq!(
            d.rpm_repo_key.as_deref(),
            Some("0123456789ABCDEF0123456789ABCDEF01234567")
        );
        assert_eq!(
            d.tools.gpu_burn.sha256.as_deref(),
            Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
        );
        assert_eq!(
            d.tools.gpu_burn.url.as_deref(),
            Some("https://mirror.example.net/gpu-burn-abc.tar.gz")
        );
        assert_eq!(d.tools.nccl_tests, hardware::ToolSource::default());
        assert_eq!(d.tools.nvbandwidth, hardware::ToolSource::default());
    }

    #[test]
    fn bad_pins_are_refused_where_they_are() {
        let line = H100
            .lines()
            .position(|l| l.contains("repo_key:"))
            .map(|i| i + 1)
            .unwrap_or_default();
        let text = H100.replace(NVIDIA_KEY, "A4B469963BF863CC");
        let (profile, diags) = parse_h100(&text);
        assert!(profile.is_none());
        assert!(
            diags.contains(&format!("p/hgx-h100-80gb-8x.yaml:{line}:"))
                && diags
                    .contains("drivers.repo_key `A4B469963BF863CC` is not an OpenPGP fingerprint"),
            "{diags}"
        );
        let text = H100.replace(
            &format!("repo_key: \"{NVIDIA_KEY}\""),
            &format!(
                "repo_key: \"{NVIDIA_KEY}\"\n  tools:\n    nccl_tests:\n      sha256: abc\n    \
                 gpu-burn:\n      sha256: null\n    nvbandwidth:\n      url: ftp://x/y.tar.gz"
            ),
        );
        let (profile, diags) = parse_h100(&text);
        assert!(profile.is_none());
        assert!(
            diags.contains(&format!("p/hgx-h100-80gb-8x.yaml:{}:", line + 4)),
            "{diags}"
        );
        assert!(
            diags.contains("sha256 `abc` is not a SHA-256 digest"),
            "{diags}"
        );
        assert!(diags.contains("unknown key `gpu-burn`"), "{diags}");
        assert!(
            diags.contains("tool source url `ftp://x/y.tar.gz` is not an http:// or https:// URL"),
            "{diags}"
        );
    }

    #[test]
    fn image_profile_words_and_sources_are_checked() {
        let text = include_str!("../../images/ubuntu-24.04.yaml")
            .replace("family: ubuntu", "family: gentoo")
            .replace("boot: virtual-media", "boot: pxe")
            .replace("url: https://releases", "url: ftp://releases")
            .replace("sha256: c3514bf", "sha256: zz514bf");
        let mut diags = Vec::new();
        let entry = parse_profile::<ImageProfile>("i/ubuntu-24.04.yaml", &text, &mut diags);
        let diags = diags.iter().map(|d| d.render(false)).collect::<String>();
        assert!(entry.is_none());
        for wanted in [
            "unknown OS family `gentoo` (ubuntu, rhel or debian)",
            "unknown boot method `pxe` (virtual-media or uefi-http)",
            "installer url `ftp://releases.ubuntu.com/",
            "installer sha256 `zz514bf",
        ] {
            assert!(diags.contains(wanted), "{wanted} missing from {diags}");
        }
    }

    #[test]
    fn firmware_and_bios_baselines_are_read_and_checked() {
        use crate::profiles::firmware::{ApplyTime, AttributeValue, BootMode, VersionRule};
        let good = format!(
            "{H100}\nfirmware:\n  - component: bmc\n    match: {{ id: \"BMC*\" }}\n    minimum: \"7.10\"\n    package: {{ path: fw/bmc.bin, sha256: {} }}\n    apply: on_reset\nbios:\n  boot_mode: uefi\n  attributes:\n    - setting: sr-iov\n      attribute: SriovGlobalEnable\n      value: Enabled\n      vendors:\n        supermicro: {{ attribute: \"SR-IOVSupport*\", value: Enable }}\n",
            "ab".repeat(32)
        );
        let (profile, diags) = parse_h100(&good);
        let p = profile.unwrap_or_else(|| panic!("{diags}"));
        assert_eq!(p.firmware.len(), 1);
        assert_eq!(p.firmware[0].version, VersionRule::Minimum("7.10".into()));
        assert_eq!(p.firmware[0].apply, ApplyTime::OnReset);
        assert_eq!(p.bios.boot_mode, Some(BootMode::Uefi));
        let sriov = &p.bios.attributes[0];
        assert_eq!(sriov.for_vendor("dell").attribute, "SriovGlobalEnable");
        assert_eq!(
            sriov.for_vendor("supermicro").value,
            AttributeValue::Text("Enable".into())
        );
        let words = crate::profiles::firmware::explain(&p.firmware, &p.bios);
        for wanted in [
            "bmc: the inventory member whose Id matches `BMC*` runs 7.10 or later",
            "else update from fw/bmc.bin (sha256 abab",
            "applied at the next reset",
            "boot mode: UEFI",
            "BIOS sr-iov: SriovGlobalEnable = Enabled",
            "on supermicro BMCs: SR-IOVSupport* = Enable",
        ] {
            assert!(words.contains(wanted), "{wanted} missing from {words}");
        }
        // A profile without baselines still reads, with none.
        let (plain, _) = parse_h100(H100);
        assert!(plain.is_some_and(|p| p.firmware.is_empty() && p.bios.attributes.is_empty()));

        let bad = format!(
            "{H100}\nfirmware:\n  - component: gpu\n    match: {{ id: a, name: b }}\n    version: \"1\"\n    minimum: \"2\"\n    apply: later\nbios:\n  boot_mode: bios\n  attributes:\n    - setting: x\n      attribute: Y\n      value: 1\n      vendors: {{ acme: {{ value: 2 }} }}\n"
        );
        let (profile, diags) = parse_h100(&bad);
        assert!(profile.is_none());
        for wanted in [
            "a firmware match takes one of `id` or `name`",
            "takes `version` (exact) or `minimum`, not both",
            "unknown apply time `later` (immediate or on_reset)",
            "unknown boot mode `bios` (uefi or legacy)",
            "unknown vendor `acme`",
        ] {
            assert!(diags.contains(wanted), "{wanted} missing from {diags}");
        }
    }
}
