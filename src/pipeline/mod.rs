//! The provisioning pipeline (issue 9, being built): per-node steps run
//! under site-wide limits.
//!
//! - [`gates`]: how many nodes run at once (site, rack) and how fast a
//!   rack powers on.
//! - [`step`]: named steps that the journal records, so a resumed run
//!   skips what finished.
//! - [`journal`]: the SQLite journal runs resume from.
//! - [`record`]: what a run leaves behind, for the journal and reports.

pub mod engine;
pub mod gates;
pub mod guard;
pub mod journal;
pub mod journal_writer;
pub mod node;
pub mod notice;
pub mod prepare;
pub mod progress;
pub mod record;
pub mod setup;
pub mod stages;
pub mod step;
pub mod time;
