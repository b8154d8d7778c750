//! Setup shared by the Redis-specific test binaries.
#![allow(dead_code)] // each binary uses some of it
#![allow(clippy::expect_used)] // test code

use session_conformance::namespace;
use session_core::SessionSettings;
use session_redis::redis;
use session_redis::{Config, Layout, RedisStore};
use session_test_harness::{is_required, provision, Backend};

/// A store with `settings` under a fresh key prefix named after `name`, a plain connection to
/// its server, and the prefix; `None` when no server (provisioning fails the test instead when
/// Redis is required).
pub async fn store_and_connection(
    name: &str,
    settings: SessionSettings,
) -> Option<(RedisStore, redis::aio::MultiplexedConnection, String)> {
    store_and_connection_in(name, settings, Layout::Auto).await
}

/// [`store_and_connection`] with a store that writes `layout`.
pub async fn store_and_connection_in(
    name: &str,
    settings: SessionSettings,
    layout: Layout,
) -> Option<(RedisStore, redis::aio::MultiplexedConnection, String)> {
    let server = provision(Backend::Redis).await?;
    let prefix = format!("{}:", namespace(name));
    let config = Config::from_url(&server.url)
        .expect("test URL")
        .with_prefix(prefix.clone())
        .with_layout(layout);
    let store = RedisStore::open(config, settings).await.expect("store");
    let connection = redis::Client::open(server.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    Some((store, connection, prefix))
}

/// What the harness started for a test of `backend`, or `None` when it could not (the test is
/// then skipped, unless `backend` is required: it fails, saying it cannot start `what`).
pub fn started_or_skipped<T>(
    started: std::io::Result<T>,
    backend: Backend,
    what: &str,
) -> Option<T> {
    match started {
        Ok(started) => Some(started),
        Err(error) => {
            assert!(!is_required(backend), "cannot start {what}: {error}");
            None
        }
    }
}
