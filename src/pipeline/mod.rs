//! The provisioning pipeline (issue 9, being built): per-node steps run
//! under site-wide limits.
//!
//! - [`gates`]: how many nodes run at once (site, rack) and how fast a
//!   rack powers on.
//! - [`record`]: what a run leaves behind, for the journal and reports.

pub mod gates;
pub mod record;
