//! The event listeners against real servers. The `expiry_events` capability follows the
//! servers' expired-key notifications: a store that under-reports it silently drops the suite's
//! expiry-event case (the conformance summary only lists it as not applicable). On a Cluster
//! the listeners follow the topology: every master's expiries are heard whatever seeds were
//! given, masters that come and go are followed, and the channel of lifecycle events moves off
//! a node that goes away.
#![allow(clippy::expect_used)] // test code

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use session_conformance::{namespace, short_lived, SHORT_IDLE};
use session_core::{
    SessionEvent, SessionKey, SessionRepository, SessionRepositoryExt, SessionSettings,
};
use session_redis::{redis, Config, RedisStore};
use session_test_harness::{
    add_redis_cluster_master, move_redis_cluster_slots, provision, redis_cluster_masters,
    start_redis_cluster_of, start_redis_cluster_with_replicas, Backend, ServerProcess,
};

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
    let started = ServerProcess::start(Backend::Redis.spec()).await;
    let Some(server) = common::started_or_skipped(started, Backend::Redis, "redis-server") else {
        return;
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

/// A Cluster store configured with one seed node hears the expiries of every master, not only
/// the seed's.
#[tokio::test]
async fn cluster_store_with_one_seed_hears_every_master() {
    let Some(cluster) = provision(Backend::RedisCluster).await else {
        return;
    };
    let store = short_lived_store(&one_seed(&cluster.url)).await;
    if !store.capabilities().expiry_events {
        assert!(
            cluster.processes.is_empty(),
            "the harness starts nodes with notifications on"
        );
        return;
    }
    let mut events = store.subscribe().expect("subscribe");
    // 30 sessions over three masters: the chance that one master holds none is 3 x (2/3)^30.
    let mut keys = HashSet::new();
    for _ in 0..30 {
        keys.insert(create(&store).await);
    }
    expect_expiries(&mut events, keys).await;
}

/// A master that joins after the store opened (resharding) gets a listener: the expiries of
/// the sessions it holds are heard too. Once it holds no slot any more, the listener on it is
/// closed.
#[tokio::test]
async fn cluster_store_follows_masters_that_come_and_go() {
    let node = Backend::RedisCluster.spec();
    let started = start_redis_cluster_of(&node, &[]).await;
    let Some(cluster) =
        common::started_or_skipped(started, Backend::RedisCluster, "a Redis Cluster")
    else {
        return;
    };
    let store = short_lived_store(&one_seed(&cluster.url)).await;
    assert!(store.capabilities().expiry_events);
    let mut events = store.subscribe().expect("subscribe");
    let added = add_redis_cluster_master(&cluster, &node, &[], 4096)
        .await
        .expect("add a master");
    let mut on_added = connect(&added).await;
    wait_for_expiry_listeners(&mut on_added, 1, "no listener on the added master").await;
    let mut keys = HashSet::new();
    while keys.len() < 200 && sessions_held(&mut on_added).await < 3 {
        keys.insert(create(&store).await);
    }
    let held = sessions_held(&mut on_added).await;
    assert!(held >= 3, "the new master holds {held} of the sessions");
    expect_expiries(&mut events, keys).await;

    let first = &cluster.processes[0];
    move_redis_cluster_slots(first, Some(&added), first, 4096, &[])
        .await
        .expect("move the slots back");
    wait_for_expiry_listeners(&mut on_added, 0, "a node without slots keeps a listener").await;
}

/// A Cluster store whose first seed is down opens through the next one, events included.
#[tokio::test]
async fn cluster_store_opens_past_a_dead_first_seed() {
    let Some(cluster) = provision(Backend::RedisCluster).await else {
        return;
    };
    // A port nobody listens on any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let (_listening, mut events, writing) = two_instances(
        &format!("redis://127.0.0.1:{dead},{}", cluster.url),
        &one_seed(&cluster.url),
    )
    .await;
    let created = create(&writing).await;
    expect_created(&mut events, created, "with a dead first seed").await;
}

/// When the node carrying a Cluster store's channel subscription goes away, the subscription
/// moves to a master that answers: another instance's lifecycle events keep arriving.
#[tokio::test]
async fn cluster_channel_moves_off_a_node_that_goes_away() {
    let node = Backend::RedisCluster.spec();
    let started = start_redis_cluster_of(&node, &[]).await;
    let Some(cluster) =
        common::started_or_skipped(started, Backend::RedisCluster, "a Redis Cluster")
    else {
        return;
    };
    let doomed = add_redis_cluster_master(&cluster, &node, &[], 100)
        .await
        .expect("add a master");
    let (_listening, mut events, writing) = two_instances(
        &format!("redis+cluster://127.0.0.1:{}", doomed.port()),
        &one_seed(&cluster.url),
    )
    .await;
    let created = create(&writing).await;
    expect_created(&mut events, created, "before the move").await;

    let first = &cluster.processes[0];
    move_redis_cluster_slots(first, Some(&doomed), first, 100, &[])
        .await
        .expect("move the slots away");
    doomed.stop();
    // A ping notices within a second or two, the next lookup moves the subscription: events
    // in between are lost (pub/sub keeps nothing), so keep creating until one is heard.
    let deadline = tokio::time::Instant::now() + LISTENERS_FOLLOW_WITHIN;
    loop {
        let created = create(&writing).await;
        if heard_created(&mut events, created, Duration::from_millis(500)).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no lifecycle event since the channel's node went away"
        );
    }
}

/// Two instances of one application: one opened on `listen_url` with a subscription to its
/// events (keep the store: dropping it ends the subscription), the other on `write_url`.
async fn two_instances(
    listen_url: &str,
    write_url: &str,
) -> (RedisStore, session_core::EventSubscription, RedisStore) {
    let application = namespace("two-instances");
    let listening = store_on(listen_url, &application, SessionSettings::default()).await;
    let events = listening.subscribe().expect("subscribe");
    let writing = store_on(write_url, &application, SessionSettings::default()).await;
    (listening, events, writing)
}

async fn expect_created(events: &mut session_core::EventSubscription, key: SessionKey, when: &str) {
    assert!(
        // Generous: a loaded machine (clusters of parallel tests on two cores) once took more
        // than 3 s.
        heard_created(events, key, Duration::from_secs(10)).await,
        "no Created({key:?}) {when}"
    );
}

/// Whether `Created(key)` arrives `within`.
async fn heard_created(
    events: &mut session_core::EventSubscription,
    key: SessionKey,
    within: Duration,
) -> bool {
    let wanted = SessionEvent::Created(key);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if event == wanted => return true,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("event stream: {error:?}"),
            Err(_) => return false,
        }
    }
}

/// What a test of its own `started`; `None` (skip) when that failed and `backend` is not
/// required, a failure when it is. Tests that reshape a cluster or reconfigure a server start
/// their own, so that they cannot disturb the others.
/// After a failover (a master killed, its replica promoted), the expiries of the promoted
/// master are heard.
#[tokio::test]
async fn cluster_store_follows_a_failover() {
    let node = Backend::RedisCluster.spec();
    let started = start_redis_cluster_with_replicas(&node, &[]).await;
    let what = "a Redis Cluster with replicas";
    let Some(cluster) = common::started_or_skipped(started, Backend::RedisCluster, what) else {
        return;
    };
    let masters = redis_cluster_masters(&cluster, &[]).await.expect("roles");
    assert_eq!(masters.len(), 3, "three masters and their replicas");
    let (seed, failing) = (&masters[0], &masters[1]);
    let store = short_lived_store(&format!("redis+cluster://127.0.0.1:{}", seed.port())).await;
    assert!(store.capabilities().expiry_events);
    let mut events = store.subscribe().expect("subscribe");

    failing.stop();
    // The replica takes over once the others mark the master failed (node timeout 5 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let promoted = loop {
        let now_masters = redis_cluster_masters(&cluster, &[]).await.expect("roles");
        let mut new = now_masters
            .iter()
            .filter(|now| masters.iter().all(|before| before.port() != now.port()));
        if let (3, Some(promoted)) = (now_masters.len(), new.next()) {
            break Arc::clone(promoted);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replica took over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut on_promoted = connect(&promoted).await;
    wait_for_expiry_listeners(&mut on_promoted, 1, "no listener on the promoted master").await;
    // 30 sessions over three masters: the chance that the promoted one holds none is (2/3)^30.
    let mut keys = HashSet::new();
    while keys.len() < 30 {
        // The cluster connection may still hold the failed master's route for a moment.
        if let Ok(key) = try_create(&store).await {
            keys.insert(key);
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    expect_expiries(&mut events, keys).await;
}

/// The store looks its masters up again every five seconds; a loaded machine gets slack.
const LISTENERS_FOLLOW_WITHIN: Duration = Duration::from_secs(25);

async fn connect(node: &ServerProcess) -> redis::aio::MultiplexedConnection {
    redis::Client::open(node.url().as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection to a node")
}

/// Waits until `node` has `wanted` expired-key listeners, or fails with `otherwise`.
async fn wait_for_expiry_listeners(
    node: &mut redis::aio::MultiplexedConnection,
    wanted: usize,
    otherwise: &str,
) {
    let deadline = tokio::time::Instant::now() + LISTENERS_FOLLOW_WITHIN;
    while expiry_listeners(node).await != wanted {
        assert!(tokio::time::Instant::now() < deadline, "{otherwise}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sessions_held(node: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("DBSIZE")
        .query_async(node)
        .await
        .expect("DBSIZE")
}

/// Connections to `node` subscribed to a pattern (the store's expired-key listeners).
async fn expiry_listeners(node: &mut redis::aio::MultiplexedConnection) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(node)
        .await
        .expect("CLIENT LIST");
    clients
        .lines()
        .filter(|client| client.contains(" psub=1 "))
        .count()
}

/// The first node of a comma-separated cluster URL, as a one-seed cluster URL.
fn one_seed(urls: &str) -> String {
    let first = urls.split(',').next().expect("a node URL");
    first.replacen("redis://", "redis+cluster://", 1)
}

async fn short_lived_store(url: &str) -> RedisStore {
    store_on(url, &namespace("expiry-heard"), short_lived()).await
}

/// A store on `url` under the key prefix `namespace` (stores under one prefix are instances
/// of one application: they share sessions and events).
async fn store_on(url: &str, namespace: &str, settings: SessionSettings) -> RedisStore {
    let config = Config::from_url(url)
        .expect("test URL")
        .with_prefix(format!("{namespace}:"));
    RedisStore::open(config, settings).await.expect("store")
}

async fn create(store: &RedisStore) -> SessionKey {
    try_create(store).await.expect("create")
}

async fn try_create(store: &RedisStore) -> session_core::Result<SessionKey> {
    let mut session = store.new_session();
    store.create(&mut session).await?;
    Ok(session.key())
}

/// Waits until every one of `keys` is reported expired.
async fn expect_expiries(
    events: &mut session_core::EventSubscription,
    mut keys: HashSet<SessionKey>,
) {
    let total = keys.len();
    let deadline = tokio::time::Instant::now() + SHORT_IDLE + Duration::from_secs(10);
    while !keys.is_empty() {
        let event = tokio::time::timeout_at(deadline, events.recv()).await;
        match event {
            Ok(Ok(SessionEvent::Expired(key))) => {
                keys.remove(&key);
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("event stream: {error:?}"),
            Err(_) => panic!("{} of {total} expiries not heard", keys.len()),
        }
    }
}
