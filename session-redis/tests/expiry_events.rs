//! The `expiry_events` capability follows the servers' expired-key notifications: a store that
//! under-reports it silently drops the suite's expiry-event case (the conformance summary only
//! lists it as not applicable), so these tests pin it down.
#![allow(clippy::expect_used)] // test code

use std::collections::HashMap;

use conformance_tests::namespace;
use conformance_tests::servers::{is_required, provision, Backend, ServerProcess};
use session_core::{SessionRepository, SessionSettings};
use session_redis::{redis, Config, RedisStore};

async fn reports_expiry_events(url: &str) -> bool {
    let config = Config::from_url(url)
        .expect("test URL")
        .with_prefix(format!("{}:", namespace("expiry-capability")));
    RedisStore::open(config, SessionSettings::default())
        .await
        .expect("store")
        .capabilities()
        .expiry_events
}

/// `CONFIG SET` (or `GET`, when `flags` is `None`) of `notify-keyspace-events` on one node,
/// over a plain RESP2 connection.
async fn notifications(node: &str, flags: Option<&str>) -> String {
    let mut connection = redis::Client::open(node)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    if let Some(flags) = flags {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(flags)
            .query_async::<()>(&mut connection)
            .await
            .expect("CONFIG SET");
    }
    let config: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut connection)
        .await
        .expect("CONFIG GET");
    config
        .get("notify-keyspace-events")
        .cloned()
        .unwrap_or_default()
}

/// A server with expired-key notifications on gives expiry events; off, it gives none.
#[tokio::test]
async fn standalone_reports_expiry_events_as_the_server_is_configured() {
    // A dedicated server, so that turning notifications off cannot disturb other tests.
    let server = match ServerProcess::start(Backend::Redis.spec()).await {
        Ok(server) => server,
        Err(error) => {
            assert!(
                !is_required(Backend::Redis),
                "cannot start redis-server: {error}"
            );
            return;
        }
    };
    let url = server.url();
    assert!(notifications(&url, None).await.contains('x'));
    assert!(
        reports_expiry_events(&url).await,
        "the server sends expired-key notifications"
    );
    notifications(&url, Some("")).await;
    assert!(!reports_expiry_events(&url).await, "notifications are off");
    notifications(&url, Some("KA")).await;
    assert!(
        !reports_expiry_events(&url).await,
        "keyspace (K) notifications are not the keyevent (E) ones the store listens to"
    );
    notifications(&url, Some("EA")).await;
    assert!(
        reports_expiry_events(&url).await,
        "`A` includes expired keys"
    );
}

/// A Cluster whose every node sends expired-key notifications gives expiry events.
#[tokio::test]
async fn cluster_reports_expiry_events_when_every_node_sends_them() {
    let Some(cluster) = provision(Backend::RedisCluster).await else {
        return;
    };
    let mut everywhere = true;
    for node in cluster.url.split(',') {
        let flags = notifications(node.trim(), None).await;
        everywhere &= flags.contains('E') && (flags.contains('x') || flags.contains('A'));
    }
    if !cluster.processes.is_empty() {
        assert!(everywhere, "the harness starts nodes with notifications on");
    }
    assert_eq!(reports_expiry_events(&cluster.url).await, everywhere);
}
