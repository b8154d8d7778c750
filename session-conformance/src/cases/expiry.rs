//! Cases: expiry.

#[allow(unused_imports)]
use super::*;

cases! {
    /// A session is live before its idle deadline and absent after it.
    #[needs(Nothing)]
    pub async fn idle_timeout_boundary(fixture: &dyn StoreFixture) {
        let repo = open(fixture, short_lived()).await;
        let session = create_with(&*repo, &[]).await;
        // The deadline counts from the creation time the store recorded; a create that was
        // slow to return must not eat the margin.
        let deadline = session.created_at() + SHORT_IDLE;
        sleep_until(deadline - MARGIN).await;
        assert!(
            exists(&*repo, session.id()).await,
            "expired before its deadline"
        );
        sleep_until(deadline + MARGIN).await;
        assert!(
            !exists(&*repo, session.id()).await,
            "still visible after its deadline"
        );
    }

    /// The absolute lifetime ends a session however recently it was used.
    #[needs(Nothing)]
    pub async fn absolute_lifetime_caps_activity(fixture: &dyn StoreFixture) {
        let settings = short_lived().with_absolute_lifetime(Some(SHORT_IDLE * 3 / 2));
        let repo = open(fixture, settings).await;
        let mut session = create_with(&*repo, &[]).await;
        sleep(SHORT_IDLE * 7 / 10).await;
        repo.touch(session.id()).await.unwrap();
        let touched = load(&*repo, session.id()).await;
        let cap = touched.created_at() + SHORT_IDLE * 3 / 2;
        assert_eq!(
            touched.expires_at(),
            cap,
            "the deadline must be capped by the absolute lifetime"
        );
        sleep(SHORT_IDLE * 6 / 10).await;
        session.insert("a", "1").unwrap();
        repo.save(&mut session).await.unwrap();
        sleep(SHORT_IDLE * 2 / 10 + MARGIN).await;
        assert!(
            !exists(&*repo, session.id()).await,
            "activity extended a session past its absolute lifetime"
        );
        assert_err!(repo.touch(session.id()).await, Error::NotFound);
    }

    /// Touch extends the idle deadline.
    #[needs(Nothing)]
    pub async fn touch_extends_expiry(fixture: &dyn StoreFixture) {
        let repo = open(fixture, short_lived()).await;
        let session = create_with(&*repo, &[]).await;
        for _ in 0..3 {
            sleep(SHORT_IDLE * 6 / 10).await;
            repo.touch(session.id()).await.unwrap();
        }
        assert!(
            exists(&*repo, session.id()).await,
            "touch did not extend the session"
        );
        sleep(SHORT_IDLE + MARGIN).await;
        assert!(!exists(&*repo, session.id()).await);
    }

    /// Touch leaves attributes and version untouched.
    #[needs(Nothing)]
    pub async fn touch_does_not_rewrite_attributes(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("x", "1")]).await;
        let mut other = load(&*repo, session.id()).await;
        other.insert("x", "2").unwrap();
        repo.save(&mut other).await.unwrap();
        repo.touch(session.id()).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert_eq!(text(&stored, "x").as_deref(), Some("2"));
        assert_eq!(stored.version(), other.version());
        assert!(stored.last_accessed_at() >= other.last_accessed_at());
    }

    /// Touch of a missing or expired session is NotFound and creates nothing.
    #[needs(Nothing)]
    pub async fn touch_of_missing_session_is_not_found(fixture: &dyn StoreFixture) {
        let repo = open(fixture, short_lived()).await;
        let missing = SessionId::generate();
        assert_err!(repo.touch(&missing).await, Error::NotFound);
        assert!(!exists(&*repo, &missing).await);
        let session = create_with(&*repo, &[]).await;
        sleep(SHORT_IDLE + MARGIN).await;
        assert_err!(repo.touch(session.id()).await, Error::NotFound);
        assert!(
            !exists(&*repo, session.id()).await,
            "touch resurrected an expired session"
        );
    }

    /// The stored deadline is last access + idle timeout, as reported by expires_at.
    #[needs(Nothing)]
    pub async fn expires_at_reports_the_deadline(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[]).await;
        let before = SystemTime::now();
        repo.touch(session.id()).await.unwrap();
        let after = SystemTime::now();
        let stored = load(&*repo, session.id()).await;
        let idle = SessionSettings::default().idle_timeout;
        let slack = Duration::from_millis(2);
        assert!(
            stored.expires_at() + slack >= before + idle,
            "deadline earlier than touch + idle"
        );
        assert!(
            stored.expires_at() <= after + idle + slack,
            "deadline later than touch + idle"
        );
        assert_eq!(stored.expires_at(), stored.last_accessed_at() + idle);
    }
}
