//! Cases: delete.

#[allow(unused_imports)]
use super::*;

cases! {
    /// Delete removes the session and any loaded copy can no longer save.
    #[needs(Nothing)]
    pub async fn delete_removes_session(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("a", "1")]).await;
        let other = create_with(&*repo, &[("a", "2")]).await;
        let mut copy = load(&*repo, session.id()).await;
        repo.delete(session.id()).await.unwrap();
        assert!(!exists(&*repo, session.id()).await);
        assert!(
            exists(&*repo, other.id()).await,
            "delete removed another session"
        );
        assert_err!(repo.save(&mut copy).await, Error::NotFound);
        assert_err!(repo.touch(session.id()).await, Error::NotFound);
    }

    /// Delete is idempotent.
    #[needs(Nothing)]
    pub async fn delete_is_idempotent(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[]).await;
        repo.delete(session.id()).await.unwrap();
        repo.delete(session.id()).await.unwrap();
        repo.delete(&SessionId::generate()).await.unwrap();
    }

    /// Delete by key removes the session; repeated, it is a no-op.
    #[needs(Nothing)]
    pub async fn delete_by_key_removes_session(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[]).await;
        repo.delete_by_key(&session.key()).await.unwrap();
        assert!(!exists(&*repo, session.id()).await);
        repo.delete_by_key(&session.key()).await.unwrap();
    }
}
