//! The conformance suite on PostgreSQL, MariaDB/MySQL and SQLite.
#![allow(clippy::expect_used)] // test code

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use session_conformance::{conformance_suite, namespace, StoreFixture};
use session_core::testing::{RawShape, WriteRaw, WriteRawShape};
use session_core::{async_trait, Result, SessionKey, SessionRepository, SessionSettings};
use session_sql::{Config, SqlStore};
use session_test_harness::{provision, Backend};

/// One table per case; every `open` is a new store with its own pool (a service instance).
struct SqlFixture {
    name: &'static str,
    config: Config,
    first: SqlStore,
    /// SQLite database files to remove afterwards.
    files: Vec<PathBuf>,
}

#[async_trait]
impl StoreFixture for SqlFixture {
    fn name(&self) -> &str {
        self.name
    }

    async fn open(&self, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
        // Instances purge often, so that Expired events arrive within the case's patience.
        let config = self
            .config
            .clone()
            .with_cleanup_interval(Some(Duration::from_millis(500)));
        Ok(Arc::new(SqlStore::open(config, settings).await?))
    }

    fn can_write_raw(&self) -> bool {
        true
    }

    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.first.write_raw(key, bytes).await
    }

    fn raw_shapes(&self) -> Vec<RawShape> {
        vec![RawShape::InvalidUtf8Principal]
    }

    async fn write_raw_shape(&self, key: &SessionKey, shape: RawShape) -> Result<()> {
        self.first.write_raw_shape(key, shape).await
    }
}

impl Drop for SqlFixture {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

async fn fixture(name: &'static str, url: String, files: Vec<PathBuf>) -> Option<SqlFixture> {
    let config = Config::from_url(&url)
        .expect("test URL")
        .with_table(namespace("s"))
        .with_max_connections(8)
        .with_cleanup_interval(None);
    let first = SqlStore::open(config.clone(), SessionSettings::default())
        .await
        .unwrap_or_else(|error| panic!("cannot open {name} store: {error}"));
    Some(SqlFixture {
        name,
        config,
        first,
        files,
    })
}

async fn server_fixture(name: &'static str, backend: Backend) -> Option<SqlFixture> {
    let server = provision(backend).await?;
    fixture(name, server.url, Vec::new()).await
}

async fn postgres() -> Option<SqlFixture> {
    server_fixture("postgres", Backend::Postgres).await
}

async fn mysql() -> Option<SqlFixture> {
    server_fixture("mysql", Backend::MySql).await
}

async fn sqlite() -> Option<SqlFixture> {
    let path = std::env::temp_dir().join(format!("{}.db", namespace("session_sqlite")));
    let files = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
        .collect();
    fixture("sqlite", format!("sqlite://{}", path.display()), files).await
}

conformance_suite!("postgres" => postgres, "mysql" => mysql, "sqlite" => sqlite);
