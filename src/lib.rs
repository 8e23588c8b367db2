//! kiln turns racks of new GPU servers into validated cloud capacity: it
//! reads a site inventory, drives each node's BMC over Redfish, installs the
//! NVIDIA stack over SSH, burns the GPUs in, measures the fabric, and hands
//! the nodes that pass to the cloud.
//!
//! The binary is a thin shell over this library (see `src/main.rs`); the
//! README's code tour says what lives where.

pub mod acceptance;
pub mod bmc;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod drivers;
pub mod exit;
pub mod fdlimit;
#[doc(hidden)]
pub mod fuzzing;
pub mod handoff;
pub mod imaging;
pub mod inventory;
pub mod judge;
pub mod listen;
pub mod output;
pub mod pipeline;
pub mod profiles;
pub mod report;
pub mod run;
pub mod secret;
pub mod sim;
pub mod ssh;
pub mod stages;
pub mod state;
pub mod vmlab;
pub mod yaml;
