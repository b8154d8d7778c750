//! `rediss://` against a real redis-server speaking TLS with a certificate from a throwaway CA.
#![cfg(feature = "tls")]
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use conformance_tests::namespace;
use conformance_tests::servers::{
    is_required, provision, start_redis_cluster_of, Backend, Probe, Provisioned, ServerProcess,
    ServerSpec,
};
use session_core::{SessionEvent, SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::{Config, RedisStore};

/// A CA and a server certificate for 127.0.0.1 in `dir`; `false` when openssl is missing.
fn make_certificates(dir: &Path) -> bool {
    let script = r#"
        set -e
        cd "$1"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=session-test-ca \
            -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
            -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile san.ext -out server.crt 2>/dev/null
        chmod 644 server.key
    "#;
    Command::new("sh")
        .args(["-c", script, "certificates"])
        .arg(dir)
        .status()
        .is_ok_and(|status| status.success())
}

/// A redis-server with only a TLS port, presenting the certificate in `dir`.
fn tls_server(dir: &Path) -> ServerSpec {
    let file = |name: &str| dir.join(name).display().to_string();
    let mut spec = Backend::Redis.spec();
    spec.args = vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        "{port}".into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--tls-cert-file".into(),
        file("server.crt"),
        "--tls-key-file".into(),
        file("server.key"),
        "--tls-ca-cert-file".into(),
        file("ca.crt"),
        "--tls-auth-clients".into(),
        "no".into(),
        "--dir".into(),
        "{dir}".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
    ];
    spec.probe = Probe::Command(
        [
            "redis-cli",
            "--tls",
            "--cacert",
            &file("ca.crt"),
            "-p",
            "{port}",
            "ping",
        ]
        .map(String::from)
        .to_vec(),
    );
    spec.url = "rediss://127.0.0.1:{port}".into();
    spec
}

/// Three TLS-only cluster nodes (the cluster bus on TLS too) joined into one Cluster.
async fn tls_cluster(dir: &Path) -> Provisioned {
    let mut node = tls_server(dir).redis_cluster_node();
    node.args.extend(["--tls-cluster", "yes"].map(String::from));
    let ca = dir.join("ca.crt").display().to_string();
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
    std::fs::create_dir_all(&dir).unwrap();
    let made = make_certificates(&dir);
    assert!(
        made || !is_required(Backend::Redis),
        "cannot make test certificates (is openssl installed?)"
    );
    if !made {
        return;
    }
    let server = ServerProcess::start(tls_server(&dir))
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
        config.with_tls_ca_file(dir.join("ca.crt")),
        SessionSettings::default(),
    )
    .await
    .expect("open over TLS");
    exercise(&store).await;
    drop(server);

    // The same over a Cluster whose nodes and bus speak only TLS.
    let cluster = tls_cluster(&dir).await;
    let config = Config::from_url(&format!(
        "{}?session_prefix={}:",
        cluster.url,
        namespace("tls-cluster")
    ))
    .unwrap()
    .with_tls_ca_file(dir.join("ca.crt"));
    let store = RedisStore::open(config, SessionSettings::default())
        .await
        .expect("open a Cluster over TLS");
    exercise(&store).await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
