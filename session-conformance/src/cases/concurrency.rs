//! Cases: concurrency and instances.

#[allow(unused_imports)]
use super::*;

cases! {
    /// 100 tasks saving different attributes of one session lose none.
    #[needs(Nothing)]
    pub async fn concurrent_savers_lose_no_attribute(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[]).await;
        let start = session.version();
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..100u32 {
            let repo = Arc::clone(&repo);
            let id = session.id().clone();
            tasks.spawn(async move {
                let mut copy = load(&*repo, &id).await;
                copy.insert(&format!("task{task}"), &task).unwrap();
                repo.save(&mut copy).await.unwrap();
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
        let stored = load(&*repo, session.id()).await;
        assert_eq!(stored.len(), 100, "lost attributes under concurrent saves");
        for task in 0..100u32 {
            assert_eq!(
                stored.get::<u32>(&format!("task{task}")).unwrap(),
                Some(task)
            );
        }
        assert_eq!(stored.version(), start + 100);
    }

    /// Saves and touches racing a delete never bring the session back.
    #[needs(Nothing)]
    pub async fn concurrent_writers_never_resurrect_a_deleted_session(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        for round in 0..20u32 {
            let session = create_with(&*repo, &[("round", "r")]).await;
            let mut writers = tokio::task::JoinSet::new();
            for writer in 0..8u32 {
                let repo = Arc::clone(&repo);
                let id = session.id().clone();
                writers.spawn(async move {
                    // Bounded, so that a store that resurrects fails the assertion below, not the timeout.
                    for step in 0..500u32 {
                        let Some(mut copy) = repo.find(&id).await.unwrap() else {
                            return;
                        };
                        copy.insert(&format!("w{writer}"), &step).unwrap();
                        match repo.save(&mut copy).await {
                            Ok(()) => {}
                            Err(Error::NotFound) => return,
                            Err(other) => panic!("save failed: {other:?}"),
                        }
                        match repo.touch(&id).await {
                            Ok(()) | Err(Error::NotFound) => {}
                            Err(other) => panic!("touch failed: {other:?}"),
                        }
                    }
                });
            }
            sleep(Duration::from_millis(u64::from(round % 5) + 1)).await;
            repo.delete(session.id()).await.unwrap();
            while let Some(joined) = writers.join_next().await {
                joined.unwrap();
            }
            assert!(
                !exists(&*repo, session.id()).await,
                "round {round}: a racing writer resurrected a deleted session"
            );
        }
    }

    /// Optimistic increments from many tasks with retry on Conflict count exactly.
    #[needs(Nothing)]
    pub async fn concurrent_optimistic_increments_are_exact(fixture: &dyn StoreFixture) {
        const TASKS: u64 = 20;
        const INCREMENTS: u64 = 5;
        let settings = SessionSettings::default().with_concurrency(Concurrency::Optimistic);
        let repo = open(fixture, settings).await;
        let mut session = repo.new_session();
        session.insert("counter", &0u64).unwrap();
        repo.create(&mut session).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..TASKS {
            let repo = Arc::clone(&repo);
            let id = session.id().clone();
            tasks.spawn(async move {
                let mut conflicts = 0u64;
                for _ in 0..INCREMENTS {
                    loop {
                        let mut copy = load(&*repo, &id).await;
                        let value: u64 = copy.get("counter").unwrap().unwrap();
                        copy.insert("counter", &(value + 1)).unwrap();
                        match repo.save(&mut copy).await {
                            Ok(()) => break,
                            Err(Error::Conflict { .. }) => conflicts += 1,
                            Err(other) => panic!("optimistic save failed: {other:?}"),
                        }
                        assert!(conflicts < 10_000, "no progress under contention");
                    }
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
        let stored = load(&*repo, session.id()).await;
        assert_eq!(
            stored.get::<u64>("counter").unwrap(),
            Some(TASKS * INCREMENTS),
            "lost updates"
        );
        assert_eq!(stored.version(), session.version() + TASKS * INCREMENTS);
    }

    /// Two repositories on one store (two service instances) see each other's writes.
    #[needs(Nothing)]
    pub async fn two_instances_share_sessions(fixture: &dyn StoreFixture) {
        let first = open(fixture, SessionSettings::default()).await;
        let second = open(fixture, SessionSettings::default()).await;
        let mut session = create_with(&*first, &[("user", "morris")]).await;
        let mut seen = load(&*second, session.id()).await;
        assert_eq!(text(&seen, "user").as_deref(), Some("morris"));
        seen.insert("cart", "book").unwrap();
        second.save(&mut seen).await.unwrap();
        assert_eq!(
            text(&load(&*first, session.id()).await, "cart").as_deref(),
            Some("book")
        );
        first.change_id(&mut session).await.unwrap();
        assert!(!exists(&*second, seen.id()).await);
        assert!(exists(&*second, session.id()).await);
        second.delete(session.id()).await.unwrap();
        assert!(!exists(&*first, session.id()).await);
    }

    /// An instance on JSON reads and writes sessions of an instance on MessagePack.
    #[needs(Nothing)]
    pub async fn two_instances_with_different_codecs(fixture: &dyn StoreFixture) {
        let packed = open(fixture, SessionSettings::default()).await;
        let json = open(fixture, SessionSettings::default().with_codec(Json)).await;
        let session = create_with(&*packed, &[("from", "msgpack")]).await;
        let mut seen = load(&*json, session.id()).await;
        assert_eq!(text(&seen, "from").as_deref(), Some("msgpack"));
        seen.insert("reply", &vec![1u8, 2, 3]).unwrap();
        json.save(&mut seen).await.unwrap();
        let back = load(&*packed, session.id()).await;
        assert_eq!(back.get::<Vec<u8>>("reply").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(
            back.raw_attribute("reply").map(|b| b[0]),
            Some(session_core::FORMAT_JSON)
        );
    }

    /// An instance that read a session sees another instance's later touch, save and delete (a
    /// store that keeps copies of what it read must revalidate them).
    #[needs(Nothing)]
    pub async fn instance_sees_later_writes_of_another(fixture: &dyn StoreFixture) {
        let first = open(fixture, SessionSettings::default()).await;
        let second = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*first, &[("step", "1")]).await;
        let before = load(&*first, session.id()).await;
        sleep(Duration::from_millis(20)).await;
        second.touch(session.id()).await.unwrap();
        let touched = load(&*first, session.id()).await;
        assert!(
            touched.last_accessed_at() > before.last_accessed_at(),
            "the other instance's touch is not visible"
        );
        assert_eq!(touched.version(), before.version());
        let mut other = load(&*second, session.id()).await;
        other.insert("step", "2").unwrap();
        second.save(&mut other).await.unwrap();
        let saved = load(&*first, session.id()).await;
        assert_eq!(text(&saved, "step").as_deref(), Some("2"));
        assert_eq!(saved.version(), other.version());
        second.delete(session.id()).await.unwrap();
        assert!(!exists(&*first, session.id()).await);
    }
}
