//! Exit statuses, the contract scripts and CI rely on.

use std::process::ExitCode;

/// How a kiln command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything worked; every node passed.
    Success,
    /// kiln worked, but some node failed its checks.
    NodeFailed,
    /// Bad input or usage: fix the command or the inventory.
    BadInput,
    /// kiln itself failed (a bug, or the machine it runs on).
    Internal,
    /// `kiln verify`: the record is intact, but no trusted key vouched for
    /// who signed it (no `--key` and no site key at hand).
    Unverified,
}

impl ExitStatus {
    /// The numeric code: 0, 1, 2, 3, or 4 (`kiln verify` only).
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::NodeFailed => 1,
            ExitStatus::BadInput => 2,
            ExitStatus::Internal => 3,
            ExitStatus::Unverified => 4,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(status.code())
    }
}

/// An error caused by the user's input (exit 2), as opposed to kiln failing
/// (exit 3). Its message is shown as is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The exit status for an error that ended a command: bad input anywhere
/// in the chain means exit 2, anything else exit 3.
pub fn status_for(err: &anyhow::Error) -> ExitStatus {
    use crate::inventory::{LoadError, generate::GenerateError, select::SelectError};
    for cause in err.chain() {
        if cause.is::<BadInput>() || cause.is::<SelectError>() || cause.is::<GenerateError>() {
            return ExitStatus::BadInput;
        }
        if let Some(e) = cause.downcast_ref::<LoadError>() {
            return match e {
                LoadError::Builtin(_) => ExitStatus::Internal,
                LoadError::Io { .. } | LoadError::TooLarge { .. } => ExitStatus::BadInput,
            };
        }
    }
    ExitStatus::Internal
}
