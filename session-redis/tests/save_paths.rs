//! The save script's paths (the hash layout, whatever the server) on a real Redis: the
//! write-only fast path is taken only for a copy nobody wrote or touched since its load; a
//! lost race merges in the client; a hash of the earlier per-attribute layout is read and
//! rewritten packed. The string layout's save is in `layouts.rs`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::time::{Duration, SystemTime};

use session_core::raw::SessionInternals;
use session_core::testing::WriteRaw;
use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::redis::AsyncCommands;
use session_redis::Layout;

/// A save from a copy loaded before another instance touched the session never moves the
/// stored access time back, even when that instance's clock runs ahead of the saver's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_after_a_later_touch_keeps_the_later_access_time() {
    let Some((store, mut connection, _)) =
        common::store_and_connection_in("paths", SessionSettings::default(), Layout::Hash).await
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

/// A session in the earlier layout (a hash field per attribute, metadata without ` p`) is
/// read with its attributes, and its first save rewrites it packed: the attributes move into
/// `\x01a`, no attribute field is left, nothing is lost, and the principal index still lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_the_earlier_layout_is_read_and_rewritten_packed() {
    let Some((store, mut connection, _)) =
        common::store_and_connection_in("layout", SessionSettings::default(), Layout::Hash).await
    else {
        return;
    };
    let mut session = store.new_session();
    session.insert("a", &1).unwrap();
    session.insert("b", &"two").unwrap();
    session.set_principal(Some("layout-user")).unwrap();
    store.create(&mut session).await.unwrap();

    // Turn the stored hash into the earlier layout.
    let redis_key = store.session_key(&session.key());
    let meta: String = connection.hget(&redis_key, "\x01m").await.unwrap();
    let (earlier_meta, token) = meta
        .rsplit_once(" p")
        .expect("packed metadata ends in ` p<token>`");
    let field = format!("\x01a{token}");
    let packed: Vec<u8> = connection.hget(&redis_key, &field).await.unwrap();
    let attributes = session_core::raw::decode_attributes(&packed).unwrap();
    let _: () = connection.hdel(&redis_key, &field).await.unwrap();
    let _: () = connection
        .hset(&redis_key, "\x01m", earlier_meta)
        .await
        .unwrap();
    for (name, value) in attributes.iter() {
        let _: () = connection
            .hset(&redis_key, name, value.to_vec())
            .await
            .unwrap();
    }

    // Read by another store (no near-cache copy), with both attributes.
    let fresh = session_redis::RedisStore::open(store.config().clone(), SessionSettings::default())
        .await
        .unwrap();
    let mut loaded = fresh.find(session.id()).await.unwrap().expect("readable");
    assert_eq!(loaded.get::<i32>("a").unwrap(), Some(1));
    assert_eq!(loaded.get::<String>("b").unwrap().as_deref(), Some("two"));

    loaded.insert("c", &3).unwrap();
    fresh.save(&mut loaded).await.unwrap();
    let meta: String = connection.hget(&redis_key, "\x01m").await.unwrap();
    let (_, token) = meta.rsplit_once(" p").expect("rewritten packed");
    let fields: Vec<String> = connection.hkeys(&redis_key).await.unwrap();
    let mut fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    fields.sort_unstable();
    let packed = format!("\x01a{token}");
    assert_eq!(
        fields,
        [packed.as_str(), "\x01m", "\x01p", "\x01x"],
        "rewritten packed"
    );

    let stored = store.find(session.id()).await.unwrap().expect("live");
    assert_eq!(stored.get::<i32>("a").unwrap(), Some(1));
    assert_eq!(stored.get::<String>("b").unwrap().as_deref(), Some("two"));
    assert_eq!(stored.get::<i32>("c").unwrap(), Some(3));
    let listed = store.find_by_principal("layout-user").await.unwrap();
    assert_eq!(listed.len(), 1);
}

/// A save from a copy another instance saved over since its load loses the version-checked
/// write, merges into the hash the script answered with, and keeps both instances' changes;
/// an optimistic save in the same position is a conflict and writes nothing. Small attributes
/// travel inside the save script's call, larger ones are staged by an `HSET` in a transaction
/// around it; both paths run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_write_merges_into_the_stored_session() {
    lost_write_merges(0).await;
}

/// [`a_lost_write_merges_into_the_stored_session`] with attributes over the inline limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_write_of_staged_attributes_merges_into_the_stored_session() {
    lost_write_merges(8 * 1024).await;
}

async fn lost_write_merges(filler: usize) {
    let Some((store, mut connection, _)) =
        common::store_and_connection_in("merge", SessionSettings::default(), Layout::Hash).await
    else {
        return;
    };
    let other = session_redis::RedisStore::open(store.config().clone(), SessionSettings::default())
        .await
        .unwrap();
    let mut session = store.new_session();
    session.insert("kept", &0).unwrap();
    if filler > 0 {
        session.insert("filler", &"f".repeat(filler)).unwrap();
    }
    store.create(&mut session).await.unwrap();
    let mut mine = store.find(session.id()).await.unwrap().expect("live");
    let mut theirs = other.find(session.id()).await.unwrap().expect("live");
    theirs.insert("theirs", &1).unwrap();
    theirs.remove("kept");
    other.save(&mut theirs).await.unwrap();
    mine.insert("mine", &2).unwrap();
    store.save(&mut mine).await.unwrap();
    // Saved again from the same copy: it merged, so it is not what is stored, and this save
    // must merge again rather than write the copy over the other store's change.
    mine.insert("again", &3).unwrap();
    store.save(&mut mine).await.unwrap();

    let redis_key = store.session_key(&session.key());
    let meta: String = connection.hget(&redis_key, "\x01m").await.unwrap();
    assert!(
        meta.starts_with("3 "),
        "three saves after the create (version 0): {meta}"
    );
    for reader in [&store, &other] {
        let stored = reader.find(session.id()).await.unwrap().expect("live");
        assert_eq!(stored.get::<i32>("theirs").unwrap(), Some(1));
        assert_eq!(stored.get::<i32>("mine").unwrap(), Some(2));
        assert_eq!(stored.get::<i32>("again").unwrap(), Some(3));
        assert_eq!(stored.get::<i32>("kept").unwrap(), None);
    }

    let optimistic =
        SessionSettings::default().with_concurrency(session_core::Concurrency::Optimistic);
    let strict = store.with_settings(optimistic.clone());
    let strict_other = other.with_settings(optimistic);
    let mut mine = strict.find(session.id()).await.unwrap().expect("live");
    let mut theirs = strict_other
        .find(session.id())
        .await
        .unwrap()
        .expect("live");
    theirs.insert("theirs", &10).unwrap();
    strict_other.save(&mut theirs).await.unwrap();
    mine.insert("mine", &20).unwrap();
    let error = strict.save(&mut mine).await.unwrap_err();
    assert!(
        matches!(error, session_core::Error::Conflict { .. }),
        "{error:?}"
    );
    let stored = store.find(session.id()).await.unwrap().expect("live");
    assert_eq!(stored.get::<i32>("mine").unwrap(), Some(2));
    assert_eq!(stored.get::<i32>("theirs").unwrap(), Some(10));

    // Lost and refused writes staged their attributes and left none behind.
    let fields: Vec<String> = connection.hkeys(&redis_key).await.unwrap();
    let packed = fields
        .iter()
        .filter(|name| name.starts_with("\x01a"))
        .count();
    assert_eq!(packed, 1, "{fields:?}");

    // A save of a session deleted since its load stages nothing that outlives it.
    let mut stale = store.find(session.id()).await.unwrap().expect("live");
    other.delete(session.id()).await.unwrap();
    stale.insert("late", &1).unwrap();
    let error = store.save(&mut stale).await.unwrap_err();
    assert!(matches!(error, session_core::Error::NotFound), "{error:?}");
    let exists: bool = connection.exists(&redis_key).await.unwrap();
    assert!(!exists, "a save recreated the deleted session's key");
}

/// Inline saves write their attributes under one field name and staged saves under a fresh
/// one: a session that grows past the inline limit and shrinks back keeps exactly one
/// attributes field, the one its metadata names, with every value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_keep_one_field_between_inline_and_staged_saves() {
    let Some((store, mut connection, _)) =
        common::store_and_connection_in("fields", SessionSettings::default(), Layout::Hash).await
    else {
        return;
    };
    let mut session = store.new_session();
    session.insert("n", &0).unwrap();
    store.create(&mut session).await.unwrap();
    let redis_key = store.session_key(&session.key());
    let reader = other_reader(&store).await;
    let mut names = Vec::new();
    // Inline, inline again (the same field), staged, staged again, inline.
    for (step, filler) in [0, 0, 8 * 1024, 8 * 1024, 0].into_iter().enumerate() {
        let mut loaded = store.find(session.id()).await.unwrap().expect("live");
        loaded.insert("n", &(step + 1)).unwrap();
        if filler > 0 {
            loaded.insert("filler", &"f".repeat(filler)).unwrap();
        } else {
            loaded.remove("filler");
        }
        store.save(&mut loaded).await.unwrap();

        let fields: Vec<String> = connection.hkeys(&redis_key).await.unwrap();
        let packed: Vec<&String> = fields.iter().filter(|f| f.starts_with("\x01a")).collect();
        assert_eq!(packed.len(), 1, "step {step}: {fields:?}");
        let meta: String = connection.hget(&redis_key, "\x01m").await.unwrap();
        assert!(
            meta.ends_with(&format!(" p{}", &packed[0][2..])),
            "step {step}: the metadata {meta:?} names another field than {packed:?}"
        );
        names.push(packed[0].clone());
        let stored = reader.find(session.id()).await.unwrap().expect("live");
        assert_eq!(stored.get::<usize>("n").unwrap(), Some(step + 1));
        assert_eq!(stored.contains("filler"), filler > 0, "step {step}");
    }
    assert_eq!(
        names[0], names[1],
        "inline saves rewrite one field in place"
    );
    assert_ne!(names[1], names[2], "a staged save writes a fresh field");
    assert_ne!(names[2], names[3], "every staged save writes a fresh field");
    assert_eq!(names[4], names[0], "back inline, back to the inline field");
}

/// Another store on the same server: it never holds `store`'s own copies, and every save
/// here moves the version its near cache checks, so its reads show what is stored.
async fn other_reader(store: &session_redis::RedisStore) -> session_redis::RedisStore {
    session_redis::RedisStore::open(store.config().clone(), SessionSettings::default())
        .await
        .unwrap()
}
