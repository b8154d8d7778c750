//! Driver errors mapped into the contract's error.
//!
//! | the driver says | error |
//! |---|---|
//! | I/O error, no server selectable, pool cleared, DNS failure, an error labelled retryable or transient, a server code for shutdown, step-down, overload or a network timeout | `Unavailable` |
//! | anything else (a refused command, a malformed reply, bad TLS settings, authentication) | `Backend` |
//!
//! A duplicate key (code 11000) is an outcome the store handles (a taken id), never an error of
//! the contract.

use mongodb::error::{Error as DriverError, ErrorKind, WriteFailure};
use session_core::Error;

/// Server codes of trouble that passes: host unreachable or not found, network timeout,
/// shutdown in progress, stepped down, time limit exceeded, socket exception, not writable
/// primary, interrupted at shutdown or by a state change, not primary, write conflict.
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// Labels the driver or server put on errors worth retrying.
const TRANSIENT_LABELS: &[&str] = &[
    "RetryableWriteError",
    "TransientTransactionError",
    "RetryableError",
    "SystemOverloadedError",
];

/// Maps a driver error (see the table above).
pub(crate) fn map(error: DriverError) -> Error {
    if is_transient(&error) {
        Error::unavailable(error)
    } else {
        Error::backend(error)
    }
}

fn is_transient(error: &DriverError) -> bool {
    matches!(
        *error.kind,
        ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::DnsResolve { .. }
    ) || TRANSIENT_LABELS
        .iter()
        .any(|label| error.contains_label(label))
        || code(error).is_some_and(|code| TRANSIENT_CODES.contains(&code))
}

/// The server's error code, for a refused command or write.
pub(crate) fn code(error: &DriverError) -> Option<i32> {
    match &*error.kind {
        ErrorKind::Command(command) => Some(command.code),
        ErrorKind::Write(WriteFailure::WriteError(write)) => Some(write.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(concern)) => Some(concern.code),
        _ => None,
    }
}

/// Whether an insert failed on a taken `_id`.
pub(crate) fn is_duplicate_key(error: &DriverError) -> bool {
    code(error) == Some(11000)
}
