//! A Cluster store while the cluster changes under it. The store sends its hot commands
//! straight to the master of each key's slot, by a table it builds from `CLUSTER SLOTS` (the
//! `lanes` module); these tests move slots and fail a master over after the table was built,
//! and every session must still be read, saved and read back with its changes, with no lost
//! write and no error once the cluster is settled.
#![allow(clippy::expect_used)] // test code

mod common;

use std::time::Duration;

use session_conformance::namespace;
use session_core::{Session, SessionId, SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::{Config, RedisStore};
use session_test_harness::{
    add_redis_cluster_master, move_redis_cluster_slots, redis_cluster_masters,
    start_redis_cluster_of, start_redis_cluster_with_replicas, Backend,
};

/// Sessions a test spreads over the masters: with three or four masters, each holds some.
const SESSIONS: usize = 60;

async fn store_on(url: &str) -> RedisStore {
    let config = Config::from_url(url)
        .expect("test URL")
        .with_prefix(format!("{}:", namespace("topology")));
    RedisStore::open(config, SessionSettings::default())
        .await
        .expect("store")
}

/// `SESSIONS` sessions, the i-th with `n` = i, and every other one over 2 KiB: where the
/// server has no `SET … IFEQ`, its saves stage the value in a transaction, which takes a lane
/// too.
async fn create_sessions(store: &RedisStore) -> Vec<SessionId> {
    let mut ids = Vec::new();
    for n in 0..SESSIONS {
        let mut session = store.new_session();
        session.insert("n", &n).expect("insert");
        if n % 2 == 0 {
            session.insert("pad", &"p".repeat(3000)).expect("insert");
        }
        store.create(&mut session).await.expect("create");
        ids.push(session.id().clone());
    }
    ids
}

async fn load(store: &RedisStore, id: &SessionId) -> Session {
    store
        .find(id)
        .await
        .expect("find")
        .expect("the session is still there")
}

/// Every session still holds `n` and what earlier rounds wrote; this round writes `round`.
async fn read_change_and_read_back(store: &RedisStore, ids: &[SessionId], round: &str) {
    for (n, id) in ids.iter().enumerate() {
        let mut session = load(store, id).await;
        assert_eq!(session.get::<usize>("n").expect("n"), Some(n));
        session.insert(round, &n).expect("insert");
        store.save(&mut session).await.expect("save");
        let reloaded = load(store, id).await;
        assert_eq!(reloaded.get::<usize>(round).expect("round"), Some(n));
    }
}

/// Slots move to a master that joined after the store opened, and back: each command sent to
/// the old owner is answered `MOVED`, goes through the cluster client, and the table is built
/// again; reads and saves go on without an error.
#[tokio::test]
async fn sessions_keep_working_while_slots_move() {
    let node = Backend::RedisCluster.spec();
    let Some(cluster) = common::started_or_skipped(
        start_redis_cluster_of(&node, &[]).await,
        Backend::RedisCluster,
        "a Redis Cluster",
    ) else {
        return;
    };
    let first = &cluster.processes[0];
    let store = store_on(&format!("redis+cluster://127.0.0.1:{}", first.port())).await;
    let ids = create_sessions(&store).await;
    read_change_and_read_back(&store, &ids, "before").await;

    let added = add_redis_cluster_master(&cluster, &node, &[], 4096)
        .await
        .expect("add a master");
    read_change_and_read_back(&store, &ids, "moved").await;
    // Again once the table was built anew (at most one refresh a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    read_change_and_read_back(&store, &ids, "rebuilt").await;

    move_redis_cluster_slots(first, Some(&added), first, 4096, &[])
        .await
        .expect("move the slots back");
    read_change_and_read_back(&store, &ids, "back").await;
    for id in &ids {
        store.delete(id).await.expect("delete");
        assert!(store.find(id).await.expect("find").is_none());
    }
}

/// A master is killed and its replica takes over: once the cluster is settled, every session
/// (replicated before the kill) is read, saved and read back.
#[tokio::test]
async fn sessions_keep_working_after_a_failover() {
    let node = Backend::RedisCluster.spec();
    let started = start_redis_cluster_with_replicas(&node, &[]).await;
    let Some(cluster) = common::started_or_skipped(
        started,
        Backend::RedisCluster,
        "a Redis Cluster with replicas",
    ) else {
        return;
    };
    let masters = redis_cluster_masters(&cluster, &[]).await.expect("roles");
    assert_eq!(masters.len(), 3, "three masters and their replicas");
    let (seed, failing) = (&masters[0], &masters[1]);
    let store = store_on(&format!("redis+cluster://127.0.0.1:{}", seed.port())).await;
    let ids = create_sessions(&store).await;
    read_change_and_read_back(&store, &ids, "before").await;
    // Replication is asynchronous: let the replicas catch up before the kill.
    tokio::time::sleep(Duration::from_secs(1)).await;

    failing.stop();
    // The replica takes over once the others mark the master failed (node timeout 5 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now_masters = redis_cluster_masters(&cluster, &[]).await.expect("roles");
        let promoted = now_masters
            .iter()
            .any(|now| masters.iter().all(|before| before.port() != now.port()));
        if now_masters.len() == 3 && promoted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replica took over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Until every node knows, a command may still meet the old route: the store reports that
    // as a transient error. Then every session answers.
    let settled = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.find(&ids[0]).await.is_err() || !all_answer(&store, &ids).await {
        assert!(
            tokio::time::Instant::now() < settled,
            "the store did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    read_change_and_read_back(&store, &ids, "after").await;
}

async fn all_answer(store: &RedisStore, ids: &[SessionId]) -> bool {
    for id in ids {
        if store.find(id).await.is_err() {
            return false;
        }
    }
    true
}
