//! The save script's paths on a real Redis: the write-only fast path is taken only for a copy
//! nobody wrote or touched since its load.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::time::{Duration, SystemTime};

use session_core::raw::SessionInternals;
use session_core::testing::WriteRaw;
use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::redis::AsyncCommands;

/// A save from a copy loaded before another instance touched the session never moves the
/// stored access time back, even when that instance's clock runs ahead of the saver's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_after_a_later_touch_keeps_the_later_access_time() {
    let Some((store, mut connection, _)) =
        common::store_and_connection("paths", SessionSettings::default()).await
    else {
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
