//! The provisioning harness against real server binaries: start, probe, crash, restart.
// Test code: a failed expectation panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use session_test_harness::{is_required, provision, Backend, ServerProcess};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Sends one inline command and returns the first reply line.
async fn ask(port: u16, command: &str) -> std::io::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(command.as_bytes()).await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    Ok(line.trim_end().to_owned())
}

/// A dedicated server stops answering when stopped and answers again, on the same port and
/// without its old data (a throwaway server), after a restart.
async fn crash_and_restart(backend: Backend, set: &str, get: &str, stored: &str) {
    if provision(backend).await.is_none() {
        assert!(!is_required(backend));
        return;
    }
    let server = ServerProcess::start(backend.spec()).await.unwrap();
    let port = server.port();
    assert_eq!(ask(port, set).await.unwrap(), stored);
    server.stop();
    let refused = tokio::time::timeout(Duration::from_secs(2), ask(port, get)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a stopped server answered: {refused:?}"
    );
    server.restart().await.unwrap();
    assert_eq!(server.port(), port);
    assert!(
        ask(port, get).await.unwrap().len() <= 5,
        "a restarted throwaway server kept data"
    );
}

#[tokio::test]
async fn redis_server_can_be_crashed_and_restarted() {
    crash_and_restart(Backend::Redis, "SET k v\r\n", "GET k\r\n", "+OK").await;
}

#[tokio::test]
async fn memcached_can_be_crashed_and_restarted() {
    crash_and_restart(
        Backend::Memcached,
        "set k 0 0 1\r\nv\r\n",
        "get k\r\n",
        "STORED",
    )
    .await;
}

#[tokio::test]
async fn shared_server_is_started_once_per_binary() {
    let (Some(a), Some(b)) = (
        provision(Backend::Redis).await,
        provision(Backend::Redis).await,
    ) else {
        assert!(!is_required(Backend::Redis));
        return;
    };
    assert_eq!(a.url, b.url);
}

#[test]
fn env_variable_names_follow_the_convention() {
    assert_eq!(Backend::Redis.url_variable(), "SESSION_TEST_REDIS_URL");
    assert_eq!(
        Backend::Memcached.url_variable(),
        "SESSION_TEST_MEMCACHED_URL"
    );
    // Several node URLs, as the README and the Redis issue name it.
    assert_eq!(
        Backend::RedisCluster.url_variable(),
        "SESSION_TEST_REDIS_CLUSTER_URLS"
    );
}
