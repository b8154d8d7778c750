//! The save script's paths on a real Redis: the write-only fast path is taken only for a copy
//! nobody wrote or touched since its load.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use std::time::{Duration, SystemTime};

use conformance_tests::namespace;
use conformance_tests::servers::{provision, Backend};
use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::redis::{self, AsyncCommands};
use session_redis::{Config, RedisStore};

/// The store and a plain connection to its server; `None` when no server.
async fn setup() -> Option<(RedisStore, redis::aio::MultiplexedConnection)> {
    let server = provision(Backend::Redis).await?;
    let config = Config::from_url(&server.url)
        .expect("test URL")
        .with_prefix(format!("{}:", namespace("scripts")));
    let store = RedisStore::open(config, SessionSettings::default())
        .await
        .expect("store");
    let connection = redis::Client::open(server.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    Some((store, connection))
}

/// A save from a copy loaded before another instance touched the session never moves the
/// stored access time back, even when that instance's clock runs ahead of the saver's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_after_a_later_touch_keeps_the_later_access_time() {
    let Some((store, mut connection)) = setup().await else {
        return;
    };
    let mut session = store.new_session();
    store.create(&mut session).await.unwrap();
    let mut loaded = store.find(session.id()).await.unwrap().expect("created");
    loaded.insert("a", &1).unwrap();

    // A touch stamped a minute ahead of this instance's clock: the metadata field as the
    // touch script would leave it.
    let redis_key = store.session_key(&session.key());
    let meta: String = connection.hget(&redis_key, "\x01m").await.unwrap();
    let mut words: Vec<String> = meta.split(' ').map(str::to_owned).collect();
    let ahead = session.last_accessed_at_ms() + 60_000;
    words[2] = ahead.to_string();
    store
        .write_raw(&session.key(), words.join(" ").as_bytes())
        .await
        .unwrap();

    store.save(&mut loaded).await.unwrap();
    let stored = store.find(session.id()).await.unwrap().expect("live");
    assert_eq!(stored.get::<i32>("a").unwrap(), Some(1));
    assert!(
        stored.last_accessed_at() >= SystemTime::UNIX_EPOCH + Duration::from_millis(ahead),
        "the save moved the access time back from the later touch"
    );
}
