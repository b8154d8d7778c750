//! The connections of every request's statements on PostgreSQL and MySQL: a pool of the
//! store's own beside sqlx's.
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
//! sqlx's pool, which then mostly sits idle. SQLite keeps to sqlx's pool for everything: its
//! ping is a message to the connection's thread, not a round trip, and a private in-memory
//! database would differ between two pools.

use std::ops::{Deref, DerefMut};

/// Evaluates `$body` with `$executor` bound to a lane connection (handed back by what the
/// body returns, a `Result`), or to sqlx's pool where the store has no lane (SQLite).
macro_rules! on_lane {
    ($inner:expr, $executor:ident => $body:expr) => {
        match &$inner.lane {
            Some(lane) => {
                let mut connection = lane.get().await?;
                let $executor = &mut *connection;
                let result = $body;
                connection.settle(result)
            }
            None => {
                let $executor = &$inner.pool;
                $body
            }
        }
    };
}
pub(crate) use on_lane;
use std::time::Duration;

use deadpool::managed::{Metrics, Object, Pool, PoolError, RecycleError, RecycleResult};
use session_core::{Error, Result};
use sqlx::any::AnyConnectOptions;
use sqlx::AnyConnection;
use sqlx::Connection;

use crate::error::map;

/// Opens the lane's connections.
pub(crate) struct Connector {
    options: AnyConnectOptions,
    /// A connection idle this long is pinged before it is handed out.
    ping_idle_after: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

/// A connection of the lane, and whether a statement on it has not settled (see
/// [`LaneConnection::settle`]).
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
        Ok(Pooled {
            connection: AnyConnection::connect_with(&self.options).await?,
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

impl Lane {
    pub(crate) fn new(
        url: &str,
        size: usize,
        timeout: Duration,
        ping_idle_after: Duration,
    ) -> Result<Self> {
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|error| Error::Config(format!("database URL: {error}")))?;
        let pool = Pool::builder(Connector {
            options,
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

    /// A connection, to be handed back with [`LaneConnection::settle`].
    pub(crate) async fn get(&self) -> Result<LaneConnection> {
        let mut object = self.pool.get().await.map_err(|error| match error {
            PoolError::Backend(error) => map(error),
            other => Error::unavailable(format!("database connection pool: {other}")),
        })?;
        object.unsettled = true;
        Ok(LaneConnection(object))
    }
}

/// A connection of the store's statement lane (see [`SqlStore::lane_connection`](crate::SqlStore::lane_connection)): it
/// dereferences to sqlx's connection, an executor. Dropped without [`LaneConnection::settle`] (its statement was
/// cancelled, or failed on the connection) it is closed at its next checkout, not reused.
pub struct LaneConnection(Object<Connector>);

impl std::fmt::Debug for LaneConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneConnection").finish_non_exhaustive()
    }
}

impl LaneConnection {
    /// Hands the connection back fit for the next statement if `result` says so: success, or
    /// an error of the statement itself; not after a transient (connection) error.
    pub fn settle<T>(mut self, result: Result<T>) -> Result<T> {
        self.0.unsettled = result.as_ref().is_err_and(Error::is_retryable);
        result
    }
}

impl Deref for LaneConnection {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.0.connection
    }
}

impl DerefMut for LaneConnection {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.0.connection
    }
}
