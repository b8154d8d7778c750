//! Redis errors mapped into the contract's error.

use redis::RedisError;
use session_core::Error;

/// Connection trouble, timeouts and cluster reconfiguration are retryable `Unavailable`;
/// anything else is `Backend`. The Redis error stays the source.
pub(crate) fn map(error: RedisError) -> Error {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
    {
        Error::unavailable(error)
    } else {
        Error::backend(error)
    }
}
