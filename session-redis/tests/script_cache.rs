//! The script cache on a real Redis: scripts are loaded again when the server forgets them.
//! A binary of its own, because `SCRIPT FLUSH` would race the scripts of parallel tests.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

mod common;

use session_core::{SessionRepository, SessionRepositoryExt, SessionSettings};
use session_redis::redis::{self, AsyncCommands};
use session_redis::Layout;

/// After `SCRIPT FLUSH` (what a restart or failover does to the script cache) every operation
/// loads its script again and succeeds, in the hash layout and in the one the server takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_are_loaded_again() {
    for layout in [Layout::Hash, Layout::Auto] {
        flushed_scripts_are_loaded_again_in(layout).await;
    }
}

async fn flushed_scripts_are_loaded_again_in(layout: Layout) {
    let Some((store, mut connection, _)) =
        common::store_and_connection_in("scripts", SessionSettings::default(), layout).await
    else {
        return;
    };
    let flush = |mut connection: redis::aio::MultiplexedConnection| async move {
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async::<()>(&mut connection)
            .await
            .unwrap();
    };
    let mut session = store.new_session();
    session.set_principal(Some("ann")).unwrap();
    flush(connection.clone()).await;
    store.create(&mut session).await.unwrap();
    let mut loaded = store.find(session.id()).await.unwrap().expect("created");
    loaded.insert("a", &1).unwrap();
    flush(connection.clone()).await;
    store.save(&mut loaded).await.unwrap();
    // Large attributes are staged in a transaction around the script: flushed, it runs again.
    let mut loaded = store.find(session.id()).await.unwrap().expect("saved");
    loaded.insert("large", &"l".repeat(8 * 1024)).unwrap();
    flush(connection.clone()).await;
    store.save(&mut loaded).await.unwrap();
    if store.layout() == Layout::Hash {
        let fields: Vec<String> = connection
            .hkeys(store.session_key(&session.key()))
            .await
            .unwrap();
        let packed = fields
            .iter()
            .filter(|name| name.starts_with("\x01a"))
            .count();
        assert_eq!(
            packed, 1,
            "one attributes field, none left staged: {fields:?}"
        );
    }
    flush(connection.clone()).await;
    store.touch(session.id()).await.unwrap();
    flush(connection.clone()).await;
    store.delete(session.id()).await.unwrap();
    assert!(store.find(session.id()).await.unwrap().is_none());
    let stored: bool = connection
        .exists(store.session_key(&session.key()))
        .await
        .unwrap();
    assert!(!stored, "the deleted session is still stored");
}
