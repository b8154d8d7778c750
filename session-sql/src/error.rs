//! sqlx errors mapped into the contract's error.

use session_core::Error;
use sqlx::error::ErrorKind;

/// Transient failures (connection, pool, lock contention) become retryable
/// `Unavailable`; anything else is `Backend`. The sqlx error stays the source.
pub(crate) fn map(error: sqlx::Error) -> Error {
    let transient = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => is_transient_code(db.code().as_deref()),
        _ => false,
    };
    if transient {
        Error::unavailable(error)
    } else {
        Error::backend(error)
    }
}

/// Database error codes that mean "try again": serialization failures and deadlocks
/// (PostgreSQL 40001/40P01, MySQL 1213/1205), server shutting down (57P01..57P03), too many
/// connections (53300, 1040), SQLite busy/locked (5, 6 and their extended codes).
fn is_transient_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "40001"
                | "40P01"
                | "57P01"
                | "57P02"
                | "57P03"
                | "53300"
                | "1213"
                | "1205"
                | "1040"
                | "5"
                | "6"
                | "261"
                | "262"
                | "517"
        )
    )
}

/// Whether `error` is a unique-key violation (an id collision on insert).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation)
}

/// Whether `error` is a deadlock or serialization failure: the database rolled the statement
/// (or transaction) back, so running it again is safe.
pub(crate) fn is_deadlock(error: &session_core::Error) -> bool {
    let session_core::Error::Unavailable { source, .. } = error else {
        return false;
    };
    matches!(
        source.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("40001" | "40P01"))
    )
}

/// Pause before retry `attempt` (1, 2, ...) of a deadlock victim: short, growing, jittered so
/// that the two victims of one deadlock do not collide again.
pub(crate) fn deadlock_backoff(attempt: u32) -> std::time::Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos() % 1_000));
    std::time::Duration::from_micros((500 << attempt.min(6)) + jitter)
}

/// Runs `$operation` (an expression producing a future of `Result`) again while it fails as a
/// deadlock victim, at most `DEADLOCK_RETRIES` more times.
macro_rules! retry_deadlocks {
    ($operation:expr) => {{
        let mut attempt = 0u32;
        loop {
            match $operation.await {
                Err(error)
                    if attempt < $crate::error::DEADLOCK_RETRIES
                        && $crate::error::is_deadlock(&error) =>
                {
                    attempt += 1;
                    tokio::time::sleep($crate::error::deadlock_backoff(attempt)).await;
                }
                outcome => break outcome,
            }
        }
    }};
}
pub(crate) use retry_deadlocks;

/// How often a deadlock victim is retried before the error reaches the caller.
pub(crate) const DEADLOCK_RETRIES: u32 = 8;
