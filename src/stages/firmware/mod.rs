//! The firmware stage (being built): brings a node's firmware and BIOS to
//! its hardware profile's baseline over Redfish before it is imaged. What
//! stands so far: where a node stands against the baseline
//! ([`compliance`]) and the steps' metrics ([`metrics`]); the BMC side
//! lives in [`crate::bmc::update`].

pub mod compliance;
pub mod metrics;
