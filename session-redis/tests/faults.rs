//! A Redis server that dies and comes back under a live store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::time::{Duration, Instant};

use conformance_tests::namespace;
use conformance_tests::servers::{is_required, provision, Backend, ServerProcess};
use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::{Config, RedisStore};

/// Killed mid-run: every operation fails with a retryable error within the timeout, no panic,
/// no hang. Restarted: the same store (no rebuild) works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dies_and_returns() {
    if provision(Backend::Redis).await.is_none() {
        assert!(!is_required(Backend::Redis));
        return;
    }
    let server = ServerProcess::start(Backend::Redis.spec()).await.unwrap();
    let timeout = Duration::from_secs(1);
    let config = Config::from_url(&server.url())
        .unwrap()
        .with_prefix(format!("{}:", namespace("fault")))
        .with_timeout(timeout);
    let store = RedisStore::open(config, SessionSettings::default())
        .await
        .unwrap();
    let mut session = store.new_session();
    session.insert("a", "1").unwrap();
    store.create(&mut session).await.unwrap();

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let error = store
            .find(session.id())
            .await
            .expect_err("the server is down");
        assert!(error.is_retryable(), "not retryable: {error:?}");
        assert!(
            started.elapsed() < timeout + Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        let mut copy = session.clone();
        copy.insert("b", "2").unwrap();
        let saved = store.save(&mut copy).await;
        assert!(matches!(&saved, Err(e) if e.is_retryable()), "{saved:?}");
        assert!(matches!(store.touch(session.id()).await, Err(e) if e.is_retryable()));
    }

    server.restart().await.unwrap();
    let mut works = false;
    for _ in 0..40 {
        let mut fresh = store.new_session();
        match store.create(&mut fresh).await {
            Ok(()) => {
                assert!(store.find(fresh.id()).await.unwrap().is_some());
                works = true;
                break;
            }
            Err(error) if error.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(error) => panic!("not retryable after the restart: {error:?}"),
        }
    }
    assert!(
        works,
        "the store did not recover after the server came back"
    );
}
