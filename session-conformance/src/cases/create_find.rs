//! Cases: create and find.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    roles: Vec<String>,
    age: Option<u8>,
    scores: BTreeMap<String, f64>,
}

cases! {
    /// A created session is found by its id with its attributes and metadata.
    #[needs(Nothing)]
    pub async fn create_then_find_round_trips(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = repo.new_session();
        session.insert("user", "morris").unwrap();
        session.insert("count", &42u64).unwrap();
        session.set_principal(Some("morris")).unwrap();
        session.set_idle_timeout(Duration::from_secs(600));
        repo.create(&mut session).await.unwrap();

        let loaded = load(&*repo, session.id()).await;
        assert_eq!(text(&loaded, "user").as_deref(), Some("morris"));
        assert_eq!(loaded.get::<u64>("count").unwrap(), Some(42));
        assert_eq!(loaded.principal(), Some("morris"));
        assert_eq!(loaded.idle_timeout(), Duration::from_secs(600));
        assert_eq!(loaded.created_at(), session.created_at());
        assert_eq!(loaded.version(), session.version());
        assert_eq!(loaded.key(), session.key());
        assert!(!loaded.is_new() && !loaded.is_modified());
        assert_eq!(
            loaded.attribute_names().collect::<Vec<_>>(),
            ["count", "user"]
        );
    }

    /// Create marks the session stored and clears its pending changes.
    #[needs(Nothing)]
    pub async fn create_marks_session_persisted(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = repo.new_session();
        session.insert("a", "1").unwrap();
        assert!(session.is_new() && session.is_modified());
        repo.create(&mut session).await.unwrap();
        assert!(!session.is_new());
        assert!(!session.is_modified());
    }

    /// Create never overwrites: a taken id is replaced by a fresh one, the stored session stays.
    #[needs(Nothing)]
    pub async fn create_never_overwrites_existing(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let first = create_with(&*repo, &[("owner", "first")]).await;

        let mut second = Session::with_id_for_testing(first.id().clone(), Arc::clone(repo.settings()));
        second.insert("owner", "second").unwrap();
        repo.create(&mut second).await.unwrap();

        assert_ne!(
            second.id(),
            first.id(),
            "a colliding create must get a fresh id"
        );
        assert_eq!(
            text(&load(&*repo, first.id()).await, "owner").as_deref(),
            Some("first")
        );
        assert_eq!(
            text(&load(&*repo, second.id()).await, "owner").as_deref(),
            Some("second")
        );
    }

    /// Creating an already created session is InvalidInput and writes nothing.
    #[needs(Nothing)]
    pub async fn create_twice_is_invalid_input(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = create_with(&*repo, &[("a", "1")]).await;
        let id = session.id().clone();
        session.insert("a", "2").unwrap();
        assert_err!(repo.create(&mut session).await, Error::InvalidInput(_));
        assert_eq!(session.id(), &id);
        assert_eq!(text(&load(&*repo, &id).await, "a").as_deref(), Some("1"));
    }

    /// Find of an id that was never stored is None.
    #[needs(Nothing)]
    pub async fn find_missing_is_none(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        assert!(repo.find(&SessionId::generate()).await.unwrap().is_none());
    }

    /// Hostile id texts are rejected by parsing, before any I/O; unknown valid ids are None/NotFound/Ok.
    #[needs(Nothing)]
    pub async fn hostile_ids_are_rejected_before_io(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let session = create_with(&*repo, &[("a", "1")]).await;
        let ten_kb = "A".repeat(10 * 1024);
        let almost = format!("{}*", &session.id().expose_secret()[..42]);
        let hostile = [
            "",
            ten_kb.as_str(),
            "ünïcödé-ünïcödé-ünïcödé-ünïcödé-ünïcödé",
            "' OR 1=1 --",
            "*",
            "\r\n",
            "%",
            "../../etc/passwd",
            almost.as_str(),
        ];
        for text in hostile {
            assert!(
                text.parse::<SessionId>().is_err(),
                "{text:?} parsed as a session id"
            );
        }
        let unknown = SessionId::generate();
        assert!(repo.find(&unknown).await.unwrap().is_none());
        assert_err!(repo.touch(&unknown).await, Error::NotFound);
        repo.delete(&unknown).await.unwrap();
        assert!(
            exists(&*repo, session.id()).await,
            "other sessions are untouched"
        );
    }

    /// Find never writes: it does not extend the expiry.
    #[needs(Nothing)]
    pub async fn find_does_not_extend_expiry(fixture: &dyn StoreFixture) {
        let repo = open(fixture, short_lived()).await;
        let session = create_with(&*repo, &[("a", "1")]).await;
        let deadline = session.expires_at();
        sleep(SHORT_IDLE / 2).await;
        let loaded = load(&*repo, session.id()).await;
        assert_eq!(loaded.expires_at(), deadline, "find moved the deadline");
        assert_eq!(loaded.version(), session.version());
        sleep(SHORT_IDLE / 2 + MARGIN).await;
        assert!(
            !exists(&*repo, session.id()).await,
            "reads kept the session alive"
        );
    }

    /// Typed attributes of many shapes round-trip exactly.
    #[needs(Nothing)]
    pub async fn attribute_types_round_trip(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let profile = Profile {
            name: "Zoë 🙂 漢字".into(),
            roles: vec!["admin".into(), "".into()],
            age: None,
            scores: BTreeMap::from([("x".into(), 1.5), ("y".into(), -0.0)]),
        };
        let bytes: Vec<u8> = (0..=255).collect();
        let mut session = repo.new_session();
        session.insert("profile", &profile).unwrap();
        session.insert("bytes", &bytes).unwrap();
        session.insert("max", &u64::MAX).unwrap();
        session.insert("neg", &i64::MIN).unwrap();
        session.insert("flag", &true).unwrap();
        session.insert("empty", "").unwrap();
        session.insert("unit", &()).unwrap();
        repo.create(&mut session).await.unwrap();

        let loaded = load(&*repo, session.id()).await;
        assert_eq!(loaded.get::<Profile>("profile").unwrap(), Some(profile));
        assert_eq!(loaded.get::<Vec<u8>>("bytes").unwrap(), Some(bytes));
        assert_eq!(loaded.get::<u64>("max").unwrap(), Some(u64::MAX));
        assert_eq!(loaded.get::<i64>("neg").unwrap(), Some(i64::MIN));
        assert_eq!(loaded.get::<bool>("flag").unwrap(), Some(true));
        assert_eq!(text(&loaded, "empty").as_deref(), Some(""));
        assert_eq!(loaded.get::<()>("unit").unwrap(), Some(()));
        for name in session.attribute_names() {
            assert_eq!(
                loaded.raw_attribute(name),
                session.raw_attribute(name),
                "bytes of {name}"
            );
        }
    }

    /// Attribute names with SQL, glob and non-ASCII text are stored as opaque data.
    #[needs(Nothing)]
    pub async fn hostile_attribute_names_round_trip(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let names = [
            "' OR 1=1 --",
            "*",
            "%",
            "_",
            "a:b",
            "{tag}",
            "ключ 🙂",
            "\"quoted\"",
            "back\\slash",
            " ",
        ];
        let mut session = repo.new_session();
        for (i, name) in names.iter().enumerate() {
            session.insert(name, &i).unwrap();
        }
        repo.create(&mut session).await.unwrap();
        let mut loaded = load(&*repo, session.id()).await;
        for (i, name) in names.iter().enumerate() {
            assert_eq!(
                loaded.get::<usize>(name).unwrap(),
                Some(i),
                "attribute {name:?}"
            );
        }
        loaded.remove("*");
        loaded.insert("%", &99usize).unwrap();
        repo.save(&mut loaded).await.unwrap();
        let reloaded = load(&*repo, session.id()).await;
        assert!(!reloaded.contains("*"));
        assert_eq!(reloaded.get::<usize>("%").unwrap(), Some(99));
        assert_eq!(
            reloaded.len(),
            names.len() - 1,
            "a removal matched more than its own name"
        );
    }

    /// A stored attribute that is not the requested type is a Decode error; others still load.
    #[needs(Nothing)]
    pub async fn undecodable_attribute_is_a_decode_error(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let mut session = repo.new_session();
        session
            .insert_encoded("garbage", vec![0xee, 0x01, 0x02])
            .unwrap();
        session
            .insert_encoded("truncated", vec![session_core::FORMAT_MESSAGEPACK, 0xdb])
            .unwrap();
        session.insert("good", "fine").unwrap();
        repo.create(&mut session).await.unwrap();
        let loaded = load(&*repo, session.id()).await;
        assert_err!(loaded.get::<String>("garbage"), Error::Decode { .. });
        assert_err!(loaded.get::<String>("truncated"), Error::Decode { .. });
        assert_err!(loaded.get::<u32>("good"), Error::Decode { .. });
        assert_eq!(text(&loaded, "good").as_deref(), Some("fine"));
    }
}
