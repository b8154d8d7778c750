//! memcached client errors mapped into the contract's error.
//!
//! | memcached says | error |
//! |---|---|
//! | cannot connect, I/O error, connection closed mid-operation, no answer within the timeout | `Unavailable` / `Timeout` |
//! | `SERVER_ERROR out of memory`, `SERVER_ERROR busy` and other temporary server errors | `Unavailable` |
//! | anything else (a protocol error, `CLIENT_ERROR`) | `Backend` |
//!
//! `NS`, `EX` and `NF` (not stored, CAS mismatch, not found) are outcomes the store handles
//! itself, never errors of the contract.

use async_memcached::{Error as ClientError, ErrorKind, Status};
use session_core::Error;

/// Maps a client error (see the table above).
pub(crate) fn map(error: ClientError) -> Error {
    let transient = match &error {
        ClientError::Connect(_) | ClientError::Io(_) | ClientError::ConnectionClosed => true,
        ClientError::Protocol(Status::Error(ErrorKind::Server(message))) => {
            let message = message.to_ascii_lowercase();
            ["out of memory", "busy", "temporar", "too many"]
                .iter()
                .any(|words| message.contains(words))
        }
        _ => false,
    };
    if transient {
        Error::unavailable(error)
    } else {
        Error::backend(error)
    }
}

/// The status of a refused operation, if that is what `error` is.
pub(crate) fn status(error: &ClientError) -> Option<&Status> {
    match error {
        ClientError::Protocol(status) => Some(status),
        _ => None,
    }
}
