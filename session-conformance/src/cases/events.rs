//! Cases: events.

#[allow(unused_imports)]
use super::*;

async fn expect_event(
    events: &mut session_core::EventSubscription,
    wanted: &SessionEvent,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if &event == wanted => return,
            Ok(Ok(_)) | Ok(Err(session_core::EventError::Lagged(_))) => {}
            Ok(Err(error)) => panic!("event stream ended: {error}"),
            Err(_) => panic!("no {wanted:?} within {within:?}"),
        }
    }
}

cases! {
    /// Create, change_id and delete emit Created, IdChanged and Deleted.
    #[needs(LifecycleEvents)]
    pub async fn lifecycle_events_are_emitted(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let other_instance = open(fixture, SessionSettings::default()).await;
        let mut events = repo.subscribe().unwrap();
        let within = Duration::from_secs(2);
        let mut session = create_with(&*other_instance, &[]).await;
        expect_event(&mut events, &SessionEvent::Created(session.key()), within).await;
        let old = session.key();
        other_instance.change_id(&mut session).await.unwrap();
        expect_event(
            &mut events,
            &SessionEvent::IdChanged {
                old,
                new: session.key(),
            },
            within,
        )
        .await;
        other_instance.delete(session.id()).await.unwrap();
        expect_event(&mut events, &SessionEvent::Deleted(session.key()), within).await;
    }

    /// Every session past its deadline is reported as Expired.
    #[needs(ExpiryEvents)]
    pub async fn expiry_events_are_emitted(fixture: &dyn StoreFixture) {
        let repo = open(fixture, short_lived()).await;
        let mut events = repo.subscribe().unwrap();
        // Several sessions: on a sharded store they spread over the shards, so a store that
        // listens to only some of them misses some (with three shards, six sessions all land on
        // one in under 0.5% of runs).
        let mut sessions = Vec::new();
        for _ in 0..6 {
            sessions.push(create_with(&*repo, &[]).await);
        }
        let mut unheard: Vec<_> = sessions.iter().map(Session::key).collect();
        let within = SHORT_IDLE + Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + within;
        while !unheard.is_empty() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(SessionEvent::Expired(key))) => unheard.retain(|k| *k != key),
                Ok(Ok(_)) | Ok(Err(session_core::EventError::Lagged(_))) => {}
                Ok(Err(error)) => panic!("event stream ended: {error}"),
                Err(_) => panic!(
                    "{} of {} expiries not reported within {within:?}",
                    unheard.len(),
                    sessions.len()
                ),
            }
        }
        for session in &sessions {
            assert!(!exists(&*repo, session.id()).await);
        }
    }

    /// A store without events says Unsupported.
    #[needs(NoEvents)]
    pub async fn events_unsupported_is_reported(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        assert_err!(repo.subscribe(), Error::Unsupported(_));
    }
}
