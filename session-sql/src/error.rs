//! sqlx errors mapped into the contract's error.

use session_core::Error;
use sqlx::error::ErrorKind;

/// Transient failures become retryable `Unavailable`; anything else is `Backend`. The sqlx
/// error stays the source.
///
/// | server | transient (→ `Unavailable`) |
/// |---|---|
/// | any | I/O, TLS and protocol errors (closed or reset connections), pool timeout or closed |
/// | PostgreSQL | class `08` (connection exceptions), `57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect now (starting up), `53300` too many connections, `40001` serialization failure and `40P01` deadlock (after the store's own retries) |
/// | MySQL/MariaDB | `1040` too many connections, `1205` lock wait timeout, `1213` deadlock (after the store's own retries), `1053` server shutdown, `2006` server gone away, `2013` lost connection, `1927` connection killed; SQLSTATE class `08` |
/// | SQLite | `5` busy, `6` locked and their extended codes `261`, `262`, `517` |
pub(crate) fn map(error: sqlx::Error) -> Error {
    if is_transient(&error) {
        Error::unavailable(error)
    } else {
        Error::backend(error)
    }
}

/// Whether [`map`] makes `error` retryable: a failure of the connection or the server, not of
/// the statement.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            is_transient_code(db.code().as_deref()) || is_transient_mysql_number(&**db)
        }
        _ => false,
    }
}

/// SQLSTATEs (PostgreSQL; MySQL's SQLSTATE too) and SQLite result codes that mean "try again".
fn is_transient_code(code: Option<&str>) -> bool {
    let Some(code) = code else {
        return false;
    };
    code.starts_with("08")
        || matches!(
            code,
            "40001"
                | "40P01"
                | "57P01"
                | "57P02"
                | "57P03"
                | "53300"
                | "5"
                | "6"
                | "261"
                | "262"
                | "517"
        )
}

/// MySQL/MariaDB error numbers that mean "try again" (the SQLSTATE of most is the generic
/// `HY000`, so the number decides).
fn is_transient_mysql_number(error: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "mysql")]
    if let Some(mysql) = error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(
            mysql.number(),
            1040 | 1053 | 1205 | 1213 | 1927 | 2006 | 2013
        );
    }
    let _ = error;
    false
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
