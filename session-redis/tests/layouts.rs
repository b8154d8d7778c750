//! The two layouts on a real server: which one a store picks, sessions of both on one server
//! read, saved, touched, rotated, listed and deleted by stores of either, and the string
//! layout's save and touch as they leave the stored value. They run on servers with `SET …
//! IFEQ` (CI's pass on Valkey, where `SESSION_TEST_REQUIRE_IFEQ` makes a server without it
//! fail) and without it (Redis 7 in CI's main pass: string saves go through a script there).
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::time::Duration;

use session_core::raw::SessionInternals;
use session_core::{Error, Session, SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::redis::{self, AsyncCommands};
use session_redis::{Comparison, Layout, RedisStore};

/// The comparison a store of the string layout should find on the server, from its `INFO`
/// (the store finds out by trying the commands, the test by the version): `SET … IFDEQ` on
/// Redis 8.4 or later, `SET … IFEQ` on Valkey 8.1 or later, else a script.
async fn expected_comparison(connection: &mut redis::aio::MultiplexedConnection) -> Comparison {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(connection)
        .await
        .unwrap();
    let version = |field: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(field))
            .map(|version| {
                let mut parts = version
                    .trim()
                    .split('.')
                    .map(|part| part.parse::<u32>().unwrap_or(0));
                (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
            })
    };
    // Valkey also answers a `redis_version` (7.2.4, the Redis it forked from).
    let comparison = match version("valkey_version:") {
        Some(valkey) if valkey >= (8, 1) => Comparison::Value,
        Some(_) => Comparison::Script,
        None => match version("redis_version:") {
            Some(redis) if redis >= (8, 4) => Comparison::Digest,
            _ => Comparison::Script,
        },
    };
    // CI's passes on Valkey and Redis 8 set these, so that these cases cannot pass by
    // skipping there.
    if std::env::var_os("SESSION_TEST_REQUIRE_IFEQ").is_some() {
        assert_ne!(
            comparison,
            Comparison::Script,
            "SESSION_TEST_REQUIRE_IFEQ is set but the server has no SET … IFEQ"
        );
    }
    if std::env::var_os("SESSION_TEST_REQUIRE_IFDEQ").is_some() {
        assert_eq!(
            comparison,
            Comparison::Digest,
            "SESSION_TEST_REQUIRE_IFDEQ is set but the server has no SET … IFDEQ"
        );
    }
    comparison
}

/// A store of `layout` on the same server and prefix as `store`.
async fn other(store: &RedisStore, layout: Layout) -> RedisStore {
    RedisStore::open(
        store.config().clone().with_layout(layout),
        SessionSettings::default(),
    )
    .await
    .unwrap()
}

async fn key_type(
    connection: &mut redis::aio::MultiplexedConnection,
    store: &RedisStore,
    session: &Session,
) -> String {
    redis::cmd("TYPE")
        .arg(store.session_key(&session.key()))
        .query_async(connection)
        .await
        .unwrap()
}

/// `Auto` writes strings on every server, `Hash` hashes. Where the server has no `IFEQ` (Redis
/// 7) strings are saved by a script, and values too large to pass to it are staged and renamed
/// into place: written, merged after a lost race, no staging key left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_the_string_layout() {
    let Some((store, mut connection, _)) =
        common::store_and_connection("pick", SessionSettings::default()).await
    else {
        return;
    };
    let mut session = store.new_session();
    session.insert("a", &1).unwrap();
    store.create(&mut session).await.unwrap();
    assert_eq!(store.layout(), Layout::String);
    assert_eq!(
        store.comparison(),
        expected_comparison(&mut connection).await
    );
    assert_eq!(key_type(&mut connection, &store, &session).await, "string");
    let hashes = other(&store, Layout::Hash).await;
    assert_eq!(hashes.layout(), Layout::Hash);
    assert_eq!(
        hashes.comparison(),
        store.comparison(),
        "a store of the hash layout saves string sessions as one of the string layout does"
    );
    let mut hashed = hashes.new_session();
    hashes.create(&mut hashed).await.unwrap();
    assert_eq!(key_type(&mut connection, &hashes, &hashed).await, "hash");

    let mut loaded = store.find(session.id()).await.unwrap().unwrap();
    loaded.insert("a", &2).unwrap();
    store.save(&mut loaded).await.unwrap();
    // Values too large to pass to the script are staged and renamed into place: written,
    // merged after a lost race, and no staging key left behind.
    let big = "x".repeat(64 * 1024);
    let mut first = store.find(session.id()).await.unwrap().unwrap();
    let mut second = store.find(session.id()).await.unwrap().unwrap();
    first.insert("big", &big).unwrap();
    store.save(&mut first).await.unwrap();
    second.insert("other", &3).unwrap();
    store.save(&mut second).await.unwrap();
    second.insert("other", &4).unwrap();
    store.save(&mut second).await.unwrap();
    let reloaded = hashes.find(session.id()).await.unwrap().unwrap();
    assert_eq!(reloaded.get::<String>("big").unwrap(), Some(big));
    assert_eq!(reloaded.get::<i32>("other").unwrap(), Some(4));
    assert_eq!(reloaded.get::<i32>("a").unwrap(), Some(2));
    assert_eq!(key_type(&mut connection, &store, &session).await, "string");
    let staging = store.session_key(&session.key()).replacen("s:{", "w:{", 1);
    let left: bool = redis::cmd("EXISTS")
        .arg(&staging)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!left, "a staging key was left behind");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.session_key(&session.key()))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(
        ttl > 0,
        "the renamed value keeps the session's expiry: {ttl}"
    );
}

/// Every operation of a store of one layout works on a session of the other, which keeps its
/// layout: instances configured differently, or a server upgraded with its data, share the
/// sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_of_either_layout_share_the_sessions_of_both() {
    let Some((store, mut connection, _)) =
        common::store_and_connection("mixed", SessionSettings::default()).await
    else {
        return;
    };
    let hashes = other(&store, Layout::Hash).await;
    let strings = other(&store, Layout::String).await;
    for (writer, reader, layout) in [(&hashes, &strings, "hash"), (&strings, &hashes, "string")] {
        let principal = format!("mixed-{layout}");
        let mut session = writer.new_session();
        session.insert("a", &1).unwrap();
        session.set_principal(Some(&principal)).unwrap();
        writer.create(&mut session).await.unwrap();
        assert_eq!(key_type(&mut connection, writer, &session).await, layout);

        let mut loaded = reader.find(session.id()).await.unwrap().expect("readable");
        assert_eq!(loaded.get::<i32>("a").unwrap(), Some(1));
        loaded.insert("b", &2).unwrap();
        reader.save(&mut loaded).await.unwrap();
        // Saved again from the same copy: the reader's fast path for that layout.
        loaded.insert("c", &3).unwrap();
        reader.save(&mut loaded).await.unwrap();
        reader.touch(session.id()).await.unwrap();
        assert_eq!(key_type(&mut connection, writer, &session).await, layout);

        // The writer's own copy is behind: its save merges.
        session.insert("d", &4).unwrap();
        writer.save(&mut session).await.unwrap();
        for store in [writer, reader] {
            let stored = store.find(session.id()).await.unwrap().expect("live");
            let values: Vec<Option<i32>> = ["a", "b", "c", "d"]
                .iter()
                .map(|name| stored.get(name).unwrap())
                .collect();
            assert_eq!(values, [Some(1), Some(2), Some(3), Some(4)], "{layout}");
            let listed = store.find_by_principal(&principal).await.unwrap();
            assert_eq!(listed.len(), 1, "{layout}");
        }

        // Rotated by the reader: the session moves to the reader's layout.
        let mut rotated = reader.find(session.id()).await.unwrap().expect("live");
        reader.change_id(&mut rotated).await.unwrap();
        assert!(writer.find(session.id()).await.unwrap().is_none());
        let moved = writer.find(rotated.id()).await.unwrap().expect("rotated");
        assert_eq!(moved.get::<i32>("d").unwrap(), Some(4));
        assert_eq!(
            writer.find_by_principal(&principal).await.unwrap()[0].key,
            rotated.key()
        );
        assert_eq!(writer.delete_by_principal(&principal).await.unwrap(), 1);
        assert!(reader.find(rotated.id()).await.unwrap().is_none());
    }
}

/// The header of a stored value of the string layout, as text.
async fn header(connection: &mut redis::aio::MultiplexedConnection, redis_key: &str) -> String {
    let value: Vec<u8> = connection.get(redis_key).await.unwrap();
    let end = value.iter().position(|byte| *byte == b'\n').unwrap();
    String::from_utf8(value[..end].to_vec()).unwrap()
}

/// A save from a loaded copy writes it whole under the comparison with the value it was
/// loaded from; a save from a copy another store saved over since merges both stores'
/// changes; an optimistic save in that position is a conflict that writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_saves_compare_the_stored_value_and_merge_a_lost_race() {
    let Some((store, mut connection, _)) =
        common::store_and_connection("strings", SessionSettings::default()).await
    else {
        return;
    };
    let other = other(&store, Layout::String).await;
    for filler in [0, 64 * 1024] {
        let mut session = store.new_session();
        session.insert("kept", &0).unwrap();
        session.insert("filler", &"f".repeat(filler)).unwrap();
        store.create(&mut session).await.unwrap();
        let redis_key = store.session_key(&session.key());
        let mut mine = store.find(session.id()).await.unwrap().expect("live");
        let mut theirs = other.find(session.id()).await.unwrap().expect("live");
        theirs.insert("theirs", &1).unwrap();
        theirs.remove("kept");
        other.save(&mut theirs).await.unwrap();
        mine.insert("mine", &2).unwrap();
        store.save(&mut mine).await.unwrap();
        assert!(
            header(&mut connection, &redis_key)
                .await
                .starts_with("\x01s2 "),
            "two saves after the create (version 0)"
        );
        for reader in [&store, &other] {
            let stored = reader.find(session.id()).await.unwrap().expect("live");
            assert_eq!(stored.get::<i32>("theirs").unwrap(), Some(1));
            assert_eq!(stored.get::<i32>("mine").unwrap(), Some(2));
            assert_eq!(stored.get::<i32>("kept").unwrap(), None);
            assert_eq!(
                stored.get::<String>("filler").unwrap().unwrap().len(),
                filler
            );
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
        theirs.insert("theirs", &3).unwrap();
        strict_other.save(&mut theirs).await.unwrap();
        mine.insert("mine", &4).unwrap();
        let conflict = strict.save(&mut mine).await.unwrap_err();
        assert!(matches!(conflict, Error::Conflict { .. }), "{conflict}");
        let stored = store.find(session.id()).await.unwrap().expect("live");
        assert_eq!(stored.get::<i32>("theirs").unwrap(), Some(3));
        assert_eq!(stored.get::<i32>("mine").unwrap(), Some(2));
    }
}

/// A touch rewrites the access time (and, once the deadline passes it, the index score) in
/// place: same length, same attributes, the key's expiry moved with it; a save from a copy
/// loaded before the touch keeps the touch's later access time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_rewrites_the_string_in_place() {
    let idle = Duration::from_millis(1_200);
    let Some((store, mut connection, _)) =
        common::store_and_connection("touch", SessionSettings::default().with_idle_timeout(idle))
            .await
    else {
        return;
    };
    let mut session = store.new_session();
    session.insert("a", &1).unwrap();
    session.set_principal(Some("toucher")).unwrap();
    store.create(&mut session).await.unwrap();
    let redis_key = store.session_key(&session.key());
    let before: Vec<u8> = connection.get(&redis_key).await.unwrap();
    let mut loaded = store.find(session.id()).await.unwrap().expect("live");

    // Past the index score's slack (a quarter of the idle timeout): the touch moves it too.
    tokio::time::sleep(idle / 2).await;
    store.touch(session.id()).await.unwrap();
    let after: Vec<u8> = connection.get(&redis_key).await.unwrap();
    assert_eq!(before.len(), after.len(), "rewritten in place");
    let newline = before.iter().position(|byte| *byte == b'\n').unwrap();
    assert_eq!(
        before[newline..],
        after[newline..],
        "principal and attributes untouched"
    );
    let words = |value: &[u8]| -> Vec<u64> {
        std::str::from_utf8(&value[2..newline])
            .unwrap()
            .split(' ')
            .map(|word| word.parse().unwrap_or(0))
            .collect()
    };
    let (old, new) = (words(&before), words(&after));
    assert_eq!(
        (old[0], old[1]),
        (new[0], new[1]),
        "version and creation kept"
    );
    assert!(
        new[2] >= old[2] + 500,
        "the access time moved: {old:?} -> {new:?}"
    );
    assert!(new[5] > old[5], "the index score moved: {old:?} -> {new:?}");
    let expiry: i64 = redis::cmd("PEXPIRETIME")
        .arg(&redis_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        expiry as u64,
        new[2] + idle.as_millis() as u64,
        "expiry at the new deadline"
    );
    let index: Option<f64> = connection
        .zscore(store.principal_index_key("toucher"), session.key().to_hex())
        .await
        .unwrap();
    assert_eq!(index, Some(new[5] as f64), "the index has the new score");

    loaded.insert("b", &2).unwrap();
    store.save(&mut loaded).await.unwrap();
    let saved: Vec<u8> = connection.get(&redis_key).await.unwrap();
    let saved_words = {
        let end = saved.iter().position(|byte| *byte == b'\n').unwrap();
        std::str::from_utf8(&saved[2..end])
            .unwrap()
            .split(' ')
            .map(|word| word.parse().unwrap_or(0))
            .collect::<Vec<u64>>()
    };
    assert!(
        saved_words[2] >= new[2],
        "the save kept the touch's access time"
    );
    let stored = store.find(session.id()).await.unwrap().expect("live");
    assert_eq!(stored.get::<i32>("b").unwrap(), Some(2));
}

/// Calls per command since the server started (`INFO commandstats`; commands a script runs are
/// counted too).
async fn command_calls(
    connection: &mut redis::aio::MultiplexedConnection,
) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|stat| stat.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// The commands `operation` sent, by name, on a server nobody else uses.
async fn commands_of<F: std::future::Future<Output = ()>>(
    connection: &mut redis::aio::MultiplexedConnection,
    operation: F,
) -> Vec<(String, u64)> {
    let before = command_calls(connection).await;
    operation.await;
    let after = command_calls(connection).await;
    let mut sent: Vec<(String, u64)> = after
        .into_iter()
        .map(|(name, calls)| {
            let earlier = before.get(&name).copied().unwrap_or(0);
            (name, calls - earlier)
        })
        // The `INFO` that took the first count is counted by the second. Each store's event
        // listeners ping the server on their own connections (`LISTENER_PING`), whenever
        // that falls: a ping within the window is theirs, not the operation's (CI's container
        // pass once counted one in a cached read's).
        .filter(|(name, calls)| *calls > 0 && name != "info" && name != "ping")
        .collect();
    sent.sort();
    sent
}

/// `commands` without those the hash layout's save script runs (the server counts them too):
/// what the client sent, if the script's own are all it ran.
fn client_sent(commands: Vec<(String, u64)>) -> Vec<(String, u64)> {
    let scripted = commands.iter().any(|(name, _)| name == "evalsha");
    commands
        .into_iter()
        .filter(|(name, _)| {
            !scripted
                || !["hget", "hmget", "hset", "hdel", "hkeys", "pexpireat"].contains(&name.as_str())
        })
        .collect()
}

fn sent(commands: &[(&str, u64)]) -> Vec<(String, u64)> {
    commands
        .iter()
        .map(|(name, calls)| ((*name).to_owned(), *calls))
        .collect()
}

/// One round trip per read and per save, counted by the server: in the string layout a read
/// is a `GET`, or a `GETRANGE` of the header when the near cache holds the session (also after
/// another store touched it), and a save from the copy read is one `SET`; in the hash layout a
/// cached read is an `HGET` and a save one `EVALSHA`. The near cache keeps strings of 4 KiB or
/// more only: a small session of the string layout is read with a `GET` every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_saves_are_one_command_each() {
    let Some(server) = session_test_harness::dedicated(session_test_harness::Backend::Redis).await
    else {
        return;
    };
    let url = server.url();
    let mut connection = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let strings = expected_comparison(&mut connection).await != Comparison::Script;
    let layouts: &[Layout] = if strings {
        &[Layout::String, Layout::Hash]
    } else {
        &[Layout::Hash]
    };
    for layout in layouts {
        let config = session_redis::Config::from_url(&url)
            .unwrap()
            .with_prefix(format!("{}:", session_conformance::namespace("trips")))
            .with_layout(*layout);
        let store = RedisStore::open(config.clone(), SessionSettings::default())
            .await
            .unwrap();
        let toucher = RedisStore::open(config, SessionSettings::default())
            .await
            .unwrap();
        // Scripts loaded before the count (a fresh server answers the first call NOSCRIPT).
        let mut warm = store.new_session();
        store.create(&mut warm).await.unwrap();
        warm.insert("w", &0).unwrap();
        store.save(&mut warm).await.unwrap();
        if *layout == Layout::String {
            let mut small = store.new_session();
            small.insert("a", &1).unwrap();
            store.create(&mut small).await.unwrap();
            for _ in 0..3 {
                let commands = commands_of(&mut connection, async {
                    store.find(small.id()).await.unwrap().expect("live");
                })
                .await;
                assert_eq!(
                    commands,
                    sent(&[("get", 1)]),
                    "a small session is not cached"
                );
            }
        }
        let mut session = store.new_session();
        session.insert("a", &1).unwrap();
        if *layout == Layout::String {
            // Large enough for the near cache (the hash layout would stage it in a
            // transaction: one round trip of four commands).
            session.insert("filler", &"f".repeat(6_000)).unwrap();
        }
        // Created by another instance: this one reads it whole once, and keeps a copy (its
        // near cache has room).
        toucher.create(&mut session).await.unwrap();
        let id = session.id().clone();
        let (full_read, cached_read, save) = match layout {
            Layout::String => ("get", "getrange", &[("set", 1)][..]),
            _ => ("hgetall", "hget", &[("evalsha", 1)][..]),
        };
        let mut loaded = None;
        let commands = commands_of(&mut connection, async {
            loaded = store.find(&id).await.unwrap();
        })
        .await;
        assert_eq!(commands, sent(&[(full_read, 1)]), "{layout:?}: a read");
        let commands = commands_of(&mut connection, async {
            loaded = store.find(&id).await.unwrap();
        })
        .await;
        assert_eq!(
            commands,
            sent(&[(cached_read, 1)]),
            "{layout:?}: a cached read"
        );
        let mut loaded = loaded.expect("live");
        loaded.insert("b", &2).unwrap();
        let commands = commands_of(&mut connection, async {
            store.save(&mut loaded).await.unwrap();
        })
        .await;
        assert_eq!(client_sent(commands), sent(save), "{layout:?}: a save");

        toucher.touch(&id).await.unwrap();
        let mut touched = None;
        let commands = commands_of(&mut connection, async {
            touched = store.find(&id).await.unwrap();
        })
        .await;
        assert_eq!(
            commands,
            sent(&[(cached_read, 1)]),
            "{layout:?}: a read after a touch"
        );
        let mut touched = touched.expect("live");
        touched.insert("c", &3).unwrap();
        let commands = commands_of(&mut connection, async {
            store.save(&mut touched).await.unwrap();
        })
        .await;
        assert_eq!(
            client_sent(commands),
            sent(save),
            "{layout:?}: a save after a touch"
        );
        let stored = toucher.find(&id).await.unwrap().expect("live");
        let values: Vec<Option<i32>> = ["a", "b", "c"]
            .iter()
            .map(|name| stored.get(name).unwrap())
            .collect();
        assert_eq!(values, [Some(1), Some(2), Some(3)], "{layout:?}");
    }
}

/// A session of the string layout on a server whose `SET` refuses the comparison the store
/// uses (a Cluster node of an older version, an older replica promoted by a failover): the
/// store starts out with `IFDEQ` whatever the server, and the first save that is refused
/// lowers it, step by step, to what the server has (on Redis 7 the script that stands in for
/// `IFEQ`, where the value is written by hand; on Valkey `IFEQ`). The session is read, saved,
/// merged when another copy saved first, touched and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_session_is_saved_where_set_refuses_the_comparison() {
    let Some((store, mut connection, _)) =
        common::store_and_connection("refused", SessionSettings::default()).await
    else {
        return;
    };
    store.assume_comparison(Comparison::Digest);
    // The layout's value, written as the `strings` module documents it.
    let now = session_core::raw::time::now_millis();
    let mut template = store.new_session();
    template.insert("a", &1).unwrap();
    let record = template.record_for_create(now).unwrap();
    let mut value = format!("\x01s0 {now} {now:016} 1800000 - - -\n").into_bytes();
    value.extend_from_slice(&session_core::raw::encode_attributes(&record.attributes).unwrap());
    let id = session_core::SessionId::generate();
    let redis_key = store.session_key(&id.key());
    let _: () = redis::cmd("SET")
        .arg(&redis_key)
        .arg(&value)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut connection)
        .await
        .unwrap();

    let mut mine = store.find(&id).await.unwrap().expect("readable");
    let mut theirs = store.find(&id).await.unwrap().expect("readable");
    assert_eq!(mine.get::<i32>("a").unwrap(), Some(1));
    theirs.insert("theirs", &2).unwrap();
    store.save(&mut theirs).await.unwrap();
    mine.insert("mine", &3).unwrap();
    store.save(&mut mine).await.unwrap();
    mine.insert("again", &4).unwrap();
    store.save(&mut mine).await.unwrap();
    store.touch(&id).await.unwrap();
    assert_eq!(key_type_of(&mut connection, &redis_key).await, "string");
    let stored = store.find(&id).await.unwrap().expect("live");
    let values: Vec<Option<i32>> = ["a", "theirs", "mine", "again"]
        .iter()
        .map(|name| stored.get(name).unwrap())
        .collect();
    assert_eq!(values, [Some(1), Some(2), Some(3), Some(4)]);
    assert_eq!(stored.version(), 3, "three saves");
    assert_eq!(
        store.comparison(),
        expected_comparison(&mut connection).await,
        "lowered to what the server has"
    );
    store.delete(&id).await.unwrap();
    assert!(store.find(&id).await.unwrap().is_none());
}

async fn key_type_of(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    redis::cmd("TYPE")
        .arg(key)
        .query_async(connection)
        .await
        .unwrap()
}
