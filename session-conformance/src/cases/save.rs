//! Cases: save.

#[allow(unused_imports)]
use super::*;

cases! {
    /// Save writes set attributes and deletes removed ones.
    #[needs(Nothing)]
    pub async fn save_writes_sets_and_removals(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("keep", "k"), ("drop", "d"), ("change", "old")]).await;
        let mut loaded = load(&*repo, session.id()).await;
        assert!(loaded.remove("drop"));
        loaded.insert("change", "new").unwrap();
        loaded.insert("add", "a").unwrap();
        repo.save(&mut loaded).await.unwrap();
        assert!(!loaded.is_modified());

        let reloaded = load(&*repo, session.id()).await;
        assert_eq!(
            reloaded.attribute_names().collect::<Vec<_>>(),
            ["add", "change", "keep"]
        );
        assert_eq!(text(&reloaded, "change").as_deref(), Some("new"));
        assert_eq!(text(&reloaded, "keep").as_deref(), Some("k"));
    }

    /// Save of a never-created session is NotFound and writes nothing.
    #[needs(Nothing)]
    pub async fn save_of_new_session_is_not_found(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = repo.new_session();
        session.insert("a", "1").unwrap();
        assert_err!(repo.save(&mut session).await, Error::NotFound);
        assert!(!exists(&*repo, session.id()).await);
        assert!(session.is_modified(), "pending changes are kept on error");
    }

    /// Two copies changing different attributes both keep their change.
    #[needs(Nothing)]
    pub async fn save_merges_different_attributes(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("base", "b")]).await;
        let mut a = load(&*repo, session.id()).await;
        let mut b = load(&*repo, session.id()).await;
        a.insert("cart", "book").unwrap();
        b.insert("theme", "dark").unwrap();
        repo.save(&mut a).await.unwrap();
        repo.save(&mut b).await.unwrap();
        let merged = load(&*repo, session.id()).await;
        assert_eq!(text(&merged, "cart").as_deref(), Some("book"));
        assert_eq!(text(&merged, "theme").as_deref(), Some("dark"));
        assert_eq!(text(&merged, "base").as_deref(), Some("b"));
    }

    /// A copy whose save merged into another copy's change, saved again, still keeps that
    /// change (an attribute, the principal, the idle timeout): after a merge the copy is not
    /// what is stored, so no store may write it whole.
    #[needs(Nothing)]
    pub async fn save_again_after_a_merge_keeps_the_other_change(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("base", "b")]).await;
        let mut a = load(&*repo, session.id()).await;
        let mut b = load(&*repo, session.id()).await;
        let idle = b.idle_timeout() + Duration::from_secs(60);
        a.insert("cart", "book").unwrap();
        a.set_principal(Some("merge-keeper")).unwrap();
        a.set_idle_timeout(idle);
        repo.save(&mut a).await.unwrap();
        b.insert("theme", "dark").unwrap();
        repo.save(&mut b).await.unwrap();
        b.insert("lang", "fr").unwrap();
        repo.save(&mut b).await.unwrap();
        b.insert("lang", "de").unwrap();
        repo.save(&mut b).await.unwrap();
        let merged = load(&*repo, session.id()).await;
        assert_eq!(text(&merged, "cart").as_deref(), Some("book"), "the other copy's change");
        assert_eq!(merged.principal(), Some("merge-keeper"));
        assert_eq!(merged.idle_timeout(), idle);
        assert_eq!(text(&merged, "theme").as_deref(), Some("dark"));
        assert_eq!(text(&merged, "lang").as_deref(), Some("de"));
        assert_eq!(text(&merged, "base").as_deref(), Some("b"));
    }

    /// Two copies changing the same attribute: the later save wins.
    #[needs(Nothing)]
    pub async fn save_same_attribute_later_wins(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("cart", "empty")]).await;
        let mut a = load(&*repo, session.id()).await;
        let mut b = load(&*repo, session.id()).await;
        a.insert("cart", "from a").unwrap();
        b.insert("cart", "from b").unwrap();
        repo.save(&mut a).await.unwrap();
        repo.save(&mut b).await.unwrap();
        assert_eq!(
            text(&load(&*repo, session.id()).await, "cart").as_deref(),
            Some("from b")
        );
    }

    /// A removal and a concurrent set of another attribute both apply.
    #[needs(Nothing)]
    pub async fn save_merges_removal_with_other_set(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("x", "1"), ("y", "1")]).await;
        let mut a = load(&*repo, session.id()).await;
        let mut b = load(&*repo, session.id()).await;
        a.remove("x");
        b.insert("y", "2").unwrap();
        b.insert("z", "3").unwrap();
        repo.save(&mut a).await.unwrap();
        repo.save(&mut b).await.unwrap();
        let merged = load(&*repo, session.id()).await;
        assert!(
            !merged.contains("x"),
            "b's save resurrected an attribute it never changed"
        );
        assert_eq!(text(&merged, "y").as_deref(), Some("2"));
        assert_eq!(text(&merged, "z").as_deref(), Some("3"));
    }

    /// Every save increments the stored version and the session's version.
    #[needs(Nothing)]
    pub async fn save_increments_version(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = create_with(&*repo, &[]).await;
        let v0 = session.version();
        session.insert("a", "1").unwrap();
        repo.save(&mut session).await.unwrap();
        assert_eq!(session.version(), v0 + 1);
        repo.save(&mut session).await.unwrap();
        assert_eq!(session.version(), v0 + 2);
        let mut other = load(&*repo, session.id()).await;
        assert_eq!(other.version(), v0 + 2);
        other.insert("b", "2").unwrap();
        repo.save(&mut other).await.unwrap();
        assert_eq!(load(&*repo, session.id()).await.version(), v0 + 3);
    }

    /// Optimistic save of a stale copy is Conflict and writes nothing.
    #[needs(Nothing)]
    pub async fn optimistic_save_of_stale_copy_conflicts(fixture: &dyn StoreFixture) {
        let settings = SessionSettings::default().with_concurrency(Concurrency::Optimistic);
        let repo = open(fixture, settings).await;
        let session = create_with(&*repo, &[("x", "0")]).await;
        let mut a = load(&*repo, session.id()).await;
        let mut b = load(&*repo, session.id()).await;
        a.insert("x", "a").unwrap();
        repo.save(&mut a).await.unwrap();
        b.insert("x", "b").unwrap();
        b.insert("only_b", "b").unwrap();
        b.set_principal(Some("mallory")).unwrap();
        match repo.save(&mut b).await {
            Err(Error::Conflict { expected, actual }) => {
                assert_eq!(expected, session.version());
                assert_eq!(actual, a.version());
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
        let stored = load(&*repo, session.id()).await;
        assert_eq!(text(&stored, "x").as_deref(), Some("a"));
        assert!(
            !stored.contains("only_b"),
            "a conflicting save wrote an attribute"
        );
        assert_eq!(
            stored.principal(),
            None,
            "a conflicting save wrote metadata"
        );
        assert_eq!(stored.version(), a.version());
        assert!(
            b.is_modified(),
            "the losing copy keeps its changes for a retry"
        );
    }

    /// Optimistic save of a current copy succeeds and increments the version.
    #[needs(Nothing)]
    pub async fn optimistic_save_of_current_copy_succeeds(fixture: &dyn StoreFixture) {
        let settings = SessionSettings::default().with_concurrency(Concurrency::Optimistic);
        let repo = open(fixture, settings).await;
        let session = create_with(&*repo, &[("x", "0")]).await;
        let mut a = load(&*repo, session.id()).await;
        let before = a.version();
        a.insert("x", "1").unwrap();
        repo.save(&mut a).await.unwrap();
        assert_eq!(a.version(), before + 1);
        a.insert("x", "2").unwrap();
        repo.save(&mut a).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert_eq!(stored.version(), before + 2);
        assert_eq!(text(&stored, "x").as_deref(), Some("2"));
    }

    /// A touch does not change the version, so it never causes an optimistic conflict.
    #[needs(Nothing)]
    pub async fn touch_does_not_cause_optimistic_conflict(fixture: &dyn StoreFixture) {
        let settings = SessionSettings::default().with_concurrency(Concurrency::Optimistic);
        let repo = open(fixture, settings).await;
        let session = create_with(&*repo, &[]).await;
        let mut copy = load(&*repo, session.id()).await;
        repo.touch(session.id()).await.unwrap();
        copy.insert("a", "1").unwrap();
        repo.save(&mut copy).await.unwrap();
    }

    /// Save of a deleted session is NotFound and does not resurrect it.
    #[needs(Nothing)]
    pub async fn save_after_delete_does_not_resurrect(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("a", "1")]).await;
        let mut copy = load(&*repo, session.id()).await;
        repo.delete(session.id()).await.unwrap();
        copy.insert("b", "2").unwrap();
        assert_err!(repo.save(&mut copy).await, Error::NotFound);
        let mut unchanged = load_or_none(&*repo, session.id()).await;
        assert!(
            unchanged.take().is_none(),
            "save resurrected a deleted session"
        );
    }

    /// Save of an expired session is NotFound and does not resurrect it.
    #[needs(Nothing)]
    pub async fn save_after_expiry_does_not_resurrect(fixture: &dyn StoreFixture) {
        let repo = open(fixture, short_lived()).await;
        let session = create_with(&*repo, &[("a", "1")]).await;
        let mut copy = load(&*repo, session.id()).await;
        sleep(SHORT_IDLE + MARGIN).await;
        copy.insert("b", "2").unwrap();
        assert_err!(repo.save(&mut copy).await, Error::NotFound);
        assert!(
            !exists(&*repo, session.id()).await,
            "save resurrected an expired session"
        );
    }

    /// Save refreshes the expiry.
    #[needs(Nothing)]
    pub async fn save_extends_expiry(fixture: &dyn StoreFixture) {
        let repo = open(fixture, short_lived()).await;
        let mut session = create_with(&*repo, &[]).await;
        sleep(SHORT_IDLE * 6 / 10).await;
        session.insert("a", "1").unwrap();
        repo.save(&mut session).await.unwrap();
        sleep(SHORT_IDLE * 6 / 10).await;
        assert!(
            exists(&*repo, session.id()).await,
            "save did not move the deadline"
        );
        sleep(SHORT_IDLE * 4 / 10 + MARGIN).await;
        assert!(!exists(&*repo, session.id()).await);
    }

    /// A save without changes still refreshes the expiry.
    #[needs(Nothing)]
    pub async fn save_without_changes_extends_expiry(fixture: &dyn StoreFixture) {
        let repo = open(fixture, short_lived()).await;
        let mut session = create_with(&*repo, &[]).await;
        sleep(SHORT_IDLE * 6 / 10).await;
        assert!(!session.is_modified());
        repo.save(&mut session).await.unwrap();
        sleep(SHORT_IDLE * 6 / 10).await;
        assert!(
            exists(&*repo, session.id()).await,
            "an empty save did not move the deadline"
        );
    }

    /// Save mode OnSet writes only attributes that were set, not ones merely read.
    #[needs(Nothing)]
    pub async fn save_mode_on_set_skips_read_attributes(fixture: &dyn StoreFixture) {
        let repo = open(
            fixture,
            SessionSettings::default().with_save_mode(SaveMode::OnSet),
        )
        .await;
        let session = create_with(&*repo, &[("x", "1")]).await;
        let mut a = load(&*repo, session.id()).await;
        let mut b = load(&*repo, session.id()).await;
        b.insert("x", "2").unwrap();
        repo.save(&mut b).await.unwrap();
        assert_eq!(text(&a, "x").as_deref(), Some("1"));
        a.insert("y", "1").unwrap();
        repo.save(&mut a).await.unwrap();
        assert_eq!(
            text(&load(&*repo, session.id()).await, "x").as_deref(),
            Some("2")
        );
    }

    /// Save mode OnGet writes back attributes that were read.
    #[needs(Nothing)]
    pub async fn save_mode_on_get_writes_read_attributes(fixture: &dyn StoreFixture) {
        let repo = open(
            fixture,
            SessionSettings::default().with_save_mode(SaveMode::OnGet),
        )
        .await;
        let session = create_with(&*repo, &[("x", "1"), ("untouched", "u")]).await;
        let mut a = load(&*repo, session.id()).await;
        let mut b = load(&*repo, session.id()).await;
        b.insert("x", "2").unwrap();
        b.insert("untouched", "from b").unwrap();
        repo.save(&mut b).await.unwrap();
        assert_eq!(text(&a, "x").as_deref(), Some("1"));
        assert!(a.is_modified(), "a read attribute is pending in OnGet mode");
        repo.save(&mut a).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert_eq!(
            text(&stored, "x").as_deref(),
            Some("1"),
            "OnGet did not write back a read attribute"
        );
        assert_eq!(
            text(&stored, "untouched").as_deref(),
            Some("from b"),
            "OnGet wrote an unread attribute"
        );
    }

    /// Save mode Always writes every attribute of the copy.
    #[needs(Nothing)]
    pub async fn save_mode_always_writes_all_attributes(fixture: &dyn StoreFixture) {
        let repo = open(
            fixture,
            SessionSettings::default().with_save_mode(SaveMode::Always),
        )
        .await;
        let session = create_with(&*repo, &[("x", "1"), ("y", "1")]).await;
        let mut a = load(&*repo, session.id()).await;
        let mut b = load(&*repo, session.id()).await;
        b.insert("x", "2").unwrap();
        b.insert("z", "3").unwrap();
        repo.save(&mut b).await.unwrap();
        repo.save(&mut a).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert_eq!(
            text(&stored, "x").as_deref(),
            Some("1"),
            "Always did not write every attribute"
        );
        assert_eq!(
            text(&stored, "z").as_deref(),
            Some("3"),
            "Always must not delete attributes it never had"
        );
    }

    /// Changed idle timeout and principal are stored by save.
    #[needs(Nothing)]
    pub async fn save_stores_metadata_changes(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = create_with(&*repo, &[]).await;
        session.set_principal(Some("morris")).unwrap();
        session.set_idle_timeout(Duration::from_secs(123));
        session.set_absolute_lifetime(Some(Duration::from_secs(3600)));
        repo.save(&mut session).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert_eq!(stored.principal(), Some("morris"));
        assert_eq!(stored.idle_timeout(), Duration::from_secs(123));
        assert_eq!(stored.absolute_lifetime(), Some(Duration::from_secs(3600)));

        let mut cleared = stored;
        cleared.set_principal(None).unwrap();
        cleared.set_absolute_lifetime(None);
        repo.save(&mut cleared).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert_eq!(stored.principal(), None);
        assert_eq!(stored.absolute_lifetime(), None);
    }

    /// Metadata changes of one copy survive a save of another copy that did not change them.
    #[needs(Nothing)]
    pub async fn save_keeps_metadata_it_did_not_change(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[]).await;
        let mut login = load(&*repo, session.id()).await;
        let mut other = load(&*repo, session.id()).await;
        login.set_principal(Some("morris")).unwrap();
        login.set_idle_timeout(Duration::from_secs(77));
        repo.save(&mut login).await.unwrap();
        other.insert("theme", "dark").unwrap();
        repo.save(&mut other).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert_eq!(
            stored.principal(),
            Some("morris"),
            "a stale copy overwrote the principal"
        );
        assert_eq!(stored.idle_timeout(), Duration::from_secs(77));
        assert_eq!(text(&stored, "theme").as_deref(), Some("dark"));
    }
}
