//! The provisioning pipeline (issue 9, being built): per-node steps run
//! under site-wide limits.
//!
//! - [`gates`]: how many nodes run at once (site, rack) and how fast a
//!   rack powers on.

pub mod gates;
