//! The conformance suite on a standalone Redis and on a 3-master Redis Cluster.
#![allow(clippy::expect_used)] // test code

use std::sync::Arc;

use session_conformance::{conformance_suite, namespace, StoreFixture};
use session_core::testing::{RawShape, WriteRaw, WriteRawShape};
use session_core::{async_trait, Result, SessionKey, SessionRepository, SessionSettings};
use session_redis::{Config, Layout, RedisStore};
use session_test_harness::{provision, Backend};

/// A key prefix per case; every `open` is a new store with its own connection.
struct RedisFixture {
    name: &'static str,
    config: Config,
    first: RedisStore,
}

#[async_trait]
impl StoreFixture for RedisFixture {
    fn name(&self) -> &str {
        self.name
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

    fn raw_shapes(&self) -> Vec<RawShape> {
        vec![RawShape::ForeignType]
    }

    async fn write_raw_shape(&self, key: &SessionKey, shape: RawShape) -> Result<()> {
        self.first.write_raw_shape(key, shape).await
    }
}

async fn fixture(name: &'static str, backend: Backend) -> Option<RedisFixture> {
    let server = provision(backend).await?;
    let config = Config::from_url(&server.url)
        .expect("test URL")
        .with_prefix(format!("{}:", namespace("t")));
    let first = RedisStore::open(config.clone(), SessionSettings::default())
        .await
        .unwrap_or_else(|error| panic!("cannot open {name} store: {error}"));
    Some(RedisFixture {
        name,
        config,
        first,
    })
}

async fn redis() -> Option<RedisFixture> {
    fixture("redis", Backend::Redis).await
}

/// The near cache off: every read fetches the whole session.
async fn redis_uncached() -> Option<RedisFixture> {
    let mut fixture = fixture("redis", Backend::Redis).await?;
    fixture.config = fixture.config.with_near_cache_bytes(0);
    Some(fixture)
}

/// The hash layout (`redis` writes the string layout, saved by `SET … IFEQ` where the server
/// has it and by a script elsewhere).
async fn redis_hash() -> Option<RedisFixture> {
    let mut fixture = fixture("redis", Backend::Redis).await?;
    fixture.config = fixture.config.with_layout(Layout::Hash);
    fixture.first = RedisStore::open(fixture.config.clone(), SessionSettings::default())
        .await
        .expect("store");
    Some(fixture)
}

/// The hash layout with the near cache off: every read fetches the whole hash.
async fn redis_hash_uncached() -> Option<RedisFixture> {
    let mut fixture = redis_hash().await?;
    fixture.config = fixture.config.with_near_cache_bytes(0);
    Some(fixture)
}

async fn redis_cluster() -> Option<RedisFixture> {
    fixture("redis-cluster", Backend::RedisCluster).await
}

conformance_suite!(
    "standalone" => redis,
    "standalone_uncached" => redis_uncached,
    "standalone_hash" => redis_hash,
    "standalone_hash_uncached" => redis_hash_uncached,
    "cluster" => redis_cluster,
);
