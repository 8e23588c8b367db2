//! Embeds the vendor Redfish mockups the simulator's BMC flavours are built
//! from (`redfish-mockups/<dir>/redfish/v1/**/index.json`), so the `kiln`
//! binary stands alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The mockup folders the simulator serves, one per flavour.
const FLAVOURS: [&str; 5] = [
    "dmtf-public-rackmount1",
    "dell-idrac9-poweredge-r750",
    "hpe-ilo6-proliant-dl380a-gen11",
    "supermicro-x13-sys-821ge-tnhr",
    "lenovo-xcc-thinksystem-sr670v2",
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut out = String::from("/// (mockup folder, [(resource path, JSON text)])\n");
    out.push_str("pub static MOCKUPS: &[(&str, &[(&str, &str)])] = &[\n");
    for dir in FLAVOURS {
        let base = root.join("redfish-mockups").join(dir);
        println!("cargo:rerun-if-changed={}", base.display());
        let mut files = Vec::new();
        walk(&base.join("redfish"), &mut files);
        files.sort();
        writeln!(out, "    ({dir:?}, &[").ok();
        for file in files {
            let rel = file
                .parent()
                .and_then(|p| p.strip_prefix(&base).ok())
                .map(|p| format!("/{}", p.to_string_lossy()))
                .unwrap_or_default();
            writeln!(
                out,
                "        ({rel:?}, include_str!({:?})),",
                file.display()
            )
            .ok();
        }
        out.push_str("    ]),\n");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("mockups.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("cannot write {}: {e}", dest.display());
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.file_name().is_some_and(|n| n == "index.json") {
            files.push(path);
        }
    }
}
