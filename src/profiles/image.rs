//! Image profiles: the operating system a node is imaged with. The imaging
//! stage extends these with the installer and its templates.

use serde::Serialize;

use crate::yaml::Node;
use crate::yaml::decode::{Cx, FromNode};

/// The operating-system family, which picks templates and package tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Ubuntu (apt, cloud-init autoinstall).
    Ubuntu,
    /// Rocky Linux / RHEL (dnf, kickstart).
    Rhel,
}

/// One installable operating system.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImageProfile {
    /// The profile's name, as inventories refer to it.
    pub name: String,
    /// A one-line description.
    pub description: String,
    /// The OS family.
    pub family: OsFamily,
    /// The OS version (`24.04`, `9`).
    pub version: String,
    /// Whether the image already carries the NVIDIA driver stack.
    pub includes_driver_stack: bool,
}

impl FromNode for OsFamily {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        match String::from_node(cx, node)?.as_str() {
            "ubuntu" => Some(OsFamily::Ubuntu),
            "rhel" => Some(OsFamily::Rhel),
            other => {
                cx.error(
                    node.pos,
                    format!("unknown OS family `{other}` (ubuntu or rhel)"),
                );
                None
            }
        }
    }
}

impl FromNode for ImageProfile {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut m = cx.map(node, "image profile")?;
        let name: Option<String> = m.req(cx, "name");
        let description: Option<String> = m.req(cx, "description");
        let family: Option<OsFamily> = m.req(cx, "family");
        let version: Option<String> = m.req(cx, "version");
        let includes_driver_stack: Option<bool> = m.opt(cx, "includes_driver_stack");
        m.finish(cx);
        Some(ImageProfile {
            name: name?,
            description: description?,
            family: family?,
            version: version?,
            includes_driver_stack: includes_driver_stack.unwrap_or(false),
        })
    }
}
