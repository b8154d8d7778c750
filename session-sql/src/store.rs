//! The SQL store.
//!
//! # Expiry strategy
//!
//! One row per session: metadata in columns, the attributes as one encoded value, and an
//! indexed `expires_at` column holding the session's deadline (epoch ms), recomputed by every
//! create, save and touch. Every read filters on `expires_at > now`, so an expired row is
//! invisible the moment its deadline passes. A purge task deletes expired rows in small
//! batches; only one instance purges at a time (PostgreSQL advisory lock, MySQL `GET_LOCK`,
//! a lease row on SQLite), and on PostgreSQL the batch skips rows a save holds locked, so a
//! purge never waits on or deadlocks with request traffic.
//!
//! # Saving a delta in one round trip
//!
//! A save is a compare-and-set on the `version` column. When nobody wrote since the session
//! was loaded (the common case) the stored row *is* the loaded copy, so the loaded copy with
//! its changes applied is exactly what a merge would produce: one `UPDATE ... WHERE version =
//! loaded` writes it. If that matches no row, the save reads the latest row, merges its delta
//! into it with [`SessionRecord::apply`] (per-attribute last-write-wins, limits, liveness) and
//! writes it with the same compare-and-set, retrying if yet another save slipped in. Optimistic
//! mode stops at the first mismatch with `Conflict`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use session_core::time::{now_millis, system_time};
use session_core::{
    async_trait, check_principal_query, decode_attributes, encode_attributes, insert_under_free_id,
    report_undecodable, with_timeout, Capabilities, Concurrency, Error, EventBus,
    EventSubscription, Result, Session, SessionEvent, SessionId, SessionInfo, SessionKey,
    SessionRecord, SessionRepository, SessionSettings,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::config::Config;
use crate::dialect::{Dialect, Statements};
use crate::error::{is_unique_violation, map, retry_deadlocks};
use crate::schema::{lock_key, migrate};

/// Fresh ids tried by `change_id` before giving up (`create` goes through
/// [`insert_under_free_id`]).
const ID_ATTEMPTS: usize = 4;
/// Compare-and-set rounds a contended save tries before it merges under a row lock.
const MERGE_ATTEMPTS: usize = 8;
/// On SQLite there is no row lock to fall back to; only other processes can make a save lose
/// (this process's writers are queued), so it simply tries longer before reporting the store
/// unavailable.
const SQLITE_MERGE_ATTEMPTS: usize = 64;

#[derive(Debug)]
struct Inner {
    pool: AnyPool,
    dialect: Dialect,
    sql: Statements,
    config: Config,
    /// Identifies this instance as holder of the SQLite purge lease.
    instance: String,
    /// `Expired` events for the rows this instance purges.
    events: EventBus,
    /// SQLite allows one writer per file. Writers of this process queue here, in order,
    /// instead of polling SQLite's lock with growing sleeps (which starves some of them for
    /// 100 ms at a time under load); other processes are still handled by the busy timeout.
    writer: tokio::sync::Mutex<()>,
}

impl Inner {
    /// Held around every write statement on SQLite; no-op elsewhere.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.dialect {
            Dialect::Sqlite => Some(self.writer.lock().await),
            _ => None,
        }
    }
}

/// Sessions in PostgreSQL, MySQL/MariaDB or SQLite.
///
/// Cloning, or [`SqlStore::with_settings`], gives another handle on the same pool.
#[derive(Debug, Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
    settings: Arc<SessionSettings>,
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl SqlStore {
    /// Connects, creates or upgrades the schema, and starts the purge task (inside a Tokio
    /// runtime, when [`Config::cleanup_interval`] is set).
    pub async fn open(config: Config, settings: SessionSettings) -> Result<Self> {
        config.validate()?;
        let dialect = Dialect::of_url(&config.url)?;
        if !driver_compiled(dialect) {
            return Err(Error::InvalidInput(format!(
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
            .acquire_timeout(config.timeout)
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
        let pool = with_timeout(config.timeout, async { pool.await.map_err(map) })
            .await
            .map_err(|error| {
                tracing::warn!(url = %session_core::redact_url(&config.url), %error, "cannot connect to the session database");
                error
            })?;
        with_timeout(config.timeout * 6, migrate(&pool, dialect, &config.table)).await?;
        let returning = match dialect {
            Dialect::MySql => {
                with_timeout(config.timeout, async {
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
        let inner = Arc::new(Inner {
            sql: Statements::new(dialect, &config.table, returning),
            events: EventBus::default(),
            pool,
            dialect,
            instance: SessionId::generate().key().to_hex()[..16].to_owned(),
            writer: tokio::sync::Mutex::new(()),
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

    /// The connection pool (for tooling, benchmarks and tests).
    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// The database dialect.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Replaces the stored attributes of `key` by `bytes`, as a foreign writer would (the
    /// version moves), without any check: the corrupt-data cases of the conformance suite use it.
    pub async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.run(async {
            let _turn = self.inner.write_turn().await;
            sqlx::query(&self.inner.sql.write_raw)
                .bind(bytes.to_vec())
                .bind(key.as_bytes().to_vec())
                .execute(&self.inner.pool)
                .await
                .map_err(map)?;
            Ok(())
        })
        .await
    }

    /// Deletes expired rows in batches of [`Config::cleanup_batch`]; returns how many. Does
    /// nothing (returns 0) while another instance holds the purge lock.
    pub async fn purge_expired(&self) -> Result<u64> {
        purge(&self.inner).await
    }

    async fn run<T>(&self, operation: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        with_timeout(self.inner.config.timeout, operation).await
    }

    /// The stored record of `key` from a row of `find`/`find_for_merge`, or `None` if its bytes
    /// cannot be decoded (reported).
    fn record_from_row(key: &SessionKey, row: &AnyRow) -> Result<Option<SessionRecord>> {
        // MySQL's VARBINARY reaches the Any driver as text; the other databases give bytes.
        let principal: Option<Vec<u8>> = match row.try_get::<Option<Vec<u8>>, _>(4) {
            Ok(bytes) => bytes,
            Err(_) => row
                .try_get::<Option<String>, _>(4)
                .map_err(map)?
                .map(String::into_bytes),
        };
        let principal = match principal.map(String::from_utf8).transpose() {
            Ok(principal) => principal,
            Err(error) => {
                report_undecodable(key, &error);
                return Ok(None);
            }
        };
        let attributes: Vec<u8> = row.try_get(6).map_err(map)?;
        let attributes = match decode_attributes(&attributes) {
            Ok(attributes) => attributes,
            Err(error) => {
                report_undecodable(key, &error);
                return Ok(None);
            }
        };
        Ok(Some(SessionRecord {
            created_at_ms: unsigned(row.try_get(0).map_err(map)?),
            last_accessed_at_ms: unsigned(row.try_get(1).map_err(map)?),
            idle_timeout_ms: unsigned(row.try_get(2).map_err(map)?),
            absolute_lifetime_ms: row.try_get::<Option<i64>, _>(3).map_err(map)?.map(unsigned),
            principal,
            version: unsigned(row.try_get(5).map_err(map)?),
            attributes,
        }))
    }

    /// `UPDATE ... WHERE version = expected`: writes `record` (with its version) if the row is
    /// live and still at `expected`. Returns whether it matched. Callers hold the write turn.
    async fn compare_and_set<'c, E>(
        &self,
        executor: E,
        key: &SessionKey,
        record: &SessionRecord,
        expected: u64,
        now: u64,
    ) -> Result<bool>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        let attributes = encode_attributes(&record.attributes)?;
        let result = bind_record(
            sqlx::query(&self.inner.sql.save_if_version),
            record,
            attributes,
        )
        .bind(key.as_bytes().to_vec())
        .bind(ms(expected))
        .bind(ms(now))
        .execute(executor)
        .await
        .map_err(map)?;
        Ok(result.rows_affected() == 1)
    }

    /// The stored record of `key` for a merge (`sql` is `find_for_merge` or its locking
    /// variant); absent or undecodable is `NotFound`. Liveness is checked by the merge itself.
    async fn read_for_merge<'c, E>(
        &self,
        executor: E,
        sql: &str,
        key: &SessionKey,
    ) -> Result<SessionRecord>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        let row = sqlx::query(sql)
            .bind(key.as_bytes().to_vec())
            .fetch_optional(executor)
            .await
            .map_err(map)?
            .ok_or(Error::NotFound)?;
        Self::record_from_row(key, &row)?.ok_or(Error::NotFound)
    }

    /// The live stored version of `key`, if any.
    async fn live_version(&self, key: &SessionKey, now: u64) -> Result<Option<u64>> {
        let row = sqlx::query(&self.inner.sql.exists)
            .bind(key.as_bytes().to_vec())
            .bind(ms(now))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map)?;
        row.map(|row| row.try_get::<i64, _>(0).map(unsigned))
            .transpose()
            .map_err(map)
    }

    async fn save_now(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let key = session.key();
        let delta = session.delta(now)?;
        let mut fast = session.snapshot(now)?;
        fast.version += 1;
        let turn = self.inner.write_turn().await;
        let written = self
            .compare_and_set(&self.inner.pool, &key, &fast, session.version(), now)
            .await?;
        drop(turn);
        if written {
            drop(delta);
            session.mark_persisted(fast.version, now);
            return Ok(());
        }
        if self.settings.concurrency == Concurrency::Optimistic {
            return Err(match self.live_version(&key, now).await? {
                Some(actual) => Error::Conflict {
                    expected: session.version(),
                    actual,
                },
                None => Error::NotFound,
            });
        }
        let attempts = match self.inner.dialect {
            Dialect::Sqlite => SQLITE_MERGE_ATTEMPTS,
            _ => MERGE_ATTEMPTS,
        };
        for _ in 0..attempts {
            // On SQLite the turn spans read and write, so only another process can get between.
            let _turn = self.inner.write_turn().await;
            let mut record = self
                .read_for_merge(&self.inner.pool, &self.inner.sql.find_for_merge, &key)
                .await?;
            let read_version = record.version;
            record.apply(&delta, now, &self.settings.limits)?;
            if self
                .compare_and_set(&self.inner.pool, &key, &record, read_version, now)
                .await?
            {
                let version = record.version;
                drop(delta);
                session.mark_persisted(version, now);
                return Ok(());
            }
        }
        let Some(find_for_update) = &self.inner.sql.find_for_update else {
            return Err(Error::unavailable(format!(
                "save lost {attempts} compare-and-set rounds to other processes"
            )));
        };
        // Hot session: merge under the row lock, where no other save can get in between.
        let mut tx = self.inner.pool.begin().await.map_err(map)?;
        let mut record = self.read_for_merge(&mut *tx, find_for_update, &key).await?;
        let read_version = record.version;
        record.apply(&delta, now, &self.settings.limits)?;
        if !self
            .compare_and_set(&mut *tx, &key, &record, read_version, now)
            .await?
        {
            return Err(Error::backend("a locked row changed under its lock"));
        }
        tx.commit().await.map_err(map)?;
        let version = record.version;
        drop(delta);
        session.mark_persisted(version, now);
        Ok(())
    }

    /// Inserts a new row; `Ok(false)` if the key is taken.
    async fn insert_now(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        attributes: &[u8],
    ) -> Result<bool> {
        let _turn = self.inner.write_turn().await;
        let query = sqlx::query(&self.inner.sql.insert)
            .bind(key.as_bytes().to_vec())
            .bind(ms(record.created_at_ms));
        let inserted = bind_record(query, record, attributes.to_vec())
            .execute(&self.inner.pool)
            .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(error) => Err(map(error)),
        }
    }

    async fn touch_now(&self, key: &SessionKey) -> Result<()> {
        let now = ms(now_millis());
        let turn = self.inner.write_turn().await;
        let touched = sqlx::query(&self.inner.sql.touch)
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(key.as_bytes().to_vec())
            .bind(now)
            .execute(&self.inner.pool)
            .await
            .map_err(map)?;
        drop(turn);
        // MySQL counts changed rows: a touch within the same millisecond changes nothing.
        if touched.rows_affected() == 0 && self.live_version(key, unsigned(now)).await?.is_none() {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    async fn delete_now(&self, key: &SessionKey) -> Result<()> {
        let _turn = self.inner.write_turn().await;
        sqlx::query(&self.inner.sql.delete)
            .bind(key.as_bytes().to_vec())
            .execute(&self.inner.pool)
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn change_id_now(&self, session: &mut Session) -> Result<()> {
        let old_key = session.key();
        for _ in 0..ID_ATTEMPTS {
            let now = ms(now_millis());
            let new_id = SessionId::generate();
            let _turn = self.inner.write_turn().await;
            let mut tx = self.inner.pool.begin().await.map_err(map)?;
            if let Some(lock) = &self.inner.sql.lock_for_change {
                let locked = sqlx::query(lock)
                    .bind(old_key.as_bytes().to_vec())
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map)?;
                if locked.is_none() {
                    return Err(Error::NotFound);
                }
            }
            let copied = sqlx::query(&self.inner.sql.copy_to_new_key)
                .bind(new_id.key().as_bytes().to_vec())
                .bind(old_key.as_bytes().to_vec())
                .bind(now)
                .execute(&mut *tx)
                .await;
            match copied {
                Ok(result) if result.rows_affected() == 1 => {}
                Ok(_) => return Err(Error::NotFound),
                // An id collision aborts the transaction; start over with another id.
                Err(error) if is_unique_violation(&error) => continue,
                Err(error) => return Err(map(error)),
            }
            sqlx::query(&self.inner.sql.delete)
                .bind(old_key.as_bytes().to_vec())
                .execute(&mut *tx)
                .await
                .map_err(map)?;
            tx.commit().await.map_err(map)?;
            session.assign_id(new_id);
            return Ok(());
        }
        Err(Error::backend("no free session id after several attempts"))
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the columns every write of a whole record sets, in the order the statements of
/// `dialect.rs` list them: last access, idle timeout, absolute lifetime, deadline, principal,
/// version, attributes.
fn bind_record<'q>(
    query: AnyQuery<'q>,
    record: &SessionRecord,
    attributes: Vec<u8>,
) -> AnyQuery<'q> {
    query
        .bind(ms(record.last_accessed_at_ms))
        .bind(ms(record.idle_timeout_ms))
        .bind(record.absolute_lifetime_ms.map(ms))
        .bind(ms(record.deadline_ms()))
        .bind(record.principal.as_ref().map(|p| p.as_bytes().to_vec()))
        .bind(ms(record.version))
        .bind(attributes)
}

fn driver_compiled(dialect: Dialect) -> bool {
    match dialect {
        Dialect::Postgres => cfg!(feature = "postgres"),
        Dialect::MySql => cfg!(feature = "mysql"),
        Dialect::Sqlite => cfg!(feature = "sqlite"),
    }
}

async fn purge_periodically(inner: Weak<Inner>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match purge(&inner).await {
            Ok(0) => {}
            Ok(purged) => {
                tracing::debug!(purged, table = %inner.config.table, "purged expired sessions")
            }
            Err(error) => {
                tracing::warn!(%error, table = %inner.config.table, "purging expired sessions failed")
            }
        }
    }
}

async fn purge(inner: &Inner) -> Result<u64> {
    let batch = i64::from(inner.config.cleanup_batch);
    let limit = inner.config.timeout * 12;
    with_timeout(limit, async {
        let mut total = 0;
        match inner.dialect {
            Dialect::Postgres => loop {
                // One short transaction per batch: the advisory lock lives as long as the batch.
                let mut tx = inner.pool.begin().await.map_err(map)?;
                let locked: bool = sqlx::query(&format!(
                    "SELECT pg_try_advisory_xact_lock({})",
                    lock_key(&inner.config.table)
                ))
                .fetch_one(&mut *tx)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(map)?;
                if !locked {
                    return Ok(total);
                }
                let deleted = purge_statement(inner, &mut tx, batch).await?;
                tx.commit().await.map_err(map)?;
                publish_expired(inner, &deleted);
                let deleted = deleted.len() as u64;
                total += deleted;
                if deleted < unsigned(batch) {
                    return Ok(total);
                }
            },
            Dialect::MySql => {
                let name = format!("session-purge-{}", inner.config.table);
                let mut conn = inner.pool.acquire().await.map_err(map)?;
                let locked: i64 = sqlx::query("SELECT COALESCE(GET_LOCK(?, 0), 0)")
                    .bind(&name)
                    .fetch_one(&mut *conn)
                    .await
                    .and_then(|row| row.try_get(0))
                    .map_err(map)?;
                if locked != 1 {
                    return Ok(0);
                }
                let outcome = purge_batches(inner, &mut conn, batch).await;
                sqlx::query("SELECT RELEASE_LOCK(?)")
                    .bind(&name)
                    .execute(&mut *conn)
                    .await
                    .map_err(map)?;
                total += outcome?;
                Ok(total)
            }
            Dialect::Sqlite => {
                let table = &inner.config.table;
                let now = ms(now_millis());
                let lease = sqlx::query(&format!(
                    "INSERT INTO {table}_lease (name, holder, until) VALUES ('purge', ?, ?) \
                     ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                     WHERE {table}_lease.until < ? OR {table}_lease.holder = excluded.holder"
                ))
                .bind(&inner.instance)
                .bind(now.saturating_add(ms(crate::store::duration_ms(limit))))
                .bind(now)
                .execute(&inner.pool)
                .await
                .map_err(map)?;
                if lease.rows_affected() != 1 {
                    return Ok(0);
                }
                let mut conn = inner.pool.acquire().await.map_err(map)?;
                let outcome = purge_batches(inner, &mut conn, batch).await;
                sqlx::query(&format!(
                    "UPDATE {table}_lease SET until = 0 WHERE name = 'purge' AND holder = ?"
                ))
                .bind(&inner.instance)
                .execute(&inner.pool)
                .await
                .map_err(map)?;
                total += outcome?;
                Ok(total)
            }
        }
    })
    .await
}

pub(crate) fn duration_ms(duration: Duration) -> u64 {
    session_core::time::duration_millis(duration)
}

async fn purge_batches(inner: &Inner, conn: &mut sqlx::AnyConnection, batch: i64) -> Result<u64> {
    let mut total = 0;
    loop {
        // InnoDB may pick a purge batch as deadlock victim against saves; it was rolled back.
        let deleted = retry_deadlocks!(async {
            let _turn = inner.write_turn().await;
            purge_statement(inner, &mut *conn, batch).await
        })?;
        publish_expired(inner, &deleted);
        let deleted = deleted.len() as u64;
        total += deleted;
        if deleted < unsigned(batch) {
            return Ok(total);
        }
    }
}

/// One purge batch; the keys it deleted (as many placeholders as rows where the server cannot
/// return them).
async fn purge_statement(
    inner: &Inner,
    conn: &mut sqlx::AnyConnection,
    batch: i64,
) -> Result<Vec<Option<SessionKey>>> {
    let query = sqlx::query(&inner.sql.purge_batch)
        .bind(ms(now_millis()))
        .bind(batch);
    if inner.sql.purge_returns_keys {
        let rows = query.fetch_all(&mut *conn).await.map_err(map)?;
        rows.iter()
            .map(|row| {
                row.try_get::<String, _>(0)
                    .map(|hex| SessionKey::from_hex(&hex))
            })
            .collect::<Result<_, _>>()
            .map_err(map)
    } else {
        let deleted = query
            .execute(&mut *conn)
            .await
            .map_err(map)?
            .rows_affected();
        Ok(vec![None; usize::try_from(deleted).unwrap_or(0)])
    }
}

fn publish_expired(inner: &Inner, keys: &[Option<SessionKey>]) {
    for key in keys.iter().flatten() {
        inner.events.publish(SessionEvent::Expired(*key));
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
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let record = session.record_for_create(now)?;
        let attributes = encode_attributes(&record.attributes)?;
        let (record, attributes) = (&record, &attributes);
        let id = insert_under_free_id(session.id().clone(), |key| async move {
            self.run(async { retry_deadlocks!(self.insert_now(&key, record, attributes)) })
                .await
        })
        .await?;
        session.assign_id(id);
        session.mark_persisted(record.version, now);
        Ok(())
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        let key = id.key();
        let now = now_millis();
        let row = self
            .run(async {
                sqlx::query(&self.inner.sql.find)
                    .bind(key.as_bytes().to_vec())
                    .bind(ms(now))
                    .fetch_optional(&self.inner.pool)
                    .await
                    .map_err(map)
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Self::record_from_row(&key, &row)?
            .filter(|record| record.is_live_at(now))
            .map(|record| Session::from_record(id.clone(), record, Arc::clone(&self.settings))))
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        let timeout = self.inner.config.timeout;
        with_timeout(timeout, async { retry_deadlocks!(self.save_now(session)) }).await
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let key = id.key();
        self.run(async { retry_deadlocks!(self.touch_now(&key)) })
            .await
    }

    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        self.run(async { retry_deadlocks!(self.delete_now(key)) })
            .await
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        if session.is_new() {
            session.assign_id(SessionId::generate());
            return Ok(());
        }
        let timeout = self.inner.config.timeout;
        with_timeout(timeout, async {
            retry_deadlocks!(self.change_id_now(session))
        })
        .await
    }

    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        check_principal_query(principal, &self.settings)?;
        let rows = self
            .run(async {
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
        self.run(async {
            retry_deadlocks!(async {
                let _turn = self.inner.write_turn().await;
                Ok(sqlx::query(&self.inner.sql.delete_by_principal)
                    .bind(principal.as_bytes().to_vec())
                    .bind(ms(now_millis()))
                    .execute(&self.inner.pool)
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
