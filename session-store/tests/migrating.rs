//! A `Migrating` pair opened from two URLs: sessions move from the old store to the new one as
//! they are used, and nothing is lost on the way. On two SQLite files (the pair's conformance
//! runs on real servers in `migrating_conformance.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::PathBuf;
use std::sync::Arc;

use session_core::{Error, SessionId, SessionRepository, SessionRepositoryExt};
use session_store::StoreConfig;

/// Two database files, removed afterwards.
struct Files(Vec<PathBuf>);

impl Drop for Files {
    fn drop(&mut self) {
        for path in &self.0 {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

struct Stores {
    pair: Arc<dyn SessionRepository>,
    new: Arc<dyn SessionRepository>,
    old: Arc<dyn SessionRepository>,
    /// The pair's configuration, to open more instances.
    config: StoreConfig,
    _files: Files,
}

async fn stores(name: &str) -> Stores {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let new_path = dir.join(format!("migrating-{name}-{pid}-new.db"));
    let old_path = dir.join(format!("migrating-{name}-{pid}-old.db"));
    let files = Files(vec![new_path.clone(), old_path.clone()]);
    let (new_url, old_url) = (
        format!("sqlite://{}", new_path.display()),
        format!("sqlite://{}", old_path.display()),
    );
    let config = StoreConfig::new(&new_url).with_migrate_from(Some(old_url.clone()));
    Stores {
        pair: session_store::open_with(&config)
            .await
            .expect("open the pair"),
        config,
        new: session_store::open(&new_url).await.unwrap(),
        old: session_store::open(&old_url).await.unwrap(),
        _files: files,
    }
}

async fn in_old(stores: &Stores, pairs: &[(&str, &str)], principal: Option<&str>) -> SessionId {
    let mut session = stores.old.new_session();
    for (name, value) in pairs {
        session.insert(name, value).unwrap();
    }
    session.set_principal(principal).unwrap();
    stores.old.create(&mut session).await.unwrap();
    session.id().clone()
}

async fn holds(store: &dyn SessionRepository, id: &SessionId) -> bool {
    store.find(id).await.unwrap().is_some()
}

#[tokio::test]
async fn a_session_moves_on_its_next_save_and_keeps_everything() {
    let stores = stores("save").await;
    let id = in_old(&stores, &[("cart", "book")], Some("alice")).await;
    let mut session = stores
        .pair
        .find(&id)
        .await
        .unwrap()
        .expect("read from the old store");
    let (created, version) = (session.created_at(), session.version());
    assert!(!holds(&*stores.new, &id).await, "a read moved the session");
    session.insert("step", "2").unwrap();
    stores.pair.save(&mut session).await.unwrap();
    assert!(
        !holds(&*stores.old, &id).await,
        "the old copy outlived the move"
    );
    let moved = stores.new.find(&id).await.unwrap().expect("moved");
    assert_eq!(
        moved.get::<String>("cart").unwrap().as_deref(),
        Some("book")
    );
    assert_eq!(moved.get::<String>("step").unwrap().as_deref(), Some("2"));
    assert_eq!(
        moved.created_at(),
        created,
        "the move reset the creation time"
    );
    assert_eq!(moved.version(), version + 1);
    assert_eq!(moved.principal(), Some("alice"));
    assert_eq!(
        stores.pair.find_by_principal("alice").await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_touch_moves_the_session_and_an_unused_one_stays() {
    let stores = stores("touch").await;
    let touched = in_old(&stores, &[("a", "1")], None).await;
    let unused = in_old(&stores, &[("b", "2")], None).await;
    stores.pair.touch(&touched).await.unwrap();
    assert!(holds(&*stores.new, &touched).await && !holds(&*stores.old, &touched).await);
    assert!(holds(&*stores.old, &unused).await && !holds(&*stores.new, &unused).await);
    assert!(
        holds(&*stores.pair, &unused).await,
        "an unmoved session is still readable"
    );
}

#[tokio::test]
async fn change_id_delete_and_log_out_everywhere_cover_both_stores() {
    let stores = stores("both").await;
    let old_id = in_old(&stores, &[("a", "1")], Some("bob")).await;
    let mut session = stores.pair.find(&old_id).await.unwrap().unwrap();
    stores.pair.change_id(&mut session).await.unwrap();
    assert!(
        !holds(&*stores.pair, &old_id).await,
        "the old id still works"
    );
    assert!(holds(&*stores.new, session.id()).await);
    assert!(!holds(&*stores.old, session.id()).await && !holds(&*stores.old, &old_id).await);

    let deleted = in_old(&stores, &[], None).await;
    stores.pair.delete(&deleted).await.unwrap();
    assert!(!holds(&*stores.old, &deleted).await);

    // One of bob's sessions moved, one did not, one is new: all three are listed and logged out.
    in_old(&stores, &[], Some("bob")).await;
    let mut fresh = stores.pair.new_session();
    fresh.set_principal(Some("bob")).unwrap();
    stores.pair.create(&mut fresh).await.unwrap();
    assert!(holds(&*stores.new, fresh.id()).await && !holds(&*stores.old, fresh.id()).await);
    assert_eq!(stores.pair.find_by_principal("bob").await.unwrap().len(), 3);
    assert_eq!(stores.pair.delete_by_principal("bob").await.unwrap(), 3);
    assert!(stores
        .new
        .find_by_principal("bob")
        .await
        .unwrap()
        .is_empty());
    assert!(stores
        .old
        .find_by_principal("bob")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_instances_moving_one_session_lose_no_attribute() {
    let stores = stores("race").await;
    let id = in_old(&stores, &[], None).await;
    let mut tasks = Vec::new();
    for task in 0..32 {
        let pair = session_store::open_with(&stores.config).await.unwrap();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut session = pair.find(&id).await.unwrap().expect("live");
            session.insert(&format!("task{task}"), &task).unwrap();
            pair.save(&mut session).await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("save");
    }
    let moved = stores.new.find(&id).await.unwrap().expect("moved");
    assert_eq!(
        moved.len(),
        32,
        "attributes lost in the race to move the session"
    );
    assert!(!holds(&*stores.old, &id).await);
}

#[tokio::test]
async fn a_deleted_session_is_not_moved_back() {
    let stores = stores("gone").await;
    let id = in_old(&stores, &[("a", "1")], None).await;
    let mut copy = stores.pair.find(&id).await.unwrap().unwrap();
    stores.old.delete(&id).await.unwrap();
    copy.insert("b", "2").unwrap();
    assert!(matches!(
        stores.pair.save(&mut copy).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(stores.pair.touch(&id).await, Err(Error::NotFound)));
    assert!(!holds(&*stores.new, &id).await);
}

#[tokio::test]
async fn migrating_to_the_same_store_is_a_config_error() {
    let config = StoreConfig::new("memory://").with_migrate_from(Some("memory://".into()));
    assert!(matches!(
        session_store::open_with(&config).await,
        Err(Error::Config(_))
    ));
}
