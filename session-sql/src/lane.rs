//! The connections of every request's statements: a pool of the store's own beside sqlx's.
//!
//! sqlx's pool pings each connection on its way back (a second round trip after every
//! statement, and work for the server), to flush what a cancelled statement may have left
//! behind. Both drivers flush that state themselves before their next statement, so the ping
//! buys nothing here but a liveness check, which this pool does where it matters: a
//! connection idle for a second or more is pinged before it is handed out (the server may
//! have restarted meanwhile); one whose statement failed on the connection (I/O, protocol, a
//! transient server error) or was cancelled midway (the operation timed out) is closed at its
//! next checkout, not reused. Measured on PostgreSQL with 32 tasks over 20,000 small sessions:
//! cycles 1.48× and reads 1.80× tower-sessions' store, where with sqlx's pool they were about
//! level with it (one run; see the README).
//!
//! Find, the save's compare-and-set and its merge read run here: the statements of every
//! request. Transactions (the merge under a row lock, rotation, purge) and migrations keep to
//! sqlx's pool, which then mostly sits idle.
//!
//! On SQLite the ping is no round trip but a message to the connection's own thread and its
//! answer: two thread wake-ups, as many as the statement's own, and on 2 cores the largest
//! cost of a read. Measured with 32 tasks over 100,000 small sessions: reads went from 58k/s
//! on sqlx's pool to 90k/s here (33 to 21 µs of CPU each). The lane's SQLite connections are
//! taken from sqlx's pool and detached from it, rather than opened from the URL: they get the
//! pool's connection setup (busy timeout, pragmas), and an in-memory database is the pool's.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use deadpool::managed::{Metrics, Object, Pool, PoolError, RecycleError, RecycleResult};
use session_core::{Error, Result};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, AnyPool, Connection};

use crate::error::map;

/// Where the lane's connections come from.
pub(crate) enum Source {
    /// Opened from the URL (PostgreSQL, MySQL).
    Url(AnyConnectOptions),
    /// Taken from sqlx's pool and detached from it (SQLite, see the module).
    Pool(AnyPool),
}

/// Opens the lane's connections.
pub(crate) struct Connector {
    source: Source,
    /// A connection idle this long is pinged before it is handed out.
    ping_idle_after: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

/// A connection of the lane, and whether a statement on it has not settled (see
/// [`StatementConnection::settle`]).
pub(crate) struct Pooled {
    connection: AnyConnection,
    unsettled: bool,
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("unsettled", &self.unsettled)
            .finish_non_exhaustive()
    }
}

impl deadpool::managed::Manager for Connector {
    type Type = Pooled;
    type Error = sqlx::Error;

    async fn create(&self) -> std::result::Result<Pooled, sqlx::Error> {
        let connection = match &self.source {
            Source::Url(options) => AnyConnection::connect_with(options).await?,
            Source::Pool(pool) => pool.acquire().await?.detach(),
        };
        Ok(Pooled {
            connection,
            unsettled: false,
        })
    }

    async fn recycle(&self, pooled: &mut Pooled, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if pooled.unsettled {
            return Err(RecycleError::message(
                "a statement on the connection was cancelled or failed on the connection",
            ));
        }
        if metrics.last_used() >= self.ping_idle_after {
            pooled.connection.ping().await?;
        }
        Ok(())
    }
}

/// The lane: up to the store's `max_connections` connections.
#[derive(Debug)]
pub(crate) struct Lane {
    pool: Pool<Connector>,
}

impl Source {
    /// Connections opened from `url`.
    pub(crate) fn url(url: &str) -> Result<Self> {
        url.parse()
            .map(Source::Url)
            .map_err(|error| Error::Config(format!("database URL: {error}")))
    }
}

impl Lane {
    /// A lane of up to `size` connections from `source`.
    pub(crate) fn new(
        source: Source,
        size: usize,
        timeout: Duration,
        ping_idle_after: Duration,
    ) -> Result<Self> {
        let pool = Pool::builder(Connector {
            source,
            ping_idle_after,
        })
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|error| Error::Config(format!("connection pool: {error}")))?;
        Ok(Lane { pool })
    }

    /// A connection, to be handed back with [`StatementConnection::settle`].
    pub(crate) async fn get(&self) -> Result<StatementConnection> {
        let mut object = self.pool.get().await.map_err(|error| match error {
            PoolError::Backend(error) => map(error),
            other => Error::unavailable(format!("database connection pool: {other}")),
        })?;
        object.unsettled = true;
        Ok(StatementConnection(object))
    }
}

/// A connection for a statement of find or save (see
/// [`SqlStore::statement_connection`](crate::SqlStore::statement_connection)): it dereferences
/// to sqlx's connection, an executor. A connection of the lane dropped without
/// [`StatementConnection::settle`] (its statement was cancelled, or failed on the connection)
/// is closed at its next checkout, not reused.
pub struct StatementConnection(Object<Connector>);

impl std::fmt::Debug for StatementConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatementConnection")
            .finish_non_exhaustive()
    }
}

impl StatementConnection {
    /// Hands the connection back fit for the next statement if `result` says so: success, or
    /// an error of the statement itself; not after a transient (connection) error.
    pub fn settle<T>(mut self, result: Result<T>) -> Result<T> {
        self.0.unsettled = result.as_ref().is_err_and(Error::is_retryable);
        result
    }
}

impl Deref for StatementConnection {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.0.connection
    }
}

impl DerefMut for StatementConnection {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.0.connection
    }
}
