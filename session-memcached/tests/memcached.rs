//! Memcached-specific behaviour on real servers: sessions spread over two servers, concurrent
//! writers, the item size limit, and a server that dies and comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_memcached::Client;
use session_conformance::namespace;
use session_core::{
    Error, Limits, SessionId, SessionRepository, SessionRepositoryExt, SessionSettings,
};
use session_memcached::{Config, MemcachedStore};
use session_test_harness::{is_required, provision, Backend, ServerProcess};

fn address(server: &ServerProcess) -> String {
    format!("127.0.0.1:{}", server.port())
}

/// Two dedicated servers, or `None` when memcached is not available (and not required).
async fn two_servers() -> Option<(Arc<ServerProcess>, Arc<ServerProcess>)> {
    if provision(Backend::Memcached).await.is_none() {
        assert!(!is_required(Backend::Memcached));
        return None;
    }
    let a = ServerProcess::start(Backend::Memcached.spec())
        .await
        .unwrap();
    let b = ServerProcess::start(Backend::Memcached.spec())
        .await
        .unwrap();
    Some((a, b))
}

async fn stat(server: &ServerProcess, name: &str) -> u64 {
    let mut client = Client::new(format!("tcp://{}", address(server)))
        .await
        .unwrap();
    client.stats().await.unwrap()[name].parse().unwrap()
}

async fn store_on(servers: &[&ServerProcess], settings: SessionSettings) -> MemcachedStore {
    let config = Config::new(servers.iter().map(|s| address(s)).collect())
        .with_prefix(format!("{}:", namespace("mc")))
        .with_timeout(Duration::from_millis(500));
    MemcachedStore::open(config, settings).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_two_servers_and_live_where_the_hash_says() {
    let Some((a, b)) = two_servers().await else {
        return;
    };
    let store = store_on(&[&a, &b], SessionSettings::default()).await;
    let mut on_a = 0;
    for _ in 0..400 {
        let mut session = store.new_session();
        store.create(&mut session).await.unwrap();
        if store.server_of(&session.key()) == address(&a) {
            on_a += 1;
        }
    }
    let (items_a, items_b) = (stat(&a, "curr_items").await, stat(&b, "curr_items").await);
    eprintln!("400 sessions over two servers: {items_a} on one, {items_b} on the other");
    assert_eq!(
        items_a, on_a,
        "the first server holds exactly the sessions hashed to it"
    );
    assert_eq!(items_a + items_b, 400);
    assert!(
        (140..=260).contains(&items_a),
        "uneven spread: {items_a} of 400"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_writers_of_one_session_lose_nothing() {
    let Some((a, b)) = two_servers().await else {
        return;
    };
    let store = Arc::new(store_on(&[&a, &b], SessionSettings::default()).await);
    let mut session = store.new_session();
    store.create(&mut session).await.unwrap();
    let id = session.id().clone();
    let mut tasks = Vec::new();
    for task in 0..32 {
        // Half the tasks on another instance (its own pools and locks): CAS decides there.
        let store = if task % 2 == 0 {
            Arc::clone(&store)
        } else {
            Arc::new(store.with_settings(SessionSettings::default()))
        };
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut copy = store.find(&id).await.unwrap().unwrap();
            copy.insert(&format!("task{task}"), &task).unwrap();
            store.save(&mut copy).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let loaded = store.find(&id).await.unwrap().unwrap();
    for task in 0..32 {
        assert_eq!(
            loaded.get::<i32>(&format!("task{task}")).unwrap(),
            Some(task),
            "task{task}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_over_the_server_limit_is_too_large_and_writes_nothing() {
    let Some((a, _b)) = two_servers().await else {
        return;
    };
    // Core's own limits set far above memcached's 1 MiB item limit: the store must refuse.
    let limits = Limits::default().with_max_session_bytes(16 << 20);
    let store = store_on(&[&a], SessionSettings::default().with_limits(limits)).await;
    assert_eq!(
        store.item_size_max(),
        1024 * 1024,
        "read from stats settings"
    );
    let mut session = store.new_session();
    session.insert("small", "yes").unwrap();
    store.create(&mut session).await.unwrap();
    let (current, total) = (stat(&a, "curr_items").await, stat(&a, "total_items").await);

    let huge = "x".repeat(2 << 20);
    let mut big = store.new_session();
    big.insert("blob", &huge).unwrap();
    assert!(matches!(
        store.create(&mut big).await,
        Err(Error::TooLarge { .. })
    ));
    let mut loaded = store.find(session.id()).await.unwrap().unwrap();
    loaded.insert("blob", &huge).unwrap();
    assert!(matches!(
        store.save(&mut loaded).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(stat(&a, "curr_items").await, current);
    assert_eq!(stat(&a, "total_items").await, total, "nothing was written");
    let kept = store.find(session.id()).await.unwrap().unwrap();
    assert!(!kept.contains("blob"));
}

/// One of two servers dies: its sessions are gone (memcached keeps nothing), calls for them
/// fail with a retryable error within the timeout, the other server's sessions work on; once
/// it is back, so is the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_servers_dies_and_returns() {
    let Some((a, b)) = two_servers().await else {
        return;
    };
    let timeout = Duration::from_millis(500);
    let store = store_on(&[&a, &b], SessionSettings::default()).await;
    let (mut on_a, mut on_b): (Vec<SessionId>, Vec<SessionId>) = (Vec::new(), Vec::new());
    while on_a.len() < 10 || on_b.len() < 10 {
        let mut session = store.new_session();
        session.insert("n", &1u8).unwrap();
        store.create(&mut session).await.unwrap();
        if store.server_of(&session.key()) == address(&a) {
            on_a.push(session.id().clone());
        } else {
            on_b.push(session.id().clone());
        }
    }
    a.stop();
    let mut slowest = Duration::ZERO;
    for id in &on_a {
        let started = Instant::now();
        let error = store.find(id).await.unwrap_err();
        slowest = slowest.max(started.elapsed());
        assert!(error.is_retryable(), "{}", error.report());
        let started = Instant::now();
        assert!(store.touch(id).await.unwrap_err().is_retryable());
        slowest = slowest.max(started.elapsed());
    }
    for id in &on_b {
        let mut session = store
            .find(id)
            .await
            .unwrap()
            .expect("the other server's session");
        session.insert("n", &2u8).unwrap();
        store.save(&mut session).await.unwrap();
    }
    eprintln!("slowest call while a server was down: {slowest:?}");
    assert!(slowest <= timeout.mul_f64(1.2), "a call took {slowest:?}");

    a.restart().await.unwrap();
    let mut recovered = false;
    for _ in 0..20 {
        if matches!(store.find(&on_a[0]).await, Ok(None)) {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the restarted server did not come back");
    for id in &on_a {
        assert!(
            store.find(id).await.unwrap().is_none(),
            "a restart loses its sessions"
        );
    }
    for id in &on_b {
        assert!(store.find(id).await.unwrap().is_some());
    }
    let mut fresh = store.new_session();
    store.create(&mut fresh).await.unwrap();
    assert!(store.find(fresh.id()).await.unwrap().is_some());
}
