//! `rediss://` against a real redis-server speaking TLS with a certificate from a throwaway CA.
#![cfg(feature = "tls")]
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use std::time::Duration;

use session_conformance::namespace;
use session_core::{SessionEvent, SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::{Config, RedisStore};
use session_test_harness::{
    is_required, provision, start_redis_cluster_of, Backend, Provisioned, ServerProcess,
    ServerSpec, TestCertificates,
};

/// Three TLS-only cluster nodes (the cluster bus on TLS too) joined into one Cluster.
async fn tls_cluster(certificates: &TestCertificates) -> Provisioned {
    let mut node = ServerSpec::redis_tls(certificates).redis_cluster_node();
    node.args.extend(["--tls-cluster", "yes"].map(String::from));
    let ca = certificates.ca().display().to_string();
    start_redis_cluster_of(&node, &["--tls".into(), "--cacert".into(), ca])
        .await
        .expect("start a TLS-only Redis Cluster")
}

/// Every operation, the principal index and the event listener, on `store`.
async fn exercise(store: &RedisStore) {
    let mut events = store.subscribe().unwrap();
    let mut session = store.new_session();
    session.set_principal(Some("ann")).unwrap();
    session.insert("a", &1).unwrap();
    store.create(&mut session).await.unwrap();
    let mut loaded = store.find(session.id()).await.unwrap().expect("created");
    loaded.insert("b", &2).unwrap();
    store.save(&mut loaded).await.unwrap();
    store.touch(session.id()).await.unwrap();
    assert_eq!(store.find_by_principal("ann").await.unwrap().len(), 1);
    let reloaded = store.find(session.id()).await.unwrap().expect("saved");
    assert_eq!(reloaded.get::<i32>("b").unwrap(), Some(2));
    let created = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(SessionEvent::Created(key)) = events.recv().await {
                return key;
            }
        }
    })
    .await
    .expect("the listener heard no event over TLS");
    assert_eq!(created, session.key());
    store.delete(session.id()).await.unwrap();
    assert!(store.find(session.id()).await.unwrap().is_none());
}

/// Over TLS with the CA from the configuration, standalone and Cluster: every operation and
/// the event listener work; without the CA the server's certificate is refused (verification
/// is on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_standalone_and_cluster() {
    if provision(Backend::Redis).await.is_none() {
        assert!(!is_required(Backend::Redis));
        return;
    }
    let dir = std::env::temp_dir().join(namespace("session-redis-tls"));
    let certificates = match TestCertificates::make(&dir) {
        Ok(certificates) => certificates,
        Err(error) => {
            assert!(!is_required(Backend::Redis), "{error}");
            return;
        }
    };
    let server = ServerProcess::start(ServerSpec::redis_tls(&certificates))
        .await
        .expect("start a TLS redis-server");
    let config = Config::from_url(&format!(
        "{}?session_prefix={}:",
        server.url(),
        namespace("tls")
    ))
    .unwrap();
    assert!(
        RedisStore::open(config.clone(), SessionSettings::default())
            .await
            .is_err(),
        "a certificate from an unknown CA was accepted"
    );

    let store = RedisStore::open(
        config.with_tls_ca_file(certificates.ca()),
        SessionSettings::default(),
    )
    .await
    .expect("open over TLS");
    exercise(&store).await;
    drop(server);

    // The same over a Cluster whose nodes and bus speak only TLS.
    let cluster = tls_cluster(&certificates).await;
    let config = Config::from_url(&format!(
        "{}?session_prefix={}:",
        cluster.url,
        namespace("tls-cluster")
    ))
    .unwrap()
    .with_tls_ca_file(certificates.ca());
    let store = RedisStore::open(config, SessionSettings::default())
        .await
        .expect("open a Cluster over TLS");
    exercise(&store).await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
