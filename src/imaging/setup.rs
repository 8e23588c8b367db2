//! The imaging stage's run-wide parts, built once by the command and
//! shared by every node's imaging.

use std::collections::HashMap;
use std::sync::Arc;

use crate::bmc::ops::Waits;
use crate::imaging::deploy::Deadlines;
use crate::imaging::server::BootServer;

/// The imaging stage's run-wide parts.
pub struct ImagingSetup {
    /// The boot server every node's BMC fetches its installer from.
    pub server: Arc<BootServer>,
    /// What each image profile boots and writes, by profile name.
    pub installers: HashMap<String, crate::imaging::Media>,
    /// Step deadlines.
    pub deadlines: Deadlines,
    /// BMC read-back waits.
    pub waits: Waits,
    /// Reimage nodes that already run their profile's OS.
    pub reimage: bool,
}
