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

/// Undecodable stored bytes make the session absent, without error or panic.
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
