//! Redis errors mapped into the contract's error.
//!
//! | Redis says | meaning | `session_core::Error` |
//! |---|---|---|
//! | I/O error, refused, dropped or reset connection, client timeout | server down or unreachable | `Unavailable` / `Timeout` |
//! | `LOADING` | restarted, still loading its data file | `Unavailable` |
//! | `BUSY` | a script or function runs too long (`DEBUG SLEEP`, a slow script) | `Unavailable` |
//! | `TRYAGAIN` | a multi-key operation during resharding | `Unavailable` |
//! | `CLUSTERDOWN` | the cluster has uncovered slots | `Unavailable` |
//! | `MASTERDOWN` | a replica lost its master | `Unavailable` |
//! | `READONLY` | the node became a replica after a failover | `Unavailable` |
//! | `MOVED`/`ASK` not followed, other cluster errors | topology moving | `Unavailable` |
//! | anything else (`NOPERM`, `NOSCRIPT` after reload, `ERR …`) | not transient | `Backend` |
//!
//! A value of another type at a session key (`WRONGTYPE`) is not an error: the stores read it
//! as an undecodable session (absent) and delete it like any other.

use redis::{ErrorKind, RedisError, ServerErrorKind};
use session_core::Error;

/// Server error codes that mean "the same call may work in a moment".
const TRANSIENT_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
];

/// Connection trouble, timeouts, cluster reconfiguration and the transient server states in
/// the table above are retryable `Unavailable`; anything else is `Backend`. The Redis error
/// stays the source.
pub(crate) fn map(error: RedisError) -> Error {
    if is_transient(&error) {
        Error::unavailable(error)
    } else {
        Error::backend(error)
    }
}

fn is_transient(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
        || in_moving_cluster(error)
        || error
            .code()
            .is_some_and(|code| TRANSIENT_CODES.contains(&code))
}

/// Whether a transaction was refused because its slot is moving or has moved (`MOVED`, `ASK`,
/// `TRYAGAIN`, `CLUSTERDOWN` for one of its commands): the cluster client follows redirects
/// for single commands, not for transactions.
pub(crate) fn in_moving_cluster(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort)
        && error.clone().into_server_errors().is_some_and(|errors| {
            errors.iter().any(|(_, error)| {
                matches!(
                    error.kind(),
                    Some(
                        ServerErrorKind::Moved
                            | ServerErrorKind::Ask
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::ClusterDown
                    )
                )
            })
        })
}

/// Whether the server refused an operation because a key holds another type.
pub(crate) fn is_wrong_type(error: &RedisError) -> bool {
    error.code() == Some("WRONGTYPE")
}
