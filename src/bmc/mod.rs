//! kiln's side of Redfish: talking to BMCs (issue 4, being built).
//!
//! - [`tls`]: trusting a BMC's certificate (SHA-256 pins).
//! - [`transport`]: HTTPS to one BMC: pooling, timeouts, retries that
//!   honour `Retry-After`, a per-BMC request cap, a circuit breaker.
//! - [`client`]: Redfish on top: sessions (or basic auth), JSON, errors,
//!   task monitors.
//! - [`vendor`]: which BMC family, and its quirks, decided once.

pub mod client;
pub mod tls;
pub mod transport;
pub mod vendor;
