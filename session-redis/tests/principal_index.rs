//! The principal index on a real Redis: kept alive by saves and touches that rarely write it,
//! and gone with its last session even when nobody reads it.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use std::time::Duration;

use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::redis::{self, AsyncCommands};

const IDLE: Duration = Duration::from_millis(800);

async fn index_keys(
    connection: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Vec<String> {
    connection.keys(format!("{prefix}p:*")).await.expect("KEYS")
}

/// Touches and saves over several idle periods keep the session in its principal's index and
/// the index key alive at least as long as the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_keeps_the_index_alive() {
    let Some((store, mut connection, prefix)) =
        common::store_and_connection("index", SessionSettings::default().with_idle_timeout(IDLE))
            .await
    else {
        return;
    };
    let mut session = store.new_session();
    session.set_principal(Some("ann")).unwrap();
    store.create(&mut session).await.unwrap();
    for round in 0..8 {
        tokio::time::sleep(IDLE / 3).await;
        if round % 2 == 0 {
            store.touch(session.id()).await.unwrap();
        } else {
            let mut loaded = store.find(session.id()).await.unwrap().expect("live");
            loaded.insert("round", &round).unwrap();
            store.save(&mut loaded).await.unwrap();
        }
    }
    let session_key = store.session_key(&session.key());
    let index = index_keys(&mut connection, &prefix).await;
    assert_eq!(index.len(), 1, "one index key for one principal");
    let session_ttl: i64 = connection.pttl(&session_key).await.unwrap();
    let index_ttl: i64 = connection.pttl(&index[0]).await.unwrap();
    assert!(session_ttl > 0);
    assert!(
        index_ttl >= session_ttl,
        "index expires before its session ({index_ttl} ms < {session_ttl} ms)"
    );
    let found = store.find_by_principal("ann").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, session.key());
}

/// With nobody reading, the index key expires at most a quarter idle timeout after its last
/// session: it cannot leak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_expires_after_its_last_session() {
    let Some((store, mut connection, prefix)) =
        common::store_and_connection("index", SessionSettings::default().with_idle_timeout(IDLE))
            .await
    else {
        return;
    };
    let mut session = store.new_session();
    session.set_principal(Some("bob")).unwrap();
    store.create(&mut session).await.unwrap();
    store.touch(session.id()).await.unwrap();
    assert_eq!(index_keys(&mut connection, &prefix).await.len(), 1);
    tokio::time::sleep(IDLE + IDLE / 4 + Duration::from_millis(300)).await;
    assert!(store.find(session.id()).await.unwrap().is_none());
    assert!(
        index_keys(&mut connection, &prefix).await.is_empty(),
        "the index outlived its last session by more than the slack"
    );
}

/// A member of a principal's index that names no session key (written by a foreign writer, or
/// corrupt) is pruned by the listing, which still lists the principal's real sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_index_members_are_pruned() {
    let Some((store, mut connection, _prefix)) =
        common::store_and_connection("badmember", SessionSettings::default()).await
    else {
        return;
    };
    let mut session = store.new_session();
    session.set_principal(Some("bea")).unwrap();
    store.create(&mut session).await.unwrap();
    let index = store.principal_index_key("bea");
    let far = 32_503_680_000_000u64; // year 3000: the index key stays
    for member in [&b"not-a-key"[..], b"\xff\xfe", &[b'0'; 64][..]] {
        let _: i64 = connection.zadd(&index, member, far).await.expect("ZADD");
    }
    let listed = store.find_by_principal("bea").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, session.key());
    let members: Vec<Vec<u8>> = connection.zrange(&index, 0, -1).await.expect("ZRANGE");
    assert_eq!(
        members,
        [session.key().to_hex().into_bytes()],
        "malformed and dead members are pruned, the live one stays"
    );
}
