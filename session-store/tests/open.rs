//! Every store opens from its URL and behaves the same through `Arc<dyn SessionRepository>`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;

use session_conformance::namespace;
use session_core::{Error, SessionRepository, SessionRepositoryExt};
use session_store::{open, StoreConfig};
use session_test_harness::{provision, Backend};

/// The code an application would run, whatever the store.
async fn round_trip(store: Arc<dyn SessionRepository>) {
    let mut session = store.new_session();
    session.insert("user", "morris").unwrap();
    session.set_principal(Some("morris")).unwrap();
    store.create(&mut session).await.unwrap();
    let mut loaded = store.find(session.id()).await.unwrap().expect("created");
    assert_eq!(
        loaded.get::<String>("user").unwrap().as_deref(),
        Some("morris")
    );
    loaded.insert("theme", "dark").unwrap();
    store.save(&mut loaded).await.unwrap();
    if store.capabilities().principal_index {
        assert_eq!(store.find_by_principal("morris").await.unwrap().len(), 1);
    } else {
        assert!(matches!(
            store.find_by_principal("morris").await,
            Err(Error::Unsupported(_))
        ));
    }
    store.delete(session.id()).await.unwrap();
    assert!(store.find(session.id()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_sqlite_open_by_url() {
    round_trip(open("memory://").await.unwrap()).await;
    let path = std::env::temp_dir().join(format!("{}.db", namespace("store_facade")));
    round_trip(open(&format!("sqlite://{}", path.display())).await.unwrap()).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stores_open_by_url() {
    for backend in [
        Backend::Postgres,
        Backend::MySql,
        Backend::Redis,
        Backend::RedisCluster,
        Backend::Memcached,
        Backend::MongoDb,
    ] {
        let Some(server) = provision(backend).await else {
            continue;
        };
        let url = match backend {
            Backend::Redis | Backend::RedisCluster | Backend::Memcached => {
                let (list, _) = server.url.split_once('?').unwrap_or((&server.url, ""));
                format!("{list}?session_prefix={}:", namespace("facade"))
            }
            Backend::MongoDb => {
                format!("{}&session_collection={}", server.url, namespace("facade"))
            }
            _ => format!("{}?session_table={}", server.url, namespace("facade")),
        };
        round_trip(open(&url).await.unwrap()).await;
    }
}

#[tokio::test]
async fn unknown_schemes_and_bad_settings_are_clear_errors() {
    for url in ["http://example.com", "nonsense"] {
        match open(url).await {
            Err(Error::Config(message)) => assert!(message.contains("scheme"), "{message}"),
            other => panic!("{url}: expected Config, got {other:?}"),
        }
    }
    match open("mongodb://127.0.0.1:27017").await {
        Err(Error::Config(message)) => assert!(message.contains("database"), "{message}"),
        other => panic!("expected Config, got {other:?}"),
    }
}

/// Every store refuses an unknown option the same way: a configuration error that names the
/// option and the store's own options, before any connection is made.
#[tokio::test]
async fn unknown_options_are_the_same_error_on_every_store() {
    for (url, known) in [
        ("memory://?session_nope=1", "session_capacity_bytes"),
        (
            "sqlite:///nonexistent/dir/x.db?session_nope=1",
            "session_table",
        ),
        (
            "postgres://u@127.0.0.1:1/db?session_nope=1",
            "session_table",
        ),
        ("mysql://u@127.0.0.1:1/db?session_nope=1", "session_table"),
        ("redis://127.0.0.1:1?session_nope=1", "session_prefix"),
        ("redis://127.0.0.1:1?nope=1", "session_prefix"),
        ("memcache://127.0.0.1:1?session_nope=1", "session_prefix"),
        (
            "mongodb://127.0.0.1:1/db?session_nope=1",
            "session_collection",
        ),
    ] {
        match open(url).await {
            Err(Error::Config(message)) => {
                assert!(message.contains("nope"), "{url}: {message}");
                assert!(message.contains(known), "{url}: {message}");
            }
            other => panic!("{url}: expected Config, got {other:?}"),
        }
    }
}

#[test]
fn a_wrong_enum_value_names_the_accepted_ones() {
    let error = serde_json::from_str::<StoreConfig>(r#"{"url": "memory://", "codec": "yaml"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("yaml") && error.contains("msgpack") && error.contains("json"),
        "{error}"
    );
    let error =
        serde_json::from_str::<StoreConfig>(r#"{"url": "memory://", "save_mode": "never"}"#)
            .unwrap_err()
            .to_string();
    assert!(
        error.contains("on-set") && error.contains("always"),
        "{error}"
    );
}

#[test]
fn config_comes_from_json() {
    let config: StoreConfig = serde_json::from_str(
        r#"{"url": "memory://", "idle_timeout_secs": 60, "codec": "json", "save_mode": "always", "concurrency": "optimistic"}"#,
    )
    .unwrap();
    let settings = config.settings().unwrap();
    assert_eq!(settings.idle_timeout.as_secs(), 60);
    assert_eq!(settings.codec.format(), session_core::FORMAT_JSON);
    assert!(serde_json::from_str::<StoreConfig>(r#"{"url": "memory://", "typo": 1}"#).is_err());
}

#[tokio::test]
async fn instrument_wraps_what_it_opens() {
    let config: StoreConfig =
        serde_json::from_str(r#"{"url": "memory://", "instrument": true}"#).unwrap();
    let store = session_store::open_with(&config).await.unwrap();
    assert!(
        format!("{store:?}").starts_with("Instrumented"),
        "{store:?}"
    );
    round_trip(store).await;
    let plain = open("memory://").await.unwrap();
    assert!(!format!("{plain:?}").starts_with("Instrumented"));
    let spans_only: StoreConfig =
        serde_json::from_str(r#"{"url": "memory://", "instrument": true, "metrics": false}"#)
            .unwrap();
    let store = session_store::open_with(&spans_only).await.unwrap();
    let shown = format!("{store:?}");
    assert!(
        shown.starts_with("Instrumented") && shown.contains("metrics: false"),
        "{shown}"
    );
    assert!(
        format!("{:?}", session_store::open_with(&config).await.unwrap()).contains("metrics: true")
    );
    round_trip(store).await;
}
