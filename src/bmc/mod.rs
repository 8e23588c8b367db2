//! kiln's side of Redfish: talking to BMCs. (Being built: so far the TLS
//! trust that every BMC connection starts from.)

pub mod tls;
