//! The save: a compare-and-set of the row.
//!
//! A save is a compare-and-set on the `version` column. When nobody wrote since the session
//! was loaded (the common case) the stored row *is* the loaded copy, so the loaded copy with
//! its changes applied is exactly what a merge would produce: one `UPDATE ... WHERE version =
//! loaded` writes it. If that matches no row, the save reads the latest row, merges its delta
//! into it with [`SessionRecord::apply`] (per-attribute last-write-wins, limits, liveness) and
//! writes it with the same compare-and-set, retrying if yet another save slipped in. Optimistic
//! mode stops at the first mismatch with `Conflict`. On SQLite the common case's
//! compare-and-set goes to the writer's queue, which writes the saves waiting on one connection
//! in one transaction (see the `writer` module).
//!
//! After a save that merged others' changes, the copy is not the stored row although its
//! version is the stored one: core then refuses its snapshot
//! ([`SessionInternals::snapshot`]), so its next save merges again instead of writing the copy
//! over those changes.

use session_core::raw::time::now_millis;
use session_core::raw::{encode_attributes, SessionInternals, SessionRecord};
use session_core::{Concurrency, Error, Result, Session, SessionKey};
use sqlx::Row;

use crate::dialect::Dialect;
use crate::error::map;
use crate::row::{bind_record, ms, record_from_row, unsigned, AnyQuery};
use crate::store::SqlStore;
use crate::writer::WriteTurn;

/// Compare-and-set rounds a contended save tries before it merges under a row lock.
const MERGE_ATTEMPTS: usize = 8;
/// On SQLite there is no row lock to fall back to; only other processes can make a save lose
/// (this process's writers are queued), so it simply tries longer before reporting the store
/// unavailable.
const SQLITE_MERGE_ATTEMPTS: usize = 64;

/// `statement` (`save_if_version`), `UPDATE ... WHERE version = expected`: writes `record`
/// (with its version, and `attributes`, its attributes encoded) if the row of `key` is live
/// and still at `expected`. Returns whether it matched. Callers hold the write turn.
pub(crate) async fn compare_and_set<'c, E>(
    executor: E,
    statement: &str,
    key: &SessionKey,
    record: &SessionRecord,
    attributes: &[u8],
    expected: u64,
    now: u64,
) -> Result<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let result = bind_compare_and_set(
        sqlx::query(statement),
        key,
        record,
        attributes,
        expected,
        now,
    )
    .execute(executor)
    .await
    .map_err(map)?;
    Ok(result.rows_affected() == 1)
}

/// Binds the parameters of one `save_if_version` statement to `query`, after those it has.
pub(crate) fn bind_compare_and_set<'q>(
    query: AnyQuery<'q>,
    key: &SessionKey,
    record: &SessionRecord,
    attributes: &'q [u8],
    expected: u64,
    now: u64,
) -> AnyQuery<'q> {
    bind_record(query, record, attributes)
        .bind(key.as_bytes().to_vec())
        .bind(ms(expected))
        .bind(ms(now))
}

impl SqlStore {
    /// [`compare_and_set`] with the store's statement, encoding the attributes.
    pub(crate) async fn compare_and_set<'c, E>(
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
        compare_and_set(
            executor,
            &self.inner.sql.save_if_version,
            key,
            record,
            &attributes,
            expected,
            now,
        )
        .await
    }

    /// [`SqlStore::compare_and_set`] in the write turn: on SQLite on the writer's connection,
    /// elsewhere on a statement connection.
    async fn write_if_version(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expected: u64,
        now: u64,
        turn: Option<&mut WriteTurn<'_>>,
    ) -> Result<bool> {
        match turn {
            Some(turn) => {
                let mut connection = turn.take().await?;
                let written = self
                    .compare_and_set(&mut connection, key, record, expected, now)
                    .await;
                turn.settle(connection, written)
            }
            None => {
                let mut connection = self.statement_connection().await?;
                let written = self
                    .compare_and_set(&mut *connection, key, record, expected, now)
                    .await;
                connection.settle(written)
            }
        }
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
        record_from_row(key, &row)?.ok_or(Error::NotFound)
    }

    /// The live stored version of `key`, if any.
    pub(crate) async fn live_version(&self, key: &SessionKey, now: u64) -> Result<Option<u64>> {
        let query = sqlx::query(&self.inner.sql.exists)
            .bind(key.as_bytes().to_vec())
            .bind(ms(now));
        let mut connection = self.statement_connection().await?;
        let row = query.fetch_optional(&mut *connection).await.map_err(map);
        let row = connection.settle(row)?;
        row.map(|row| row.try_get::<i64, _>(0).map(unsigned))
            .transpose()
            .map_err(map)
    }

    pub(crate) async fn save_now(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let key = session.key();
        let delta = session.delta(now)?;
        let snapshot = session.snapshot(now)?;
        let tried_snapshot = snapshot.is_some();
        if let Some(mut fast) = snapshot {
            fast.version += 1;
            let version = fast.version;
            let written = match &self.inner.save_queue {
                Some(queue) => {
                    let attributes = encode_attributes(&fast.attributes)?;
                    queue
                        .compare_and_set(&key, fast, attributes, session.version(), now)
                        .await?
                }
                None => {
                    self.write_if_version(&key, &fast, session.version(), now, None)
                        .await?
                }
            };
            if written {
                drop(delta);
                session.mark_persisted(version, now);
                return Ok(());
            }
        }
        // A copy with no snapshot skipped the write above; the merge below checks its version.
        if self.settings.concurrency == Concurrency::Optimistic && tried_snapshot {
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
            let mut turn = self.inner.write_turn().await;
            let mut connection = self.statement_connection().await?;
            let read = self
                .read_for_merge(&mut *connection, &self.inner.sql.find_for_merge, &key)
                .await;
            let mut record = connection.settle(read)?;
            let read_version = record.version;
            record.apply(&delta, now, &self.settings.limits)?;
            let written = self
                .write_if_version(&key, &record, read_version, now, turn.as_mut())
                .await?;
            if written {
                let version = record.version;
                drop(delta);
                session.mark_persisted(version, now);
                return Ok(());
            }
        }
        let Some(find_for_update) = &self.inner.sql.find_for_update else {
            return Err(Error::retries_exhausted(
                "save lost its compare-and-set to other processes",
                attempts,
            ));
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
}
