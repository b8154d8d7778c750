//! Cases: principal index.

#[allow(unused_imports)]
use super::*;

async fn create_for(repo: &dyn SessionRepository, principal: &str) -> Session {
    let mut session = repo.new_session();
    session.set_principal(Some(principal)).unwrap();
    session.insert("device", principal).unwrap();
    repo.create(&mut session).await.unwrap();
    session
}

cases! {
    /// find_by_principal lists exactly the principal's live sessions, as keys and metadata.
    #[needs(PrincipalIndex)]
    pub async fn principal_lists_its_sessions(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let laptop = create_for(&*repo, "morris").await;
        let phone = create_for(&*repo, "morris").await;
        let _other = create_for(&*repo, "alice").await;
        let _anonymous = create_with(&*repo, &[]).await;
        let mut listed = repo.find_by_principal("morris").await.unwrap();
        listed.sort_by_key(|info| info.key);
        let mut expected = vec![laptop.key(), phone.key()];
        expected.sort();
        assert_eq!(
            listed.iter().map(|info| info.key).collect::<Vec<_>>(),
            expected
        );
        for info in &listed {
            assert_eq!(info.principal, "morris");
            assert!(info.expires_at > SystemTime::now());
            assert!(info.created_at <= info.last_accessed_at);
        }
        assert!(repo.find_by_principal("nobody").await.unwrap().is_empty());
    }

    /// delete_by_principal removes every session of the principal and no other.
    #[needs(PrincipalIndex)]
    pub async fn principal_delete_removes_all_its_sessions(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let a = create_for(&*repo, "morris").await;
        let b = create_for(&*repo, "morris").await;
        let other = create_for(&*repo, "alice").await;
        assert_eq!(repo.delete_by_principal("morris").await.unwrap(), 2);
        assert!(!exists(&*repo, a.id()).await && !exists(&*repo, b.id()).await);
        assert!(exists(&*repo, other.id()).await);
        assert!(repo.find_by_principal("morris").await.unwrap().is_empty());
        assert_eq!(repo.delete_by_principal("morris").await.unwrap(), 0);
    }

    /// Expired sessions leave the principal index.
    #[needs(PrincipalIndex)]
    pub async fn principal_index_drops_expired_sessions(fixture: &dyn StoreFixture) {
        let repo = open(fixture, short_lived()).await;
        let long_repo = open(fixture, SessionSettings::default()).await;
        let _short = create_for(&*repo, "morris").await;
        let long = create_for(&*long_repo, "morris").await;
        assert_eq!(repo.find_by_principal("morris").await.unwrap().len(), 2);
        sleep(SHORT_IDLE + MARGIN).await;
        let listed = repo.find_by_principal("morris").await.unwrap();
        assert_eq!(
            listed.iter().map(|i| i.key).collect::<Vec<_>>(),
            [long.key()],
            "an expired session is still listed"
        );
        assert_eq!(repo.delete_by_principal("morris").await.unwrap(), 1);
    }

    /// A changed or cleared principal moves the session in the index.
    #[needs(PrincipalIndex)]
    pub async fn principal_change_moves_index_entry(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = create_for(&*repo, "alice").await;
        session.set_principal(Some("bob")).unwrap();
        repo.save(&mut session).await.unwrap();
        assert!(repo.find_by_principal("alice").await.unwrap().is_empty());
        assert_eq!(repo.find_by_principal("bob").await.unwrap().len(), 1);
        session.set_principal(None).unwrap();
        repo.save(&mut session).await.unwrap();
        assert!(repo.find_by_principal("bob").await.unwrap().is_empty());
        assert_eq!(repo.delete_by_principal("alice").await.unwrap(), 0);
        assert!(exists(&*repo, session.id()).await);
    }

    /// Deleted sessions leave the principal index.
    #[needs(PrincipalIndex)]
    pub async fn principal_index_drops_deleted_sessions(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let a = create_for(&*repo, "morris").await;
        let b = create_for(&*repo, "morris").await;
        repo.delete(a.id()).await.unwrap();
        repo.delete_by_key(&b.key()).await.unwrap();
        assert!(repo.find_by_principal("morris").await.unwrap().is_empty());
    }

    /// After change_id the index lists the new key, not the old one.
    #[needs(PrincipalIndex)]
    pub async fn principal_index_follows_change_id(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = create_for(&*repo, "morris").await;
        repo.change_id(&mut session).await.unwrap();
        let listed = repo.find_by_principal("morris").await.unwrap();
        assert_eq!(
            listed.iter().map(|i| i.key).collect::<Vec<_>>(),
            [session.key()]
        );
        assert_eq!(repo.delete_by_principal("morris").await.unwrap(), 1);
        assert!(!exists(&*repo, session.id()).await);
    }

    /// Hostile principal names match nothing but themselves; bad ones are InvalidInput.
    #[needs(PrincipalIndex)]
    pub async fn hostile_principal_names_are_opaque(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let alice = create_for(&*repo, "alice").await;
        let injected = create_for(&*repo, "' OR 1=1 --").await;
        for name in [
            "' OR 1=1 --",
            "*",
            "%",
            "_",
            "alice*",
            "ali%",
            "a?ice",
            "[a]lice",
            "ALICE",
            "älice 漢字🙂",
            "alice ",
        ] {
            let listed = repo.find_by_principal(name).await.unwrap();
            let expected = if name == "' OR 1=1 --" {
                vec![injected.key()]
            } else {
                vec![]
            };
            assert_eq!(
                listed.iter().map(|i| i.key).collect::<Vec<_>>(),
                expected,
                "principal {name:?}"
            );
        }
        for name in ["*", "%", "alice*", "ALICE"] {
            assert_eq!(
                repo.delete_by_principal(name).await.unwrap(),
                0,
                "principal {name:?}"
            );
        }
        let ten_kb = "x".repeat(10 * 1024);
        for bad in ["", ten_kb.as_str(), "\r\n", "a\0b"] {
            assert_err!(repo.find_by_principal(bad).await, Error::InvalidInput(_));
            assert_err!(repo.delete_by_principal(bad).await, Error::InvalidInput(_));
        }
        assert!(exists(&*repo, alice.id()).await);
        assert_eq!(repo.find_by_principal("alice").await.unwrap().len(), 1);
    }

    /// A principal set or changed by a save is stored exactly as given (spaces, quotes, non-ASCII) and listed under that name only.
    #[needs(PrincipalIndex)]
    pub async fn principal_set_by_save_is_stored_exactly(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("cart", "3")]).await;
        for principal in ["  älice 'o' \"漢字\" 1 2  ", "1 -", "-"] {
            let mut login = load(&*repo, session.id()).await;
            login.set_principal(Some(principal)).unwrap();
            login.insert("cart", principal).unwrap();
            repo.save(&mut login).await.unwrap();
            let stored = load(&*repo, session.id()).await;
            assert_eq!(stored.principal(), Some(principal));
            assert_eq!(text(&stored, "cart").as_deref(), Some(principal));
            let listed = repo.find_by_principal(principal).await.unwrap();
            assert_eq!(
                listed.iter().map(|info| info.key).collect::<Vec<_>>(),
                [session.key()],
                "principal {principal:?}"
            );
            assert_eq!(listed[0].principal, principal);
            if principal.trim() != principal {
                assert!(
                    repo.find_by_principal(principal.trim())
                        .await
                        .unwrap()
                        .is_empty(),
                    "the index trimmed {principal:?}"
                );
            }
        }
    }

    /// A store without a principal index says Unsupported.
    #[needs(NoPrincipalIndex)]
    pub async fn principal_index_unsupported_is_reported(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        assert_err!(
            repo.find_by_principal("morris").await,
            Error::Unsupported(_)
        );
        assert_err!(
            repo.delete_by_principal("morris").await,
            Error::Unsupported(_)
        );
    }
}
