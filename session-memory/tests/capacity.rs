//! Behaviour specific to the in-memory store: the byte bound and what eviction reports.
#![allow(clippy::unwrap_used)] // test code

use std::collections::HashSet;
use std::time::Duration;

use session_core::{SessionEvent, SessionRepository, SessionRepositoryExt, SessionSettings};
use session_memory::{Config, MemoryStore};

/// Past its byte capacity the store evicts sessions, reports each as `Evicted`, and drops them
/// from the principal index; what is left stays readable.
#[tokio::test]
async fn capacity_bound_evicts_and_reports() {
    let config = Config::default()
        .with_capacity_bytes(64 * 1024)
        .with_sweep_interval(Duration::from_millis(20));
    let store = MemoryStore::open(config, SessionSettings::default());
    let mut events = store.subscribe().unwrap();
    let mut ids = Vec::new();
    for _ in 0..200 {
        let mut session = store.new_session();
        session.insert("payload", &"x".repeat(2_000)).unwrap();
        session.set_principal(Some("morris")).unwrap();
        store.create(&mut session).await.unwrap();
        ids.push(session.id().clone());
    }
    store.run_pending_tasks().await;

    let mut evicted = HashSet::new();
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await
    {
        if let SessionEvent::Evicted(key) = event {
            evicted.insert(key);
        }
    }
    let mut live = 0;
    for id in &ids {
        if store.find(id).await.unwrap().is_some() {
            live += 1;
            assert!(
                !evicted.contains(&id.key()),
                "a live session was reported evicted"
            );
        } else {
            assert!(
                evicted.contains(&id.key()),
                "a session vanished without an Evicted event"
            );
        }
    }
    assert!(
        live > 0 && live < ids.len(),
        "expected partial eviction, {live} of {} live",
        ids.len()
    );
    assert!(
        live * 2_000 <= 64 * 1024,
        "{live} sessions of 2 kB exceed the 64 KiB bound"
    );
    assert_eq!(store.find_by_principal("morris").await.unwrap().len(), live);
}
