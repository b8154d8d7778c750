//! Embedded, versioned migrations.
//!
//! sqlx's own migrator keeps one `_sqlx_migrations` table per database, so two session tables
//! with different names in one database (two applications, or every test namespace) would
//! share version numbers and the second would never be created. This runner keeps the applied
//! versions in `<table>_migrations` instead, applies missing steps in order under a database
//! lock where the server has one, and every step is idempotent (`IF NOT EXISTS`), so instances
//! starting together cannot break each other.

use session_core::{Error, Result};
use sqlx::{AnyPool, Row};

use crate::dialect::{migrations, Dialect};
use crate::error::{is_unique_violation, map};

pub(crate) async fn migrate(pool: &AnyPool, dialect: Dialect, table: &str) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(map)?;
    let lock = lock_key(table);
    match dialect {
        Dialect::Postgres => {
            sqlx::query(&format!("SELECT pg_advisory_lock({lock})"))
                .execute(&mut *conn)
                .await
                .map_err(map)?;
        }
        Dialect::MySql => {
            sqlx::query(&format!("SELECT GET_LOCK('session-migrate-{table}', 30)"))
                .execute(&mut *conn)
                .await
                .map_err(map)?;
        }
        Dialect::Sqlite => {}
    }
    let outcome = apply(&mut conn, dialect, table).await;
    let unlock = match dialect {
        Dialect::Postgres => Some(format!("SELECT pg_advisory_unlock({lock})")),
        Dialect::MySql => Some(format!("SELECT RELEASE_LOCK('session-migrate-{table}')")),
        Dialect::Sqlite => None,
    };
    if let Some(unlock) = unlock {
        sqlx::query(&unlock)
            .execute(&mut *conn)
            .await
            .map_err(map)?;
    }
    outcome
}

async fn apply(conn: &mut sqlx::AnyConnection, dialect: Dialect, table: &str) -> Result<()> {
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {table}_migrations (\
         version BIGINT NOT NULL PRIMARY KEY, description VARCHAR(200) NOT NULL, applied_at BIGINT NOT NULL)"
    ))
    .execute(&mut *conn)
    .await
    .map_err(map)?;
    let applied: Vec<i64> = sqlx::query(&format!("SELECT version FROM {table}_migrations"))
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?
        .iter()
        .map(|row| row.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(map)?;
    let newest_known = migrations(dialect, table).last().map_or(0, |m| m.0);
    if let Some(newer) = applied.iter().find(|&&v| v > newest_known) {
        return Err(Error::backend(format!(
            "table {table} has schema version {newer}, newer than this build knows ({newest_known})"
        )));
    }
    for (version, description, statements) in migrations(dialect, table) {
        if applied.contains(&version) {
            continue;
        }
        for statement in &statements {
            sqlx::query(statement)
                .execute(&mut *conn)
                .await
                .map_err(map)?;
        }
        let insert = match dialect {
            Dialect::Postgres => format!(
                "INSERT INTO {table}_migrations (version, description, applied_at) VALUES ($1, $2, $3)"
            ),
            _ => format!(
                "INSERT INTO {table}_migrations (version, description, applied_at) VALUES (?, ?, ?)"
            ),
        };
        let recorded = sqlx::query(&insert)
            .bind(version)
            .bind(description)
            .bind(i64::try_from(session_core::raw::time::now_millis()).unwrap_or(i64::MAX))
            .execute(&mut *conn)
            .await;
        match recorded {
            Ok(_) => tracing::info!(
                table,
                version,
                description,
                "applied session schema migration"
            ),
            // Another instance recorded it first; the statements were idempotent.
            Err(error) if is_unique_violation(&error) => {}
            Err(error) => return Err(map(error)),
        }
    }
    Ok(())
}

/// A stable 63-bit number for a table name, used as advisory lock key (FNV-1a).
pub(crate) fn lock_key(table: &str) -> i64 {
    let hash = table.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    i64::try_from(hash >> 1).unwrap_or(i64::MAX)
}
