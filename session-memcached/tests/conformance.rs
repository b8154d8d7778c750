//! The conformance suite on memcached: one server, and two servers with sessions spread over
//! both by rendezvous hashing.
#![allow(clippy::expect_used)] // test code

use std::sync::Arc;

use session_conformance::{conformance_suite, namespace, StoreFixture};
use session_core::testing::WriteRaw;
use session_core::{async_trait, Result, SessionKey, SessionRepository, SessionSettings};
use session_memcached::{Config, MemcachedStore};
use session_test_harness::{provision, Backend, ServerProcess};

/// One key prefix per case; every `open` is a new store with its own pools (a service
/// instance).
struct MemcachedFixture {
    name: &'static str,
    config: Config,
    first: MemcachedStore,
}

#[async_trait]
impl StoreFixture for MemcachedFixture {
    fn name(&self) -> &str {
        self.name
    }

    async fn open(&self, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
        Ok(Arc::new(
            MemcachedStore::open(self.config.clone(), settings).await?,
        ))
    }

    fn can_write_raw(&self) -> bool {
        true
    }

    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.first.write_raw(key, bytes).await
    }
}

async fn fixture(name: &'static str, servers: Vec<String>) -> MemcachedFixture {
    let config = Config::new(servers).with_prefix(format!("{}:", namespace("mc")));
    let first = MemcachedStore::open(config.clone(), SessionSettings::default())
        .await
        .expect("open the memcached store");
    MemcachedFixture {
        name,
        config,
        first,
    }
}

fn address(url: &str) -> String {
    url.trim_start_matches("memcache://")
        .trim_start_matches("memcached://")
        .trim_end_matches('/')
        .to_owned()
}

async fn one_server() -> Option<MemcachedFixture> {
    let server = provision(Backend::Memcached).await?;
    Some(fixture("memcached", vec![address(&server.url)]).await)
}

/// A second server of the test binary's own, beside the provisioned one.
static SECOND: tokio::sync::OnceCell<Arc<ServerProcess>> = tokio::sync::OnceCell::const_new();

async fn two_servers() -> Option<MemcachedFixture> {
    let first = provision(Backend::Memcached).await?;
    let second = SECOND
        .get_or_init(|| async {
            ServerProcess::start(Backend::Memcached.spec())
                .await
                .expect("a second memcached")
        })
        .await;
    Some(
        fixture(
            "memcached-2",
            vec![address(&first.url), address(&second.url())],
        )
        .await,
    )
}

conformance_suite!("one_server" => one_server, "two_servers" => two_servers);
