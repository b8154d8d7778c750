//! What an operator reads when the store fails under the layer: the store, the operation and
//! the driver's cause, on one log line. Its own test binary, because it installs the process's
//! global log subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use session_axum::{LayerConfig, SessionError, SessionHandle, SessionLayer};
use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_test_harness::{is_required, provision, Backend, ServerProcess};
use tower::ServiceExt as _;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn read(session: SessionHandle) -> Result<String, SessionError> {
    Ok(session.get::<String>("user").await?.unwrap_or_default())
}

/// Stores a session in `store`, then runs a request with its cookie after `stop` took the
/// store's server down, and returns the log line the layer wrote.
async fn logged_failure(
    store: Arc<dyn SessionRepository>,
    stop: impl FnOnce(),
    captured: &Captured,
) -> String {
    let mut session = store.new_session();
    session.insert("user", "morris").unwrap();
    store.create(&mut session).await.unwrap();
    let app = Router::new()
        .route("/", get(read))
        .layer(SessionLayer::new(store, LayerConfig::default()));
    stop();
    let request = Request::builder()
        .uri("/")
        .header(
            header::COOKIE,
            format!("SESSION={}", session.id().expose_secret()),
        )
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    captured.0.lock().unwrap().clear();
    let line = log
        .lines()
        .find(|line| line.contains("session error"))
        .unwrap_or_else(|| panic!("no session error logged: {log}"))
        .to_owned();
    assert!(!line.contains(session.id().expose_secret()), "{line}");
    line
}

/// The driver's own words follow the store and operation: `... (store, find): <cause>`.
fn assert_names_store_operation_and_cause(line: &str, store: &str) {
    let context = format!("({store}, find): ");
    let cause = line
        .split(context.as_str())
        .nth(1)
        .unwrap_or_else(|| panic!("no `{context}` in {line}"))
        .to_ascii_lowercase();
    assert!(
        [
            "connection",
            "refused",
            "broken pipe",
            "reset",
            "closed",
            "terminat",
            "timed out",
            "pool"
        ]
        .iter()
        .any(|words| cause.contains(words)),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_is_logged_with_store_operation_and_cause() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    if provision(Backend::Redis).await.is_some() {
        let server = ServerProcess::start(Backend::Redis.spec()).await.unwrap();
        let config = session_redis::Config::from_url(&server.url())
            .unwrap()
            .with_timeout(Duration::from_millis(500));
        let store = session_redis::RedisStore::open(config, SessionSettings::default())
            .await
            .unwrap();
        let line = logged_failure(Arc::new(store), || server.stop(), &captured).await;
        assert_names_store_operation_and_cause(&line, "redis");
    } else {
        assert!(!is_required(Backend::Redis));
    }

    if provision(Backend::Postgres).await.is_some() {
        let server = ServerProcess::start(Backend::Postgres.spec())
            .await
            .unwrap();
        let config = session_sql::Config::from_url(&server.url())
            .unwrap()
            .with_timeout(Duration::from_millis(1_000))
            .with_cleanup_interval(None);
        let store = session_sql::SqlStore::open(config, SessionSettings::default())
            .await
            .unwrap();
        let line = logged_failure(Arc::new(store), || server.stop(), &captured).await;
        assert_names_store_operation_and_cause(&line, "postgres");
    } else {
        assert!(!is_required(Backend::Postgres));
    }
}
