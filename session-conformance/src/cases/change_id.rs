//! Cases: change_id.

#[allow(unused_imports)]
use super::*;

cases! {
    /// change_id moves the session to a new id; the old id stops working.
    #[needs(Nothing)]
    pub async fn change_id_moves_session(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = create_with(&*repo, &[("cart", "book")]).await;
        session.set_principal(Some("morris")).unwrap();
        repo.save(&mut session).await.unwrap();
        let old_id = session.id().clone();
        let old_key = session.key();
        let version = session.version();
        repo.change_id(&mut session).await.unwrap();
        assert_ne!(session.id(), &old_id);
        assert_ne!(session.key(), old_key);
        assert_eq!(session.key(), session.id().key());
        assert!(!exists(&*repo, &old_id).await, "the old id still works");
        let moved = load(&*repo, session.id()).await;
        assert_eq!(text(&moved, "cart").as_deref(), Some("book"));
        assert_eq!(moved.principal(), Some("morris"));
        assert_eq!(moved.version(), version);
        assert_eq!(moved.created_at(), session.created_at());
        assert_err!(repo.touch(&old_id).await, Error::NotFound);
    }

    /// change_id keeps pending changes pending; the next save writes them under the new id.
    #[needs(Nothing)]
    pub async fn change_id_keeps_pending_changes(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = create_with(&*repo, &[("a", "1")]).await;
        session.insert("b", "2").unwrap();
        repo.change_id(&mut session).await.unwrap();
        assert!(session.is_modified());
        assert!(!load(&*repo, session.id()).await.contains("b"));
        repo.save(&mut session).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert_eq!(text(&stored, "a").as_deref(), Some("1"));
        assert_eq!(text(&stored, "b").as_deref(), Some("2"));
    }

    /// A copy still holding the old id cannot save after change_id.
    #[needs(Nothing)]
    pub async fn change_id_old_copy_cannot_save(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = create_with(&*repo, &[("a", "1")]).await;
        let mut stale = load(&*repo, session.id()).await;
        let old_id = session.id().clone();
        repo.change_id(&mut session).await.unwrap();
        stale.insert("a", "stale").unwrap();
        assert_err!(repo.save(&mut stale).await, Error::NotFound);
        assert!(
            !exists(&*repo, &old_id).await,
            "a stale save resurrected the old id"
        );
        assert_eq!(
            text(&load(&*repo, session.id()).await, "a").as_deref(),
            Some("1")
        );
    }

    /// change_id of a never-created session only assigns a fresh id.
    #[needs(Nothing)]
    pub async fn change_id_of_new_session_is_local(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = repo.new_session();
        let old = session.id().clone();
        repo.change_id(&mut session).await.unwrap();
        assert_ne!(session.id(), &old);
        assert!(session.is_new());
        assert!(
            !exists(&*repo, session.id()).await,
            "change_id of a new session wrote it"
        );
    }

    /// change_id of a deleted session is NotFound.
    #[needs(Nothing)]
    pub async fn change_id_of_deleted_session_is_not_found(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = create_with(&*repo, &[]).await;
        repo.delete(session.id()).await.unwrap();
        let id = session.id().clone();
        assert_err!(repo.change_id(&mut session).await, Error::NotFound);
        assert_eq!(
            session.id(),
            &id,
            "a failed change_id must not change the id"
        );
    }
}
