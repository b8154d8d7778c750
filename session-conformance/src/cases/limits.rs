//! Cases: limits.

#[allow(unused_imports)]
use super::*;

cases! {
    /// Too many attributes is TooLarge at insert and nothing is written.
    #[needs(Nothing)]
    pub async fn too_many_attributes_is_too_large(fixture: &dyn StoreFixture) {
        let settings = SessionSettings::default().with_limits(Limits::default().with_max_attributes(3));
        let repo = open(fixture, settings).await;
        let mut session = create_with(&*repo, &[("a", "1"), ("b", "2"), ("c", "3")]).await;
        assert_err!(session.insert("d", "4"), Error::TooLarge { .. });
        session.insert("c", "replaced").unwrap();
        repo.save(&mut session).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert_eq!(stored.len(), 3);
        assert_eq!(text(&stored, "c").as_deref(), Some("replaced"));
    }

    /// An oversized value is TooLarge at insert and nothing is written.
    #[needs(Nothing)]
    pub async fn oversized_session_is_too_large(fixture: &dyn StoreFixture) {
        let settings =
            SessionSettings::default().with_limits(Limits::default().with_max_session_bytes(4096));
        let repo = open(fixture, settings).await;
        let mut session = create_with(&*repo, &[("small", "s")]).await;
        assert_err!(
            session.insert("big", &"x".repeat(8192)),
            Error::TooLarge { .. }
        );
        assert!(!session.contains("big"));
        repo.save(&mut session).await.unwrap();
        assert!(!load(&*repo, session.id()).await.contains("big"));
    }

    /// A save whose merge with the stored session exceeds the size limit is TooLarge and writes nothing.
    #[needs(Nothing)]
    pub async fn merged_size_over_limit_is_too_large(fixture: &dyn StoreFixture) {
        let settings =
            SessionSettings::default().with_limits(Limits::default().with_max_session_bytes(4096));
        let repo = open(fixture, settings).await;
        let session = create_with(&*repo, &[]).await;
        let mut a = load(&*repo, session.id()).await;
        let mut b = load(&*repo, session.id()).await;
        a.insert("first", &"a".repeat(2500)).unwrap();
        repo.save(&mut a).await.unwrap();
        // Either value alone would fit beside `first`: a store that leaves one out of the merged
        // size lets the save through.
        b.insert("second", &"b".repeat(1300)).unwrap();
        b.insert("third", &"c".repeat(1300)).unwrap();
        assert_err!(repo.save(&mut b).await, Error::TooLarge { .. });
        let stored = load(&*repo, session.id()).await;
        assert!(stored.contains("first"));
        assert!(
            !stored.contains("second") && !stored.contains("third"),
            "a rejected save wrote part of its delta"
        );
        assert_eq!(stored.version(), a.version());
    }

    /// A merged save that removes what another copy does not need counts the removal: it fits the limit.
    #[needs(Nothing)]
    pub async fn merged_size_counts_removals(fixture: &dyn StoreFixture) {
        let settings =
            SessionSettings::default().with_limits(Limits::default().with_max_session_bytes(4096));
        let repo = open(fixture, settings).await;
        let session = create_with(&*repo, &[("draft", &"d".repeat(2000))]).await;
        let mut a = load(&*repo, session.id()).await;
        let mut b = load(&*repo, session.id()).await;
        a.insert("first", &"a".repeat(1500)).unwrap();
        repo.save(&mut a).await.unwrap();
        b.remove("draft");
        b.insert("second", &"b".repeat(1500)).unwrap();
        repo.save(&mut b).await.unwrap();
        let stored = load(&*repo, session.id()).await;
        assert!(!stored.contains("draft"));
        assert_eq!(text(&stored, "first").map(|v| v.len()), Some(1500));
        assert_eq!(text(&stored, "second").map(|v| v.len()), Some(1500));
    }

    /// Bad attribute and principal names are InvalidInput.
    #[needs(Nothing)]
    pub async fn invalid_names_are_invalid_input(fixture: &dyn StoreFixture) {
        let settings =
            SessionSettings::default().with_limits(Limits::default().with_max_attribute_name_len(16));
        let repo = open(fixture, settings).await;
        let mut session = repo.new_session();
        for bad in ["", "seventeen-chars!!", "line\nbreak", "nul\0"] {
            assert_err!(session.insert(bad, "v"), Error::InvalidInput(_));
        }
        for bad in ["", "tab\there"] {
            assert_err!(session.set_principal(Some(bad)), Error::InvalidInput(_));
        }
        assert!(session.is_empty());
        repo.create(&mut session).await.unwrap();
        assert!(load(&*repo, session.id()).await.is_empty());
    }
}
