//! Behaviour specific to the SQL store: purge under load, several pools on one SQLite file,
//! and a server that dies and comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_conformance::faults::{server_killed_and_restarted, server_paused_and_resumed};
use session_conformance::namespace;
use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_sql::{Config, SqlStore};
use session_test_harness::{dedicated, provision, Backend};
use sqlx::Row;

fn sqlite_url() -> (String, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("{}.db", namespace("session_sql_specific")));
    (format!("sqlite://{}", path.display()), path)
}

/// Removes the database file at `path` and its write-ahead log and index.
fn remove_sqlite_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// A runtime of one worker, for the tests that use a store from one runtime after another.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

async fn open(url: &str, table: &str, settings: SessionSettings) -> SqlStore {
    let config = Config::from_url(url)
        .unwrap()
        .with_table(table)
        .with_max_connections(16)
        .with_cleanup_interval(None);
    SqlStore::open(config, settings).await.unwrap()
}

async fn rows(store: &SqlStore) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) FROM {}", store.config().table))
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

/// Purging runs beside 32 tasks that keep saving, with no error and no deadlock; afterwards
/// every expired row is gone and every live session is intact.
async fn purge_beside_savers(url: &str) {
    let table = namespace("purge");
    let short = open(
        url,
        &table,
        SessionSettings::default().with_idle_timeout(Duration::from_millis(200)),
    )
    .await;
    let long = open(url, &table, SessionSettings::default()).await;
    for _ in 0..300 {
        let mut session = short.new_session();
        session.insert("payload", &"x".repeat(200)).unwrap();
        short.create(&mut session).await.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..32 {
        let mut session = long.new_session();
        long.create(&mut session).await.unwrap();
        ids.push(session.id().clone());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut savers = tokio::task::JoinSet::new();
    for (task, id) in ids.iter().cloned().enumerate() {
        let long = long.clone();
        savers.spawn(async move {
            let mut saves = 0u32;
            while Instant::now() < deadline {
                let mut session = long.find(&id).await.unwrap().expect("live session");
                session.insert("n", &saves).unwrap();
                long.save(&mut session)
                    .await
                    .unwrap_or_else(|e| panic!("task {task}: {e:?}"));
                saves += 1;
            }
            saves
        });
    }
    let mut purged = 0;
    while Instant::now() < deadline {
        purged += long.purge_expired().await.unwrap();
    }
    let mut total_saves = 0;
    while let Some(saves) = savers.join_next().await {
        total_saves += saves.unwrap();
    }
    purged += long.purge_expired().await.unwrap();
    assert_eq!(purged, 300, "every expired row is purged exactly once");
    assert_eq!(rows(&long).await, 32);
    assert!(
        total_saves > 32,
        "the savers made progress ({total_saves} saves)"
    );
    for id in &ids {
        assert!(long.find(id).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_purge_beside_savers() {
    let (url, path) = sqlite_url();
    purge_beside_savers(&url).await;
    remove_sqlite_files(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purge_beside_savers() {
    if let Some(server) = provision(Backend::Postgres).await {
        purge_beside_savers(&server.url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_purge_beside_savers() {
    if let Some(server) = provision(Backend::MySql).await {
        purge_beside_savers(&server.url).await;
    }
}

/// The stored `expires_at` is the purge's bound: the deadline rounded up to the step (a
/// sixteenth of the idle timeout, at most a minute), the same whether a save computed it in
/// Rust or a touch in SQL; a save that does not cross a step leaves it as it was (so it
/// changes no indexed column), and reads still hide the session at its exact deadline.
async fn expires_at_bounds_the_deadline(url: &str) {
    let table = namespace("bound");
    let idle = Duration::from_millis(1_600); // a step of 100 ms
    let store = open(
        url,
        &table,
        SessionSettings::default().with_idle_timeout(idle),
    )
    .await;
    let placeholder = match store.dialect() {
        session_sql::Dialect::Postgres => "$1",
        _ => "?",
    };
    let columns = format!(
        "SELECT created_at, last_accessed_at, idle_timeout, absolute_lifetime, expires_at \
         FROM {table} WHERE session_key = {placeholder}"
    );
    let stored = |id: session_core::SessionId| {
        let (store, columns) = (store.clone(), columns.clone());
        async move {
            let row = sqlx::query(&columns)
                .bind(id.key().as_bytes().to_vec())
                .fetch_one(store.pool())
                .await
                .unwrap();
            let get = |i| row.try_get::<Option<i64>, _>(i).unwrap();
            let (created, accessed, idle) = (get(0).unwrap(), get(1).unwrap(), get(2).unwrap());
            let deadline = get(3).map_or(accessed + idle, |b| (created + b).min(accessed + idle));
            (deadline, get(4).unwrap())
        }
    };
    let step = 100;
    let round_up = |deadline: i64| (deadline + step - 1) / step * step;
    let mut session = store.new_session();
    session.insert("n", &0).unwrap();
    store.create(&mut session).await.unwrap();
    let id = session.id().clone();
    let (deadline, bound) = stored(id.clone()).await;
    assert_eq!(bound, round_up(deadline), "the bound a create stores");
    store.touch(&id).await.unwrap();
    let (deadline, bound) = stored(id.clone()).await;
    assert_eq!(bound, round_up(deadline), "the bound a touch stores (SQL)");
    // Saves until one lands in the same step as the one before (most do; a few cross).
    let mut unchanged = false;
    for n in 1..20 {
        let before = bound_of(stored(id.clone()).await);
        let mut session = store.find(&id).await.unwrap().expect("live");
        session.insert("n", &n).unwrap();
        store.save(&mut session).await.unwrap();
        let (deadline, bound) = stored(id.clone()).await;
        assert_eq!(bound, round_up(deadline), "the bound a save stores (Rust)");
        assert!(bound >= deadline && bound < deadline + step);
        if bound == before {
            unchanged = true;
            break;
        }
    }
    assert!(unchanged, "every save moved expires_at");
    // Hidden at the exact deadline, though the bound may be later.
    let (deadline, bound) = stored(id.clone()).await;
    let now = i64::try_from(session_core::raw::time::now_millis()).unwrap();
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(deadline - now + 5).unwrap_or(0),
    ))
    .await;
    assert!(
        store.find(&id).await.unwrap().is_none(),
        "visible after its deadline"
    );
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(bound - deadline).unwrap_or(0),
    ))
    .await;
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert_eq!(rows(&store).await, 0);
}

fn bound_of((_, bound): (i64, i64)) -> i64 {
    bound
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_expires_at_bounds_the_deadline() {
    let (url, path) = sqlite_url();
    expires_at_bounds_the_deadline(&url).await;
    remove_sqlite_files(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_expires_at_bounds_the_deadline() {
    if let Some(server) = provision(Backend::Postgres).await {
        expires_at_bounds_the_deadline(&server.url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_expires_at_bounds_the_deadline() {
    if let Some(server) = provision(Backend::MySql).await {
        expires_at_bounds_the_deadline(&server.url).await;
    }
}

/// Two pools (as two processes would) write one SQLite file concurrently without "database is
/// locked" errors, and lose no attribute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_pools_share_one_file() {
    let (url, path) = sqlite_url();
    let table = namespace("shared");
    let a = open(&url, &table, SessionSettings::default()).await;
    let b = open(&url, &table, SessionSettings::default()).await;
    let mut session = a.new_session();
    a.create(&mut session).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..32u32 {
        let store = if task % 2 == 0 { a.clone() } else { b.clone() };
        let id = session.id().clone();
        tasks.spawn(async move {
            for round in 0..20u32 {
                let mut copy = store.find(&id).await.unwrap().unwrap();
                copy.insert(&format!("t{task}"), &round).unwrap();
                store
                    .save(&mut copy)
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    let stored = b.find(session.id()).await.unwrap().unwrap();
    for task in 0..32u32 {
        assert_eq!(stored.get::<u32>(&format!("t{task}")).unwrap(), Some(19));
    }
    assert_eq!(stored.version(), 32 * 20);
    remove_sqlite_files(&path);
}

/// SQLite's saves are written by a task on the runtime of the first save; a store used from
/// another runtime once that one has ended saves there too (its writer starts again).
#[test]
fn sqlite_saves_from_a_second_runtime() {
    let (url, path) = sqlite_url();
    let table = namespace("runtimes");
    let first = runtime();
    let (store, id) = first.block_on(async {
        let store = open(&url, &table, SessionSettings::default()).await;
        let mut session = store.new_session();
        store.create(&mut session).await.unwrap();
        session.insert("round", &1u32).unwrap();
        store.save(&mut session).await.unwrap();
        (store, session.id().clone())
    });
    drop(first);
    runtime().block_on(async {
        let mut session = store.find(&id).await.unwrap().unwrap();
        assert_eq!(session.get::<u32>("round").unwrap(), Some(1));
        session.insert("round", &2u32).unwrap();
        store.save(&mut session).await.unwrap();
        let stored = store.find(&id).await.unwrap().unwrap();
        assert_eq!(stored.get::<u32>("round").unwrap(), Some(2));
    });
    remove_sqlite_files(&path);
}

/// SQLite's writer leaves the write-ahead log's checkpoints to a task of the store: the rows
/// its writes append to the log reach the database file soon after, with fewer pages in the
/// log than the 1,000 at which SQLite would checkpoint by itself; and again on a second
/// runtime once the first one (where the task ran) has ended.
#[test]
fn sqlite_checkpoints_after_writes() {
    let (url, path) = sqlite_url();
    let table = namespace("checkpoints");
    // 40 sessions of 20 KB: some 200 pages of 4 KB.
    let write = |store: SqlStore, round: u32| async move {
        for n in 0..40u32 {
            let mut session = store.new_session();
            let filler: String = (0..20_000u32)
                .map(|i| char::from(b'a' + ((i * 7 + n * 13 + round) % 26) as u8))
                .collect();
            session.insert("filler", &filler).unwrap();
            store.create(&mut session).await.unwrap();
        }
    };
    let file_size = || std::fs::metadata(&path).unwrap().len();
    let grows_past = |bytes: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(5);
        while file_size() < bytes {
            assert!(
                Instant::now() < deadline,
                "the database file is {} bytes, not {bytes}: the log was not checkpointed",
                file_size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let first = runtime();
    let store = first.block_on(async {
        let store = open(&url, &table, SessionSettings::default()).await;
        let before = file_size();
        write(store.clone(), 1).await;
        grows_past(before + 700_000).await;
        store
    });
    drop(first);
    runtime().block_on(async {
        let before = file_size();
        write(store.clone(), 2).await;
        grows_past(before + 700_000).await;
    });
    drop(store);
    remove_sqlite_files(&path);
}

/// The store the shared fault cases run on: a table of its own, their operation timeout, no
/// background purge.
async fn fault_store(
    url: String,
    timeout: Duration,
) -> session_core::Result<Arc<dyn SessionRepository>> {
    let config = Config::from_url(&url)?
        .with_table(namespace("fault"))
        .with_timeout(timeout)
        .with_cleanup_interval(None);
    Ok(
        Arc::new(SqlStore::open(config, SessionSettings::default()).await?)
            as Arc<dyn SessionRepository>,
    )
}

/// A server killed mid-run gives a retryable error within the timeout; restarted, the same
/// store works again (the suite's shared fault case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dies_and_returns() {
    let Some(server) = dedicated(Backend::Postgres).await else {
        return;
    };
    server_killed_and_restarted(server, fault_store).await;
}

/// As [`postgres_dies_and_returns`], on MariaDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_dies_and_returns() {
    let Some(server) = dedicated(Backend::MySql).await else {
        return;
    };
    server_killed_and_restarted(server, fault_store).await;
}

/// A server frozen mid-run (a hang) gives a retryable error within the timeout; resumed, the
/// same store works again with its data intact (the suite's shared fault case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hangs_and_recovers() {
    let Some(server) = dedicated(Backend::Postgres).await else {
        return;
    };
    server_paused_and_resumed(server, fault_store).await;
}

/// As [`postgres_hangs_and_recovers`], on MariaDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_hangs_and_recovers() {
    let Some(server) = dedicated(Backend::MySql).await else {
        return;
    };
    server_paused_and_resumed(server, fault_store).await;
}

/// The versions recorded in `<table>_migrations`, oldest first.
async fn applied_steps(store: &SqlStore) -> Vec<i64> {
    let table = &store.config().table;
    sqlx::query(&format!(
        "SELECT version FROM {table}_migrations ORDER BY version"
    ))
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<i64, _>(0).unwrap())
    .collect()
}

/// The table's storage parameters on PostgreSQL, as `pg_class` lists them.
async fn storage_parameters(store: &SqlStore) -> String {
    sqlx::query(&format!(
        "SELECT COALESCE(array_to_string(reloptions, ','), '') FROM pg_class WHERE relname = '{}'",
        store.config().table
    ))
    .fetch_one(store.pool())
    .await
    .unwrap()
    .try_get::<String, _>(0)
    .unwrap()
}

/// PostgreSQL's table keeps a fifth of each page free for the next version of its rows
/// (migration 2), on a new table and on one that a build before step 2 created; the other
/// databases have step 1 only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_table_leaves_room_for_updates_in_place() {
    let Some(server) = provision(Backend::Postgres).await else {
        return;
    };
    let table = namespace("fill");
    let store = open(&server.url, &table, SessionSettings::default()).await;
    assert_eq!(applied_steps(&store).await, [1, 2]);
    assert_eq!(storage_parameters(&store).await, "fillfactor=80");
    // As a table of a build before step 2 was left: step 1 recorded, the default fillfactor.
    sqlx::query(&format!("ALTER TABLE {table} RESET (fillfactor)"))
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(&format!("DELETE FROM {table}_migrations WHERE version = 2"))
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(storage_parameters(&store).await, "");
    let upgraded = open(&server.url, &table, SessionSettings::default()).await;
    assert_eq!(applied_steps(&upgraded).await, [1, 2]);
    assert_eq!(storage_parameters(&upgraded).await, "fillfactor=80");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_has_the_first_step_only() {
    let (url, path) = sqlite_url();
    let store = open(&url, &namespace("steps"), SessionSettings::default()).await;
    assert_eq!(applied_steps(&store).await, [1]);
    remove_sqlite_files(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_has_the_first_step_only() {
    if let Some(server) = provision(Backend::MySql).await {
        let store = open(&server.url, &namespace("steps"), SessionSettings::default()).await;
        assert_eq!(applied_steps(&store).await, [1]);
    }
}
