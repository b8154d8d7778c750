//! Cases: corrupt data.

#[allow(unused_imports)]
use super::*;

fn corrupt_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let valid = SessionRecord {
        created_at_ms: now_millis(),
        last_accessed_at_ms: now_millis(),
        idle_timeout_ms: 60_000,
        absolute_lifetime_ms: None,
        principal: None,
        version: 0,
        attributes: Default::default(),
    }
    .encode()
    .unwrap();
    let mut future_format = valid.clone();
    future_format[0] = 0x7f;
    let truncated = valid[..valid.len() / 2].to_vec();
    vec![
        ("empty", Vec::new()),
        ("one byte", vec![0xff]),
        ("future format", future_format),
        ("truncated", truncated),
        ("bad msgpack", vec![RECORD_FORMAT_V1, 0xc1, 0xc1, 0xc1]),
        ("text", b"' OR 1=1 --\r\n*".to_vec()),
        (
            "noise",
            (0..200u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ]
}

/// Every method of the contract on a session whose stored data was made unreadable by
/// `spoil`, starting from a copy loaded before: absent for find, touch and save and change_id
/// (never a store failure), and removed from the server by delete — shown by a create under
/// the same id, which keeps it only if the key is free.
async fn absent_for_every_method(
    repo: &dyn SessionRepository,
    what: &str,
    spoil: impl std::future::Future<Output = ()>,
    session: &mut Session,
) {
    let id = session.id().clone();
    spoil.await;
    assert!(
        matches!(repo.find(&id).await, Ok(None)),
        "find of a {what} session must be None"
    );
    assert!(
        matches!(repo.touch(&id).await, Ok(()) | Err(Error::NotFound)),
        "touch of a {what} session must be Ok or NotFound"
    );
    assert!(
        matches!(repo.find(&id).await, Ok(None)),
        "{what}: a touch made it readable"
    );
    session.insert("after", "spoiled").unwrap();
    let saved = repo.save(session).await;
    assert!(
        matches!(saved, Err(Error::NotFound)),
        "save over a {what} session must be NotFound, got {saved:?}"
    );
    let mut copy = session.clone();
    let rotated = repo.change_id(&mut copy).await;
    assert!(
        matches!(rotated, Err(Error::NotFound)),
        "change_id of a {what} session must be NotFound, got {rotated:?}"
    );
    assert_eq!(copy.id(), &id, "a failed change_id keeps the id");
    repo.delete(&id).await.unwrap();
    assert_key_is_free(repo, &id, what).await;
}

/// Creates a session under `id`: it keeps the id only if nothing is stored under its key.
async fn assert_key_is_free(repo: &dyn SessionRepository, id: &SessionId, what: &str) {
    let mut probe = Session::with_id_for_testing(id.clone(), Arc::clone(repo.settings()));
    repo.create(&mut probe).await.unwrap();
    assert_eq!(probe.id(), id, "the {what} data is still on the server");
    repo.delete(id).await.unwrap();
}

cases! {
    /// Undecodable stored bytes make the session absent, without error or panic.
    #[needs(RawWrites)]
    pub async fn corrupt_record_is_absent(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        for (what, bytes) in corrupt_payloads() {
            let session = create_with(&*repo, &[("a", "1")]).await;
            fixture.write_raw(&session.key(), &bytes).await.unwrap();
            match repo.find(session.id()).await {
                Ok(None) => {}
                other => panic!("a {what} record must read as absent, got {other:?}"),
            }
        }
    }

    /// A corrupt record can be deleted, save over it is NotFound, touch does not make it readable, and the store keeps working.
    #[needs(RawWrites)]
    pub async fn corrupt_record_does_not_break_the_store(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        for (what, bytes) in corrupt_payloads() {
            let mut session = create_with(&*repo, &[("a", "1")]).await;
            fixture.write_raw(&session.key(), &bytes).await.unwrap();
            session.insert("b", "2").unwrap();
            assert!(
                matches!(repo.save(&mut session).await, Err(Error::NotFound)),
                "save over a {what} record must be NotFound"
            );
            // A touch does not read attributes: Ok or NotFound, but it must not make it readable.
            assert!(
                matches!(
                    repo.touch(session.id()).await,
                    Ok(()) | Err(Error::NotFound)
                ),
                "touch of a {what} record must be Ok or NotFound"
            );
            assert!(repo.find(session.id()).await.unwrap().is_none());
            repo.delete(session.id()).await.unwrap();
            let fresh = create_with(&*repo, &[("ok", "yes")]).await;
            assert_eq!(
                text(&load(&*repo, fresh.id()).await, "ok").as_deref(),
                Some("yes")
            );
        }
    }

    /// A corrupt record is absent for find, touch, save and change_id (never a store failure), and delete removes it from the server.
    #[needs(RawWrites)]
    pub async fn corrupt_record_is_absent_for_every_method(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        for (what, bytes) in corrupt_payloads() {
            let mut session = create_with(&*repo, &[("a", "1")]).await;
            session.set_principal(Some("corrupt")).unwrap();
            repo.save(&mut session).await.unwrap();
            let key = session.key();
            let spoil = async { fixture.write_raw(&key, &bytes).await.unwrap() };
            absent_for_every_method(&*repo, what, spoil, &mut session).await;
        }
    }

    /// The principal listing leaves out what find cannot decode, and log-out-everywhere removes it from the server.
    #[needs(PrincipalIndex & RawWrites)]
    pub async fn corrupt_sessions_are_not_listed_and_are_logged_out(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        for (what, bytes) in corrupt_payloads() {
            let principal = format!("devices {what}");
            let mut good = repo.new_session();
            good.set_principal(Some(&principal)).unwrap();
            repo.create(&mut good).await.unwrap();
            let mut bad = repo.new_session();
            bad.set_principal(Some(&principal)).unwrap();
            repo.create(&mut bad).await.unwrap();
            fixture.write_raw(&bad.key(), &bytes).await.unwrap();

            let listed = repo.find_by_principal(&principal).await.unwrap();
            let keys: Vec<_> = listed.iter().map(|info| info.key).collect();
            assert_eq!(keys, [good.key()], "a {what} session must not be listed");
            assert_eq!(
                repo.delete_by_principal(&principal).await.unwrap(),
                2,
                "{what}: the live session and the undecodable one are removed and counted"
            );
            assert!(repo.find(good.id()).await.unwrap().is_none());
            assert_key_is_free(&*repo, bad.id(), what).await;
        }
    }

    /// Stored data of a foreign shape (another value type at the key, invalid UTF-8 in a text field) is absent for every method and delete removes it.
    #[needs(RawShapes)]
    pub async fn foreign_shapes_are_absent_and_deletable(fixture: &dyn StoreFixture) {
        let repo = open(fixture, SessionSettings::default()).await;
        let listing = repo.capabilities().principal_index;
        for shape in fixture.raw_shapes() {
            let what = format!("{shape:?}");
            let mut session = create_with(&*repo, &[("a", "1")]).await;
            session.set_principal(Some("foreign")).unwrap();
            repo.save(&mut session).await.unwrap();
            let key = session.key();
            fixture.write_raw_shape(&key, shape).await.unwrap();
            if listing {
                let listed = repo.find_by_principal("foreign").await.unwrap();
                assert!(
                    listed.iter().all(|info| info.key != key),
                    "a {what} session must not be listed"
                );
            }
            let spoil = async {};
            absent_for_every_method(&*repo, &what, spoil, &mut session).await;

            // Log-out-everywhere on such data: an error would keep the user's other sessions alive.
            if listing {
                let mut other = create_with(&*repo, &[]).await;
                other.set_principal(Some("foreign")).unwrap();
                repo.save(&mut other).await.unwrap();
                let mut spoiled = create_with(&*repo, &[]).await;
                spoiled.set_principal(Some("foreign")).unwrap();
                repo.save(&mut spoiled).await.unwrap();
                fixture
                    .write_raw_shape(&spoiled.key(), shape)
                    .await
                    .unwrap();
                repo.delete_by_principal("foreign").await.unwrap();
                assert!(repo.find(other.id()).await.unwrap().is_none(), "{what}");
                repo.delete(spoiled.id()).await.unwrap();
                assert_key_is_free(&*repo, spoiled.id(), &what).await;
            }
        }
    }
}
