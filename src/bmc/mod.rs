//! kiln's side of Redfish: talking to BMCs.
//!
//! - [`tls`]: trusting a BMC's certificate (SHA-256 pins, CA bundles, the
//!   loud `insecure`); [`trust`]: which policy applies, and the store of
//!   fingerprints `kiln bmc trust` records.
//! - [`transport`]: HTTPS to one BMC: pooling, timeouts, retries that
//!   honour `Retry-After`, a per-BMC request cap, a circuit breaker.
//! - [`client`]: Redfish on top: sessions (or basic auth), JSON, errors,
//!   task monitors.
//! - [`vendor`]: which BMC family, and its quirks, decided once.
//! - [`discover`]: the host system, manager, media slots, boot targets,
//!   reset types and GPUs of one BMC.
//! - [`ops`]: power, boot override and virtual media, verified by reading
//!   back; [`facts`]: status, firmware and sensor readings.
//! - [`connect`]: clients for inventory nodes, and bounded fan-out.
//! - [`resumption`]: the TLS session store of one BMC's connections.

pub mod client;
pub mod connect;
pub mod discover;
pub mod facts;
pub mod h1;
pub mod ops;
pub mod resumption;
pub mod tls;
pub mod transport;
pub mod trust;
pub mod update;
pub mod vendor;
