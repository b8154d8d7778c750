//! Shared by the metrics and span tests: three instrumented stores (one with spans only) and a known sequence of calls.
#![allow(dead_code)]

use std::sync::Arc;

use session_core::{Error, SessionId, SessionRepository, SessionRepositoryExt, SessionSettings};
use session_instrument::Instrumented;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub async fn stores() -> Vec<Arc<dyn SessionRepository>> {
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("instrumented-{}-{n}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sql = session_sql::SqlStore::open(
        session_sql::Config::from_url(&format!("sqlite://{}", path.display())).unwrap(),
        SessionSettings::default(),
    )
    .await
    .unwrap();
    vec![
        Arc::new(Instrumented::new(
            session_memory::MemoryStore::new(),
            "memory",
        )),
        Arc::new(Instrumented::new(sql, "sqlite")),
        // Spans only: traced like the others, never counted.
        Arc::new(Instrumented::new(session_memory::MemoryStore::new(), "quiet").without_metrics()),
    ]
}

/// Per store: create, find (hit), find (miss), save, touch, touch of a missing session,
/// delete. Returns the ids it used.
pub async fn known_sequence(store: &dyn SessionRepository) -> Vec<SessionId> {
    let mut session = store.new_session();
    session.insert("user", "morris").unwrap();
    store.create(&mut session).await.unwrap();
    let mut loaded = store.find(session.id()).await.unwrap().unwrap();
    assert!(store.find(&SessionId::generate()).await.unwrap().is_none());
    loaded.insert("theme", "dark").unwrap();
    store.save(&mut loaded).await.unwrap();
    store.touch(session.id()).await.unwrap();
    let missing = SessionId::generate();
    assert!(matches!(store.touch(&missing).await, Err(Error::NotFound)));
    store.delete(session.id()).await.unwrap();
    vec![session.id().clone(), missing]
}
