//! Transient server states provoked on real servers: each must be a retryable error that says
//! what happened, and the store must work once the state has passed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::time::Duration;

use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_sql::{Config, SqlStore};
use session_test_harness::{is_required, provision, Backend, ServerProcess, ServerSpec};
use sqlx::Connection;

/// Every connection slot of a server is taken: opening a store is a retryable error naming the
/// server's complaint, and works once a slot is free.
async fn too_many_connections(backend: Backend, spec: ServerSpec, complaint: &str) {
    if provision(backend).await.is_none() {
        assert!(!is_required(backend));
        return;
    }
    sqlx::any::install_default_drivers();
    let server = ServerProcess::start(spec).await.unwrap();
    let url = server.url();
    let mut held = Vec::new();
    loop {
        match sqlx::AnyConnection::connect(&url).await {
            Ok(connection) => held.push(connection),
            Err(error) => {
                assert!(
                    error.to_string().to_lowercase().contains(complaint),
                    "the server refused with {error}"
                );
                break;
            }
        }
        assert!(held.len() < 64, "the server took every connection offered");
    }
    let config = Config::from_url(&url)
        .unwrap()
        .with_timeout(Duration::from_secs(2))
        .with_cleanup_interval(None);
    let error = SqlStore::open(config.clone(), SessionSettings::default())
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{}", error.report());
    let report = error.report().to_string();
    assert!(report.to_lowercase().contains(complaint), "{report}");

    drop(held);
    // The server frees the slots once it has seen the sockets close, a moment later: the same
    // retryable error until then, and a working store after.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match SqlStore::open(config.clone(), SessionSettings::default()).await {
            Ok(store) => break store,
            Err(error) if error.is_retryable() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the store did not open once connections were free: {error}"),
        }
    };
    let mut session = store.new_session();
    store.create(&mut session).await.unwrap();
    assert!(store.find(session.id()).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_every_connection_taken() {
    let mut spec = Backend::Postgres.spec();
    for arg in &mut spec.args {
        if arg.starts_with("max_connections=") {
            *arg = "max_connections=6".into();
        }
    }
    too_many_connections(Backend::Postgres, spec, "too many clients").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_with_every_connection_taken() {
    let mut spec = Backend::MySql.spec();
    spec.args.push("--max-connections=4".into());
    too_many_connections(Backend::MySql, spec, "too many connections").await;
}
