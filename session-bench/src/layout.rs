//! The alternative SQL layout, measured so the choice is made on numbers: Spring Session's
//! sessions table plus one row per attribute. Its request cycle is the fewest statements that
//! layout needs: one join to load, then a transaction that upserts the changed attribute and
//! moves the session row's expiry and version.

use std::sync::Arc;

use async_trait::async_trait;
use session_core::{Error, Result, SessionKey};
use session_sql::{Dialect, SqlStore};
use sqlx::AnyPool;

use crate::{changed, Workload};

pub struct AttributeTableCycle {
    pool: AnyPool,
    keys: Arc<Vec<SessionKey>>,
    load: String,
    touch_row: String,
    upsert: String,
    value: Vec<u8>,
}

impl AttributeTableCycle {
    pub async fn prepare(
        store: &SqlStore,
        keys: Arc<Vec<SessionKey>>,
        attributes: usize,
        value_len: usize,
    ) -> Result<Self> {
        let dialect = store.dialect();
        let base = format!("{}_spring", store.config().table);
        let (key_type, value_type, name_type) = match dialect {
            Dialect::Postgres => ("BYTEA", "BYTEA", "TEXT"),
            Dialect::MySql => ("BINARY(32)", "LONGBLOB", "VARCHAR(200)"),
            Dialect::Sqlite => ("BLOB", "BLOB", "TEXT"),
        };
        let run = |sql: String| {
            let pool = store.pool().clone();
            async move {
                sqlx::query(&sql)
                    .execute(&pool)
                    .await
                    .map_err(Error::backend)
            }
        };
        run(format!(
            "CREATE TABLE IF NOT EXISTS {base}_s (k {key_type} NOT NULL PRIMARY KEY, expires_at BIGINT NOT NULL, version BIGINT NOT NULL)"
        ))
        .await?;
        run(format!(
            "CREATE TABLE IF NOT EXISTS {base}_a (k {key_type} NOT NULL, name {name_type} NOT NULL, v {value_type} NOT NULL, PRIMARY KEY (k, name))"
        ))
        .await?;
        let p = |n: usize| {
            if dialect == Dialect::Postgres {
                format!("${n}")
            } else {
                "?".into()
            }
        };
        let value = vec![b'x'; value_len];
        for key in keys.iter() {
            sqlx::query(&format!(
                "INSERT INTO {base}_s (k, expires_at, version) VALUES ({}, 0, 0)",
                p(1)
            ))
            .bind(key.as_bytes().to_vec())
            .execute(store.pool())
            .await
            .map_err(Error::backend)?;
            for a in 0..attributes {
                sqlx::query(&format!(
                    "INSERT INTO {base}_a (k, name, v) VALUES ({}, {}, {})",
                    p(1),
                    p(2),
                    p(3)
                ))
                .bind(key.as_bytes().to_vec())
                .bind(format!("attr{a}"))
                .bind(value.clone())
                .execute(store.pool())
                .await
                .map_err(Error::backend)?;
            }
        }
        let upsert = match dialect {
            Dialect::MySql => format!(
                "INSERT INTO {base}_a (k, name, v) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)"
            ),
            _ => format!(
                "INSERT INTO {base}_a (k, name, v) VALUES ({}, {}, {}) ON CONFLICT (k, name) DO UPDATE SET v = excluded.v",
                p(1), p(2), p(3)
            ),
        };
        Ok(AttributeTableCycle {
            pool: store.pool().clone(),
            keys,
            load: format!(
                "SELECT s.version, a.name, a.v FROM {base}_s s LEFT JOIN {base}_a a ON a.k = s.k WHERE s.k = {} AND s.expires_at >= {}",
                p(1), p(2)
            ),
            touch_row: format!(
                "UPDATE {base}_s SET expires_at = {}, version = version + 1 WHERE k = {}",
                p(1), p(2)
            ),
            upsert,
            value,
        })
    }
}

#[async_trait]
impl Workload for AttributeTableCycle {
    async fn run(&self, i: usize) -> Result<()> {
        let key = self.keys[i].as_bytes().to_vec();
        let rows = sqlx::query(&self.load)
            .bind(key.clone())
            .bind(0i64)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::backend)?;
        if rows.is_empty() {
            return Err(Error::NotFound);
        }
        let mut tx = self.pool.begin().await.map_err(Error::backend)?;
        sqlx::query(&self.upsert)
            .bind(key.clone())
            .bind("attr0")
            // A real change, as the other cycles write (see `changed`).
            .bind(changed(std::str::from_utf8(&self.value).unwrap_or("")).into_bytes())
            .execute(&mut *tx)
            .await
            .map_err(Error::backend)?;
        sqlx::query(&self.touch_row)
            .bind(1i64)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(Error::backend)?;
        tx.commit().await.map_err(Error::backend)
    }
}
