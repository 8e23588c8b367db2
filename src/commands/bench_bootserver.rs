//! `kiln bench bootserver`.
use super::Ctx;
use crate::exit::ExitStatus;
/// Runs the bench.
pub fn run(_ctx: &Ctx, _size: u64, _clients: u32, _runs: u32) -> anyhow::Result<ExitStatus> { Ok(ExitStatus::Success) }
