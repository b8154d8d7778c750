//! The SQL store.
//!
//! # Expiry strategy
//!
//! One row per session: metadata in columns, the attributes as one encoded value, and an
//! indexed `expires_at` column that bounds the session's deadline from above: the deadline
//! rounded up to a step of a sixteenth of the idle timeout, at most a minute
//! ([`purge_bound`](crate::row::purge_bound)). Every read compares the exact deadline,
//! computed from the row's own columns (`min(last_accessed_at + idle_timeout, created_at +
//! absolute_lifetime)`), with `now`, so an expired row is invisible the moment its deadline
//! passes. A purge task deletes rows whose bound has passed, in small batches; only one
//! instance purges at a time (PostgreSQL advisory lock, MySQL `GET_LOCK`, a lease row on
//! SQLite), and on PostgreSQL the batch skips rows a save holds locked, so a purge never waits
//! on or deadlocks with request traffic. A row lingers at most one step past its deadline.
//!
//! Why a bound and not the deadline: every save moves the deadline, and a save that changes an
//! indexed column writes every index of the row (PostgreSQL cannot make it a HOT update) or
//! at least the changed secondary index (InnoDB). With the bound, consecutive saves of a
//! session mostly store the same `expires_at` and leave every index as it was (on PostgreSQL
//! also because the table keeps room on each page for a row's next version: fillfactor 80,
//! migration 2). Rows written by
//! an earlier version hold the exact deadline, which is a valid bound; an earlier version
//! reading rows written by this one (a mixed fleet during a rollout) filters on `expires_at`
//! and so sees a session up to one step past its deadline.
//!
//! Saves are one compare-and-set round trip in the common case; see the `save` module.

use std::sync::Arc;

use session_core::raw::time::{now_millis, system_time};
use session_core::raw::{
    check_principal_query, decode_attributes, encode_attributes, redact_url, report_undecodable,
    rotate_id, Creation, EventBus, Rotation, Run, Runner, SessionInternals, SessionRecord,
};
use session_core::{
    async_trait, Capabilities, Error, EventSubscription, Operation, Result, Session, SessionId,
    SessionInfo, SessionKey, SessionRepository, SessionSettings,
};
use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::{AnyPool, Connection, Executor, Row};

use crate::config::Config;
use crate::dialect::{Dialect, Statements};
use crate::error::{is_unique_violation, map, retry_deadlocks};
use crate::lane::{Lane, Source, StatementConnection};
use crate::purge::{purge, purge_periodically};
use crate::row::{bind_record, ms, record_from_row, unsigned, AnyQuery};
use crate::schema::migrate;
use crate::writer::{SaveQueue, WriteTurn, Writer};

/// A pooled connection idle this long is pinged before use (see [`SqlStore::open`]).
const PING_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Inner {
    /// Timeout and store name of every operation.
    pub(crate) runner: Runner,
    pub(crate) pool: AnyPool,
    /// The connections of find and save (see the `lane` module).
    pub(crate) lane: Lane,
    pub(crate) dialect: Dialect,
    pub(crate) sql: Statements,
    pub(crate) config: Config,
    /// Identifies this instance as holder of the SQLite purge lease.
    pub(crate) instance: String,
    /// `Expired` events for the rows this instance purges.
    pub(crate) events: EventBus,
    /// SQLite's writer connection, and the turn to write (see [`WriteTurn`]).
    writer: Arc<Writer>,
    /// SQLite's saves (see [`SaveQueue`]).
    pub(crate) save_queue: Option<SaveQueue>,
}

impl Inner {
    /// Runs the write `query` (create, touch, delete): on SQLite in the write turn and on the
    /// writer's connection, which then keeps its page cache (see [`WriteTurn`]); elsewhere on
    /// the pool.
    pub(crate) async fn execute_write(
        &self,
        query: AnyQuery<'_>,
    ) -> std::result::Result<AnyQueryResult, sqlx::Error> {
        match self.write_turn().await {
            Some(mut turn) => turn.execute(query).await,
            None => query.execute(&self.pool).await,
        }
    }

    /// Held around every write statement on SQLite; no-op elsewhere.
    pub(crate) async fn write_turn(&self) -> Option<WriteTurn<'_>> {
        match self.dialect {
            Dialect::Sqlite => Some(self.writer.turn().await),
            _ => None,
        }
    }
}

/// Sessions in PostgreSQL, MySQL/MariaDB or SQLite.
///
/// Cloning, or [`SqlStore::with_settings`], gives another handle on the same pool.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) inner: Arc<Inner>,
    pub(crate) settings: Arc<SessionSettings>,
}

impl SqlStore {
    /// Connects, creates or upgrades the schema, and starts the purge task (inside a Tokio
    /// runtime, when [`Config::cleanup_interval`] is set).
    pub async fn open(config: Config, settings: SessionSettings) -> Result<Self> {
        config.validate()?;
        let dialect = Dialect::of_url(&config.url)?;
        if !driver_compiled(dialect) {
            return Err(Error::Config(format!(
                "session-sql was built without the `{}` feature",
                dialect.feature()
            )));
        }
        sqlx::any::install_default_drivers();
        let mut url = config.url.clone();
        if dialect == Dialect::Sqlite && !url.contains("mode=") {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("mode=rwc");
        }
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            // Shorter than the operation bound, so that a pool that cannot connect reports its
            // cause before the bound turns it into a bare timeout.
            .acquire_timeout(config.timeout.mul_f64(0.9))
            // sqlx pings every connection when it returns to the pool, and by default again
            // when it is handed out: a second round trip on every statement's path. A
            // connection that sat idle for less than a second was proven alive when it came
            // back; one idle longer (through a server restart, say) is pinged first, and one
            // that fails anyway fails its statement, a retryable error, and is dropped.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers run beside the writer; the busy timeout makes
                        // writers from other processes wait instead of failing "locked".
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url);
        let runner = Runner::new(dialect.feature(), config.timeout);
        let pool = match runner
            .run(Operation::Open, async { pool.await.map_err(map) })
            .await
        {
            Ok(pool) => pool,
            Err(error) => {
                let error = why_no_connection(&runner, &url, error).await;
                tracing::warn!(url = %redact_url(&config.url), error = %error.report(), "cannot connect to the session database");
                return Err(error);
            }
        };
        Runner::new(dialect.feature(), config.timeout * 6)
            .run(Operation::Open, migrate(&pool, dialect, &config.table))
            .await?;
        let returning = match dialect {
            Dialect::MySql => {
                runner
                    .run(Operation::Open, async {
                        let version: String = sqlx::query("SELECT VERSION()")
                            .fetch_one(&pool)
                            .await
                            .and_then(|row| row.try_get(0))
                            .map_err(map)?;
                        Ok(version.contains("MariaDB"))
                    })
                    .await?
            }
            Dialect::Postgres | Dialect::Sqlite => true,
        };
        let statements = Statements::new(dialect, &config.table, returning);
        let source = match dialect {
            Dialect::Sqlite => Source::Pool(pool.clone()),
            Dialect::Postgres | Dialect::MySql => Source::url(&url)?,
        };
        let lane = Lane::new(
            source,
            usize::try_from(config.max_connections).unwrap_or(usize::MAX),
            config.timeout.mul_f64(0.9),
            PING_IDLE_AFTER,
        )?;
        let writer = Arc::new(Writer::new(pool.clone(), config.timeout * 6));
        let save_queue = (dialect == Dialect::Sqlite)
            .then(|| SaveQueue::new(Arc::clone(&writer), &statements.save_if_version));
        let inner = Arc::new(Inner {
            runner,
            lane,
            sql: statements,
            save_queue,
            events: EventBus::default(),
            pool,
            dialect,
            instance: SessionId::generate().key().to_hex()[..16].to_owned(),
            writer,
            config,
        });
        if let (Some(interval), Ok(runtime)) = (
            inner.config.cleanup_interval,
            tokio::runtime::Handle::try_current(),
        ) {
            runtime.spawn(purge_periodically(Arc::downgrade(&inner), interval));
        }
        Ok(SqlStore {
            inner,
            settings: Arc::new(settings),
        })
    }

    /// Another handle on the same pool with other session settings.
    pub fn with_settings(&self, settings: SessionSettings) -> Self {
        SqlStore {
            inner: Arc::clone(&self.inner),
            settings: Arc::new(settings),
        }
    }

    /// The connection pool (for tooling, benchmarks and tests). Transactions, the purge and
    /// migrations run on it.
    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// A connection of the kind find and save run their statements on: of the store's own
    /// pool (see [`StatementConnection`]). For benchmarks that compare a plain loop with the
    /// store on the same connections.
    pub async fn statement_connection(&self) -> Result<StatementConnection> {
        self.inner.lane.get().await
    }

    /// The database dialect.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Deletes expired rows in batches of [`Config::cleanup_batch`]; returns how many. Does
    /// nothing (returns 0) while another instance holds the purge lock.
    pub async fn purge_expired(&self) -> Result<u64> {
        purge(&self.inner).await
    }

    /// `future` under the store's timeout (see [`Runner::run`]; a plain function, so that the
    /// operation's future is not kept twice in an `async fn`'s state).
    pub(crate) fn run<F, T>(&self, operation: Operation, future: F) -> Run<F>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        self.inner.runner.run(operation, future)
    }

    /// Inserts a new row; `Ok(false)` if the key is taken.
    async fn insert_now(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        attributes: &[u8],
    ) -> Result<bool> {
        let query = sqlx::query(&self.inner.sql.insert)
            .bind(key.as_bytes().to_vec())
            .bind(ms(record.created_at_ms));
        let inserted = self
            .inner
            .execute_write(bind_record(query, record, attributes))
            .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(error) => Err(map(error)),
        }
    }

    async fn touch_now(&self, key: &SessionKey) -> Result<()> {
        let now = ms(now_millis());
        let touch = sqlx::query(&self.inner.sql.touch)
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(key.as_bytes().to_vec())
            .bind(now);
        let touched = self.inner.execute_write(touch).await.map_err(map)?;
        // MySQL counts changed rows: a touch within the same millisecond changes nothing.
        if touched.rows_affected() == 0 && self.live_version(key, unsigned(now)).await?.is_none() {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    async fn delete_now(&self, key: &SessionKey) -> Result<()> {
        let delete = sqlx::query(&self.inner.sql.delete).bind(key.as_bytes().to_vec());
        self.inner.execute_write(delete).await.map_err(map)?;
        Ok(())
    }

    /// One attempt of `change_id`, in one transaction: read (and lock) the live old row, copy
    /// it to the new key, delete the old row.
    async fn rotate(&self, old_key: SessionKey, new_key: SessionKey) -> Result<Rotation> {
        let now = ms(now_millis());
        let _turn = self.inner.write_turn().await;
        let mut tx = self.inner.pool.begin().await.map_err(map)?;
        let read = self
            .inner
            .sql
            .lock_for_change
            .as_ref()
            .unwrap_or(&self.inner.sql.find);
        let row = sqlx::query(read)
            .bind(old_key.as_bytes().to_vec())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map)?;
        // Absent, or stored data `find` could not read: nothing to move.
        let Some(row) = row else {
            return Ok(Rotation::Gone);
        };
        if record_from_row(&old_key, &row)?.is_none() {
            return Ok(Rotation::Gone);
        }
        let copied = sqlx::query(&self.inner.sql.copy_to_new_key)
            .bind(new_key.as_bytes().to_vec())
            .bind(old_key.as_bytes().to_vec())
            .bind(now)
            .execute(&mut *tx)
            .await;
        match copied {
            Ok(result) if result.rows_affected() == 1 => {}
            Ok(_) => return Ok(Rotation::Gone),
            // An id collision aborts the transaction; start over with another id.
            Err(error) if is_unique_violation(&error) => return Ok(Rotation::IdTaken),
            Err(error) => return Err(map(error)),
        }
        sqlx::query(&self.inner.sql.delete)
            .bind(old_key.as_bytes().to_vec())
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        tx.commit().await.map_err(map)?;
        Ok(Rotation::Moved)
    }
}

/// The pool answers "timed out" when every attempt to connect failed (PostgreSQL's "too many
/// clients" among them), which tells an operator nothing: one direct attempt says why.
async fn why_no_connection(runner: &Runner, url: &str, error: Error) -> Error {
    let pool_timed_out = matches!(
        &error,
        Error::Unavailable { source, .. }
            if matches!(source.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::PoolTimedOut))
    );
    if !pool_timed_out {
        return error;
    }
    let direct = runner.run(Operation::Open, async {
        sqlx::AnyConnection::connect(url).await.map_err(map)
    });
    match direct.await {
        Err(cause) => cause,
        Ok(_) => error,
    }
}

fn driver_compiled(dialect: Dialect) -> bool {
    match dialect {
        Dialect::Postgres => cfg!(feature = "postgres"),
        Dialect::MySql => cfg!(feature = "mysql"),
        Dialect::Sqlite => cfg!(feature = "sqlite"),
    }
}

#[async_trait]
impl SessionRepository for SqlStore {
    fn settings(&self) -> &Arc<SessionSettings> {
        &self.settings
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_principal_index(true)
            .with_expiry_events(
                self.inner.sql.purge_returns_keys && self.inner.config.cleanup_interval.is_some(),
            )
            .with_import(true)
    }

    async fn import(&self, id: &SessionId, record: &SessionRecord) -> Result<bool> {
        record.check_importable(now_millis(), &self.settings.limits)?;
        let attributes = encode_attributes(&record.attributes)?;
        let (key, attributes) = (id.key(), &attributes);
        self.run(Operation::Import, async {
            retry_deadlocks!(self.insert_now(&key, record, attributes))
        })
        .await
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        let creation = Creation::begin(session)?;
        let attributes = encode_attributes(&creation.record().attributes)?;
        let (record, attributes) = (creation.record(), &attributes);
        let id = self
            .run(
                Operation::Create,
                creation.insert_under_free_id(|key| async move {
                    retry_deadlocks!(self.insert_now(&key, record, attributes))
                }),
            )
            .await?;
        creation.finish(session, id);
        Ok(())
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        let key = id.key();
        let now = now_millis();
        let row = self
            .run(Operation::Find, async {
                let query = sqlx::query(&self.inner.sql.find)
                    .bind(key.as_bytes().to_vec())
                    .bind(ms(now));
                let mut connection = self.statement_connection().await?;
                let row = query.fetch_optional(&mut *connection).await.map_err(map);
                connection.settle(row)
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(record_from_row(&key, &row)?
            .filter(|record| record.is_live_at(now))
            .map(|record| Session::from_record(id.clone(), record, Arc::clone(&self.settings))))
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        self.run(Operation::Save, async {
            retry_deadlocks!(self.save_now(session))
        })
        .await
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let key = id.key();
        self.run(Operation::Touch, async {
            retry_deadlocks!(self.touch_now(&key))
        })
        .await
    }

    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        self.run(Operation::Delete, async {
            retry_deadlocks!(self.delete_now(key))
        })
        .await
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        let rotation = rotate_id(session, |old, new| async move {
            retry_deadlocks!(self.rotate(old, new))
        });
        self.run(Operation::ChangeId, rotation).await.map(|_| ())
    }

    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        check_principal_query(principal, &self.settings)?;
        let rows = self
            .run(Operation::FindByPrincipal, async {
                sqlx::query(&self.inner.sql.by_principal)
                    .bind(principal.as_bytes().to_vec())
                    .bind(ms(now_millis()))
                    .fetch_all(&self.inner.pool)
                    .await
                    .map_err(map)
            })
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get(0).map_err(map)?;
            let Some(key) = SessionKey::from_hex(&key) else {
                continue;
            };
            // The same rule as `find`: a session whose attributes cannot be decoded is absent.
            // Decoding costs a few microseconds per session, and a principal has a handful.
            let attributes: Vec<u8> = row.try_get(4).map_err(map)?;
            if let Err(error) = decode_attributes(&attributes) {
                report_undecodable(&key, &error);
                continue;
            }
            found.push(SessionInfo::new(
                key,
                principal.to_owned(),
                system_time(unsigned(row.try_get(1).map_err(map)?)),
                system_time(unsigned(row.try_get(2).map_err(map)?)),
                system_time(unsigned(row.try_get(3).map_err(map)?)),
            ));
        }
        Ok(found)
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        check_principal_query(principal, &self.settings)?;
        self.run(Operation::DeleteByPrincipal, async {
            retry_deadlocks!(async {
                let delete = sqlx::query(&self.inner.sql.delete_by_principal)
                    .bind(principal.as_bytes().to_vec())
                    .bind(ms(now_millis()));
                Ok(self
                    .inner
                    .execute_write(delete)
                    .await
                    .map_err(map)?
                    .rows_affected())
            })
        })
        .await
    }

    fn subscribe(&self) -> Result<EventSubscription> {
        if self.capabilities().expiry_events {
            Ok(self.inner.events.subscribe())
        } else {
            Err(Error::Unsupported(
                "events (this SQL store purges without RETURNING, or does not purge)",
            ))
        }
    }
}
