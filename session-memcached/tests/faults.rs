//! A memcached server that dies and comes back, or hangs and recovers, under a live store (the
//! suite's shared fault cases).

use std::sync::Arc;
use std::time::Duration;

use session_conformance::faults::{server_killed_and_restarted, server_paused_and_resumed};
use session_conformance::namespace;
use session_core::{SessionRepository, SessionSettings};
use session_memcached::{Config, MemcachedStore};
use session_test_harness::{dedicated, Backend};

/// The store the shared fault cases run on: a key prefix of its own, their operation timeout.
async fn fault_store(
    url: String,
    timeout: Duration,
) -> session_core::Result<Arc<dyn SessionRepository>> {
    let config = Config::from_url(&url)?
        .with_prefix(format!("{}:", namespace("fault")))
        .with_timeout(timeout);
    Ok(
        Arc::new(MemcachedStore::open(config, SessionSettings::default()).await?)
            as Arc<dyn SessionRepository>,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_dies_and_returns() {
    let Some(server) = dedicated(Backend::Memcached).await else {
        return;
    };
    server_killed_and_restarted(server, fault_store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_hangs_and_recovers() {
    let Some(server) = dedicated(Backend::Memcached).await else {
        return;
    };
    server_paused_and_resumed(server, fault_store).await;
}
