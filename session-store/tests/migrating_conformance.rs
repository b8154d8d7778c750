//! The conformance suite against `Migrating` pairs: memory → SQLite and Redis → PostgreSQL, with
//! the cases' sessions starting in the new store (after the switch) and in the old one (every
//! case then works on sessions that still have to move).
#![allow(clippy::expect_used)] // test code

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use session_conformance::{
    conformance_suite, namespace, MigratingFixture, SessionsStart, StoreFixture,
};
use session_core::testing::WriteRaw;
use session_core::{async_trait, Result, SessionKey, SessionRepository, SessionSettings};
use session_memory::MemoryStore;
use session_redis::RedisStore;
use session_sql::SqlStore;
use session_test_harness::{provision, Backend};

/// One in-process store per case; every `open` is another handle on it.
struct MemoryFixture(MemoryStore);

#[async_trait]
impl StoreFixture for MemoryFixture {
    fn name(&self) -> &str {
        "memory"
    }

    async fn open(&self, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
        Ok(Arc::new(self.0.with_settings(settings)))
    }

    fn can_write_raw(&self) -> bool {
        true
    }

    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.0.write_raw(key, bytes).await
    }
}

/// One table per case (SQLite: one database file).
struct SqlFixture {
    name: &'static str,
    config: session_sql::Config,
    first: SqlStore,
    files: Vec<PathBuf>,
}

#[async_trait]
impl StoreFixture for SqlFixture {
    fn name(&self) -> &str {
        self.name
    }

    async fn open(&self, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
        Ok(Arc::new(
            SqlStore::open(self.config.clone(), settings).await?,
        ))
    }

    fn can_write_raw(&self) -> bool {
        true
    }

    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.first.write_raw(key, bytes).await
    }
}

impl Drop for SqlFixture {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// One key prefix per case.
struct RedisFixture {
    config: session_redis::Config,
    first: RedisStore,
}

#[async_trait]
impl StoreFixture for RedisFixture {
    fn name(&self) -> &str {
        "redis"
    }

    async fn open(&self, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
        Ok(Arc::new(
            RedisStore::open(self.config.clone(), settings).await?,
        ))
    }

    fn can_write_raw(&self) -> bool {
        true
    }

    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.first.write_raw(key, bytes).await
    }
}

fn memory() -> Box<dyn StoreFixture> {
    let config = session_memory::Config::default().with_sweep_interval(Duration::from_millis(100));
    Box::new(MemoryFixture(MemoryStore::open(
        config,
        SessionSettings::default(),
    )))
}

async fn sql(name: &'static str, url: String, files: Vec<PathBuf>) -> Box<dyn StoreFixture> {
    let config = session_sql::Config::from_url(&url)
        .expect("test URL")
        .with_table(namespace("m"))
        .with_max_connections(8)
        .with_cleanup_interval(Some(Duration::from_millis(500)));
    let first = SqlStore::open(config.clone(), SessionSettings::default())
        .await
        .unwrap_or_else(|error| panic!("cannot open {name} store: {error}"));
    Box::new(SqlFixture {
        name,
        config,
        first,
        files,
    })
}

async fn sqlite() -> Box<dyn StoreFixture> {
    let path = std::env::temp_dir().join(format!("{}.db", namespace("session_migrating")));
    let files = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
        .collect();
    sql("sqlite", format!("sqlite://{}", path.display()), files).await
}

async fn postgres() -> Option<Box<dyn StoreFixture>> {
    let server = provision(Backend::Postgres).await?;
    Some(sql("postgres", server.url, Vec::new()).await)
}

async fn redis() -> Option<Box<dyn StoreFixture>> {
    let server = provision(Backend::Redis).await?;
    let config = session_redis::Config::from_url(&server.url)
        .expect("test URL")
        .with_prefix(format!("{}:", namespace("m")));
    let first = RedisStore::open(config.clone(), SessionSettings::default())
        .await
        .unwrap_or_else(|error| panic!("cannot open redis store: {error}"));
    Some(Box::new(RedisFixture { config, first }))
}

async fn memory_to_sqlite(start: SessionsStart) -> Option<MigratingFixture> {
    Some(MigratingFixture::new(sqlite().await, memory(), start))
}

async fn redis_to_postgres(start: SessionsStart) -> Option<MigratingFixture> {
    let (new, old) = (postgres().await?, redis().await?);
    Some(MigratingFixture::new(new, old, start))
}

conformance_suite!(
    "memory_to_sqlite" => || memory_to_sqlite(SessionsStart::New),
    "memory_to_sqlite_old_sessions" => || memory_to_sqlite(SessionsStart::Old),
    "redis_to_postgres" => || redis_to_postgres(SessionsStart::New),
    "redis_to_postgres_old_sessions" => || redis_to_postgres(SessionsStart::Old),
);
