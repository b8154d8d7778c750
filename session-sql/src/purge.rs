//! The purge of expired rows: batches under a lock only one instance holds at a time.

use std::sync::Weak;
use std::time::Duration;

use session_core::raw::time::{duration_millis, now_millis};
use session_core::{Operation, Result, SessionEvent, SessionKey};
use sqlx::Row;

use crate::dialect::Dialect;
use crate::error::{map, retry_deadlocks};
use crate::row::{ms, unsigned};
use crate::schema::lock_key;
use crate::store::Inner;

pub(crate) async fn purge_periodically(inner: Weak<Inner>, interval: Duration) {
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
                tracing::warn!(error = %error.report(), table = %inner.config.table, "purging expired sessions failed")
            }
        }
    }
}

pub(crate) async fn purge(inner: &Inner) -> Result<u64> {
    let batch = i64::from(inner.config.cleanup_batch);
    let limit = inner.config.timeout * 12;
    let runner = session_core::raw::Runner::new(inner.runner.store(), limit);
    runner.run(Operation::Maintenance, async {
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
                .bind(now.saturating_add(ms(duration_millis(limit))))
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
