//! The outcome label of a call.

use session_core::{Error, Result};

/// The `outcome` label of a call's result: `ok` or the error's kind in snake case.
pub fn outcome_of<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => match error {
            Error::NotFound => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::TooLarge { .. } => "too_large",
            Error::InvalidInput(_) => "invalid_input",
            Error::Config(_) => "config",
            Error::Unsupported(_) => "unsupported",
            Error::Encode { .. } => "encode",
            Error::Decode { .. } => "decode",
            Error::Unavailable { .. } => "unavailable",
            Error::Timeout { .. } => "timeout",
            _ => "backend",
        },
    }
}
