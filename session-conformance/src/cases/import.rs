//! Cases: import (a session moving in from another store, as `Migrating` moves them).

#[allow(unused_imports)]
use super::*;
use session_core::raw::SessionInternals;

const MINUTE_MS: u64 = 60_000;

/// A record as another store would hold it: created ten minutes ago, last used one minute
/// ago, version 7, with `pairs` as attributes.
fn foreign_record(
    repo: &dyn SessionRepository,
    pairs: &[(&str, &str)],
    principal: Option<&str>,
) -> SessionRecord {
    let mut session = Session::new(Arc::clone(repo.settings()));
    for (name, value) in pairs {
        session.insert(name, value).expect("insert");
    }
    session.set_principal(principal).expect("principal");
    let now = now_millis();
    let mut record = session.record_for_create(now).expect("record");
    record.created_at_ms = now - 10 * MINUTE_MS;
    record.last_accessed_at_ms = now - MINUTE_MS;
    record.idle_timeout_ms = 30 * MINUTE_MS;
    record.absolute_lifetime_ms = Some(120 * MINUTE_MS);
    record.version = 7;
    record
}

cases! {
    /// Import stores the record as given: find returns its times, timeouts, principal, version and attributes.
    #[needs(Import)]
    pub async fn import_stores_the_record_as_given(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let other_instance = open(fixture, SessionSettings::default()).await;
        let record = foreign_record(&*repo, &[("a", "1"), ("b", "2")], Some("importer"));
        let id = SessionId::generate();
        assert!(repo.import(&id, &record).await.expect("import"), "a free key was not imported");
        let mut found = load(&*other_instance, &id).await;
        assert_eq!(found.created_at_ms(), record.created_at_ms);
        assert_eq!(found.last_accessed_at_ms(), record.last_accessed_at_ms);
        assert_eq!(found.idle_timeout(), Duration::from_millis(record.idle_timeout_ms));
        assert_eq!(found.absolute_lifetime(), Some(Duration::from_millis(120 * MINUTE_MS)));
        assert_eq!(found.principal(), Some("importer"));
        assert_eq!(found.version(), 7);
        assert_eq!(text(&found, "a").as_deref(), Some("1"));
        assert_eq!(text(&found, "b").as_deref(), Some("2"));
        assert_eq!(found.len(), 2);
        found.insert("c", "3").unwrap();
        other_instance.save(&mut found).await.expect("save of an imported session");
        let saved = load(&*repo, &id).await;
        assert_eq!(saved.version(), 8);
        assert_eq!(saved.created_at_ms(), record.created_at_ms, "a save moved the creation time");
        assert_eq!(text(&saved, "c").as_deref(), Some("3"));
    }

    /// Import never overwrites a live session: Ok(false) and the stored session is unchanged.
    #[needs(Import)]
    pub async fn import_never_overwrites(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("a", "mine")]).await;
        let record = foreign_record(&*repo, &[("a", "theirs")], None);
        assert!(!repo.import(session.id(), &record).await.expect("import"));
        let stored = load(&*repo, session.id()).await;
        assert_eq!(text(&stored, "a").as_deref(), Some("mine"));
        assert_eq!(stored.version(), session.version());
        assert_eq!(stored.created_at_ms(), session.created_at_ms());
    }

    /// Import never overwrites undecodable stored bytes either: Ok(false), the session stays absent.
    #[needs(Import & RawWrites)]
    pub async fn import_never_overwrites_undecodable_bytes(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("a", "1")]).await;
        fixture.write_raw(&session.key(), b"\xffnot a session").await.expect("raw write");
        let record = foreign_record(&*repo, &[("a", "2")], None);
        assert!(!repo.import(session.id(), &record).await.expect("import"));
        assert!(!exists(&*repo, session.id()).await);
    }

    /// Importing a record past its deadline is NotFound and writes nothing.
    #[needs(Import)]
    pub async fn import_of_an_expired_record_is_not_found(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut record = foreign_record(&*repo, &[("a", "1")], None);
        record.last_accessed_at_ms = now_millis() - 31 * MINUTE_MS;
        let id = SessionId::generate();
        assert_err!(repo.import(&id, &record).await, Error::NotFound);
        assert!(!exists(&*repo, &id).await);
        // The key stays free: a live record can come in under it.
        let live = foreign_record(&*repo, &[("a", "1")], None);
        assert!(repo.import(&id, &live).await.expect("import"));
    }

    /// An imported session expires at the record's deadline, not a fresh idle timeout from now.
    #[needs(Import)]
    pub async fn imported_session_expires_at_its_own_deadline(fixture: &dyn StoreFixture) {
        let repo = open(fixture, short_lived()).await;
        let mut record = foreign_record(&*repo, &[("a", "1")], None);
        record.idle_timeout_ms = SHORT_IDLE.as_millis() as u64;
        record.last_accessed_at_ms = now_millis() - record.idle_timeout_ms / 2;
        let deadline = record.deadline_ms();
        let id = SessionId::generate();
        assert!(repo.import(&id, &record).await.expect("import"));
        assert!(exists(&*repo, &id).await, "a live imported session is absent");
        let wait = deadline.saturating_sub(now_millis()) + MARGIN.as_millis() as u64;
        sleep(Duration::from_millis(wait)).await;
        assert!(!exists(&*repo, &id).await, "the imported session outlived its deadline");
    }

    /// Importing a record over the limits is TooLarge and writes nothing.
    #[needs(Import)]
    pub async fn import_over_the_limits_is_too_large(fixture: &dyn StoreFixture) {
        let writer = open(fixture, SessionSettings::default()).await;
        let record = foreign_record(&*writer, &[("big", &"x".repeat(8192))], None);
        let settings =
            SessionSettings::default().with_limits(Limits::default().with_max_session_bytes(4096));
        let repo = open(fixture, settings).await;
        let id = SessionId::generate();
        assert_err!(repo.import(&id, &record).await, Error::TooLarge { .. });
        assert!(!exists(&*writer, &id).await);
    }

    /// An imported session is listed by its principal and logged out with it.
    #[needs(Import & PrincipalIndex)]
    pub async fn imported_session_is_in_the_principal_index(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let record = foreign_record(&*repo, &[("a", "1")], Some("imported-user"));
        let id = SessionId::generate();
        assert!(repo.import(&id, &record).await.expect("import"));
        let listed = repo.find_by_principal("imported-user").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, id.key());
        assert_eq!(repo.delete_by_principal("imported-user").await.expect("log out"), 1);
        assert!(!exists(&*repo, &id).await);
    }

    /// Import emits no event: the session moved, it is not new.
    #[needs(Import & LifecycleEvents)]
    pub async fn import_emits_no_event(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut events = repo.subscribe().unwrap();
        let id = SessionId::generate();
        let record = foreign_record(&*repo, &[], None);
        assert!(repo.import(&id, &record).await.expect("import"));
        let created = create_with(&*repo, &[]).await;
        let first = tokio::time::timeout(Duration::from_secs(2), events.recv())
            .await
            .expect("no event within 2 s")
            .expect("event stream");
        assert_eq!(first, SessionEvent::Created(created.key()), "the import was announced");
    }

    /// A store without import says so: Unsupported.
    #[needs(NoImport)]
    pub async fn import_unsupported_is_reported(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let record = foreign_record(&*repo, &[], None);
        assert_err!(repo.import(&SessionId::generate(), &record).await, Error::Unsupported(_));
    }
}
