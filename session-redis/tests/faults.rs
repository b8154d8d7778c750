//! A Redis server that dies and comes back, or hangs and recovers, under a live store (the
//! suite's shared fault cases).

use std::sync::Arc;

use conformance_tests::faults::{server_killed_and_restarted, server_paused_and_resumed};
use conformance_tests::namespace;
use conformance_tests::servers::Backend;
use session_core::{SessionRepository, SessionSettings};
use session_redis::{Config, RedisStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dies_and_returns() {
    server_killed_and_restarted(Backend::Redis, |url, timeout| async move {
        let config = Config::from_url(&url)?
            .with_prefix(format!("{}:", namespace("fault")))
            .with_timeout(timeout);
        Ok(
            Arc::new(RedisStore::open(config, SessionSettings::default()).await?)
                as Arc<dyn SessionRepository>,
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hangs_and_recovers() {
    server_paused_and_resumed(Backend::Redis, |url, timeout| async move {
        let config = Config::from_url(&url)?
            .with_prefix(format!("{}:", namespace("hang")))
            .with_timeout(timeout);
        Ok(
            Arc::new(RedisStore::open(config, SessionSettings::default()).await?)
                as Arc<dyn SessionRepository>,
        )
    })
    .await;
}
